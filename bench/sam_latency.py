"""SAM 1 and SAM 2.1 latency and memory: every model type's encoder and decoder, and the server's
first and cached prompt.

Models of the real architectures with random weights (no checkpoint needed: same compute as the
trained models), on a real photo from scikit-image, through ``SamSegmenter`` exactly as the server
calls it. Prints figures; asserts nothing.

1. Per model type, in a child process of its own (so that its peak RSS is its own): the image
   encoding (once per image, then cached) and the decoder per prompt with the features cached
   (prompt encoder + mask decoder + upscaling to the natural size).
2. The server as users run it (``gunicorn backend.wsgi:app``, one worker, through the integration
   tests' ``BackendServer``) with a random-weight checkpoint in the official file format, per server
   type: the first interactive ``/predict`` after start, then the first ``/predict`` on each of
   three more new images (the photo mirrored: new content, same size; download + encoding +
   decoding on a warm server, as annotators meet it), cached round trips, and the ratio of the
   first prompts on a new image (goal: hiera_tiny <= 0.15 x vit_b). The very first forward pass
   of a process also pays one-time set-up (allocator, kernels), which is why it is shown apart.

    .venv/bin/python bench/sam_latency.py [--types vit_b,sam2.1_hiera_tiny] [--server-types ...]
        [--repeats 20] [--image coffee] [--precision auto|float32|bfloat16]

All types take ~10 minutes on 2 CPU cores (vit_h's encoding alone is minutes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from backend.prompts import LoadedImage, Prompt, PromptKind  # noqa: E402
from backend.embeddings.cache import EmbeddingCache  # noqa: E402
from backend.segmenters.sam import PRECISIONS, SamSegmenter, adapter_for, encoder_dtype  # noqa: E402
from backend.segmenters.sam_types import SAM1, SAM_TYPES  # noqa: E402

SERVER_TYPES = ("sam2.1_hiera_tiny", "vit_b")
FIRST_PROMPT_GOAL = 0.15  # hiera_tiny's first prompt on a new image, as a fraction of vit_b's


def random_weight_segmenter(model_type: str = "vit_b", device: str = "cpu", precision: str = "float32") -> SamSegmenter:
    """A SamSegmenter on SAM ``model_type`` with random weights, its encoder at SAM_PRECISION ``precision``."""
    torch.manual_seed(0)
    family = adapter_for(model_type)
    model = family(family.build(model_type).to(device))
    return SamSegmenter(model, f"{family.model_name(model_type)}-random", EmbeddingCache(4),
                        encoder_dtype(model_type, precision, device))


def network_of(segmenter: SamSegmenter, model_type: str) -> torch.nn.Module:
    return segmenter.model.sam if SAM_TYPES[model_type].family == SAM1 else segmenter.model.model


def official_checkpoint(segmenter: SamSegmenter, model_type: str, path: Path) -> Path:
    """Saves ``segmenter``'s weights as the official ``model_type`` file is laid out: SAM 1's is the
    bare state dict, SAM 2.1's holds it under "model"."""
    state = network_of(segmenter, model_type).state_dict()
    torch.save(state if SAM_TYPES[model_type].family == SAM1 else {"model": state}, path)
    return path


def photo(name: str = "coffee") -> LoadedImage:
    """A scikit-image sample photo (coffee: 600x400) as the loader would return it."""
    import skimage.data

    array = np.ascontiguousarray(getattr(skimage.data, name)()[:, :, :3])
    return LoadedImage(array=array, key=hashlib.sha1(array.tobytes()).hexdigest())


def time_embedding(segmenter: SamSegmenter, image: LoadedImage) -> float:
    """Seconds to compute (and cache) ``image``'s features."""
    started = time.perf_counter()
    segmenter.embedding(image)
    return time.perf_counter() - started


def time_decoder(segmenter: SamSegmenter, image: LoadedImage, prompt: Prompt, repeats: int = 30) -> list[float]:
    """Seconds per ``segmenter.segment(image, prompt)`` with the features already cached: prompt
    encoder + mask decoder + upscaling to the natural size, i.e. the bare SAM cost of one click."""
    segmenter.embedding(image)
    segmenter.segment(image, prompt)  # warm-up
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        segmenter.segment(image, prompt)
        timings.append(time.perf_counter() - started)
    return timings


def median_p90_ms(timings: list[float]) -> tuple[float, float]:
    """(median, 90th percentile) of ``timings`` given in seconds, in milliseconds."""
    return 1000 * statistics.median(timings), 1000 * float(np.percentile(timings, 90))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def cpu_description() -> str:
    """The CPU model (Linux /proc/cpuinfo) and how many cores this process may run on."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), model)
    except OSError:
        pass  # not Linux
    return f"{model}, {len(os.sched_getaffinity(0))} cores"


def example_prompts(image: LoadedImage) -> dict[str, Prompt]:
    w, h = image.width, image.height
    box = (0.2 * w, 0.2 * h, 0.7 * w, 0.8 * h)
    centre = np.array([[0.45 * w, 0.5 * h]], np.float32)
    return {
        "box": Prompt(PromptKind.BOX, "object", box=box),
        "one click": Prompt(PromptKind.POINTS, "object", points=centre, point_labels=np.array([1])),
        "box + click": Prompt(PromptKind.BOX, "object", box=box, points=centre, point_labels=np.array([1])),
    }


def measure_model(model_type: str, image_name: str, repeats: int, device: str, precision: str) -> dict:
    """Encoder and decoder figures of one model type (run in a fresh process: peak RSS is its own)."""
    rss_start = peak_rss_mb()
    segmenter = random_weight_segmenter(model_type, device, precision)
    parameters = sum(p.numel() for p in network_of(segmenter, model_type).parameters())
    rss_model = peak_rss_mb()
    image = photo(image_name)
    encoder_s = time_embedding(segmenter, image)
    decoder = {name: median_p90_ms(time_decoder(segmenter, image, prompt, repeats))
               for name, prompt in example_prompts(image).items()}
    return {"type": model_type, "parameters_m": parameters / 1e6, "encoder_s": encoder_s, "decoder_ms": decoder,
            "precision": segmenter.precision,
            "rss_start_mb": rss_start, "rss_model_mb": rss_model, "peak_rss_mb": peak_rss_mb()}


def measure_in_child(model_type: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--measure-one", model_type, "--image", args.image,
               "--repeats", str(args.repeats), "--device", args.device, "--precision", args.precision]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


NEW_IMAGE_VARIANTS = (np.fliplr, np.flipud, lambda array: array[::-1, ::-1])  # same size, new content


def server_latency(model_type: str, image: LoadedImage, repeats: int, workdir: Path, precision: str) -> dict:
    """The real server with a ``model_type`` checkpoint of random weights: seconds of the first
    interactive /predict after start on ``image``, the median of the first /predict on each of
    ``NEW_IMAGE_VARIANTS`` (download + encoding + decoding, warm server), and cached round trips."""
    from interactive_latency import BackendServer, PhotoServer, context_region, interactive_payload, png_bytes

    checkpoint = official_checkpoint(random_weight_segmenter(model_type), model_type, workdir / f"{model_type}.pt")
    label_config = (REPO_ROOT / "examples" / "labeling_config_sam.xml").read_text()
    prompts = {"rectangle": example_prompts(image)["box"], "click": example_prompts(image)["one click"]}
    (workdir / model_type).mkdir()
    photos = PhotoServer(png_bytes(image.array))
    new_photos = [PhotoServer(png_bytes(np.ascontiguousarray(variant(image.array)))) for variant in NEW_IMAGE_VARIANTS]
    server = BackendServer(workdir / model_type, checkpoint, label_studio_url="", personal_access_token="",
                           extra_env={"SAM_MODEL_TYPE": model_type, "SAM_PRECISION": precision})
    try:
        session = requests.Session()
        session.post(f"{server.url}/setup", json={"project": "1.1700000000", "schema": label_config},
                     auth=server.auth, timeout=30).raise_for_status()
        payloads = {name: interactive_payload(photos.url, context_region(prompt, image.width, image.height),
                                              label_config) for name, prompt in prompts.items()}

        def round_trip(payload: dict) -> float:
            """Seconds of one /predict; random weights may make an empty mask, which is answered
            without a region, so only the answer's shape is checked."""
            started = time.perf_counter()
            response = session.post(f"{server.url}/predict", json=payload, auth=server.auth, timeout=900)
            response.raise_for_status()
            if len(response.json()["results"]) != 1:
                raise RuntimeError(f"expected one result, got {response.text[:300]}")
            return time.perf_counter() - started

        after_start_s = round_trip(payloads["rectangle"])
        rectangle_region = context_region(prompts["rectangle"], image.width, image.height)
        new_image_s = statistics.median(
            round_trip(interactive_payload(new_photo.url, rectangle_region, label_config)) for new_photo in new_photos)
        cached = {name: median_p90_ms([round_trip(payload) for _ in range(repeats)])
                  for name, payload in payloads.items()}
        return {"type": model_type, "startup_s": server.startup_s, "after_start_s": after_start_s,
                "new_image_s": new_image_s, "cached_ms": cached}
    finally:
        server.stop()
        for server_of_photos in [photos, *new_photos]:
            server_of_photos.close()
        checkpoint.unlink()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--types", default=",".join(SAM_TYPES), help="model types for the encoder/decoder table")
    parser.add_argument("--server-types", default=",".join(SERVER_TYPES), help="model types for the server part "
                        "(empty: skip it)")
    parser.add_argument("--image", default="coffee", help="a scikit-image sample photo name")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS, help="SAM_PRECISION, as the server "
                        "takes it (auto: bfloat16 for SAM 2.1 where the CPU has it natively)")
    parser.add_argument("--measure-one", help=argparse.SUPPRESS)  # the child process of one type
    args = parser.parse_args(argv)
    if args.measure_one:
        print(json.dumps(measure_model(args.measure_one, args.image, args.repeats, args.device, args.precision)))
        return

    image = photo(args.image)
    print(f"machine: {cpu_description()}, torch {torch.__version__}, torch threads: {torch.get_num_threads()}, "
          f"device {args.device}, SAM_PRECISION={args.precision}; 1-min load average at start {os.getloadavg()[0]:.1f}")
    print(f"image: skimage.data.{args.image} {image.width}x{image.height}; random weights; decoder: "
          f"median (p90) of {args.repeats} calls with the features cached\n")
    print("| type | parameters | encoder (once per image) | encoder precision | decoder: box | one click "
          "| box + click | peak RSS |")
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for model_type in [name for name in args.types.split(",") if name]:
        row = measure_in_child(model_type, args)
        cells = [f"{median:.0f} ({p90:.0f}) ms" for median, p90 in row["decoder_ms"].values()]
        print(f"| {model_type} | {row['parameters_m']:.1f}M | {row['encoder_s']:.2f} s | {row['precision']} | "
              + " | ".join(cells)
              + f" | {row['peak_rss_mb']:.0f} MB |", flush=True)

    server_types = [name for name in args.server_types.split(",") if name]
    if not server_types:
        return
    print(f"\nserver (gunicorn, 1 worker, {args.repeats} cached round trips each):")
    print("| type | first /predict after start | first /predict on a new image (median of 3) "
          "| cached rectangle | cached click |")
    print("|---|---:|---:|---:|---:|")
    rows = {}
    with tempfile.TemporaryDirectory(prefix="sam-latency-") as workdir:
        for model_type in server_types:
            row = rows[model_type] = server_latency(model_type, image, args.repeats, Path(workdir), args.precision)
            (rect_median, rect_p90), (click_median, click_p90) = row["cached_ms"].values()
            print(f"| {model_type} | {row['after_start_s']:.1f} s | {row['new_image_s']:.1f} s "
                  f"| {rect_median:.0f} ({rect_p90:.0f}) ms | {click_median:.0f} ({click_p90:.0f}) ms |", flush=True)
    if {"sam2.1_hiera_tiny", "vit_b"} <= rows.keys():
        tiny, vit_b = rows["sam2.1_hiera_tiny"], rows["vit_b"]
        ratio = tiny["new_image_s"] / vit_b["new_image_s"]
        verdict = "meets" if ratio <= FIRST_PROMPT_GOAL else "misses"
        print(f"\nfirst prompt on a new image, sam2.1_hiera_tiny / vit_b: {ratio:.3f} "
              f"({verdict} the goal of <= {FIRST_PROMPT_GOAL}); first after start: "
              f"{tiny['after_start_s'] / vit_b['after_start_s']:.3f}")
    print(f"1-min load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
