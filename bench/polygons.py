"""Polygon bench: how many vertices an object's polygon gets, and what the simplification costs.

    .venv/bin/python bench/polygons.py [--scenes 100] [--tolerances 0,0.5,1,2] [--no-model]

On the held-out synthetic scenes of ``backend.training.synthetic`` (224-448 px photos, 2-5
objects each, every visible object counted), for each tolerance: vertices of an object's largest
polygon (median, p90, max), polygons per object, IoU of the rasterised polygons with the object's
mask with its holes filled (what a polygon can hold) and with the mask as it is, and the time to
trace one object. With the model (default): the same at the default tolerance for the
extreme-point model's masks from the object's exact extreme points, which is what a polygon
project gets, against the object's true mask, beside the brush mask's IoU. Prints a table; writes
JSON to --out (default bench/results/polygons.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from scipy.ndimage import binary_fill_holes

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # run as a script from anywhere

from backend.prompts import LoadedImage, Prompt, PromptKind  # noqa: E402
from backend.polygons import mask_polygons, polygon_mask  # noqa: E402
from backend.project_options import ProjectOptions  # noqa: E402
from backend.training.mask_prompts import extreme_points  # noqa: E402
from backend.training.synthetic import generate_scene  # noqa: E402
from backend.training.validation import iou  # noqa: E402


def polygon_stats(masks: list[np.ndarray], truths: list[np.ndarray], tolerance: float) -> dict:
    """Figures for tracing each of ``masks`` at ``tolerance``, scored against ``truths`` (same order)."""
    vertices, parts, iou_filled, iou_exact, seconds = [], [], [], [], []
    for mask, truth in zip(masks, truths):
        started = time.perf_counter()
        polygons = mask_polygons(mask, tolerance)
        seconds.append(time.perf_counter() - started)
        height, width = mask.shape
        covered = np.zeros_like(mask)
        for points in polygons:
            covered |= polygon_mask(points, width, height)
        vertices.append(len(polygons[0]) if polygons else 0)
        parts.append(len(polygons))
        iou_filled.append(iou(covered, binary_fill_holes(truth)))
        iou_exact.append(iou(covered, truth))
    return {
        "tolerance_px": tolerance,
        "vertices_median": float(np.median(vertices)), "vertices_p90": float(np.percentile(vertices, 90)),
        "vertices_max": int(np.max(vertices)),
        "polygons_per_object_mean": float(np.mean(parts)),
        "objects_with_several_polygons": float(np.mean(np.array(parts) > 1)),
        "miou_vs_filled_mask": float(np.mean(iou_filled)), "miou_vs_mask": float(np.mean(iou_exact)),
        "ms_per_object_median": 1000 * float(np.median(seconds)),
    }


def model_masks(scenes: list, threads: int) -> tuple[list[np.ndarray], list[np.ndarray], str]:
    """The extreme-point model's mask for every object from its exact extreme points, the objects'
    true masks (same order), and the model's version."""
    import torch

    from backend.segmenters.extreme import ExtremeSegmenter

    torch.set_num_threads(threads)
    segmenter = ExtremeSegmenter.load(REPO_ROOT / "model_weights" / "extreme")
    predicted, truths = [], []
    for scene_index, scene in enumerate(scenes):
        image = LoadedImage(scene.image, key=f"scene-{scene_index}")
        for mask in scene.masks:
            prompt = Prompt(PromptKind.EXTREME, "object", points=extreme_points(mask).astype(np.float32),
                            point_labels=np.ones(4, np.int64))
            predicted.append(segmenter.segment(image, prompt).mask)
            truths.append(mask)
    return predicted, truths, segmenter.version


def row(name: str, stats: dict) -> str:
    return (f"| {name} | {stats['tolerance_px']:g} | {stats['vertices_median']:.0f} ({stats['vertices_p90']:.0f}, "
            f"{stats['vertices_max']}) | {stats['polygons_per_object_mean']:.2f} "
            f"({100 * stats['objects_with_several_polygons']:.0f}%) | {stats['miou_vs_filled_mask']:.4f} | "
            f"{stats['miou_vs_mask']:.4f} | {stats['ms_per_object_median']:.2f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=100, help="held-out scenes (default 100)")
    parser.add_argument("--data-seed", type=int, default=1, help="held-out scene stream (default 1)")
    parser.add_argument("--tolerances", default="0,0.5,1,2", help="comma-separated px (default 0,0.5,1,2)")
    parser.add_argument("--no-model", action="store_true", help="skip the extreme-point model's masks")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for the model (default 1)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "polygons.json")
    args = parser.parse_args()

    scenes = [generate_scene(args.data_seed, index, "heldout") for index in range(args.scenes)]
    truths = [mask for scene in scenes for mask in scene.masks]
    sides = [max(np.ptp(np.nonzero(m)[0]), np.ptp(np.nonzero(m)[1])) + 1 for m in truths]
    results = {"machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPUs",
               "data": f"{args.scenes} held-out synthetic scenes (seed {args.data_seed}), {len(truths)} objects, "
                       f"longer box side median {np.median(sides):.0f} px (p90 {np.percentile(sides, 90):.0f})",
               "true_masks": [polygon_stats(truths, truths, float(t)) for t in args.tolerances.split(",")]}
    if not args.no_model:
        predicted, truths_again, version = model_masks(scenes, args.threads)
        results["model"] = {"version": version,
                            "brush_miou": float(np.mean([iou(p, t) for p, t in zip(predicted, truths_again)])),
                            "polygons": polygon_stats(predicted, truths_again,
                                                ProjectOptions().polygon_tolerance_px)}
    print(results["data"])
    print("| masks | tolerance px | vertices of the largest polygon: median (p90, max) | polygons per object "
          "(objects with more than one) | mIoU vs mask, holes filled | mIoU vs mask | ms per object |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for stats in results["true_masks"]:
        print(row("true masks", stats))
    if "model" in results:
        print(row(f"extreme-point model ({results['model']['version']})", results["model"]["polygons"]))
        print(f"extreme-point model, brush masks: mIoU vs mask {results['model']['brush_miou']:.4f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
