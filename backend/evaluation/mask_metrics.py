"""Per-object mask quality beside IoU: how well the outline is placed (boundary F-score) and how
far the mask spills into the background (the fraction of the prediction outside the object).

IoU is dominated by an object's interior: a large solid object scores well even when its thin
parts and outline are wrong, and a mask that floods into similar background loses little IoU
on a big object. These two numbers show those failures on their own.
"""

from __future__ import annotations

import cv2
import numpy as np

BOUNDARY_TOLERANCE_PX = 2  # as DAVIS's F measure: an outline pixel this close to the other outline counts


def boundary(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool: the mask's pixels with a 4-neighbour outside it. The image border is not an
    outline (an object cut by the frame has no boundary there), so pixels on it count only where
    the mask ends inside the image."""
    mask = mask.astype(np.uint8)
    # cv2.erode's default border treats outside-the-image as foreground: the frame erodes nothing.
    eroded = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3)))
    return (mask > 0) & (eroded == 0)


def boundary_f_score(predicted: np.ndarray, truth: np.ndarray, tolerance_px: float = BOUNDARY_TOLERANCE_PX) -> float:
    """F-score of the predicted outline against the true one (Perazzi et al., DAVIS 2016): precision is
    the fraction of predicted outline pixels within ``tolerance_px`` of the true outline, recall the
    reverse. 1.0 when neither mask has an outline, 0.0 when only one has."""
    predicted, truth = _around_both(predicted, truth, margin=int(np.ceil(tolerance_px)) + 1)
    predicted_edge, true_edge = boundary(predicted), boundary(truth)
    n_predicted, n_true = int(predicted_edge.sum()), int(true_edge.sum())
    if n_predicted == 0 or n_true == 0:
        return 1.0 if n_predicted == n_true else 0.0
    precision = float((_distance_to(true_edge)[predicted_edge] <= tolerance_px).mean())
    recall = float((_distance_to(predicted_edge)[true_edge] <= tolerance_px).mean())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def outside_fraction(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of the predicted mask's pixels that lie outside the true object (0 for an empty
    prediction): how much a mask floods into the background."""
    area = int(predicted.sum())
    return float((predicted & ~truth).sum() / area) if area else 0.0


def _around_both(a: np.ndarray, b: np.ndarray, margin: int) -> tuple[np.ndarray, np.ndarray]:
    """Both masks cut to their joint bounding box plus ``margin`` (within the image): a small object
    of a large photo costs little. Outside the box both are empty, so nothing there is outline."""
    rows, cols = np.nonzero(a | b)
    if not len(rows):
        return a, b
    y0, x0 = max(rows.min() - margin, 0), max(cols.min() - margin, 0)
    window = np.s_[y0 : rows.max() + margin + 1, x0 : cols.max() + margin + 1]
    return a[window], b[window]


def _distance_to(edge: np.ndarray) -> np.ndarray:
    """(H, W) float32 Euclidean distance of every pixel to the nearest ``edge`` pixel."""
    return cv2.distanceTransform((~edge).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
