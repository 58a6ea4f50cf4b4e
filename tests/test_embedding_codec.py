"""The store's codec: any encoder output round-trips, and float16 storage leaves SAM's masks as they
were with float32 embeddings (real SAM modules; random weights give ragged masks, the hard case)."""

import numpy as np
import pytest
import torch
from test_sam import box, clicks, image, tiny_sam

from backend.embeddings import codec
from backend.embeddings.cache import EmbeddingCache
from backend.segmenters.sam import SamSegmenter, SegmentAnything
from backend.training.validation import iou

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_nested_values_round_trip_with_float32_restored():
    value = {"image_embed": torch.randn(1, 4, 8, 8), "high_res_feats": [torch.randn(1, 2, 16, 16)],
             "ids": torch.arange(3), "size": (683, 1024), "name": "x"}
    back = codec.decode(codec.encode(value, half=True))
    assert back["image_embed"].dtype == torch.float32 and back["ids"].dtype == torch.int64
    assert torch.allclose(back["image_embed"], value["image_embed"], rtol=1e-3, atol=1e-3)
    assert isinstance(back["high_res_feats"], list) and back["high_res_feats"][0].shape == (1, 2, 16, 16)
    assert back["size"] == (683, 1024) and back["name"] == "x"
    assert torch.equal(codec.decode(codec.encode(value, half=False))["image_embed"], value["image_embed"])


def test_half_storage_halves_the_bytes_and_keeps_values_float16_cannot_hold():
    embedding = torch.randn(1, 256, 64, 64)
    assert len(codec.encode(embedding, half=True)) < 0.55 * len(codec.encode(embedding, half=False))
    huge = torch.tensor([1e6, -3.0])
    assert torch.equal(codec.decode(codec.encode(huge, half=True)), huge)


def test_foreign_bytes_are_a_codec_error():
    with pytest.raises(codec.CodecError):
        codec.decode(b"not a torch file")
    import io

    buffer = io.BytesIO()
    torch.save(torch.ones(2), buffer)  # a tensor, but not in the store's format
    with pytest.raises(codec.CodecError):
        codec.decode(buffer.getvalue())


def structured_image():
    """A photo-like image: smooth gradients, a bright disc and a dark square."""
    height, width = 400, 600
    yy, xx = np.mgrid[0:height, 0:width]
    array = np.stack([xx * 255 // width, yy * 255 // height, np.full_like(xx, 90)], axis=-1).astype(np.uint8)
    array[(yy - 200) ** 2 + (xx - 200) ** 2 < 80**2] = (240, 220, 40)
    array[100:300, 380:520] = (20, 30, 60)
    return image().__class__(array=array, key="structured")


PROMPTS = [box(110, 110, 290, 290), box(370, 90, 530, 310), box(0, 0, 600, 400),
           clicks([[200, 200]], [1]), clicks([[450, 200], [200, 200]], [1, 0])]


@pytest.mark.parametrize("prompt", PROMPTS, ids=["disc-box", "square-box", "whole-box", "click", "two-clicks"])
def test_masks_from_float16_embeddings_match_float32_ones(prompt):
    sam = tiny_sam()
    photo = structured_image()
    full = SamSegmenter(SegmentAnything(sam), "sam-tiny", EmbeddingCache(capacity=1)).segment(photo, prompt)
    embedding = SamSegmenter(SegmentAnything(sam), "sam-tiny", EmbeddingCache(capacity=1)).embedding(photo)
    halved = SamSegmenter(SegmentAnything(sam), "sam-tiny", EmbeddingCache(capacity=1))
    halved.embedding_cache.get_or_compute(halved.embedding_key(photo),
                                          lambda: codec.decode(codec.encode(embedding, half=True)))
    half = halved.segment(photo, prompt)
    assert full.mask.sum() > 100  # a real mask, not an empty one that trivially matches
    assert iou(full.mask, half.mask) >= 0.99
    assert abs(full.score - half.score) < 0.01
