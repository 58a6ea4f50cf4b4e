"""Tiny training samples for fine-tuning tests: bright rectangles on a dark 48 px image."""

from __future__ import annotations

import numpy as np


def squares(count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` (image (48, 48, 3) uint8, mask (48, 48) bool) pairs, each rectangle a little shifted."""
    samples = []
    for index in range(count):
        image = np.full((48, 48, 3), 30, np.uint8)
        mask = np.zeros((48, 48), bool)
        mask[8 + index % 4 : 30 + index % 4, 10 : 34 - index % 3] = True
        image[mask] = 220
        samples.append((image, mask))
    return samples
