"""Edge-aware refinement of the extreme-point model's mask at (or near) the photo's own resolution.

The networks see the object's window at 384 px, so a larger object's outline is only as sharp
as the upsampled probabilities, and where the model is unsure its outline can sit a few pixels
off the photo's edge. This step resamples the probabilities to the window's natural size (at
most ``max_side`` px) and decides each *uncertain* pixel (``low`` < p < ``high``) again, on its
own, by its colour: nearby pixels the model is sure of give a local foreground colour and a
local background colour (means over a ``radius`` neighbourhood), and the pixel's probability
moves toward the side whose colour it is closer to, by up to ``strength`` in logit, scaled down
where the two colours are not well apart relative to their spread (a red cup on a red saucer:
the model's call stands). Pixels the model is sure of keep its decision; a pixel decided on its
own keeps thin structures one pixel wide, as the photo shows them.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from backend.networks.prompt_crop import CropWindow

MIN_SHARE = 0.02  # both sides need confident pixels on at least this share of a neighbourhood


@dataclass(frozen=True)
class NativeRefinement:
    low: float = 0.1  # probabilities outside (low, high) are the model's decision and stay
    high: float = 0.9
    radius: int = 16  # neighbourhood of the local colours, pixels at ``fit_side``
    strength: float = 4.0  # the most logit the colour evidence adds or takes
    max_side: int = 1024  # refinement resolution: the window's natural size, at most this many pixels a side
    fit_side: int = 384  # the local colours are averaged at most this many pixels a side (their cost)

    def mask(self, image: np.ndarray, window: CropWindow, probabilities: np.ndarray) -> np.ndarray:
        """(H, W) bool mask of ``image`` (H, W, 3) uint8 from the model's (R, R) foreground
        ``probabilities`` of ``window``, uncertain pixels decided again by their colour."""
        side = max(1, min(max(window.width, window.height), self.max_side))
        crop = cv2.resize(probabilities.astype(np.float32), (side, side), interpolation=cv2.INTER_LINEAR)
        uncertain = (crop > self.low) & (crop < self.high)
        if uncertain.any():
            colours = window.extract(image, side).astype(np.float32) / 255.0
            crop[uncertain] = self.decide(colours, crop, uncertain)
        return window.paste(crop, image.shape[:2], threshold=0.5)

    def decide(self, colours: np.ndarray, probabilities: np.ndarray, where: np.ndarray) -> np.ndarray:
        """New probabilities (N,) of the pixels ``where`` (h, w) is true (row-major order), from
        their colours (h, w, 3) float in [0, 1] and the model's probabilities (h, w)."""
        height, width = probabilities.shape
        scale = min(1.0, self.fit_side / max(height, width))
        small = (max(1, round(width * scale)), max(1, round(height * scale)))
        if scale < 1:
            colours_small = cv2.resize(colours, small, interpolation=cv2.INTER_AREA)
            probabilities_small = cv2.resize(probabilities, small, interpolation=cv2.INTER_AREA)
        else:
            colours_small, probabilities_small = colours, probabilities
        models = local_colours(colours_small, probabilities_small, self.low, self.high, self.radius)
        rows, cols = np.nonzero(where)
        at = sample(models, (rows + 0.5) * small[1] / height - 0.5, (cols + 0.5) * small[0] / width - 0.5)
        evidence = colour_evidence(colours[rows, cols], at)
        prior = np.clip(probabilities[rows, cols], 1e-4, 1 - 1e-4)
        return 1.0 / (1.0 + np.exp(-(np.log(prior / (1 - prior)) + self.strength * evidence)))


def local_colours(colours: np.ndarray, probabilities: np.ndarray, low: float, high: float, radius: int) -> np.ndarray:
    """(h, w, 9) float32 per pixel: the mean colour (3) of the confident foreground (p >= high)
    in its (2 radius + 1)² neighbourhood, that of the confident background (p <= low), the
    variance (summed over channels) of each, and 1 where both sides have at least ``MIN_SHARE``
    of the neighbourhood (else 0: no colour evidence there)."""
    squared = (colours * colours).sum(axis=-1)
    fields = []
    shares = []
    for confident in (probabilities >= high, probabilities <= low):
        weight = confident.astype(np.float32)
        share = _box(weight, radius)
        mean = _box(colours * weight[..., None], radius) / np.maximum(share, 1e-6)[..., None]
        variance = _box(squared * weight, radius) / np.maximum(share, 1e-6) - (mean * mean).sum(axis=-1)
        fields.append((mean, np.maximum(variance, 0.0)))
        shares.append(share)
    (foreground, foreground_var), (background, background_var) = fields
    both = ((shares[0] >= MIN_SHARE) & (shares[1] >= MIN_SHARE)).astype(np.float32)
    return np.dstack([foreground, background, foreground_var, background_var, both])


def colour_evidence(colours: np.ndarray, models: np.ndarray) -> np.ndarray:
    """(N,) in [-1, 1]: where each colour (N, 3) lies between its local background (-1) and
    foreground (+1) mean colours (``models`` (N, 9) as ``local_colours``), times how far apart the
    two means are relative to their spread (near 0 when they overlap)."""
    foreground, background = models[:, 0:3], models[:, 3:6]
    spread = models[:, 6] + models[:, 7]
    apart = foreground - background
    distance = (apart * apart).sum(axis=-1)
    # Projection on the line between the two means: 0 halfway, +1 at the foreground mean.
    position = 2 * ((colours - (foreground + background) / 2) * apart).sum(axis=-1) / np.maximum(distance, 1e-6)
    trust = distance / (distance + spread + 1e-3)
    return np.clip(position, -1.0, 1.0) * trust * models[:, 8]


def sample(field: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(N, C): the (h, w, C) float32 ``field`` bilinearly interpolated at fractional pixel centres
    (rows, cols), edges replicated. Laid out in rows of 1024 (cv2.remap takes < 32767 rows)."""
    count = len(rows)
    padded = -(-count // 1024) * 1024
    map_x = np.zeros(padded, np.float32)
    map_y = np.zeros(padded, np.float32)
    map_x[:count], map_y[:count] = cols, rows
    values = [
        cv2.remap(np.ascontiguousarray(field[..., start : start + 4]), map_x.reshape(-1, 1024),
                  map_y.reshape(-1, 1024), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        for start in range(0, field.shape[-1], 4)  # remap interpolates at most 4 channels at once
    ]
    return np.concatenate([v.reshape(padded, -1) for v in values], axis=1)[:count]


def _box(array: np.ndarray, radius: int) -> np.ndarray:
    """Mean over the (2 radius + 1)² neighbourhood, the image's edge reflected."""
    return cv2.boxFilter(array, -1, (2 * radius + 1, 2 * radius + 1), borderType=cv2.BORDER_REFLECT)
