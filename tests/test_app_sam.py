"""The app with the real SamSegmenter (a tiny SAM of the real architecture whose mask decoder is
stubbed to a known low-res rectangle): a Label Studio rectangle comes back as a brush mask of the
image's size, in the right place, with SAM's predicted IoU as score."""

import numpy as np
import pytest
import torch
from label_studio_sdk.label_interface import LabelInterface

from backend.embeddings import codec
from backend.embeddings.disk_store import DiskEmbeddingStore
from backend.protocol import mask_from_region
from backend.segmenter_set import SegmenterSet
from backend.embeddings.cache import EmbeddingCache
from backend.segmenters.sam import SamSegmenter, SegmentAnything
from segmentation_fakes import CONFIG, FakeImages, IMAGE_URL, make_app, predict_body, rectangle, task
from test_sam import RectangleDecoder, tiny_sam

W, H = 512, 256  # SAM input frame 1024 x 512: low-res (256 x 256) cell = 4 input px = 2 natural px


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_rectangle_to_brush_mask_through_real_sam(tmp_path):
    sam = tiny_sam()
    sam.mask_decoder = RectangleDecoder([(16, 48, 32, 96)], [0.75])  # low-res rows 16:48, cols 32:96
    segmenters = SegmenterSet(sam=SamSegmenter(SegmentAnything(sam), "sam-tiny", EmbeddingCache(2)), sam_name="sam-tiny")
    app, _, _ = make_app(tmp_path, images=FakeImages({IMAGE_URL: (W, H)}), segmenters=segmenters)
    context = [rectangle(60, 30, 200, 100, size=(W, H))]
    response = app.test_client().post("/predict", json=predict_body([task()], context=context))
    [entry] = response.get_json()["results"]
    [region] = entry["result"]
    assert (region["original_width"], region["original_height"]) == (W, H)
    assert region["score"] == pytest.approx(0.75) and region["meta"] == {"text": ["sam-tiny"]}
    mask = mask_from_region(region, W, H)
    expected = np.zeros((H, W), bool)
    expected[32:96, 64:192] = True  # low-res x 2
    assert (mask & expected).sum() / (mask | expected).sum() > 0.95
    assert LabelInterface(CONFIG).validate_prediction(entry, return_errors=True) == []


def sam_with_disk_store(tmp_path, capacity=0):
    """The tiny SAM (stubbed decoder) over a disk embedding store under ``tmp_path``."""
    sam = tiny_sam()
    sam.mask_decoder = RectangleDecoder([(16, 48, 32, 96)], [0.75])
    cache = EmbeddingCache(capacity, DiskEmbeddingStore(tmp_path / "embeddings", 64 * 2**20), namespace="ckpt")
    segmenter = SamSegmenter(SegmentAnything(sam), "sam-tiny", cache)
    return SegmenterSet(sam=segmenter, sam_name="sam-tiny", embeddings=cache), segmenter


def test_the_encoder_returns_the_shapes_the_store_checks_for():
    segmenter = SamSegmenter(SegmentAnything(tiny_sam()), "sam-tiny", EmbeddingCache(0))
    image = FakeImages({IMAGE_URL: (W, H)}).load(IMAGE_URL)
    assert codec.shapes_of(segmenter.embedding(image)) == segmenter.model.feature_shapes() == (1, 32, 64, 64)


def test_a_stored_embedding_of_the_wrong_shape_is_recomputed_not_a_500(tmp_path):
    segmenters, segmenter = sam_with_disk_store(tmp_path)
    app, _, images = make_app(tmp_path, images=FakeImages({IMAGE_URL: (W, H)}), segmenters=segmenters)
    image = images.load(IMAGE_URL)
    store_key = "ckpt/" + segmenter.embedding_key(image)
    segmenters.embeddings.store.put(store_key, codec.encode(torch.zeros(1, 32, 32, 32), store_key))  # valid, wrong shape
    body = predict_body([task()], context=[rectangle(60, 30, 200, 100, size=(W, H))])
    for _ in range(2):
        response = app.test_client().post("/predict", json=body)
        assert response.status_code == 200 and response.get_json()["results"][0]["result"]
    health = app.test_client().get("/health").get_json()["embeddings"]
    assert health["bad_entries"] == 1 and health["misses"] == 1 and health["hits"] == 1


def test_health_shows_the_embedding_store_before_any_embedding_is_used(tmp_path):
    segmenters, _ = sam_with_disk_store(tmp_path, capacity=8)
    app, _, _ = make_app(tmp_path, images=FakeImages({IMAGE_URL: (W, H)}), segmenters=segmenters)
    embeddings = app.test_client().get("/health").get_json()["embeddings"]
    assert embeddings["store"] == "disk" and embeddings["entries"] == 0 and embeddings["in_process_entries"] == 0
    assert (embeddings["hits"], embeddings["misses"], embeddings["waits"], embeddings["hit_rate"]) == (0, 0, 0, None)
