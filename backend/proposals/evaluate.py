"""How good a proposal model is on annotated tasks, and the threshold that serves it best.

A proposal is correct when its box overlaps an annotated object of its label with IoU >= 0.5 that
no more confident proposal took (greedy, most confident first, as COCO matches). Recall: annotated
objects found; precision: proposals that are correct. Objects of labels the model does not know,
and those ``annotations.prepare`` leaves out (empty, tiny), are not counted. A model with a labeller
labels each proposal from its mask, as serving does: ``mask_of(image, box)`` makes it (the
extreme-point model's box mode in a training job).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Iterable

import numpy as np
from torchvision.ops import box_iou
import torch

from backend.proposals.annotations import MAX_OBJECTS, check_image, geometry_box
from backend.proposals.calibration import Calibration
from backend.proposals.model import DEFAULT_THRESHOLD, FLOOR, ProposalModel

MATCH_IOU = 0.5
# On calibrated scores the threshold that maximises F1 is half that F1 (Lipton et al. 2014): 0.3
# for the F1 of about 0.6 a small project reaches; it weighs as much as this many held-out objects.
PRIOR_THRESHOLD = 0.3
PRIOR_OBJECTS = 10

# (image HxWx3 uint8, box x0, y0, x1, y1) -> the object's mask (HxW bool), as serving would make it
MaskOf = Callable[[np.ndarray, tuple], np.ndarray]


@dataclass
class ImageResult:
    """One image's proposals (scores descending, above the floor) and annotated objects, natural px;
    ``correct[i]``: proposal i matched an object, with box IoU ``matched_iou[i]``."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    truth_boxes: np.ndarray
    truth_labels: np.ndarray
    correct: np.ndarray
    matched_iou: np.ndarray


def collect(model: ProposalModel, examples: Iterable[tuple], mask_of: MaskOf | None = None) -> list[ImageResult]:
    """Every example's proposals down to the floor, matched against its annotated objects."""
    if model.labeller is not None and mask_of is None:
        raise ValueError("a proposal model with a labeller labels objects by their masks: pass mask_of")
    index = {label: i for i, label in enumerate(model.labels)}
    results = []
    for image, objects in examples:
        image = check_image(image)
        truth = [(index[label], geometry_box(geometry, image.shape[:2])[0]) for label, geometry in objects if label in index]
        truth = [(label, box) for label, box in truth if box is not None]
        boxes, scores, labels = (a[:MAX_OBJECTS] for a in model.detections(image))  # serving's cap
        if model.labeller is not None and len(boxes):
            masks = [mask_of(image, tuple(float(v) for v in box)) for box in boxes]
            labels = model.labeller.probabilities(image, masks).argmax(axis=1)
        truth_boxes = np.array([box for _, box in truth], np.float64).reshape(-1, 4)
        truth_labels = np.array([label for label, _ in truth], np.int64)
        correct, matched_iou = _match(boxes, labels, truth_boxes, truth_labels)
        results.append(ImageResult(boxes, scores, labels, truth_boxes, truth_labels, correct, matched_iou))
    return results


def _match(boxes, labels, truth_boxes, truth_labels) -> tuple[np.ndarray, np.ndarray]:
    correct = np.zeros(len(boxes), bool)
    matched_iou = np.zeros(len(boxes))
    if len(boxes) == 0 or len(truth_boxes) == 0:
        return correct, matched_iou
    ious = box_iou(torch.from_numpy(boxes), torch.from_numpy(truth_boxes)).numpy()
    ious[labels[:, None] != truth_labels[None, :]] = 0
    taken = np.zeros(len(truth_boxes), bool)
    for i in range(len(boxes)):  # most confident first
        candidates = np.where(taken, 0, ious[i])
        j = int(candidates.argmax())
        if candidates[j] >= MATCH_IOU:
            taken[j], correct[i], matched_iou[i] = True, True, candidates[j]
    return correct, matched_iou


def recalibrated(results: list[ImageResult], calibration: Calibration) -> list[ImageResult]:
    """The results with raw scores (collected under the identity calibration) mapped by ``calibration``."""
    return [replace(r, scores=calibration.apply(r.scores)) for r in results]


def figures(results: list[ImageResult], threshold: float, labels: tuple[str, ...] = ()) -> dict:
    """recall, precision, f1, counts, mean box IoU of correct proposals, and per label the same two."""
    kept = [r.scores >= threshold for r in results]
    found = sum(int(r.correct[k].sum()) for r, k in zip(results, kept))
    proposed = sum(int(k.sum()) for k in kept)
    objects = sum(len(r.truth_boxes) for r in results)
    ious = np.concatenate([r.matched_iou[k & r.correct] for r, k in zip(results, kept)] or [np.zeros(0)])
    out = {
        **_rates(found, proposed, objects), "threshold": float(threshold), "images": len(results),
        "objects": objects, "proposals": proposed, "correct": found,
        "mean_box_iou": float(ious.mean()) if len(ious) else 0.0,
    }
    if labels:
        out["per_label"] = {}
        for index, name in enumerate(labels):
            found_l = sum(int((r.correct & k & (r.labels == index)).sum()) for r, k in zip(results, kept))
            proposed_l = sum(int((k & (r.labels == index)).sum()) for r, k in zip(results, kept))
            objects_l = sum(int((r.truth_labels == index).sum()) for r in results)
            out["per_label"][name] = {**_rates(found_l, proposed_l, objects_l), "objects": objects_l}
    return out


def _rates(found: int, proposed: int, objects: int) -> dict:
    # No object and no proposal is a perfect answer (a true negative), not a zero.
    recall = found / objects if objects else 1.0
    precision = found / proposed if proposed else (1.0 if found == objects else 0.0)
    f1 = 2 * recall * precision / (recall + precision) if recall + precision else 0.0
    return {"recall": recall, "precision": precision, "f1": f1}


def best_threshold(results: list[ImageResult]) -> float:
    """The threshold with the best F1 over ``results`` (the higher one on ties: fewer wrong proposals),
    halfway to the next lower score so it is not balanced on one proposal's score;
    ``DEFAULT_THRESHOLD`` when there is no annotated object to find."""
    objects = sum(len(r.truth_boxes) for r in results)
    if objects == 0:
        return DEFAULT_THRESHOLD
    scores = np.concatenate([r.scores for r in results] or [np.zeros(0)])
    correct = np.concatenate([r.correct for r in results] or [np.zeros(0, bool)])
    if len(scores) == 0:
        return DEFAULT_THRESHOLD
    order = np.argsort(-scores, kind="stable")
    scores, correct = scores[order], correct[order]
    found = np.cumsum(correct)
    proposed = np.arange(1, len(scores) + 1)
    f1 = 2 * found / (proposed + objects)
    # Thresholds sit between distinct scores: only the last of a run of equal scores is a choice.
    last_of_run = np.append(scores[1:] != scores[:-1], True)
    f1 = np.where(last_of_run, f1, -1)
    best = int(np.flatnonzero(f1 == f1.max())[0])
    below = scores[best + 1] if best + 1 < len(scores) else FLOOR
    return float((scores[best] + max(below, FLOOR)) / 2)


def heldout_threshold(results: list[ImageResult]) -> float:
    """The threshold for a model from its held-out results: ``best_threshold``, pulled towards
    ``PRIOR_THRESHOLD`` as if ``PRIOR_OBJECTS`` more objects had chosen it. A held-out set of a task or
    two picks its best F1 by luck, and too high (a top proposal or two that happen to be right beat
    every lower cut)."""
    objects = sum(len(r.truth_boxes) for r in results)
    if objects == 0:
        return PRIOR_THRESHOLD
    return (objects * best_threshold(results) + PRIOR_OBJECTS * PRIOR_THRESHOLD) / (objects + PRIOR_OBJECTS)


def evaluate_proposals(model: ProposalModel, examples: Iterable[tuple], threshold: float | None = None,
                       mask_of: MaskOf | None = None) -> dict:
    """Figures (``figures``) of ``model``'s proposals on annotated examples at ``threshold`` (its own when None)."""
    threshold = model.threshold if threshold is None else threshold
    return figures(collect(model, examples, mask_of), threshold, model.labels)


def choose_threshold(model: ProposalModel, heldout: Iterable[tuple], mask_of: MaskOf | None = None) -> float:
    """The confidence threshold for ``model`` from held-out annotated examples (``heldout_threshold``)."""
    return heldout_threshold(collect(model, heldout, mask_of))
