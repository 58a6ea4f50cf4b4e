"""Training examples: one (image, mask) sample -> network inputs and targets.

Each example simulates an annotator's prompt on the ground-truth mask: jittered extreme points
(DEXTR-style) or, with probability ``BOX_FRACTION``, a jittered box; then crops the prompt's
window at both stage resolutions with a random margin, applies photometric augmentation and
picks the refinement training window (a half-size square, usually on the mask's outline).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from backend.networks.prompt_crop import crop_window, network_input
from backend.networks.weights import ModelConfig
from backend.training.datasets import Sample
from backend.training.mask_prompts import extreme_points, mask_box

BOX_FRACTION = 0.3
POINT_JITTER = 0.02  # fraction of the object's extent within which a click counts as "extreme"
BOX_JITTER = 0.03  # std of each box side's error, fraction of the box side
MARGIN_RANGE = (0.08, 0.25)
BOUNDARY_WINDOW_FRACTION = 0.8


class TrainingExamples(torch.utils.data.Dataset):
    """Examples of `samples`, randomised by (seed, epoch, index) so every epoch differs reproducibly."""

    def __init__(self, samples, config: ModelConfig, seed: int, epoch: int = 0, augment: bool = True):
        self.samples, self.config, self.seed, self.epoch, self.augment = samples, config, seed, epoch, augment

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return make_example(self.samples[index], self.config, rng, self.augment)


def make_example(sample: Sample, config: ModelConfig, rng: np.random.Generator, augment: bool = True) -> dict:
    """Tensors: coarse_input (7, S, S), refine_input (7, R, R) (RGB, heatmap, box, and the two click
    channels, empty: ``simulated_corrections`` adds clicks to a batch with the model), coarse_target
    (1, S, S) and refine_target (1, R, R) in [0, 1], window (2,) int64 top-left (x, y) of the
    R/2-sized refinement training window."""
    image, mask = sample
    if augment and rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    if rng.random() < BOX_FRACTION:
        points = np.zeros((0, 2), np.float32)
        box = mask_box(mask, rng, BOX_JITTER if augment else 0.0)
    else:
        points = extreme_points(mask, rng if augment else None, POINT_JITTER)
        (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
        box = (float(x0), float(y0), float(x1), float(y1))
    window = crop_window(box, rng.uniform(*MARGIN_RANGE) if augment else config.margin)
    photometric = _photometric(rng) if augment else None
    out = {}
    for stage, size in (("coarse", config.crop_size), ("refine", config.refine_size)):
        crop = window.extract(np.ascontiguousarray(image), size)
        if photometric is not None:
            crop = photometric(crop)
        out[f"{stage}_input"] = torch.from_numpy(network_input(crop, window.to_crop(points, size), window.box_to_crop(box, size)))
        target = window.extract(np.ascontiguousarray(mask, np.float32), size, pad_value=0.0)
        out[f"{stage}_target"] = torch.from_numpy(target)[None]
    out["window"] = torch.from_numpy(_refine_window(out["refine_target"][0].numpy(), rng))
    return out


def _photometric(rng: np.random.Generator):
    """A random brightness/contrast/saturation/gamma change, applied identically to both crops."""
    brightness, contrast = rng.uniform(-25, 25), rng.uniform(0.7, 1.3)
    saturation, gamma = rng.uniform(0.6, 1.4), rng.uniform(0.75, 1.33)

    def apply(crop: np.ndarray) -> np.ndarray:
        x = crop.astype(np.float32)
        grey = x.mean(axis=2, keepdims=True)
        x = grey + (x - grey) * saturation
        x = (x - 128) * contrast + 128 + brightness
        x = 255 * (np.clip(x, 0, 255) / 255) ** gamma
        return x.astype(np.uint8)

    return apply


def _refine_window(target: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Top-left (x, y) of a square window of half the crop side, centred on a random outline pixel
    of the (R, R) target most of the time, else anywhere."""
    size = target.shape[0]
    half = size // 2
    inside = (target > 0.5).astype(np.uint8)
    outline = inside ^ cv2.erode(inside, np.ones((3, 3), np.uint8))
    ys, xs = np.nonzero(outline)
    if len(xs) and rng.random() < BOUNDARY_WINDOW_FRACTION:
        i = rng.integers(len(xs))
        x, y = xs[i] - half // 2, ys[i] - half // 2
    else:
        x, y = rng.integers(0, size - half + 1, size=2)
    return np.clip([x, y], 0, size - half).astype(np.int64)
