"""The study's comparison: every method segments every object from a prompt derived from its
ground-truth mask; IoU, boundary F-score, the fraction of the mask outside the object and
wall-clock latency (with the segmenter's own per-stage times) are recorded per object and method."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
from tqdm import tqdm

from backend.coco import EvalImage, EvalObject
from backend.evaluation.clicks import ClickOutcome, ClickProtocol, correct
from backend.evaluation.mask_metrics import BOUNDARY_TOLERANCE_PX, boundary_f_score, outside_fraction
from backend.prompts import LoadedImage, Prompt, PromptKind, Segmentation
from backend.training.mask_prompts import extreme_points, mask_box
from backend.training.validation import iou

Box = tuple[float, float, float, float]
# The study's loose box: each side 20% longer than the tight box's, same centre, clipped to the image.
LOOSE_BOX_SCALE = 1.2


class Segmenter(Protocol):
    model_name: str  # e.g. "sam-vit_b", "extreme-v3", "grabcut"

    def segment(self, image: LoadedImage, prompt: Prompt) -> Segmentation: ...


@dataclass(frozen=True)
class ObjectPrompts:
    """What an annotator would give for one object, in natural-image pixels."""

    extreme: Prompt
    tight_box: Prompt
    loose_box: Prompt


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    segmenter: str  # which segmenter runs it: "extreme", "sam" or "grabcut"
    prompt: Callable[[ObjectPrompts], Prompt]


METHODS = (
    Method("custom-extreme", "custom model from 4 extreme points", "extreme", lambda p: p.extreme),
    Method("sam-box", "SAM from the tight box", "sam", lambda p: p.tight_box),
    Method("sam-loose-box", "SAM from the loose box (each side 20% longer, same centre)", "sam", lambda p: p.loose_box),
    Method("custom-box", "custom model in box mode from the tight box", "extreme", lambda p: p.tight_box),
    Method("grabcut", "GrabCut from the tight box", "grabcut", lambda p: p.tight_box),
)
METHODS_BY_NAME = {method.name: method for method in METHODS}


@dataclass(frozen=True)
class ObjectResult:
    image_id: int
    annotation_id: int
    category: str
    method: str
    iou: float  # 0 when the method failed on the object
    latency_ms: float
    error: str = ""  # the exception's one-line summary when the method failed
    boundary_f: float = 0.0  # outline F-score at the run's pixel tolerance; 0 when the method failed
    outside: float = 0.0  # fraction of the predicted mask outside the object (flooding); 0 when it failed
    stage_ms: dict[str, float] = field(default_factory=dict)  # e.g. {"coarse": 40.1, "refine": 80.3}
    name: str = ""  # the object's name where the dataset has one (the real-photo set: "coffee/cup")
    clicks: ClickOutcome | None = None  # the correction-click protocol, when it ran


def loose_box(box: Box, image_size: tuple[int, int], scale: float = LOOSE_BOX_SCALE) -> Box:
    """``box`` (x0, y0, x1, y1) with width and height multiplied by ``scale`` around its centre,
    clipped to the image of ``image_size`` = (width, height)."""
    x0, y0, x1, y1 = box
    width, height = image_size
    half_w, half_h = (x1 - x0) * scale / 2, (y1 - y0) * scale / 2
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return max(0.0, cx - half_w), max(0.0, cy - half_h), min(float(width), cx + half_w), min(float(height), cy + half_h)


def object_prompts(obj: EvalObject, jitter: float = 0.0, seed: int = 0) -> ObjectPrompts:
    """Prompts for one object: the tight box runs along the mask's outer pixel edges; the extreme
    points are the middle pixel centres of the mask's extreme rows/columns, or with ``jitter`` > 0
    imprecise clicks as in training (``backend.training.mask_prompts``: within ``jitter`` times the
    object's larger side) drawn from a generator seeded by (seed, annotation id), so any subset or
    order of objects sees the same points."""
    height, width = obj.mask.shape
    box = mask_box(obj.mask)
    rng = np.random.default_rng([seed, obj.annotation_id]) if jitter > 0 else None
    points = extreme_points(obj.mask, rng, jitter)
    return ObjectPrompts(
        extreme=Prompt(PromptKind.EXTREME, obj.category, points=points, point_labels=np.ones(4, np.int64)),
        tight_box=Prompt(PromptKind.BOX, obj.category, box=box),
        loose_box=Prompt(PromptKind.BOX, obj.category, box=loose_box(box, (width, height))),
    )


def evaluate(
    images: Iterable[EvalImage],
    methods: list[Method],
    segmenters: Mapping[str, Segmenter],
    n_objects: int | None = None,
    jitter: float = 0.0,
    seed: int = 0,
    boundary_tolerance_px: float = BOUNDARY_TOLERANCE_PX,
    clicks: ClickProtocol | None = None,
) -> list[ObjectResult]:
    """Run each method on each object of ``images``; ``segmenters`` maps Method.segmenter to an
    object with ``.segment(image, prompt)``. With ``clicks``, each first mask is then corrected by
    simulated clicks (``backend.evaluation.clicks``), jittered from a generator seeded by (seed,
    annotation id): every method sees the same jitter on the same object.

    Each method handles all objects of an image in turn, so a segmenter that caches per image
    (SAM's embedding) pays for it on the image's first object. A method that raises on an object
    scores IoU 0 there and the error is kept, so one bad object does not lose a long run.
    """
    results: list[ObjectResult] = []
    with tqdm(total=n_objects, desc="evaluate", unit="object") as progress:
        for item in images:
            prompts = [object_prompts(obj, jitter, seed) for obj in item.objects]
            for method in methods:
                segmenter = segmenters[method.segmenter]
                for obj, obj_prompts in zip(item.objects, prompts):
                    prompt = method.prompt(obj_prompts)
                    result, mask = _run_one(segmenter, method, item, obj, prompt, boundary_tolerance_px)
                    if clicks is not None and mask is not None:
                        outcome = _correct(segmenter, method, item, obj, prompt, mask, clicks, seed)
                        result = replace(result, clicks=outcome)
                    results.append(result)
            progress.update(len(item.objects))
    return results


def _run_one(
    segmenter: Segmenter, method: Method, item: EvalImage, obj: EvalObject, prompt: Prompt, tolerance_px: float
) -> tuple[ObjectResult, np.ndarray | None]:
    """The object's result and the method's mask (None when it failed)."""
    start = time.perf_counter()
    try:
        segmentation = segmenter.segment(item.image, prompt)
        error = ""
    except Exception as exc:  # noqa: BLE001 - recorded per object and reported, see evaluate()
        segmentation, error = None, traceback.format_exception_only(exc)[-1].strip()
    latency_ms = (time.perf_counter() - start) * 1000
    result = ObjectResult(
        image_id=item.image_id,
        annotation_id=obj.annotation_id,
        category=obj.category,
        method=method.name,
        name=obj.name,
        iou=0.0,
        latency_ms=latency_ms,
        error=error,
    )
    if segmentation is None:
        return result, None
    mask = _checked(segmentation.mask, method, obj)
    return replace(
        result,
        iou=iou(mask, obj.mask),
        boundary_f=boundary_f_score(mask, obj.mask, tolerance_px),
        outside=outside_fraction(mask, obj.mask),
        stage_ms=dict(segmentation.stage_ms),
    ), mask


def _correct(
    segmenter: Segmenter, method: Method, item: EvalImage, obj: EvalObject, prompt: Prompt, first: np.ndarray,
    protocol: ClickProtocol, seed: int,
) -> ClickOutcome:
    def segment(corrected: Prompt) -> np.ndarray:
        return segmenter.segment(item.image, corrected).mask

    return correct(segment, prompt, first, obj.mask, protocol, np.random.default_rng([seed, obj.annotation_id]),
                   merge=method.segmenter == "extreme")


def _checked(mask: np.ndarray, method: Method, obj: EvalObject) -> np.ndarray:
    if mask.shape != obj.mask.shape:  # a segmenter bug, not a hard object: stop
        raise ValueError(f"{method.name} returned a {mask.shape} mask for a {obj.mask.shape} image")
    return mask
