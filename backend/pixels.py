"""The natural image of a picture, decoded one way for serving, training and evaluation: EXIF
orientation applied (as browsers, and so Label Studio's percents, do), any Pillow mode to (H, W, 3)
uint8 RGB. Alpha is dropped; 16-bit images keep their high byte; 32-bit int/float images (which
browsers cannot show either) are stretched from their min..max to 0..255."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from backend.prompts import LoadedImage


def natural_rgb(image: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB of ``image`` after its EXIF orientation (applied to ``image`` itself: no
    copy of a large photo when it needs no turning)."""
    ImageOps.exif_transpose(image, in_place=True)
    return rgb_uint8(image)


def rgb_uint8(image: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB of ``image`` as stored (no EXIF orientation), from any Pillow mode."""
    if image.mode.startswith("I;16"):
        gray = (np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8)
    elif image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scale = 255.0 / (high - low) if high > low else 0.0
        gray = ((values - low) * scale).round().astype(np.uint8)
    else:
        return np.array(image if image.mode == "RGB" else image.convert("RGB"), dtype=np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def read_image(path: str | Path) -> LoadedImage:
    """The natural image of a local file; ValueError naming the file when it cannot be read."""
    path = Path(path)
    try:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            return LoadedImage(natural_rgb(image), key=hashlib.sha1(data).hexdigest())
    except OSError as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from None
