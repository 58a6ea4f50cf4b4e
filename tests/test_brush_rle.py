"""encode_brush_rle: byte for byte the Label Studio SDK's brush RLE, and decodable by it."""

import numpy as np
import pytest
from label_studio_sdk.converter.brush import decode_rle, mask2rle

from backend.brush_rle import encode_brush_rle


def sdk_rle(mask: np.ndarray) -> list[int]:
    return [int(v) for v in mask2rle(np.where(mask, 255, 0).astype(np.uint8))]


def masks() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    one_pixel_after_long_run = np.zeros((130, 130), bool)
    one_pixel_after_long_run.ravel()[16385] = True  # a run of 65,540 values: split into 65,536 + 4
    return {
        "1x1 empty": np.zeros((1, 1), bool),
        "1x1 full": np.ones((1, 1), bool),
        "all empty, runs over 2**16": np.zeros((200, 200), bool),
        "all full": np.ones((128, 129), bool),
        "one pixel after a long run": one_pixel_after_long_run,
        "sparse noise": rng.random((37, 53)) < 0.02,
        "dense noise": rng.random((37, 53)) < 0.5,  # runs of 4, 8, ... values: every field width
        "blocks": np.kron(rng.random((20, 30)) < 0.5, np.ones((7, 11), bool)),
    }


@pytest.mark.parametrize("name", list(masks()))
def test_bytes_equal_the_sdk_encoder(name):
    mask = masks()[name]
    assert encode_brush_rle(mask) == sdk_rle(mask)


@pytest.mark.parametrize("name", list(masks()))
def test_sdk_decodes_the_mask_as_255_in_every_channel(name):
    mask = masks()[name]
    decoded = decode_rle(encode_brush_rle(mask)).reshape(*mask.shape, 4)
    assert (decoded == np.where(mask, 255, 0)[:, :, None]).all()


def test_any_nonzero_value_is_foreground():
    values = np.array([[0, 1, 7], [255, 0, 2]], np.uint8)
    assert encode_brush_rle(values) == sdk_rle(values > 0)


def editor_rle(mask: np.ndarray, colour=(255, 0, 0)) -> list[int]:
    """The RLE of an RGBA mask as Label Studio's editor stores it: the label colour in RGB, 255 alpha."""
    from label_studio_sdk.converter.brush import encode_rle

    rgba = np.zeros(mask.shape + (4,), np.uint8)
    rgba[mask] = (*colour, 255)
    return [int(v) for v in encode_rle(rgba.ravel())]


@pytest.mark.parametrize("name", list(masks()))
def test_decode_gives_what_the_sdk_decodes(name):
    from backend.brush_rle import decode_brush_mask

    mask = masks()[name]
    height, width = mask.shape
    for rle in (encode_brush_rle(mask), editor_rle(mask), editor_rle(mask, (0, 0, 0))):
        sdk = decode_rle(rle).reshape(height, width, 4)[:, :, 3] > 0
        decoded = decode_brush_mask(rle, width, height)
        assert decoded.dtype == bool and np.array_equal(decoded, sdk) and np.array_equal(decoded, mask)


def test_decode_refuses_truncated_or_mis_sized_data():
    from backend.brush_rle import decode_brush_mask

    rle = editor_rle(np.random.default_rng(1).random((20, 30)) < 0.5)
    with pytest.raises(ValueError):
        decode_brush_mask(rle[: len(rle) // 2], 30, 20)
    with pytest.raises(ValueError):
        decode_brush_mask(rle, 31, 20)
    with pytest.raises(ValueError):
        decode_brush_mask(rle[:5], 30, 20)


def test_soft_brush_edges_count_from_half_alpha_for_serving_and_training_alike():
    """One rule (``MASK_ALPHA_MIN``) wherever a brush is read: the interactive merge (protocol) and
    the training data (datasets) see the same mask for a stroke with an anti-aliased fringe."""
    from label_studio_sdk.converter.brush import encode_rle

    from backend.protocol import mask_from_region
    from backend.training.datasets import result_mask

    alpha = np.array([[0, 1, 64, 127, 128, 200, 255, 0]], np.uint8).repeat(3, axis=0)
    rgba = np.zeros(alpha.shape + (4,), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, alpha
    region = {"type": "brushlabels", "original_width": 8, "original_height": 3,
              "value": {"format": "rle", "rle": [int(v) for v in encode_rle(rgba.ravel())], "brushlabels": ["Cat"]}}
    expected = alpha >= 128
    assert expected[0].tolist() == [False, False, False, False, True, True, True, False]
    assert np.array_equal(mask_from_region(region, 8, 3), expected)
    assert np.array_equal(result_mask(region, (3, 8)), expected)
