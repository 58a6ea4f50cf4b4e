"""First-prompt latency on a task imported earlier vs a cached prompt (goal: at most 1.5x), with SAM
ViT-B of the real architecture and random weights (same compute as the trained model).

1. A backend app (in this process, Flask's test client, embedded defaults: the store on disk)
   receives Label Studio's TASKS_CREATED for scikit-image photos (data: URIs, decoded on every
   request as a download would be) and embeds them ahead in its background thread.
2. A second app on the same MODEL_DIR with an empty in-process cache (a restarted backend, or one
   whose LRU has moved on) answers the first box prompt on each imported task: the embedding comes
   from the store on disk. Then the same prompt again, served from the in-process cache.
   Before these, for comparison (and as the second app's warm-up), the first prompt on a task
   nobody embedded ahead, which computes the embedding.

Also prints how far masks from the float16-stored embeddings are from float32 ones (IoU), on the
full-size architecture. Times are whole /predict calls (parse, image decode, embedding, decoder,
brush RLE), median of ``--repeats``. Asserts nothing.

    .venv/bin/python bench/embed_ahead_latency.py [--repeats 10]

Takes a few minutes on 2 CPU cores: one ViT-B embedding per photo, plus one.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sam_latency import cpu_description

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from backend.app import create_app  # noqa: E402
from backend.embeddings import codec  # noqa: E402
from backend.images import ImageLoader  # noqa: E402
from backend.prompts import Prompt, PromptKind  # noqa: E402
from backend.segmenter_set import SegmenterSet  # noqa: E402
from backend.embeddings.cache import EmbeddingCache  # noqa: E402
from backend.segmenters.sam import SamSegmenter, SegmentAnything  # noqa: E402
from backend.settings import Settings  # noqa: E402
from backend.training.validation import iou  # noqa: E402

CONFIG = (REPO_ROOT / "examples" / "labeling_config_sam.xml").read_text()
PROJECT = "1.1700000000"
PHOTOS = ("coffee", "astronaut", "chelsea")
GOAL = 1.5


def photo_uri(name: str) -> str:
    import skimage.data

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(getattr(skimage.data, name)()[:, :, :3])).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def box_region(width: int, height: int) -> dict:
    return {"id": "bench", "from_name": "box", "to_name": "image", "type": "rectanglelabels",
            "original_width": width, "original_height": height, "image_rotation": 0,
            "value": {"x": 20, "y": 20, "width": 50, "height": 60, "rotation": 0, "rectanglelabels": ["Cat"]}}


def app_on(settings: Settings, sam_model):
    cache = EmbeddingCache.from_settings(settings, namespace="random-vit_b")
    segmenters = SegmenterSet(sam=SamSegmenter(SegmentAnything(sam_model), "sam-vit_b", cache), sam_name="sam-vit_b", embeddings=cache)
    app = create_app(settings, segmenters=segmenters, images=ImageLoader(settings))
    client = app.test_client()
    assert client.post("/setup", json={"project": PROJECT, "schema": CONFIG}).status_code == 200
    return app, client, segmenters.sam


def timed_prompt(client, task: dict, size: tuple[int, int]) -> float:
    body = {"tasks": [task], "project": PROJECT, "label_config": CONFIG,
            "params": {"context": {"result": [box_region(*size)]}}}
    started = time.perf_counter()
    response = client.post("/predict", json=body)
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    return elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "embed_ahead.json")
    args = parser.parse_args(argv)
    print(f"machine: {cpu_description()}, torch {torch.__version__}, {torch.get_num_threads()} threads")

    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    sam_model = sam_model_registry["vit_b"]().eval()
    uris = {name: photo_uri(name) for name in PHOTOS + ("rocket",)}
    tasks = [{"id": index + 1, "data": {"image": uris[name]}} for index, name in enumerate(PHOTOS)]
    with tempfile.TemporaryDirectory() as model_dir:
        settings = replace(Settings(), model_dir=Path(model_dir))
        importer, client, _ = app_on(settings, sam_model)
        started = time.perf_counter()
        answer = client.post("/webhook", json={"action": "TASKS_CREATED", "tasks": tasks, "project": {"id": 1}})
        print(f"TASKS_CREATED answered in {1000 * (time.perf_counter() - started):.0f} ms: {answer.get_json()}")
        queue = importer.extensions["segmentation_model"].embed_ahead.queue
        while queue.status()["done"] < len(tasks):
            time.sleep(0.5)
        embed_s = time.perf_counter() - started
        print(f"{len(tasks)} imported photos embedded ahead in {embed_s:.1f} s ({queue.status()['rate_per_min']} per min)")
        queue.stop()

        restarted, client, sam = app_on(settings, sam_model)
        # First, the prompt on a photo nobody embedded ahead (it also warms this app's code paths up).
        cold_task = {"id": 99, "data": {"image": uris["rocket"]}}
        cold_array = ImageLoader(settings).load(uris["rocket"]).array
        cold = timed_prompt(client, cold_task, (cold_array.shape[1], cold_array.shape[0]))
        first, cached, ratios = [], [], []
        for task in tasks:
            array = ImageLoader(settings).load(task["data"]["image"]).array
            size = (array.shape[1], array.shape[0])
            first.append(timed_prompt(client, task, size))
            repeat = [timed_prompt(client, task, size) for _ in range(args.repeats)]
            cached.append(statistics.median(repeat))
            ratios.append(first[-1] / cached[-1])
        health = client.get("/health").get_json()["embeddings"]

        restarted.extensions["segmentation_model"].embed_ahead.queue.stop()

        # float16 storage vs float32, on the full-size architecture: the same prompt on both embeddings.
        ious = []
        for task in tasks[:1]:  # one more ViT-B embedding (float32) per photo compared
            image = ImageLoader(settings).load(task["data"]["image"])
            w, h = image.width, image.height
            stored = sam.embedding(image)  # float16-rounded, from the store
            full = SamSegmenter(SegmentAnything(sam_model), "sam-vit_b-fp32", EmbeddingCache(1))
            full_mask = full.segment(image, Prompt(PromptKind.BOX, "Cat", box=(0.2 * w, 0.2 * h, 0.7 * w, 0.8 * h))).mask
            half = SamSegmenter(SegmentAnything(sam_model), "sam-vit_b-fp16", EmbeddingCache(1))
            half.embedding_cache.get_or_compute(half.embedding_key(image), lambda: codec.decode(codec.encode(stored, "k"), "k"))
            half_mask = half.segment(image, Prompt(PromptKind.BOX, "Cat", box=(0.2 * w, 0.2 * h, 0.7 * w, 0.8 * h))).mask
            ious.append(float(iou(full_mask, half_mask)))

    result = {
        "machine": cpu_description(), "torch_threads": torch.get_num_threads(), "photos": list(PHOTOS),
        "first_prompt_from_store_ms": [round(1000 * t, 1) for t in first],
        "cached_prompt_median_ms": [round(1000 * t, 1) for t in cached],
        "ratio_first_to_cached": [round(r, 2) for r in ratios],
        "first_prompt_not_embedded_ahead_ms": round(1000 * cold, 1),
        "embedded_ahead_s": round(embed_s, 1), "store": health, "fp16_vs_fp32_mask_iou": [round(v, 4) for v in ious],
    }
    print(f"{'photo':<10} {'first prompt (store)':>21} {'cached prompt':>14} {'ratio':>6}")
    for name, f, c, r in zip(PHOTOS, first, cached, ratios):
        print(f"{name:<10} {1000 * f:>18.0f} ms {1000 * c:>11.0f} ms {r:>6.2f}")
    print(f"worst ratio {max(ratios):.2f} (goal <= {GOAL}); first prompt on a photo not embedded ahead: "
          f"{cold:.1f} s ({cold / statistics.median(cached):.0f}x a cached prompt)")
    print(f"masks from float16-stored vs float32 embeddings, IoU: {', '.join(f'{v:.4f}' for v in ious)}")
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
