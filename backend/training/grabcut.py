"""GrabCut from a box: the classical floor the learned model must beat (validation and benches)."""

from __future__ import annotations

import cv2
import numpy as np

from backend.prompts import Prompt, PromptKind, Segmentation
from backend.segmenters.extreme import prompt_geometry


class GrabCutSegmenter:
    """OpenCV GrabCut initialised with the prompt's box (for extreme points: the points' box)."""

    model_name = "grabcut"

    def __init__(self, iterations: int = 5):
        self.iterations = iterations

    def segment(self, image, prompt: Prompt) -> Segmentation:
        _, box = prompt_geometry(prompt)
        pixels = image.array
        height, width = pixels.shape[:2]
        x0, y0 = int(np.clip(np.floor(box[0]), 0, width - 1)), int(np.clip(np.floor(box[1]), 0, height - 1))
        x1, y1 = int(np.clip(np.ceil(box[2]), x0 + 1, width)), int(np.clip(np.ceil(box[3]), y0 + 1, height))
        mask = np.zeros((height, width), np.uint8)
        try:
            cv2.grabCut(cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR), mask, (x0, y0, x1 - x0, y1 - y0),
                        np.zeros((1, 65)), np.zeros((1, 65)), self.iterations, cv2.GC_INIT_WITH_RECT)
            result = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
        except cv2.error:  # degenerate boxes (a line, the whole image): fall back to the box itself
            result = np.zeros((height, width), bool)
            result[y0:y1, x0:x1] = True
        return Segmentation(mask=result, score=0.5, label=prompt.label, model=self.model_name)
