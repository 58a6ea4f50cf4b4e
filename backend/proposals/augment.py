"""Training-time augmentation of annotated images (detector size): copy-paste, scale, flip, colour.

Copy-paste puts objects that have masks, cut from other annotated images, onto this one at a new
place and size — the few-shot detector's best friend: every object is seen on many backgrounds
and next to many others. A pasted object hides what it covers: masked objects lose those pixels
(and their box shrinks to what stays visible), and a paste that would hide much of a box-only
object is not made. Scale jitter zooms in (a random crop) or out (the image on a larger canvas),
so the detector sees each object at several sizes although FCOS resizes every image to one side.
"""

from __future__ import annotations

import cv2
import numpy as np

from backend.proposals.annotations import Annotated, Target

PASTE_PROBABILITY = 0.6
PASTES = (1, 3)  # objects pasted per image, inclusive
PASTE_SCALE = (0.6, 1.4)
SCALE = (0.6, 1.5)
MIN_VISIBLE = 0.35  # fraction of an object's box (or mask) that must stay in view, else it is dropped
MAX_HIDDEN = 0.3  # a paste may hide at most this fraction of a box-only object's box
FEATHER_SIGMA = 1.0  # px: a pasted object's alpha edge, so no hard cut-out seam is a cue


def augment(item: Annotated, pool: list[Annotated], rng: np.random.Generator) -> tuple[np.ndarray, list[Target]]:
    """A new (image, targets) from ``item``, drawing pasted objects from ``pool``'s masked objects."""
    image, targets = item.image.astype(np.float32), [Target(t.label, t.box.copy(), t.mask) for t in item.targets]
    if rng.random() < PASTE_PROBABILITY:
        image, targets = _copy_paste(image, targets, pool, rng)
    image, targets = _rescale(image, targets, rng)
    if rng.random() < 0.5:
        image, targets = _flip(image, targets)
    return _colour(image, rng), targets


def _copy_paste(image, targets, pool, rng):
    sources = [(a, t) for a in pool for t in a.targets if t.mask is not None]
    if not sources:
        return image, targets
    height, width = image.shape[:2]
    for _ in range(int(rng.integers(PASTES[0], PASTES[1] + 1))):
        source, target = sources[int(rng.integers(len(sources)))]
        x0, y0, x1, y1 = (int(v) for v in np.round(target.box))
        mask = target.mask[y0:y1, x0:x1].astype(np.float32)
        pixels = source.image[y0:y1, x0:x1].astype(np.float32)
        scale = rng.uniform(*PASTE_SCALE)
        scale = min(scale, 0.9 * width / max(1, x1 - x0), 0.9 * height / max(1, y1 - y0))
        size = (max(2, round((x1 - x0) * scale)), max(2, round((y1 - y0) * scale)))
        mask, pixels = cv2.resize(mask, size), cv2.resize(pixels, size)
        if rng.random() < 0.5:
            mask, pixels = mask[:, ::-1], pixels[:, ::-1]
        px = int(rng.integers(0, max(1, width - size[0] + 1)))
        py = int(rng.integers(0, max(1, height - size[1] + 1)))
        window = (slice(py, py + size[1]), slice(px, px + size[0]))
        covered = np.zeros((height, width), bool)
        covered[window] = mask[: height - py, : width - px] >= 0.5
        if not covered.any() or _hides_box_only(targets, covered):
            continue
        alpha = cv2.GaussianBlur(mask, (0, 0), FEATHER_SIGMA)[: height - py, : width - px, None]
        image[window] = alpha * pixels[: height - py, : width - px] + (1 - alpha) * image[window]
        targets = [t for t in (_occlude(t, covered) for t in targets) if t is not None]
        targets.append(_target(target.label, covered))
    return image, targets


def _hides_box_only(targets: list[Target], covered: np.ndarray) -> bool:
    for t in targets:
        if t.mask is None:
            x0, y0, x1, y1 = (int(v) for v in np.round(t.box))
            area = max(1, (x1 - x0) * (y1 - y0))
            if covered[y0:y1, x0:x1].sum() > MAX_HIDDEN * area:
                return True
    return False


def _occlude(target: Target, covered: np.ndarray) -> Target | None:
    if target.mask is None:
        return target
    visible = target.mask & ~covered
    if visible.sum() < MIN_VISIBLE * target.mask.sum():
        return None
    return _target(target.label, visible)


def _target(label: int, mask: np.ndarray) -> Target:
    ys, xs = np.nonzero(mask)
    return Target(label, np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64), mask)


def _rescale(image, targets, rng):
    """Zoom by a random factor about a random point; the frame keeps the image's size."""
    height, width = image.shape[:2]
    scale = float(np.exp(rng.uniform(np.log(SCALE[0]), np.log(SCALE[1]))))
    # The affine map x' = scale * x + shift: zooming in picks which part stays, zooming out where the image lands.
    shift = np.array([rng.uniform(min(0, width * (1 - scale)), max(0, width * (1 - scale))),
                      rng.uniform(min(0, height * (1 - scale)), max(0, height * (1 - scale)))])
    matrix = np.array([[scale, 0, shift[0]], [0, scale, shift[1]]], np.float32)
    fill = tuple(float(v) for v in image.reshape(-1, 3).mean(axis=0))
    image = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderValue=fill)
    moved = []
    for t in targets:
        if t.mask is not None:
            mask = cv2.warpAffine(t.mask.astype(np.uint8), matrix, (width, height), flags=cv2.INTER_NEAREST) > 0
            if mask.sum() < MIN_VISIBLE * t.mask.sum() * scale * scale or not mask.any():
                continue
            moved.append(_target(t.label, mask))
            continue
        box = t.box * scale + np.tile(shift, 2)
        clipped = np.clip(box, 0, [width, height, width, height])
        full = (box[2] - box[0]) * (box[3] - box[1])
        if (clipped[2] - clipped[0]) * (clipped[3] - clipped[1]) < MIN_VISIBLE * full:
            continue
        moved.append(Target(t.label, clipped, None))
    return image, [t for t in moved if min(t.box[2] - t.box[0], t.box[3] - t.box[1]) >= 2]


def _flip(image, targets):
    width = image.shape[1]
    flipped = []
    for t in targets:
        box = np.array([width - t.box[2], t.box[1], width - t.box[0], t.box[3]])
        flipped.append(Target(t.label, box, None if t.mask is None else t.mask[:, ::-1]))
    return image[:, ::-1], flipped


def _colour(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast, saturation and a per-channel tint; uint8 out."""
    image = image * rng.uniform(0.75, 1.25)
    mean = image.mean()
    image = (image - mean) * rng.uniform(0.75, 1.25) + mean
    grey = image.mean(axis=2, keepdims=True)
    image = (image - grey) * rng.uniform(0.6, 1.4) + grey
    image = image * rng.uniform(0.9, 1.1, size=3)
    return np.clip(image, 0, 255).astype(np.uint8)
