"""GrabCut from a box: the classical floor the learned segmenters are compared against."""

from __future__ import annotations

import math

import cv2
import numpy as np

from backend.prompts import LoadedImage, Prompt, PromptError, PromptKind, Segmentation
from backend.segmenters.extreme import prompt_geometry


class GrabCutSegmenter:
    """OpenCV GrabCut initialised with the prompt's box, or for extreme points the box they span
    (everything outside the box is background).

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
        box = prompt_geometry(prompt).box  # GrabCut reads no correction clicks
        pixels = image.array
        height, width = pixels.shape[:2]
        x0, y0, x1, y1 = _pixel_box(box, width, height)
        mask = np.zeros((height, width), bool)
        if x1 - x0 < 2 or y1 - y0 < 2:
            mask[y0:y1, x0:x1] = True  # too thin for a colour model: the box is the best guess
            return self._answer(mask, prompt)
        margin = math.ceil(self.context * max(x1 - x0, y1 - y0))
        wx0, wy0 = max(0, x0 - margin), max(0, y0 - margin)
        wx1, wy1 = min(width, x1 + margin), min(height, y1 + margin)
        if (wx0, wy0, wx1, wy1) == (x0, y0, x1, y1):
            mask[y0:y1, x0:x1] = True  # the box is the whole image: no background to learn from
            return self._answer(mask, prompt)
        window = np.ascontiguousarray(pixels[wy0:wy1, wx0:wx1])  # GrabCut's GMMs don't care RGB vs BGR
        labels = np.zeros(window.shape[:2], np.uint8)
        background_model = np.zeros((1, 65), np.float64)
        foreground_model = np.zeros((1, 65), np.float64)
        cv2.setRNGSeed(self.seed)  # GrabCut seeds its colour models with k-means on OpenCV's RNG
        cv2.grabCut(
            window,
            labels,
            (x0 - wx0, y0 - wy0, x1 - x0, y1 - y0),
            background_model,
            foreground_model,
            self.iterations,
            cv2.GC_INIT_WITH_RECT,
        )
        mask[wy0:wy1, wx0:wx1] = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
        return self._answer(mask, prompt)

    def _answer(self, mask: np.ndarray, prompt: Prompt) -> Segmentation:
        # GrabCut has no confidence estimate; 0.5 says "unknown".
        return Segmentation(mask=mask, score=0.5, label=prompt.label, model=self.model_name)


def _pixel_box(box: tuple[float, float, float, float], width: int, height: int) -> tuple[int, int, int, int]:
    """The pixels a box touches, as integer edges clipped to the image."""
    x0, y0, x1, y1 = box
    return (
        min(max(math.floor(x0), 0), width),
        min(max(math.floor(y0), 0), height),
        min(max(math.ceil(x1), 0), width),
        min(max(math.ceil(y1), 0), height),
    )
