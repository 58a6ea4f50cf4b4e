"""Synthetic composites with exact instance masks, deterministic by seed.

A scene is a real-photo background with several objects pasted on it. Each object is a random
shape (concave outlines, thin limbs, holes) filled with a real-photo texture, with its own
lighting gradient; some objects are made of two or three parts with different textures, as
real objects are (a shirt and trousers, a wheel and its frame), and some carry enclosed inlays
of another texture (markings, windows, eyes) that belong to the object, unlike holes, which show
what lies behind it. So the prompt, not one uniform texture, defines the object. Later objects
occlude earlier ones, so each instance mask is exactly the pixels where that object is visible.
The whole image then gets global lighting, blur and noise.

Photos are scikit-image's bundled CC0 images, split by name into ``train`` and ``heldout``
photo sets; the held-out split also draws its shapes from a disjoint seed stream and adds a
shape family (the skimage ``horse`` silhouette) that training never sees.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

PHOTOS = {
    "train": ("astronaut", "coffee", "hubble_deep_field", "immunohistochemistry", "brick", "camera", "grass",
              "coins", "moon", "cell", "text"),
    "heldout": ("chelsea", "rocket", "retina", "gravel", "clock", "page"),
}
_SPLIT_STREAM = {"train": 0, "heldout": 1}  # disjoint seed streams, so held-out shapes are new shapes
_SHAPES = {"train": ("blob", "polygon", "limbs", "ring"), "heldout": ("blob", "polygon", "limbs", "ring", "horse")}
MIN_VISIBLE_PIXELS = 150
MULTI_PART_FRACTION = 0.3
INLAY_FRACTION = 0.4
DARK_INLAY_FRACTION = 0.5  # dark enclosed parts must not read as holes
HOLE_FRACTION = 0.15  # of non-ring shapes; a hole shows what lies behind the object


@dataclass
class Scene:
    """image: (H, W, 3) uint8 RGB; masks: list of (H, W) bool visible-instance masks (non-overlapping);
    families: each mask's shape family ("blob", "polygon", "limbs", "ring", "horse")."""

    image: np.ndarray
    masks: list[np.ndarray]
    families: list[str]


@functools.lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    import skimage.data

    photo = getattr(skimage.data, name)()
    if photo.ndim == 2:
        photo = np.repeat(photo[..., None], 3, axis=2)
    return np.ascontiguousarray(photo[..., :3])


@functools.lru_cache(maxsize=None)
def _horse() -> np.ndarray:
    import skimage.data

    horse = ~skimage.data.horse()  # the bundled image is a black horse on white
    ys, xs = np.nonzero(horse)
    return horse[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(np.uint8)


def generate_scene(seed: int, index: int, split: str = "train") -> Scene:
    """Scene number `index` of the stream (`seed`, `split`); the same arguments give the same scene."""
    if split not in PHOTOS:
        raise ValueError(f"split must be one of {sorted(PHOTOS)}, got {split!r}")
    rng = np.random.default_rng([seed, _SPLIT_STREAM[split], index])
    height, width = (int(v) for v in rng.integers(224, 449, size=2))
    image = _texture(rng, split, height, width).astype(np.float32)
    owner = np.full((height, width), -1, np.int16)  # which object is visible at each pixel
    count = int(rng.integers(2, 6))
    families = []
    for obj in range(count):
        family, shape = _shape(rng, split, height, width)
        families.append(family)
        x, y, mask = _place(rng, shape, height, width)
        region = (slice(y, y + mask.shape[0]), slice(x, x + mask.shape[1]))
        parts = _parts(rng, mask) if rng.random() < MULTI_PART_FRACTION else [mask]
        inlay = None
        if rng.random() < INLAY_FRACTION:  # markings, windows, eyes: enclosed, differently textured, still the object
            inlay = _interior_ellipses(rng, mask, 0.3) & mask
            parts = [part & ~inlay for part in parts] + [inlay]
        for part in parts:
            texture = _texture(rng, split, *mask.shape) * _lighting(rng, *mask.shape)[..., None]
            if part is inlay and rng.random() < DARK_INLAY_FRACTION:  # visors, pupils, screens, windows
                texture *= rng.uniform(0.05, 0.3)
            image[region][part] = texture[part]
        owner[region][mask] = obj
    image = _global_effects(rng, image)
    visible = [obj for obj in range(count) if (owner == obj).sum() >= MIN_VISIBLE_PIXELS]
    return Scene(image, [owner == obj for obj in visible], [families[obj] for obj in visible])


def _texture(rng: np.random.Generator, split: str, height: int, width: int) -> np.ndarray:
    """(height, width, 3) float32 texture: a random scaled crop of a photo, colour-shifted; sometimes flat."""
    if rng.random() < 0.15:
        colour = rng.uniform(0, 255, size=3).astype(np.float32)
        return np.broadcast_to(colour, (height, width, 3)) + rng.normal(0, 6, (height, width, 1)).astype(np.float32)
    photo = _photo(str(rng.choice(PHOTOS[split])))
    scale = rng.uniform(0.4, 2.0) * max(height / photo.shape[0], width / photo.shape[1], 0.05)
    crop_h = min(photo.shape[0], max(2, int(height / scale)))
    crop_w = min(photo.shape[1], max(2, int(width / scale)))
    y = int(rng.integers(0, photo.shape[0] - crop_h + 1))
    x = int(rng.integers(0, photo.shape[1] - crop_w + 1))
    patch = cv2.resize(photo[y : y + crop_h, x : x + crop_w], (width, height), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    patch = patch.astype(np.float32)
    if rng.random() < 0.7:  # tint: grey photos become coloured, colour photos change hue
        patch = patch * rng.uniform(0.5, 1.4, size=3).astype(np.float32) + rng.uniform(-40, 40, size=3).astype(np.float32)
    return patch


def _parts(rng: np.random.Generator, mask: np.ndarray) -> list[np.ndarray]:
    """Split a bool mask into 2-3 parts: the cells of random seed pixels (nearest seed wins), so the
    parts meet along straight boundaries, as a garment's pieces or a vehicle's panels do."""
    ys, xs = np.nonzero(mask)
    if len(xs) < 2:
        return [mask]
    seeds = rng.choice(len(xs), size=min(len(xs), int(rng.integers(2, 4))), replace=False)
    distances = np.stack([(xs - xs[i]) ** 2 + (ys - ys[i]) ** 2 for i in seeds])
    nearest = distances.argmin(axis=0)
    parts = []
    for k in range(len(seeds)):
        part = np.zeros_like(mask)
        part[ys[nearest == k], xs[nearest == k]] = True
        parts.append(part)
    return parts


def _lighting(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(height, width) multiplicative linear lighting gradient around a random gain."""
    gain = rng.uniform(0.6, 1.4)
    gx, gy = rng.uniform(-0.4, 0.4, size=2)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    return (gain * (1 + gx * (xs / max(width, 1) - 0.5) + gy * (ys / max(height, 1) - 0.5))).astype(np.float32)


def _shape(rng: np.random.Generator, split: str, image_h: int, image_w: int) -> tuple[str, np.ndarray]:
    """(family, uint8 {0, 1} shape mask whose bounding box is its array)."""
    size = int(rng.uniform(0.12, 0.9) * min(image_h, image_w))
    aspect = rng.uniform(0.4, 2.5)
    h, w = max(8, int(size / np.sqrt(aspect))), max(8, int(size * np.sqrt(aspect)))
    family = str(rng.choice(_SHAPES[split]))
    if family == "horse":
        mask = cv2.resize(_horse(), (w, h), interpolation=cv2.INTER_NEAREST)
        return family, (mask[:, ::-1].copy() if rng.random() < 0.5 else mask)
    mask = np.zeros((h, w), np.uint8)
    centre = np.array([w / 2, h / 2])
    radii = np.array([w / 2, h / 2]) * 0.95
    if family == "blob":
        _fill_radial(rng, mask, centre, radii, harmonics=int(rng.integers(2, 8)), roughness=0.25)
    elif family == "polygon":
        _fill_radial(rng, mask, centre, radii, harmonics=0, roughness=0.6)
    elif family == "limbs":
        _fill_radial(rng, mask, centre, radii * rng.uniform(0.35, 0.6), harmonics=3, roughness=0.15)
        for _ in range(int(rng.integers(2, 6))):
            start = centre + rng.normal(0, 0.1, 2) * [w, h]
            angle = rng.uniform(0, 2 * np.pi)
            end = centre + np.array([np.cos(angle), np.sin(angle)]) * radii * rng.uniform(0.7, 1.0)
            thickness = max(2, int(rng.uniform(0.02, 0.08) * min(h, w) + 1))
            cv2.line(mask, tuple(int(v) for v in start), tuple(int(v) for v in end), 1, thickness)
    else:  # ring: an outline with a big hole, like a tyre or a letter O
        _fill_radial(rng, mask, centre, radii, harmonics=2, roughness=0.1)
        inner = np.zeros_like(mask)
        _fill_radial(rng, inner, centre + rng.normal(0, 0.03, 2) * [w, h], radii * rng.uniform(0.4, 0.75), 2, 0.1)
        mask[inner > 0] = 0
    if family != "ring" and rng.random() < HOLE_FRACTION:
        mask[_interior_ellipses(rng, mask, 0.15)] = 0
    return family, mask


def _fill_radial(rng, mask, centre, radii, harmonics: int, roughness: float) -> None:
    """Fill a star-shaped outline r(theta) = 1 + sum of random harmonics (or random per-vertex radii)."""
    vertices = int(rng.integers(5, 14)) if harmonics == 0 else 96
    theta = np.sort(rng.uniform(0, 2 * np.pi, vertices)) if harmonics == 0 else np.linspace(0, 2 * np.pi, vertices, False)
    if harmonics == 0:
        r = rng.uniform(1 - roughness, 1.0, vertices)
    else:
        r = np.ones_like(theta)
        for k in range(2, harmonics + 2):
            r += rng.uniform(0, roughness) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) / (k / 2)
        r = np.clip(r / r.max(), 0.15, 1.0)
    points = centre + np.stack([np.cos(theta), np.sin(theta)], 1) * radii * r[:, None]
    cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1)


def _interior_ellipses(rng: np.random.Generator, mask: np.ndarray, max_axis: float) -> np.ndarray:
    """(h, w) bool: 1-3 random ellipses centred well inside a uint8/bool shape mask, each semi-axis up
    to `max_axis` times the shape's side (not clipped to the shape)."""
    interior = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=max(2, min(mask.shape) // 8))
    ys, xs = np.nonzero(interior)
    ellipses = np.zeros(mask.shape, np.uint8)
    for _ in range(int(rng.integers(1, 4)) if len(xs) else 0):
        i = int(rng.integers(len(xs)))
        axes = tuple(max(2, int(rng.uniform(0.04, max_axis) * side)) for side in (mask.shape[1], mask.shape[0]))
        cv2.ellipse(ellipses, (int(xs[i]), int(ys[i])), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return ellipses > 0


def _place(rng: np.random.Generator, shape: np.ndarray, height: int, width: int) -> tuple[int, int, np.ndarray]:
    """Random top-left (x, y) for the shape, sometimes partly outside the image; returns the clipped shape."""
    h, w = shape.shape
    x = int(rng.integers(-w // 4, max(width - 3 * w // 4, -w // 4 + 1)))
    y = int(rng.integers(-h // 4, max(height - 3 * h // 4, -h // 4 + 1)))
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, width), min(y + h, height)
    return x0, y0, shape[y0 - y : y1 - y, x0 - x : x1 - x].astype(bool)


def _global_effects(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Global lighting change, blur and sensor noise; returns uint8."""
    image = image * rng.uniform(0.7, 1.25) + rng.uniform(-25, 25)
    if rng.random() < 0.5:
        sigma = rng.uniform(0.3, 1.5)
        image = cv2.GaussianBlur(image, (0, 0), sigma)
    if rng.random() < 0.6:
        image = image + rng.normal(0, rng.uniform(1, 8), image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_coco(out_dir: Path, count: int, seed: int, split: str = "heldout") -> Path:
    """Write `count` scenes as a COCO instance-segmentation dataset (PNG images + ``instances.json``
    with RLE masks, one category per shape family); returns the annotation file path."""
    from pycocotools import mask as mask_utils

    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    category_ids = {family: i + 1 for i, family in enumerate(_SHAPES[split])}
    images, annotations = [], []
    for index in range(count):
        scene = generate_scene(seed, index, split)
        file_name = f"{split}_{seed}_{index:05d}.png"
        cv2.imwrite(str(out_dir / "images" / file_name), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
        images.append({"id": index + 1, "file_name": file_name, "height": scene.image.shape[0], "width": scene.image.shape[1]})
        for mask, family in zip(scene.masks, scene.families):
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
            rle["counts"] = rle["counts"].decode("ascii")
            annotations.append({
                "id": len(annotations) + 1, "image_id": index + 1, "category_id": category_ids[family], "segmentation": rle,
                "area": float(mask.sum()), "bbox": [x, y, w, h], "iscrowd": 0,
            })
    annotation_file = out_dir / "instances.json"
    coco = {"images": images, "annotations": annotations, "categories": [{"id": i, "name": family} for family, i in category_ids.items()]}
    annotation_file.write_text(json.dumps(coco))
    return annotation_file
