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
    back = codec.decode(codec.encode(value, "k", half=True), "k")
    assert back["image_embed"].dtype == torch.float32 and back["ids"].dtype == torch.int64
    assert torch.allclose(back["image_embed"], value["image_embed"], rtol=1e-3, atol=1e-3)
    assert isinstance(back["high_res_feats"], list) and back["high_res_feats"][0].shape == (1, 2, 16, 16)
    assert back["size"] == (683, 1024) and back["name"] == "x"
    assert torch.equal(codec.decode(codec.encode(value, "k", half=False), "k")["image_embed"], value["image_embed"])


def test_half_storage_halves_the_bytes_and_keeps_values_float16_cannot_hold():
    embedding = torch.randn(1, 256, 64, 64)
    assert len(codec.encode(embedding, "k", half=True)) < 0.55 * len(codec.encode(embedding, "k", half=False))
    huge = torch.tensor([1e6, -3.0])
    assert torch.equal(codec.decode(codec.encode(huge, "k", half=True), "k"), huge)


def test_foreign_and_older_entries_are_a_codec_error():
    with pytest.raises(codec.CodecError, match="older backend"):
        codec.decode(b"not a torch file", "k")
    import io

    buffer = io.BytesIO()
    torch.save({"format": 1, "value": torch.ones(2)}, buffer)  # what the previous format wrote
    with pytest.raises(codec.CodecError, match="older backend"):
        codec.decode(buffer.getvalue(), "k")
    with pytest.raises(codec.CodecError, match="truncated"):
        codec.decode(codec.MAGIC + b"\x01", "k")


def test_a_flipped_byte_anywhere_is_a_codec_error():
    entry = codec.encode(torch.randn(1, 4, 8, 8), "sam:img")
    for position in (len(codec.MAGIC) + 1, len(codec.MAGIC) + 10, len(entry) // 2, len(entry) - 1):
        flipped = bytearray(entry)
        flipped[position] ^= 0x10
        with pytest.raises(codec.CodecError):
            codec.decode(bytes(flipped), "sam:img")


def test_another_keys_entry_is_a_codec_error():
    entry = codec.encode(torch.randn(1, 4, 8, 8), "sam:other-image")
    with pytest.raises(codec.CodecError, match="another key"):
        codec.decode(entry, "sam:img")


def test_shapes_the_model_does_not_take_are_a_codec_error():
    value = {"image_embed": torch.randn(1, 4, 8, 8), "high_res": [torch.randn(1, 2, 16, 16)]}
    entry = codec.encode(value, "k")
    assert codec.shapes_of(value) == {"image_embed": (1, 4, 8, 8), "high_res": [(1, 2, 16, 16)]}
    assert codec.decode(entry, "k", shapes=codec.shapes_of(value))["high_res"][0].shape == (1, 2, 16, 16)
    with pytest.raises(codec.CodecError, match="shapes"):
        codec.decode(entry, "k", shapes={"image_embed": (1, 4, 8, 8), "high_res": [(1, 2, 8, 8)]})
    with pytest.raises(codec.CodecError, match="shapes"):
        codec.decode(codec.encode(torch.randn(1, 4, 8, 8), "k"), "k", shapes=(1, 4, 16, 16))


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
                                          lambda: codec.decode(codec.encode(embedding, "k", half=True), "k"))
    half = halved.segment(photo, prompt)
    assert full.mask.sum() > 100  # a real mask, not an empty one that trivially matches
    assert iou(full.mask, half.mask) >= 0.99
    assert abs(full.score - half.score) < 0.01
