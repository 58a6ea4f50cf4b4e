"""CPU (or CUDA) latency of the custom extreme-point model, per stage and end to end, plus sizes.

    .venv/bin/python bench/model_latency.py [--weights DIR] [--threads 2] [--runs 20] [--device cpu]

Prints parameter counts, fp16 file sizes, median/p90 milliseconds of the coarse stage, the
refinement stage, and a whole ``segment`` call (crop, both stages, paste back) on a 1024x768 photo:
from the 4 extreme points, and with 2 correction clicks after them (a correction re-runs the call);
then whole calls on scikit-image's coffee photo (the cup's extreme points) at its own size and
doubled (1200x800), without and with the native-resolution refinement (EXTREME_NATIVE_REFINE).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import skimage.data
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.networks.coarse import IN_CHANNELS  # noqa: E402
from backend.networks.weights import parameter_count  # noqa: E402
from backend.prompts import LoadedImage, Prompt, PromptKind  # noqa: E402
from backend.segmenters.extreme import ExtremeSegmenter, refine_stage_input  # noqa: E402
from backend.segmenters.native_refine import NativeRefinement  # noqa: E402
from backend.settings import Settings  # noqa: E402


def timed(fn, runs: int) -> dict:
    fn()  # warm-up: oneDNN primitive creation, allocator
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {"median_ms": round(statistics.median(times), 1), "p90_ms": round(times[int(0.9 * (len(times) - 1))], 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=Settings().extreme_weights)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    segmenter = ExtremeSegmenter.load(args.weights, args.device)
    config = segmenter.config
    coarse_in = torch.randn(1, IN_CHANNELS, config.crop_size, config.crop_size, device=args.device)
    refine_in = torch.randn(1, IN_CHANNELS, config.refine_size, config.refine_size, device=args.device)
    coarse_logits = torch.randn(1, 1, config.crop_size, config.crop_size, device=args.device)
    image = np.random.default_rng(0).integers(0, 256, (768, 1024, 3), dtype=np.uint8)
    points = np.array([[500, 200], [300, 400], [500, 600], [700, 380]], np.float32)
    prompt = Prompt(kind=PromptKind.EXTREME, label="object", points=points, point_labels=np.ones(4, np.int64))
    clicks = np.array([[520, 420], [340, 250]], np.float32)  # one positive, one negative
    corrected = Prompt(kind=PromptKind.EXTREME, label="object", points=np.vstack([points, clicks]),
                       point_labels=np.array([1, 1, 1, 1, 1, 0]))

    class Pixels:
        array = image

    with torch.no_grad():
        report = {
            "device": args.device, "threads": args.threads, "version": segmenter.version,
            "config": {"crop_size": config.crop_size, "refine_size": config.refine_size},
            "parameters": {"coarse": parameter_count(segmenter.coarse), "refine": parameter_count(segmenter.refine)},
            "file_bytes": {p.name: p.stat().st_size for p in sorted(Path(args.weights).glob("*.pt"))},
            "coarse": timed(lambda: segmenter.coarse(coarse_in), args.runs),
            "refine": timed(lambda: segmenter.refine(refine_stage_input(refine_in, coarse_logits)), args.runs),
            "segment_1024x768": timed(lambda: segmenter.segment(Pixels, prompt), args.runs),
            "segment_1024x768_2_clicks": timed(lambda: segmenter.segment(Pixels, corrected), args.runs),
        }
        report.update(photo_calls(segmenter, args.runs))
    print(json.dumps(report, indent=2))
    return 0


# The coffee cup's extreme points (left, right, top, bottom) in the 600x400 photo.
CUP_POINTS = np.array([[173.5, 111.5], [409.5, 123.5], [295.5, 18.5], [223.5, 307.5]], np.float32)


def photo_calls(segmenter: ExtremeSegmenter, runs: int) -> dict:
    """Whole calls on the coffee photo, at its size and doubled, plain and natively refined."""
    native = ExtremeSegmenter(segmenter.coarse, segmenter.refine, segmenter.config, segmenter.version,
                              segmenter.device, NativeRefinement())
    photo = skimage.data.coffee()
    report = {}
    for scale in (1, 2):
        image = LoadedImage(cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC), "coffee")
        prompt = Prompt(kind=PromptKind.EXTREME, label="cup", points=CUP_POINTS * scale,
                        point_labels=np.ones(4, np.int64))
        size = f"{image.width}x{image.height}"
        report[f"segment_coffee_{size}"] = timed(lambda: segmenter.segment(image, prompt), runs)
        report[f"segment_coffee_{size}_native_refine"] = timed(lambda: native.segment(image, prompt), runs)
    return report


if __name__ == "__main__":
    raise SystemExit(main())
