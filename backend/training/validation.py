"""Validation metrics: mean IoU of a segmenter over samples, from exact extreme points or tight boxes,
and after simulated correction clicks (``correction_clicks.next_click``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from backend.prompts import Prompt, PromptKind
from backend.training.correction_clicks import next_click, with_click
from backend.training.datasets import Sample
from backend.training.mask_prompts import extreme_points, mask_box


def iou(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of two (H, W) bool masks; 1.0 when both are empty."""
    union = np.logical_or(predicted, truth).sum()
    return float(np.logical_and(predicted, truth).sum() / union) if union else 1.0


def prompt_for(mask: np.ndarray, kind: PromptKind) -> Prompt:
    """The ideal annotator's prompt for a ground-truth mask: exact extreme points, or the tight box."""
    if kind == PromptKind.EXTREME:
        points = extreme_points(mask)
        return Prompt(kind=kind, label="object", points=points, point_labels=np.ones(4, np.int64))
    if kind == PromptKind.BOX:
        return Prompt(kind=kind, label="object", box=mask_box(mask))
    raise ValueError(f"no ideal prompt for {kind}")


def evaluate_miou(
    segmenter,
    samples: Sequence[Sample],
    kind: PromptKind = PromptKind.EXTREME,
    progress: Callable[[int, int], None] | None = None,
) -> float:
    """Mean IoU of ``segmenter.segment(image, prompt).mask`` against each sample's mask, with the
    ideal `kind` prompt derived from that mask. `segmenter` is anything with ``segment``."""
    scores = instance_ious(segmenter, samples, kind, progress)
    if not scores:
        raise ValueError("no validation samples")
    return float(np.mean(scores))


def instance_ious(
    segmenter,
    samples: Sequence[Sample],
    kind: PromptKind = PromptKind.EXTREME,
    progress: Callable[[int, int], None] | None = None,
) -> list[float]:
    """The IoU of each sample, as ``evaluate_miou`` averages them (paired comparisons need each one)."""
    return [iou(predicted, mask) for predicted, (_, mask) in zip(instance_masks(segmenter, samples, kind, progress), samples)]


def instance_masks(
    segmenter,
    samples: Sequence[Sample],
    kind: PromptKind = PromptKind.EXTREME,
    progress: Callable[[int, int], None] | None = None,
) -> list[np.ndarray]:
    """The segmenter's mask of each sample from the ideal `kind` prompt of the sample's mask."""
    masks = []
    for index, (image, mask) in enumerate(samples):
        masks.append(segmenter.segment(_Pixels(image), prompt_for(mask, kind)).mask)
        if progress is not None:
            progress(index + 1, len(samples))
    return masks


def click_curve(
    segmenter,
    samples: Sequence[Sample],
    clicks: int,
    kind: PromptKind = PromptKind.EXTREME,
    jitter_px: float = 2.0,
    seed: int = 0,
) -> list[float]:
    """Mean IoU after 0, 1, ..., `clicks` simulated correction clicks: the ideal `kind` prompt, then
    each click at the largest error of the mask so far (jittered by up to `jitter_px`), all clicks
    sent with the prompt. A sample whose mask is exact keeps its IoU for the clicks it needs no more."""
    if not len(samples):
        raise ValueError("no validation samples")
    rng = np.random.default_rng(seed)
    curves = []
    for image, mask in samples:
        prompt = prompt_for(mask, kind)
        pixels = _Pixels(image)
        predicted = segmenter.segment(pixels, prompt).mask
        curve = [iou(predicted, mask)]
        for _ in range(clicks):
            click = next_click(predicted, mask, rng, jitter_px)
            if click is not None:
                prompt = with_click(prompt, click.x, click.y, click.positive)
                predicted = segmenter.segment(pixels, prompt).mask
            curve.append(iou(predicted, mask))
        curves.append(curve)
    return [float(v) for v in np.mean(curves, axis=0)]


class _Pixels:
    """The minimal image object segmenters accept (``.array``)."""

    def __init__(self, array: np.ndarray):
        self.array = array
