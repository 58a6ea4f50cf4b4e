"""The app with the real SamSegmenter (a tiny SAM of the real architecture whose mask decoder is
stubbed to a known low-res rectangle): a Label Studio rectangle comes back as a brush mask of the
image's size, in the right place, with SAM's predicted IoU as score."""

import numpy as np
import pytest
from label_studio_sdk.label_interface import LabelInterface

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
