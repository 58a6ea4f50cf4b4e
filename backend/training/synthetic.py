"""Synthetic composites with exact instance masks, deterministic by seed.

A scene is a real-photo background with several objects pasted on it. Each object is a random
shape (concave outlines, thin limbs, branching trees of thin stems, holes) filled with a
real-photo texture, with its own lighting gradient; some objects are made of two or three parts
with different textures, as real objects are (a shirt and trousers, a wheel and its frame), and
some carry enclosed inlays of another texture (markings, windows, eyes, irises) that belong to
the object, unlike holes, which show the scene behind it (the background's own texture going on
through the hole: the cue that tells the two apart). So the prompt, not one uniform texture,
defines the object. Some objects have soft, matte-like edges: the object is alpha-blended over
the scene with a blurred alpha and its mask is where alpha >= 0.5, as a matted photo's object
mask is. Some are pushed against an image side, so the frame cuts them. Later objects occlude
earlier ones, so each instance mask is exactly the pixels where that object is visible. The
whole image then gets global lighting, blur and noise.

Photos are scikit-image's bundled CC0 images, split by name into ``train`` and ``heldout``
photo sets; the held-out split also draws its shapes from a disjoint seed stream and adds shape
families that training never sees: the skimage ``horse`` silhouette (a detailed outline with
thin legs) and ``plant`` (curved thin stems from one base, each ending in a leaf blade; the
training's thin-and-branching family is ``tree``, drawn differently).
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
SHAPE_FAMILIES = {
    "train": ("blob", "polygon", "limbs", "ring", "tree", "text"),
    "heldout": ("blob", "polygon", "limbs", "ring", "tree", "horse", "plant"),
}
MIN_VISIBLE_PIXELS = 150
MULTI_PART_FRACTION = 0.3
INLAY_FRACTION = 0.4
DARK_INLAY_FRACTION = 0.5  # dark enclosed parts must not read as holes
FLAT_TEXT_FRACTION = 0.6  # printed words are mostly one ink colour
HOLE_FRACTION = 0.15  # of non-ring shapes; a hole shows what lies behind the object
SOFT_EDGE_FRACTION = 0.3  # objects alpha-blended over the scene with a blurred alpha
SOFT_EDGE_SIGMA = (0.6, 2.5)  # px, the blur of a soft edge's alpha
BORDER_FRACTION = 0.15  # objects pushed against an image side, up to MAX_BORDER_CUT of them outside
MAX_BORDER_CUT = 0.35


@dataclass
class Scene:
    """image: (H, W, 3) uint8 RGB; masks: list of (H, W) bool visible-instance masks (non-overlapping);
    families: each mask's shape family (one of ``SHAPE_FAMILIES[split]``)."""

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

    return _tight(~skimage.data.horse()).astype(np.uint8)  # the bundled image is a black horse on white


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
        alpha = soft_alpha(shape, rng.uniform(*SOFT_EDGE_SIGMA)) if rng.random() < SOFT_EDGE_FRACTION else shape
        x, y, alpha = _place(rng, alpha.astype(np.float32), height, width)
        mask = alpha >= 0.5
        region = (slice(y, y + mask.shape[0]), slice(x, x + mask.shape[1]))
        parts = _parts(rng, mask) if rng.random() < MULTI_PART_FRACTION else [mask]
        inlay = None
        if rng.random() < INLAY_FRACTION:  # markings, windows, eyes: enclosed, differently textured, still the object
            inlay = _interior_ellipses(rng, mask, 0.3) & mask
            parts = [part & ~inlay for part in parts] + [inlay]
        colour = np.empty(mask.shape + (3,), np.float32)
        for index, part in enumerate(parts):
            flat = family == "text" and rng.random() < FLAT_TEXT_FRACTION
            texture = _flat(rng, *mask.shape) if flat else _texture(rng, split, *mask.shape)
            texture = texture * _lighting(rng, *mask.shape)[..., None]
            if part is inlay and rng.random() < DARK_INLAY_FRACTION:  # visors, pupils, screens, windows
                texture *= rng.uniform(0.05, 0.3)
            if index == 0:  # a soft edge's fringe, outside every part, takes the first part's texture
                colour[...] = texture
            colour[part] = texture[part]
        image[region] = alpha[..., None] * colour + (1 - alpha[..., None]) * image[region]
        owner[region][mask] = obj
    image = _global_effects(rng, image)
    visible = [obj for obj in range(count) if (owner == obj).sum() >= MIN_VISIBLE_PIXELS]
    return Scene(image, [owner == obj for obj in visible], [families[obj] for obj in visible])


def _texture(rng: np.random.Generator, split: str, height: int, width: int) -> np.ndarray:
    """(height, width, 3) float32 texture: a random scaled crop of a photo, colour-shifted; sometimes flat."""
    if rng.random() < 0.15:
        return _flat(rng, height, width)
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


def _flat(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(height, width, 3) float32: one random colour with a little grain."""
    colour = rng.uniform(0, 255, size=3).astype(np.float32)
    return np.broadcast_to(colour, (height, width, 3)) + rng.normal(0, 6, (height, width, 1)).astype(np.float32)


def _lighting(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(height, width) multiplicative linear lighting gradient around a random gain."""
    gain = rng.uniform(0.6, 1.4)
    gx, gy = rng.uniform(-0.4, 0.4, size=2)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    return (gain * (1 + gx * (xs / max(width, 1) - 0.5) + gy * (ys / max(height, 1) - 0.5))).astype(np.float32)


def soft_alpha(shape: np.ndarray, sigma: float) -> np.ndarray:
    """(h + 2p, w + 2p) float32 alpha in [0, 1]: the {0, 1} shape padded by p = 3 sigma and blurred,
    a matte-like soft edge; the object's mask is ``alpha >= 0.5`` (parts thinner than about a
    sigma fade below it, as a matte's wisps do)."""
    pad = int(np.ceil(3 * sigma))
    padded = np.pad(shape.astype(np.float32), pad)
    return np.clip(cv2.GaussianBlur(padded, (0, 0), sigma), 0.0, 1.0)


def _shape(rng: np.random.Generator, split: str, image_h: int, image_w: int) -> tuple[str, np.ndarray]:
    """(family, uint8 {0, 1} shape mask of about the array's size)."""
    size = int(rng.uniform(0.12, 0.9) * min(image_h, image_w))
    aspect = rng.uniform(0.4, 2.5)
    h, w = max(8, int(size / np.sqrt(aspect))), max(8, int(size * np.sqrt(aspect)))
    family = str(rng.choice(SHAPE_FAMILIES[split]))
    return family, draw_family(rng, family, h, w)


def draw_family(rng: np.random.Generator, family: str, h: int, w: int) -> np.ndarray:
    """(h, w) uint8 {0, 1} mask of a random shape of ``family`` (one of the SHAPE_FAMILIES)."""
    if family == "tree":
        return _tree(rng, h, w)
    if family == "plant":
        return _plant(rng, h, w)
    if family == "text":
        return _text(rng, w)
    if family == "horse":
        mask = cv2.resize(_horse(), (w, h), interpolation=cv2.INTER_NEAREST)
        return mask[:, ::-1].copy() if rng.random() < 0.5 else mask
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
    return mask


def _tree(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A branching tree of straight tapering limbs (twigs, antlers, a bare shrub, cables at a pole):
    a trunk growing up forks 2-3 ways at every level, each child shorter and thinner, down to
    1-2 px twigs; some tips carry a small leaf. About max(h, w) across, cut to what was drawn."""
    size = max(h, w)
    canvas = np.zeros((3 * size, 3 * size), np.uint8)  # room to grow any way; cut to the tree's box
    levels = int(rng.integers(3, 6))
    trunk = (np.array([1.5 * size, 2.2 * size]), -np.pi / 2 + rng.normal(0, 0.2), rng.uniform(0.25, 0.4) * size)
    stack = [(*trunk, max(2.0, rng.uniform(0.03, 0.08) * size), 0)]
    while stack:
        start, angle, length, thickness, level = stack.pop()
        end = start + length * np.array([np.cos(angle), np.sin(angle)])
        cv2.line(canvas, _pixel(start), _pixel(end), 1, max(1, int(round(thickness))))
        if level + 1 < levels:
            for _ in range(int(rng.integers(2, 4))):
                child = (angle + rng.uniform(-0.9, 0.9), length * rng.uniform(0.55, 0.8), thickness * rng.uniform(0.5, 0.75))
                stack.append((end, *child, level + 1))
        elif rng.random() < 0.3:
            radius = max(2, int(rng.uniform(0.02, 0.05) * size))
            cv2.ellipse(canvas, _pixel(end), (radius, max(1, radius // 2)), float(np.degrees(angle)), 0, 360, 1, -1)
    return _tight(canvas)


def _plant(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Held-out only: a potted-plant-like fan of curved 1-4 px stems from one base near the bottom,
    each ending in a pointed leaf blade along the stem's last direction; cut to what was drawn."""
    side = min(h, w)
    pad = int(0.35 * side) + 2  # leaves may grow past the stems' (h, w) frame
    canvas = np.zeros((h + 2 * pad, w + 2 * pad), np.uint8)
    base = pad + np.array([rng.uniform(0.35, 0.65) * w, h * rng.uniform(0.85, 1.0)])
    for _ in range(int(rng.integers(3, 9))):
        tip = pad + np.array([rng.uniform(0.05, 0.95) * w, rng.uniform(0.05, 0.6) * h])
        bend = (base + tip) / 2 + rng.normal(0, 0.15, 2) * [w, h]
        t = np.linspace(0, 1, 24)[:, None]
        stem = (1 - t) ** 2 * base + 2 * (1 - t) * t * bend + t**2 * tip  # a quadratic Bezier curve
        cv2.polylines(canvas, [np.round(stem).astype(np.int32)], False, 1, int(rng.integers(1, 5)))
        direction = (stem[-1] - stem[-3]) / max(float(np.linalg.norm(stem[-1] - stem[-3])), 1e-6)
        normal = np.array([-direction[1], direction[0]])
        length = rng.uniform(0.12, 0.3) * side
        along = np.linspace(0, 1, 12)[:, None]
        spine = tip + along * length * direction
        bulge = length * rng.uniform(0.12, 0.3) * np.sin(np.pi * along)  # pointed at both ends
        blade = np.concatenate([spine + bulge * normal, (spine - bulge * normal)[::-1]])
        cv2.fillPoly(canvas, [np.round(blade).astype(np.int32)], 1)
    return _tight(canvas)


_HERSHEY_FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
                  cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_SCRIPT_SIMPLEX)
_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _text(rng: np.random.Generator, w: int) -> np.ndarray:
    """Training only: a printed word (OpenCV's Hershey fonts, sometimes italic) about ``w`` wide,
    2-10 letters; its mask is the strokes alone, so the paper between them is not the object
    (as with the scene-text words annotators outline). Strokes are 7-16% of the letter height."""
    word = "".join(rng.choice(list(_LETTERS), size=int(rng.integers(2, 11))))
    font = int(rng.choice(_HERSHEY_FONTS)) | (cv2.FONT_ITALIC if rng.random() < 0.25 else 0)
    (unit_w, unit_h), _ = cv2.getTextSize(word, font, 1.0, 1)
    scale = max(w, 16) / unit_w
    letter_h = unit_h * scale
    thickness = max(1, int(round(letter_h * rng.uniform(0.07, 0.16))))
    canvas = np.zeros((int(3 * letter_h) + 4 * thickness + 8, int(1.3 * max(w, 16)) + 4 * thickness + 8), np.uint8)
    origin = (2 * thickness + 4, int(2 * letter_h) + 2 * thickness)
    cv2.putText(canvas, word, origin, font, scale, 255, thickness, cv2.LINE_AA)
    return _tight((canvas >= 128).astype(np.uint8))


def _tight(mask: np.ndarray) -> np.ndarray:
    """The mask cut to its nonzero bounding box (unchanged when empty)."""
    ys, xs = np.nonzero(mask)
    return mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] if len(ys) else mask


def _pixel(point: np.ndarray) -> tuple[int, int]:
    return int(round(float(point[0]))), int(round(float(point[1])))


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
    """Random top-left (x, y) for the shape (an alpha array), sometimes partly outside the image,
    sometimes pushed against one side so the frame cuts it; returns the part inside the image."""
    h, w = shape.shape
    x = int(rng.integers(-w // 4, max(width - 3 * w // 4, -w // 4 + 1)))
    y = int(rng.integers(-h // 4, max(height - 3 * h // 4, -h // 4 + 1)))
    if rng.random() < BORDER_FRACTION:
        side, cut = int(rng.integers(4)), rng.uniform(0, MAX_BORDER_CUT)
        if side == 0:
            x = -int(cut * w)
        elif side == 1:
            x = width - w + int(cut * w)
        elif side == 2:
            y = -int(cut * h)
        else:
            y = height - h + int(cut * h)
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = max(min(x + w, width), x0), max(min(y + h, height), y0)
    return x0, y0, shape[y0 - y : y1 - y, x0 - x : x1 - x]


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
    category_ids = {family: i + 1 for i, family in enumerate(SHAPE_FAMILIES[split])}
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
