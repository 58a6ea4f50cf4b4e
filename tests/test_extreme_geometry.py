"""Crop geometry and prompt channels: points land on the right pixels, margins, image borders."""

import numpy as np
import pytest

from backend.networks.prompt_crop import (
    CropWindow,
    box_channel,
    box_with_clicks,
    crop_window,
    network_input,
    point_heatmap,
)


def test_window_is_box_plus_margin_of_larger_side():
    window = crop_window((100, 50, 200, 150), margin=0.1)
    assert (window.x0, window.y0, window.x1, window.y1) == (90, 40, 210, 160)


def test_thin_box_is_widened_to_half_its_length():
    window = crop_window((100, 0, 104, 200), margin=0.0)
    assert window.height == 200 and window.width == 100
    assert window.x0 + window.width / 2 == pytest.approx(102)


def test_tiny_box_gets_minimum_side():
    window = crop_window((10, 10, 11, 11), margin=0.15, min_side=16)
    assert window.width >= 16 and window.height >= 16


def test_invalid_box_is_rejected():
    with pytest.raises(ValueError):
        crop_window((5, 5, 1, 1), margin=0.1)
    with pytest.raises(ValueError):
        crop_window((0, 0, float("nan"), 1), margin=0.1)


def test_points_map_to_crop_pixels():
    window = CropWindow(10, 20, 110, 220)  # 100 x 200 natural pixels -> 50 x 50 crop
    crop = window.to_crop(np.array([[10, 20], [110, 220], [60, 120]]), 50)
    np.testing.assert_allclose(crop, [[0, 0], [50, 50], [25, 25]])


def test_heatmap_peaks_at_the_point_pixel():
    heatmap = point_heatmap(np.array([[10.5, 30.5]]), 64)
    row, col = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    assert (row, col) == (30, 10)
    assert heatmap[30, 10] == pytest.approx(1.0)
    assert heatmap[0, 63] < 1e-3


def test_box_channel_covers_pixels_with_centres_inside():
    channel = box_channel((2, 3, 5, 4), 8)
    assert channel.sum() == 3  # columns 2..4, row 3
    assert channel[3, 2:5].all()


def test_extract_pads_outside_the_image():
    image = np.full((10, 10, 3), 200, np.uint8)
    crop = CropWindow(-10, 0, 10, 20).extract(image, 20)
    assert (crop[:, :10] == 128).all()  # left half lies outside the image
    assert (crop[:10, 10:] == 200).all()


def test_extract_then_paste_roundtrips_a_mask_at_the_border():
    mask = np.zeros((60, 90), np.float32)
    mask[0:20, 70:90] = 1  # object in the top-right corner
    window = crop_window((70, 0, 90, 20), margin=0.3)
    assert window.x1 > 90 and window.y0 < 0
    back = window.paste(window.extract(mask, 64, pad_value=0.0), mask.shape)
    assert back.dtype == bool
    np.testing.assert_array_equal(back, mask > 0.5)


def test_paste_of_window_outside_image_is_empty():
    back = CropWindow(200, 200, 220, 220).paste(np.ones((8, 8), np.float32), (50, 50))
    assert back.shape == (50, 50) and not back.any()


def test_network_input_channels():
    crop = np.zeros((32, 32, 3), np.uint8)
    x = network_input(crop, np.array([[16.5, 0.5]]), (0, 0, 32, 32))
    assert x.shape == (7, 32, 32)
    assert x[:3].min() == pytest.approx(-1.0)
    assert np.unravel_index(np.argmax(x[3]), (32, 32)) == (0, 16)
    assert x[4].all()
    assert not x[5:].any()  # no correction clicks


def test_network_input_click_channels():
    crop = np.zeros((32, 32, 3), np.uint8)
    x = network_input(crop, np.zeros((0, 2)), (0, 0, 32, 32), positive=np.array([[4.5, 20.5], [30.5, 2.5]]),
                      negative=np.array([[10.5, 10.5]]))
    assert not x[3].any()  # a box prompt: no extreme points
    assert x[5, 20, 4] == pytest.approx(1.0) and x[5, 2, 30] == pytest.approx(1.0)
    assert x[5, 10, 10] < 0.01
    assert np.unravel_index(np.argmax(x[6]), (32, 32)) == (10, 10)
    np.testing.assert_array_equal(x[6], point_heatmap(np.array([[10.5, 10.5]]), 32))  # drawn as extreme points are


def test_clicks_inside_the_window_leave_the_box_alone():
    box = (100.0, 100.0, 200.0, 160.0)
    window = crop_window(box, 0.15)
    inside = np.array([[window.x0 + 1, window.y0 + 1], [150, 130]], np.float32)
    assert box_with_clicks(box, inside, 0.15) == box
    assert box_with_clicks(box, np.zeros((0, 2)), 0.15) == box


def test_a_positive_click_outside_the_window_grows_the_box_to_contain_it():
    box = (100.0, 100.0, 200.0, 160.0)
    grown = box_with_clicks(box, np.array([[150, 130], [260, 40]], np.float32), 0.15)
    assert grown == (100.0, 40.0, 260.0, 160.0)
    window = crop_window(grown, 0.15)
    assert window.x0 < 100 and window.x1 > 260 and window.y0 < 40 and window.y1 > 160
