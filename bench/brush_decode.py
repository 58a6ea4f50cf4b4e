"""Brush RLE decoding: ``backend.brush_rle.decode_brush_mask`` against the SDK's ``decode_rle``.

Three masks: a smooth disc on a 4032x3024 photo (as our encoder writes it: repeated codes), the same
disc with 2% of its pixels dropped (a ragged model mask), and a 1000x1000 disc as Label Studio's
editor stores a brush (RGBA with the label colour: literal codes). Prints RLE size and each decoder's
time, and checks that both give the same mask.

    .venv/bin/python bench/brush_decode.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from label_studio_sdk.converter.brush import decode_rle, encode_rle

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from backend.brush_rle import MASK_ALPHA_MIN, decode_brush_mask, encode_brush_rle  # noqa: E402


def disc(height: int, width: int, radius: int) -> np.ndarray:
    yy, xx = np.ogrid[:height, :width]
    return (yy - height // 2) ** 2 + (xx - width // 2) ** 2 < radius ** 2


def main() -> None:
    rng = np.random.default_rng(0)
    smooth = disc(3024, 4032, 800)
    editor = disc(1000, 1000, 300)
    rgba = np.zeros(editor.shape + (4,), np.uint8)
    rgba[editor] = (255, 0, 0, 255)
    cases = {
        "smooth, 4032x3024": (encode_brush_rle(smooth), smooth.shape),
        "ragged, 4032x3024": (encode_brush_rle(smooth & (rng.random(smooth.shape) > 0.02)), smooth.shape),
        "editor brush, 1000x1000": ([int(v) for v in encode_rle(rgba.ravel())], editor.shape),
    }
    print("mask | RLE bytes | decode_brush_mask s | SDK decode_rle s | same")
    for name, (rle, (height, width)) in cases.items():
        started = time.perf_counter()
        ours = decode_brush_mask(rle, width, height)
        ours_s = time.perf_counter() - started
        started = time.perf_counter()
        sdk = decode_rle(rle).reshape(height, width, 4)[:, :, 3] >= MASK_ALPHA_MIN
        sdk_s = time.perf_counter() - started
        print(f"{name} | {len(rle)} | {ours_s:.2f} | {sdk_s:.2f} | {np.array_equal(ours, sdk)}")


if __name__ == "__main__":
    main()
