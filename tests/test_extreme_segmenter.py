"""The committed default weights: sha256 and budget match the manifest; segmentation near a border,
filling the frame, tiny objects and from a box, on synthetic objects whose mask is known."""

import json
import shutil

import numpy as np
import pytest
import torch

from backend.networks.weights import MANIFEST, STAGES, WeightsError, parameter_count, sha256_of
from backend.prompts import Prompt, PromptKind
from backend.segmenters.extreme import ExtremeSegmenter
from backend.settings import Settings
from backend.training.mask_prompts import extreme_points, mask_box
from backend.training.validation import iou

torch.set_num_threads(1)
WEIGHTS = Settings().extreme_weights


class Pixels:
    def __init__(self, array):
        self.array = array


@pytest.fixture(scope="module")
def segmenter():
    return ExtremeSegmenter.load(WEIGHTS)


def scene(shape, centre, axes):
    """A red ellipse on grey noise: (image (H, W, 3) uint8, mask (H, W) bool)."""
    rng = np.random.default_rng(0)
    height, width = shape
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    mask = ((xs - centre[0]) / axes[0]) ** 2 + ((ys - centre[1]) / axes[1]) ** 2 <= 1
    image = rng.normal(110, 20, (height, width, 3)).clip(0, 255).astype(np.uint8)
    image[mask] = (210, 40, 30)
    return image, mask


def extreme_prompt(mask):
    points = extreme_points(mask)[[2, 0, 3, 1]]  # any order: top, left, bottom, right
    return Prompt(kind=PromptKind.EXTREME, label="thing", points=points, point_labels=np.ones(4, np.int64))


def test_committed_weights_match_manifest():
    manifest = json.loads((WEIGHTS / MANIFEST).read_text())
    segmenter = ExtremeSegmenter.load(WEIGHTS)
    assert segmenter.version == manifest["version"]
    for stage, module in zip(STAGES, (segmenter.coarse, segmenter.refine)):
        entry = manifest["files"][stage]
        path = WEIGHTS / entry["file"]
        assert sha256_of(path) == entry["sha256"]
        assert path.stat().st_size <= 40 * 1024 * 1024
        # The file's own parameters (weights from before the click channels have fewer than the loaded module).
        stored = torch.load(path, weights_only=True)
        assert sum(stored[name].numel() for name, _ in module.named_parameters()) == entry["parameters"]
        assert parameter_count(module) - entry["parameters"] in (0, 2 * 32 * 9)  # 0, or 2 click inputs x 32 kernels of 3x3
    assert manifest["files"]["coarse"]["parameters"] + manifest["files"]["refine"]["parameters"] <= 9_000_000


def test_tampered_weights_are_refused(tmp_path):
    copy = tmp_path / "weights"
    shutil.copytree(WEIGHTS, copy)
    data = bytearray((copy / "refine.pt").read_bytes())
    data[-100] ^= 0xFF
    (copy / "refine.pt").write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256"):
        ExtremeSegmenter.load(copy)


@pytest.mark.parametrize(
    "shape, centre, axes",
    [
        ((240, 320), (300, 30), (60, 45)),  # cut by the top-right corner
        ((200, 260), (130, 100), (128, 98)),  # fills the frame
        ((300, 400), (200, 150), (6, 5)),  # tiny
    ],
    ids=["near-border", "fills-frame", "tiny"],
)
def test_segment_from_extreme_points(segmenter, shape, centre, axes):
    image, mask = scene(shape, centre, axes)
    result = segmenter.segment(Pixels(image), extreme_prompt(mask))
    assert result.mask.shape == shape and result.mask.dtype == bool
    assert iou(result.mask, mask) > 0.8
    assert 0.5 <= result.score <= 1.0
    assert result.label == "thing" and result.model == f"extreme-{segmenter.version}"


def test_segment_from_box(segmenter):
    image, mask = scene((240, 320), (150, 120), (70, 40))
    result = segmenter.segment(Pixels(image), Prompt(kind=PromptKind.BOX, label="thing", box=mask_box(mask)))
    assert iou(result.mask, mask) > 0.8
    assert list(result.stage_ms) == ["coarse", "refine", "paste"] and all(ms > 0 for ms in result.stage_ms.values())


def test_bad_prompts_are_refused(segmenter):
    image, _ = scene((50, 50), (25, 25), (10, 10))
    with pytest.raises(ValueError, match="needs 4 points"):
        segmenter.segment(Pixels(image), Prompt(kind=PromptKind.EXTREME, label="x", points=np.zeros((3, 2)),
                                                point_labels=np.ones(3, np.int64)))
    with pytest.raises(ValueError, match="EXTREME or BOX"):
        segmenter.segment(Pixels(image), Prompt(kind=PromptKind.POINTS, label="x", points=np.zeros((1, 2))))
    with pytest.raises(ValueError, match="uint8"):
        segmenter.segment(Pixels(image.astype(np.float32)), extreme_prompt(np.pad(np.ones((5, 5), bool), 10)))


def test_mirrored_image_gives_the_mirrored_mask(segmenter):
    # The model sees each crop and its mirror image, so a left-right asymmetric object segments the same
    # whichever way it faces.
    image, mask = scene((240, 320), (140, 120), (90, 50))
    image[100:140, 60:120] = (30, 160, 40)  # a green patch on the left part of the ellipse
    result = segmenter.segment(Pixels(image), extreme_prompt(mask))
    mirrored = segmenter.segment(Pixels(image[:, ::-1].copy()), extreme_prompt(mask[:, ::-1]))
    assert (mirrored.mask != result.mask[:, ::-1]).sum() <= 0.001 * mask.sum()


def test_with_the_native_refinement_the_mask_is_refined_at_the_photos_resolution(segmenter):
    image, mask = scene((240, 320), (160, 120), (70, 50))
    refined = ExtremeSegmenter.load(WEIGHTS, native_refine=True)
    result = refined.segment(Pixels(image), extreme_prompt(mask))
    assert result.mask.shape == mask.shape and iou(result.mask, mask) > 0.9
    assert "native" in result.stage_ms and "paste" not in result.stage_ms
    assert segmenter.native is None and "paste" in segmenter.segment(Pixels(image), extreme_prompt(mask)).stage_ms
