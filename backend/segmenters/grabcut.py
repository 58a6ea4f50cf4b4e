"""GrabCut from a box, with correction clicks as hard seeds: the classical floor the learned
segmenters are compared against."""

from __future__ import annotations

import math

import cv2
import numpy as np

from backend.prompts import EXTREME_POINTS, LoadedImage, Prompt, PromptError, PromptKind, Segmentation
from backend.segmenters.extreme import prompt_geometry

SEED_RADIUS_PX = 3  # a correction click fixes the pixels within this radius (a fingertip, not a pixel)


class GrabCutSegmenter:
    """OpenCV GrabCut initialised with the prompt's box, or for extreme points the box they span
    (everything outside the box is background). Correction clicks (an EXTREME prompt's points
    after the 4 extreme points, a BOX prompt's points) are hard seeds: a disc of
    ``SEED_RADIUS_PX`` around each is foreground (positive click) or background (negative).

    It runs on a window around the box (the box plus ``context`` times its longer side on every
    side, clipped to the image) so the cost follows the object's size rather than the photo's,
    and the background colour model is learnt from the object's surroundings.
    """

    model_name = "grabcut"

    def __init__(self, iterations: int = 5, context: float = 0.5, seed: int = 0):
        self.iterations = iterations
        self.context = context
        self.seed = seed

    def segment(self, image: LoadedImage, prompt: Prompt) -> Segmentation:
        """``image.array`` (H, W, 3) uint8 RGB; a BOX or EXTREME prompt in natural-image pixels.
        Returns a (H, W) bool mask."""
        if prompt.kind not in (PromptKind.BOX, PromptKind.EXTREME):
            raise PromptError(f"GrabCut needs a box or extreme points, not {prompt.kind.value} prompts")
        box, seeds = _box_and_seeds(prompt)
        pixels = image.array
        height, width = pixels.shape[:2]
        x0, y0, x1, y1 = _pixel_box(box, width, height)
        painted = _painted_seeds(seeds, height, width)
        seeds_fg, seeds_bg = painted == 1, painted == 2
        mask = np.zeros((height, width), bool)
        if x1 - x0 < 2 or y1 - y0 < 2:
            mask[y0:y1, x0:x1] = True  # too thin for a colour model: the box is the best guess
            return self._answer((mask | seeds_fg) & ~seeds_bg, prompt)
        margin = math.ceil(self.context * max(x1 - x0, y1 - y0))
        wx0, wy0 = max(0, x0 - margin), max(0, y0 - margin)
        wx1, wy1 = min(width, x1 + margin), min(height, y1 + margin)
        if (wx0, wy0, wx1, wy1) == (x0, y0, x1, y1) and not seeds_bg.any():
            mask[y0:y1, x0:x1] = True  # the box is the whole image: no background to learn from
            return self._answer(mask, prompt)
        if seeds_fg.any():  # the window holds every positive click, even one outside the box
            rows, cols = np.nonzero(seeds_fg)
            wx0, wy0 = min(wx0, int(cols.min())), min(wy0, int(rows.min()))
            wx1, wy1 = max(wx1, int(cols.max()) + 1), max(wy1, int(rows.max()) + 1)
        window = np.ascontiguousarray(pixels[wy0:wy1, wx0:wx1])  # GrabCut's GMMs don't care RGB vs BGR
        labels = np.full(window.shape[:2], cv2.GC_BGD, np.uint8)
        labels[y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0] = cv2.GC_PR_FGD
        labels[seeds_fg[wy0:wy1, wx0:wx1]] = cv2.GC_FGD
        labels[seeds_bg[wy0:wy1, wx0:wx1]] = cv2.GC_BGD
        background_model = np.zeros((1, 65), np.float64)
        foreground_model = np.zeros((1, 65), np.float64)
        cv2.setRNGSeed(self.seed)  # GrabCut seeds its colour models with k-means on OpenCV's RNG
        # The labels are what GC_INIT_WITH_RECT would make of the box (outside background, inside
        # probably foreground), plus the seeds.
        cv2.grabCut(window, labels, None, background_model, foreground_model, self.iterations, cv2.GC_INIT_WITH_MASK)
        mask[wy0:wy1, wx0:wx1] = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
        return self._answer(mask, prompt)

    def _answer(self, mask: np.ndarray, prompt: Prompt) -> Segmentation:
        # GrabCut has no confidence estimate; 0.5 says "unknown".
        return Segmentation(mask=mask, score=0.5, label=prompt.label, model=self.model_name)


def _box_and_seeds(prompt: Prompt) -> tuple[tuple[float, float, float, float], list[tuple[float, float, int]]]:
    """The prompt box (``prompt_geometry``'s, which checks the prompt) and the correction clicks
    (x, y, label) in the order clicked."""
    box = prompt_geometry(prompt).box
    first = EXTREME_POINTS if prompt.kind == PromptKind.EXTREME else 0
    points = np.asarray(prompt.points, np.float64).reshape(-1, 2)[first:]
    labels = np.asarray(prompt.point_labels).reshape(-1)[first:]
    return box, [(float(x), float(y), int(label)) for (x, y), label in zip(points, labels)]


def _painted_seeds(seeds: list[tuple[float, float, int]], height: int, width: int) -> np.ndarray:
    """(H, W) uint8: 1 within ``SEED_RADIUS_PX`` of a positive click, 2 of a negative one, 0
    elsewhere; where discs overlap the later click wins (it corrects the earlier)."""
    painted = np.zeros((height, width), np.uint8)
    for x, y, label in seeds:
        cv2.circle(painted, (math.floor(x), math.floor(y)), SEED_RADIUS_PX, 1 if label else 2, thickness=-1)
    return painted


def _pixel_box(box: tuple[float, float, float, float], width: int, height: int) -> tuple[int, int, int, int]:
    """The pixels a box touches, as integer edges clipped to the image."""
    x0, y0, x1, y1 = box
    return (
        min(max(math.floor(x0), 0), width),
        min(max(math.floor(y0), 0), height),
        min(max(math.ceil(x1), 0), width),
        min(max(math.ceil(y1), 0), height),
    )
