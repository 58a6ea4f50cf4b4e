"""Correction clicks through the extreme-point model: the prompt contract, the click channels reaching
both networks, the window growing for a positive click outside it, and weights from before the click
channels loading with zero click kernels (the same answers without clicks)."""

import numpy as np
import pytest
import torch

from backend.checksums import sha256_of
from backend.networks.weights import MANIFEST, ModelConfig, load_weights, read_manifest, save_weights, write_manifest
from backend.prompts import Prompt, PromptError, PromptKind
from backend.segmenters.extreme import ExtremeSegmenter, prompt_geometry

torch.set_num_threads(1)
TINY = ModelConfig(crop_size=64, refine_size=128)
EXTREME = np.array([[20, 50], [80, 50], [50, 25], [50, 75]], np.float32)
POSITIVE, NEGATIVE = 5, 6  # the click channels of the coarse input (the refinement input: +1)


class Pixels:
    array = np.random.default_rng(0).integers(0, 256, (100, 120, 3), dtype=np.uint8)


def extreme_prompt(clicks=(), labels=()):
    points = np.vstack([EXTREME, np.array(clicks, np.float32).reshape(-1, 2)])
    return Prompt(PromptKind.EXTREME, "thing", points=points, point_labels=np.array([1, 1, 1, 1, *labels]))


def random_segmenter(click_kernels: bool) -> ExtremeSegmenter:
    torch.manual_seed(0)
    coarse, refine = TINY.build(pretrained=False)
    with torch.no_grad():
        for conv, first_click in ((coarse.stem[0], POSITIVE), (refine.enc1[0][0], POSITIVE + 1)):
            conv.weight.normal_(0, 0.5)
            if not click_kernels:
                conv.weight[:, first_click:] = 0
        refine.residual.weight.normal_(0, 0.5)
    return ExtremeSegmenter(coarse, refine, TINY, "test")


def test_extreme_prompt_geometry_splits_extreme_points_and_clicks():
    geometry = prompt_geometry(extreme_prompt([[30, 40], [60, 60], [90, 90]], [1, 0, 1]))
    np.testing.assert_array_equal(geometry.points, EXTREME)
    assert geometry.box == (20.0, 25.0, 80.0, 75.0)  # from the extreme points only
    np.testing.assert_array_equal(geometry.positive, [[30, 40], [90, 90]])
    np.testing.assert_array_equal(geometry.negative, [[60, 60]])


def test_box_prompt_points_are_correction_clicks():
    prompt = Prompt(PromptKind.BOX, "thing", box=(80, 75, 20, 25), points=np.array([[50, 50]], np.float32),
                    point_labels=np.array([0]))
    geometry = prompt_geometry(prompt)
    assert geometry.box == (20.0, 25.0, 80.0, 75.0) and len(geometry.points) == 0
    assert len(geometry.positive) == 0 and geometry.negative.tolist() == [[50, 50]]


@pytest.mark.parametrize(
    "prompt, message",
    [
        (Prompt(PromptKind.EXTREME, "t", points=EXTREME[:3], point_labels=np.ones(3, np.int64)), "needs 4 points"),
        (Prompt(PromptKind.EXTREME, "t", points=EXTREME, point_labels=np.ones(5, np.int64)), "4 points but 5"),
        (Prompt(PromptKind.EXTREME, "t", points=EXTREME), "4 points but 0"),
        (Prompt(PromptKind.EXTREME, "t", points=EXTREME, point_labels=np.array([1, 1, 0, 1])), "must be positive"),
        (extreme_prompt([[30, 40]], [2]), "1 \\(positive\\) or 0"),
        (extreme_prompt([[np.nan, 40]], [1]), "finite"),
        (Prompt(PromptKind.BOX, "t", box=(0, 0, 9, 9), points=EXTREME[:1]), "1 points but 0"),
        (Prompt(PromptKind.POINTS, "t", points=EXTREME, point_labels=np.ones(4, np.int64)), "EXTREME or BOX"),
    ],
    ids=["three-points", "extra-labels", "no-labels", "negative-extreme", "label-2", "nan", "box-no-labels", "points"],
)
def test_malformed_prompts_are_prompt_errors(prompt, message):
    with pytest.raises(PromptError, match=message):
        prompt_geometry(prompt)


def test_click_channels_reach_both_networks_at_the_click():
    segmenter = random_segmenter(click_kernels=True)
    seen = {}

    def keep_input(stage):
        def hook(module, args):
            seen[stage] = args[0]

        return hook

    segmenter.coarse.stem.register_forward_pre_hook(keep_input("coarse"))
    segmenter.refine.enc1.register_forward_pre_hook(keep_input("refine"))
    window, _ = segmenter.predict_crop(Pixels.array, prompt_geometry(extreme_prompt([[50, 50], [30, 40]], [1, 0])))
    for stage, offset, size in (("coarse", 0, TINY.crop_size), ("refine", 1, TINY.refine_size)):
        x = seen[stage][0]  # the unmirrored half of the batch
        assert x.shape[0] == 7 + offset
        for channel, (cx, cy) in ((POSITIVE + offset, (50, 50)), (NEGATIVE + offset, (30, 40))):
            u, v = window.to_crop(np.array([[cx, cy]]), size)[0]
            row, col = np.unravel_index(int(torch.argmax(x[channel])), x[channel].shape)
            assert abs(col + 0.5 - u) <= 1 and abs(row + 0.5 - v) <= 1


def test_clicks_change_the_answer_when_click_kernels_are_trained():
    segmenter = random_segmenter(click_kernels=True)
    plain = segmenter.predict_crop(Pixels.array, prompt_geometry(extreme_prompt()))[1]
    clicked = segmenter.predict_crop(Pixels.array, prompt_geometry(extreme_prompt([[50, 50]], [1])))[1]
    assert np.abs(plain - clicked).max() > 1e-3


def test_a_positive_click_outside_the_window_grows_it():
    segmenter = random_segmenter(click_kernels=True)
    plain_window, _ = segmenter.predict_crop(Pixels.array, prompt_geometry(extreme_prompt()))
    window, _ = segmenter.predict_crop(Pixels.array, prompt_geometry(extreme_prompt([[115, 95]], [1])))
    assert plain_window.x1 < 115 and window.x1 > 115 and window.y1 > 95
    negative_window, _ = segmenter.predict_crop(Pixels.array, prompt_geometry(extreme_prompt([[115, 95]], [0])))
    assert negative_window == plain_window


def test_weights_from_before_the_click_channels_load_with_zero_click_kernels(tmp_path):
    reference = random_segmenter(click_kernels=False)
    save_weights(tmp_path, reference.coarse, reference.refine, TINY, "old", {})
    # Rewrite the files as the 5- and 6-input networks saved them, and their manifest's sha256.
    manifest = read_manifest(tmp_path)
    for stage, key, inputs in (("coarse", "stem.0.weight", 5), ("refine", "enc1.0.0.weight", 6)):
        path = tmp_path / manifest["files"][stage]["file"]
        state = torch.load(path, weights_only=True)
        state[key] = state[key][:, :inputs].clone()
        torch.save(state, path)
        manifest["files"][stage]["sha256"] = sha256_of(path)
    write_manifest(tmp_path, manifest)
    assert (tmp_path / MANIFEST).is_file()

    coarse, refine, _, _ = load_weights(tmp_path)
    assert coarse.stem[0].weight.shape[1] == 7 and refine.enc1[0][0].weight.shape[1] == 8
    assert not coarse.stem[0].weight[:, POSITIVE:].any() and not refine.enc1[0][0].weight[:, POSITIVE + 1 :].any()
    old = ExtremeSegmenter.load(tmp_path)
    expected = reference.segment(Pixels, extreme_prompt())
    answer = old.segment(Pixels, extreme_prompt())
    np.testing.assert_array_equal(answer.mask, expected.mask)
    # Clicks reach zero kernels: the same answer with a click inside the window.
    clicked = old.segment(Pixels, extreme_prompt([[50, 50], [40, 40]], [1, 0]))
    np.testing.assert_array_equal(clicked.mask, expected.mask)
