"""Request size: how large an interactive /predict body gets, to size MAX_REQUEST_BYTES.

Label Studio forwards an interactive request with the whole task: its data, its annotations (all
regions, brush masks as RLE), its predictions (by id) and the requesting annotator's draft (again
every region on screen), plus the smart-tool regions in ``params.context``. So the body grows with
the number of masks on screen and how ragged they are, not with the prompt. This builds such
bodies, serialised as Label Studio sends them (``json.dumps`` defaults), for object masks of the
synthetic generator (``backend.training.synthetic``: blobs, limbs, rings, horses, polygons with
holes) scaled up to a photo's size, in three cases per photo size:

- smooth: the masks as drawn (scaled with nearest-neighbour: a human brush or a trained SAM),
- ragged: a quarter of the pixels in a 5 px band along each mask's edge flipped (a noisy model's
  edge, like SAM with random weights),
- both an annotation and a draft holding all masks (the worst common case: a submitted task reopened).

Prints one line per case: masks on screen, image size, body size in MiB, and the parse time and
peak memory of ``json.loads`` on it (tracemalloc) (what the backend spends before reading a single field).

    .venv/bin/python bench/request_size.py [--masks 10 30 60] [--sizes 4032x3024 8000x6000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tracemalloc
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from backend.brush_rle import encode_brush_rle  # noqa: E402
from backend.training.synthetic import generate_scene  # noqa: E402


def object_masks(count: int, width: int, height: int, ragged: bool, rng: np.random.Generator) -> list[np.ndarray]:
    masks: list[np.ndarray] = []
    index = 0
    while len(masks) < count:
        scene = generate_scene(seed=7, index=index, split="heldout")
        index += 1
        for mask in scene.masks:
            if len(masks) == count:
                break
            big = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
            if ragged:
                band = np.ones((5, 5), np.uint8)
                edge = cv2.dilate(big.astype(np.uint8), band).astype(bool) ^ cv2.erode(big.astype(np.uint8), band)
                ys, xs = np.nonzero(edge)
                flip = rng.random(len(ys)) < 0.25
                big[ys[flip], xs[flip]] = ~big[ys[flip], xs[flip]]
            masks.append(big)
    return masks


def brush_region(mask: np.ndarray, index: int) -> dict:
    height, width = mask.shape
    return {"id": f"r{index:08d}", "from_name": "mask", "to_name": "image", "type": "brushlabels",
            "original_width": width, "original_height": height, "image_rotation": 0, "origin": "manual",
            "value": {"format": "rle", "rle": encode_brush_rle(mask), "brushlabels": ["Car"]}}


def interactive_body(regions: list[dict], width: int, height: int, with_annotation: bool) -> dict:
    click = {"id": "kp1", "from_name": "click", "to_name": "image", "type": "keypointlabels",
             "original_width": width, "original_height": height, "image_rotation": 0, "is_positive": True,
             "value": {"x": 50.0, "y": 50.0, "width": 0.3, "keypointlabels": ["Car"]}}
    task = {"id": 12, "data": {"image": "/data/upload/3/photo.jpg"}, "meta": {}, "predictions": [41, 42],
            "drafts": [{"id": 9, "user": "annotator@example.com", "created_username": "annotator",
                        "result": regions, "lead_time": 120.5, "created_at": "2026-12-01T20:00:00Z",
                        "updated_at": "2026-12-01T20:05:00Z"}],
            "annotations": [{"id": 77, "result": regions, "was_cancelled": False}] if with_annotation else []}
    return {"tasks": [task], "project": "3.1764600000", "label_config": "<View>…</View>",
            "params": {"login": None, "password": None, "context": {"result": [click]}}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--masks", type=int, nargs="+", default=[10, 30, 60])
    parser.add_argument("--sizes", nargs="+", default=["4032x3024", "8000x6000"])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print("masks | image | case | body MiB | json.loads s | json.loads peak MiB")
    for size in args.sizes:
        width, height = (int(v) for v in size.split("x"))
        for count in args.masks:
            for ragged, with_annotation, case in ((False, False, "smooth, draft"), (True, False, "ragged, draft"),
                                                  (True, True, "ragged, draft + annotation")):
                regions = [brush_region(m, i) for i, m in enumerate(object_masks(count, width, height, ragged, rng))]
                body = json.dumps(interactive_body(regions, width, height, with_annotation)).encode()
                started = time.perf_counter()
                json.loads(body)
                parse_s = time.perf_counter() - started
                tracemalloc.start()
                json.loads(body)
                peak = tracemalloc.get_traced_memory()[1] / 2**20
                tracemalloc.stop()
                print(f"{count} | {size} | {case} | {len(body) / 2**20:.2f} | {parse_s:.2f} | {peak:.0f}")


if __name__ == "__main__":
    main()
