"""The native-resolution refinement of extreme-point masks: uncertain outlines snap to the photo's
edges, thin structures stay one pixel wide, certain pixels and colourless evidence change nothing;
the EXTREME_NATIVE_REFINE setting."""

import numpy as np
import pytest

from backend.networks.prompt_crop import CropWindow
from backend.segmenters.native_refine import NativeRefinement, colour_evidence, local_colours, sample
from backend.settings import Settings


def window_over(image):
    height, width = image.shape[:2]
    return CropWindow(0, 0, width, height)


def crop_of(natural, size=96):
    """The model's (size, size) probabilities of a window over the whole image, from natural ones."""
    import cv2

    return cv2.resize(natural.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)


def ramp(crossing, width=192, slope=3.0):
    """Probabilities rising left to right across ``width`` columns, 0.5 at column ``crossing``."""
    columns = np.arange(width) + 0.5
    return np.tile(1 / (1 + np.exp(-(columns - crossing) / slope)), (width, 1))


@pytest.mark.parametrize("crossing", [92, 96, 104, 108])
def test_an_uncertain_outline_snaps_to_the_photos_edge(crossing):
    # The photo: dark left of column 100, bright from it; the model's outline is off by up to 8 px.
    image = np.zeros((192, 192, 3), np.uint8)
    image[:, 100:] = 200
    crop = crop_of(ramp(crossing))
    plain = window_over(image).paste(crop, (192, 192))
    refined = NativeRefinement().mask(image, window_over(image), crop)
    assert abs(int(np.argmax(plain[96])) - crossing) <= 1
    assert np.all(np.abs(np.argmax(refined, axis=1) - 100) <= 1)


def test_a_one_pixel_line_is_kept_one_pixel_wide_at_full_resolution():
    # A bright disc on a dark photo 768 px across, with a 1 px bright antenna 24 px long. At the
    # model's 96 px the antenna is a faint 0.3 smear, which thresholding loses; decided pixel by
    # pixel at full resolution it comes back, 1 px wide.
    image = np.full((768, 768, 3), 40, np.uint8)
    rows, cols = np.mgrid[0:768, 0:768]
    disc = (rows - 384) ** 2 + (cols - 250) ** 2 <= 120**2
    image[disc] = 220
    image[380, 360:394] = 220
    crop = np.full((96, 96), 0.02, np.float32)
    crop[crop_of(disc.astype(np.float32)) > 0.5] = 0.98
    crop[47, 46:50] = 0.3  # crop row 47 and columns 46-49 cover natural rows 376-383, columns 368-399
    plain = window_over(image).paste(crop, (768, 768))
    refined = NativeRefinement().mask(image, window_over(image), crop)
    assert not plain[380, 372:394].any()
    assert refined[380, 372:394].all()
    assert not refined[370:379, 372:400].any() and not refined[381:390, 372:400].any()
    assert not refined[380, 395:400].any()


def test_where_the_model_is_certain_the_mask_is_the_models():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (300, 240, 3), dtype=np.uint8)  # edges everywhere
    crop = np.where(rng.random((96, 96)) < 0.5, 0.03, 0.97).astype(np.float32)
    window = CropWindow(-20, 10, 250, 280)  # partly outside the photo
    refinement = NativeRefinement()
    certain = window.paste(crop, (300, 240), refinement.high) | ~window.paste(crop, (300, 240), refinement.low)
    refined = refinement.mask(image, window, crop)
    assert certain.mean() > 0.3
    np.testing.assert_array_equal(refined[certain], window.paste(crop, (300, 240))[certain])


def test_where_colours_do_not_tell_the_sides_apart_the_model_decides():
    image = np.full((192, 192, 3), 120, np.uint8)  # one colour: no colour evidence anywhere
    crop = crop_of(ramp(96))
    plain = window_over(image).paste(crop, (192, 192))
    np.testing.assert_array_equal(NativeRefinement().mask(image, window_over(image), crop), plain)


def test_colour_evidence_runs_from_the_background_to_the_foreground_colour():
    foreground, background = np.array([0.9, 0.1, 0.1]), np.array([0.1, 0.1, 0.9])
    models = np.tile(np.r_[foreground, background, 0.0, 0.0, 1.0], (4, 1)).astype(np.float32)
    colours = np.array([foreground, background, (foreground + background) / 2, foreground]).astype(np.float32)
    models[3, 8] = 0.0  # one side has no confident pixels near the last pixel
    evidence = colour_evidence(colours, models)
    assert evidence[0] > 0.99 and evidence[1] < -0.99
    assert evidence[2] == pytest.approx(0.0, abs=1e-6) and evidence[3] == 0.0
    models[:, 6:8] = 0.64  # the same means, but each side's colours spread as far as they are apart
    assert 0.2 < colour_evidence(colours, models)[0] < 0.5


def test_local_colours_average_each_sides_confident_pixels_only():
    colours = np.zeros((20, 20, 3), np.float32)
    colours[:, 10:] = 1.0
    probabilities = np.where(np.arange(20) < 10, 0.0, 1.0)[None].repeat(20, 0).astype(np.float32)
    probabilities[:, 9:11] = 0.5  # uncertain pixels count for neither side
    models = local_colours(colours, probabilities, 0.1, 0.9, radius=3)
    np.testing.assert_allclose(models[10, 10, 0:3], 1.0)
    np.testing.assert_allclose(models[10, 10, 3:6], 0.0)
    np.testing.assert_allclose(models[10, 10, 6:8], 0.0, atol=1e-5)
    assert models[10, 10, 8] == 1.0 and models[10, 0, 8] == 0.0  # column 0 sees no foreground


def test_sample_interpolates_many_pixels_and_channels():
    rng = np.random.default_rng(3)
    field = rng.random((200, 300, 9), dtype=np.float32)
    rows, cols = np.nonzero(np.ones((200, 300), bool))  # 60000 pixels: several remap rows of 1024
    np.testing.assert_allclose(sample(field, rows.astype(np.float32), cols.astype(np.float32)),
                               field.reshape(-1, 9), atol=1e-5)
    halfway = sample(field, np.array([10.0]), np.array([20.5]))
    np.testing.assert_allclose(halfway[0], (field[10, 20] + field[10, 21]) / 2, atol=1e-3)


@pytest.mark.parametrize(("value", "expected"), [(None, False), ("", False), ("on", True), ("TRUE", True),
                                                 ("1", True), ("off", False), ("no", False), (" 0 ", False)])
def test_the_setting_is_on_or_off(value, expected):
    env = {} if value is None else {"EXTREME_NATIVE_REFINE": value}
    assert Settings.from_env(env).extreme_native_refine is expected


def test_a_setting_that_is_neither_on_nor_off_is_refused_by_name():
    with pytest.raises(ValueError, match="EXTREME_NATIVE_REFINE must be on or off.*'enabled'"):
        Settings.from_env({"EXTREME_NATIVE_REFINE": "enabled"})
