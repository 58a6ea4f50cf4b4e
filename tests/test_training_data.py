"""Training samples from COCO / Label Studio exports / synthetic, prompts derived from masks, examples."""

import json

import cv2
import numpy as np
import pytest
from label_studio_sdk.converter.brush import mask2rle

from backend.networks.weights import ModelConfig
from backend.training.datasets import CocoSamples, LabelStudioSamples, SyntheticSamples, result_mask
from backend.training.examples import make_example
from backend.training.mask_prompts import extreme_points, mask_box
from backend.training.synthetic import generate_scene, write_coco


def rectangle_mask(shape=(40, 60), box=(10, 5, 30, 25)):
    mask = np.zeros(shape, bool)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = True
    return mask


def test_extreme_points_exact_and_jittered():
    mask = rectangle_mask()
    left, right, top, bottom = extreme_points(mask)
    assert left[0] == 10.5 and right[0] == 29.5 and top[1] == 5.5 and bottom[1] == 24.5
    jittered = extreme_points(mask, np.random.default_rng(0), jitter=0.05)
    assert np.abs(jittered - extreme_points(mask)).max() < 20 * 0.5 + 1  # stays near the object
    assert mask_box(mask) == (10, 5, 30, 25)
    with pytest.raises(ValueError):
        extreme_points(np.zeros((4, 4), bool))


def test_coco_samples_match_generator(tmp_path):
    write_coco(tmp_path, count=1, seed=2, split="train")
    samples = CocoSamples(tmp_path / "instances.json", tmp_path / "images")
    scene = generate_scene(2, 0, "train")
    assert len(samples) == len(scene.masks)
    image, mask = samples[0]
    np.testing.assert_array_equal(image, scene.image)
    np.testing.assert_array_equal(mask, scene.masks[0])


def test_label_studio_brush_and_polygon(tmp_path):
    image = np.zeros((40, 60, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), image)
    brush = rectangle_mask()
    results = [
        {"type": "brushlabels", "original_width": 60, "original_height": 40,
         "value": {"format": "rle", "rle": mask2rle(brush.astype(np.uint8) * 255), "brushlabels": ["x"]}},
        {"type": "polygonlabels", "original_width": 60, "original_height": 40,
         "value": {"points": [[50, 50], [100, 50], [100, 100], [50, 100]], "polygonlabels": ["x"]}},
        {"type": "rectanglelabels", "value": {}},
    ]
    export = [{"id": 1, "data": {"image": "/data/upload/1/a.png"}, "annotations": [{"result": results}]}]
    (tmp_path / "export.json").write_text(json.dumps(export))
    samples = LabelStudioSamples(tmp_path / "export.json", image_dir=tmp_path)
    assert len(samples) == 2
    np.testing.assert_array_equal(samples[0][1], brush)
    np.testing.assert_array_equal(samples[1][1], rectangle_mask(box=(30, 20, 60, 40)))


def test_polygon_percent_to_pixels():
    result = {"type": "polygonlabels", "value": {"points": [[0, 0], [50, 0], [50, 50], [0, 50]]}}
    assert result_mask(result, (10, 20)).sum() == 5 * 10


def test_training_example_tensors_and_targets():
    config = ModelConfig(crop_size=64, refine_size=128)
    samples = SyntheticSamples(3, seed=0)
    example = make_example(samples[1], config, np.random.default_rng(0))
    assert example["coarse_input"].shape == (7, 64, 64)
    assert example["refine_input"].shape == (7, 128, 128)
    assert not example["coarse_input"][5:].any() and not example["refine_input"][5:].any()  # no clicks yet
    assert example["coarse_target"].shape == (1, 64, 64) and example["refine_target"].shape == (1, 128, 128)
    assert 0 < example["refine_target"].mean() < 1
    x, y = example["window"].tolist()
    assert 0 <= x <= 64 and 0 <= y <= 64
