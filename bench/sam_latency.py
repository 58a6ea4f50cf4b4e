"""SAM latency and memory: image embedding vs. one prompt with the embedding cached.

Uses a SAM of the real architecture with random weights (no checkpoint needed: same compute as
the trained model) on a real photo from scikit-image, through ``SamSegmenter`` exactly as the
server calls it. Prints figures; asserts nothing.

    .venv/bin/python bench/sam_latency.py [--model-type vit_b] [--repeats 30]

The embedding is computed once per run (vit_b: tens of seconds on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from segment_anything import sam_model_registry

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.images import LoadedImage  # noqa: E402
from backend.prompts import Prompt, PromptKind  # noqa: E402
from backend.segmenters.embedding_cache import EmbeddingCache  # noqa: E402
from backend.segmenters.sam import SamSegmenter  # noqa: E402


def random_weight_segmenter(model_type: str = "vit_b", device: str = "cpu") -> SamSegmenter:
    """A SamSegmenter on SAM ``model_type`` with random weights."""
    torch.manual_seed(0)
    return SamSegmenter(sam_model_registry[model_type]().to(device), f"sam-{model_type}-random", EmbeddingCache(4))


def photo(name: str = "coffee") -> LoadedImage:
    """A scikit-image sample photo (coffee: 600x400) as the loader would return it."""
    import skimage.data

    array = np.ascontiguousarray(getattr(skimage.data, name)()[:, :, :3])
    return LoadedImage(array=array, key=hashlib.sha1(array.tobytes()).hexdigest())


def time_embedding(segmenter: SamSegmenter, image: LoadedImage) -> float:
    """Seconds to compute (and cache) ``image``'s embedding."""
    started = time.perf_counter()
    segmenter.embedding(image)
    return time.perf_counter() - started


def time_decoder(segmenter: SamSegmenter, image: LoadedImage, prompt: Prompt, repeats: int = 30) -> list[float]:
    """Seconds per ``segmenter.segment(image, prompt)`` with the embedding already cached: prompt
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-type", default="vit_b", choices=("vit_b", "vit_l", "vit_h"))
    parser.add_argument("--image", default="coffee", help="a scikit-image sample photo name")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    print(
        f"machine: {cpu_description()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {args.device}"
    )
    rss_start = peak_rss_mb()
    segmenter = random_weight_segmenter(args.model_type, args.device)
    rss_model = peak_rss_mb()
    image = photo(args.image)
    print(f"image: skimage.data.{args.image} {image.width}x{image.height}; SAM {args.model_type} (random weights)")
    embedding_s = time_embedding(segmenter, image)
    rss_embedding = peak_rss_mb()
    print(f"embedding:            {embedding_s:8.2f} s (once per image, then cached)")
    for name, prompt in example_prompts(image).items():
        median_ms, p90_ms = median_p90_ms(time_decoder(segmenter, image, prompt, args.repeats))
        print(f"decoder, {name:<12} median {median_ms:7.1f} ms, p90 {p90_ms:7.1f} ms ({args.repeats} calls)")
    print(
        f"peak RSS: {peak_rss_mb():.0f} MB (start {rss_start:.0f}, after model {rss_model:.0f}, "
        f"after embedding {rss_embedding:.0f})"
    )


if __name__ == "__main__":
    main()
