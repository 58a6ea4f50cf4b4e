"""Interactive latency: a /predict round trip to the real server vs the bare SAM decoder, and peak memory.

Starts the backend as users run it (``gunicorn backend.wsgi:app``, one worker, through the
integration tests' ``BackendServer``) with a SAM checkpoint of the real architecture and random
weights (no trained checkpoint needed: same compute), and serves a scikit-image photo over HTTP
on 127.0.0.1 for the backend to download. After one request has computed the image's embedding,
it times interactive ``/predict`` round trips (a rectangle, then one click: the payloads Label
Studio forwards from a smart tool) and the bare ``SamSegmenter.segment`` call on the same image,
prompts and weights (``bench/sam_latency.py``), alternating the two so that both see the same load
on a shared machine. Prints median and p90 of each, the server's
overhead over the bare call (target: under 30%), and the peak RSS of the gunicorn worker and of
this process (which holds the bare segmenter). Asserts nothing.

Random weights make ragged masks (~30,000 runs on the 600x400 photo, where a trained SAM's mask of
an object has hundreds), so the server's brush RLE encoding works harder here than in real use.

    .venv/bin/python bench/interactive_latency.py [--repeats 30] [--image coffee]

Takes a few minutes on 2 CPU cores: the vit_b image embedding is computed twice (server, bare).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests
import torch
from PIL import Image
from sam_latency import cpu_description, example_prompts, median_p90_ms, official_checkpoint, peak_rss_mb, photo, \
    random_weight_segmenter, time_decoder, time_embedding

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests"))  # for tests/support

from backend.prompts import Prompt, PromptKind  # noqa: E402
from support.backend_server import BackendServer  # noqa: E402

LABEL = "Cat"  # a label of every tool in examples/labeling_config_sam.xml
PROJECT = "1.1700000000"  # Label Studio's "<id>.<created timestamp>"
TARGET_OVERHEAD = 0.30


class PhotoServer(ThreadingHTTPServer):
    """Serves one PNG at ``url`` (127.0.0.1, a free port) from a daemon thread; counts downloads."""

    def __init__(self, png: bytes):
        super().__init__(("127.0.0.1", 0), _PhotoHandler)
        self.png = png
        self.downloads = 0
        self.url = f"http://127.0.0.1:{self.server_port}/photo.png"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _PhotoHandler(BaseHTTPRequestHandler):
    server: PhotoServer

    def do_GET(self) -> None:
        self.server.downloads += 1
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(self.server.png)))
        self.end_headers()
        self.wfile.write(self.server.png)

    def log_message(self, format: str, *args) -> None:
        pass  # keep the figures readable


def png_bytes(array) -> bytes:
    """Lossless, so the backend decodes exactly the pixels the bare segmenter gets."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def context_region(prompt: Prompt, width: int, height: int) -> dict:
    """The smart-tool region Label Studio forwards for ``prompt`` (a box, or clicks), in percent of
    the natural ``width`` x ``height`` image, on the tools of examples/labeling_config_sam.xml."""
    common = {"to_name": "image", "original_width": width, "original_height": height, "image_rotation": 0}
    if prompt.kind is PromptKind.BOX:
        x0, y0, x1, y1 = (float(v) for v in prompt.box)
        value = {"x": 100 * x0 / width, "y": 100 * y0 / height, "width": 100 * (x1 - x0) / width,
                 "height": 100 * (y1 - y0) / height, "rotation": 0, "rectanglelabels": [LABEL]}
        return {"id": "bench-box", "from_name": "box", "type": "rectanglelabels", "value": value, **common}
    x, y = (float(v) for v in prompt.points[0])  # JSON takes no numpy floats
    value = {"x": 100 * x / width, "y": 100 * y / height, "width": 0.32, "keypointlabels": [LABEL]}
    return {"id": "bench-click", "from_name": "clicks", "type": "keypointlabels", "is_positive": True,
            "value": value, **common}


def interactive_payload(image_url: str, region: dict, label_config: str) -> dict:
    """An interactive /predict body as Label Studio 1.23 sends it (PROTOCOL.md)."""
    return {
        "tasks": [{"id": 1, "data": {"image": image_url}}],
        "project": PROJECT,
        "label_config": label_config,
        "params": {"login": None, "password": None, "context": {"result": [region]}},
    }


def predict(session: requests.Session, server: BackendServer, payload: dict) -> dict:
    """One /predict round trip; its answer parsed. Raises unless it holds exactly one brush region."""
    response = session.post(f"{server.url}/predict", json=payload, auth=server.auth, timeout=600)
    response.raise_for_status()
    answer = response.json()
    regions = answer["results"][0]["result"]
    if len(regions) != 1 or regions[0]["type"] != "brushlabels":
        raise RuntimeError(f"expected one brush region, got {str(answer)[:300]}")
    return answer


def time_interleaved(session: requests.Session, server: BackendServer, payload: dict, segmenter, image,
                     prompt: Prompt, repeats: int) -> tuple[list[float], list[float]]:
    """Seconds per /predict round trip (request, server work, answer parsed) and per bare decoder call,
    embedding cached, the two alternating so that both see the same load on a shared machine."""
    predict(session, server, payload)  # warm-up
    server_s, bare_s = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        predict(session, server, payload)
        server_s.append(time.perf_counter() - started)
        bare_s.extend(time_decoder(segmenter, image, prompt, repeats=1))
    return server_s, bare_s


def process_memory_mb(pid: int, field: str = "VmHWM") -> float:
    """``field`` of /proc/<pid>/status (VmHWM: peak RSS, VmRSS: RSS now) in MB."""
    with open(f"/proc/{pid}/status") as status:
        kib = next(line.split()[1] for line in status if line.startswith(f"{field}:"))
    return int(kib) / 1024


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (gunicorn master -> its workers)."""
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def load_average() -> str:
    return "load average " + " ".join(f"{value:.2f}" for value in os.getloadavg()) + " (1, 5, 15 min)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="coffee", help="a scikit-image sample photo name")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)

    print(f"machine: {cpu_description()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"at start: {load_average()}")
    segmenter = random_weight_segmenter("vit_b")
    image = photo(args.image)
    prompts = {"rectangle": example_prompts(image)["box"], "click": example_prompts(image)["one click"]}
    label_config = (REPO_ROOT / "examples" / "labeling_config_sam.xml").read_text()
    results: dict[str, tuple[list[float], list[float]]] = {}  # prompt -> (server, bare) seconds

    with tempfile.TemporaryDirectory(prefix="interactive-latency-") as workdir:
        checkpoint = Path(workdir) / "sam_vit_b_random.pth"
        official_checkpoint(segmenter, "vit_b", checkpoint)  # the server gets the bare segmenter's weights
        photos = PhotoServer(png_bytes(image.array))
        server = BackendServer(Path(workdir), checkpoint, label_studio_url="", personal_access_token="")
        try:
            print(f"server: gunicorn (1 worker) healthy after {server.startup_s:.1f} s; "
                  f"image: skimage.data.{args.image} {image.width}x{image.height} served as {photos.url}")
            session = requests.Session()
            session.post(f"{server.url}/setup", json={"project": PROJECT, "schema": label_config},
                         auth=server.auth, timeout=30).raise_for_status()
            started = time.perf_counter()
            predict(session, server, interactive_payload(photos.url, context_region(prompts["rectangle"],
                                                                                     image.width, image.height),
                                                          label_config))
            print(f"first /predict (download + embedding): {time.perf_counter() - started:6.1f} s")
            print(f"bare embedding:                        {time_embedding(segmenter, image):6.1f} s")
            for name, prompt in prompts.items():
                payload = interactive_payload(photos.url, context_region(prompt, image.width, image.height),
                                              label_config)
                results[name] = time_interleaved(session, server, payload, segmenter, image, prompt, args.repeats)
            workers = child_pids(server.process.pid)
            worker_peak = ", ".join(f"{process_memory_mb(pid):.0f}" for pid in workers)
            master_peak = process_memory_mb(server.process.pid)
        finally:
            server.stop()
            photos.close()

    print(f"\n{args.repeats} calls each, embedding cached; image downloads by the server: {photos.downloads}")
    print(f"{'prompt':<10} {'server /predict':>24} {'bare decoder':>24} {'overhead':>10}")
    for name, (server_s, bare_s) in results.items():
        server_median, server_p90 = median_p90_ms(server_s)
        bare_median, bare_p90 = median_p90_ms(bare_s)
        overhead = (server_median - bare_median) / bare_median
        verdict = "ok" if overhead < TARGET_OVERHEAD else f"over the {TARGET_OVERHEAD:.0%} target"
        print(f"{name:<10} median {server_median:6.1f} p90 {server_p90:6.1f} ms  "
              f"median {bare_median:6.1f} p90 {bare_p90:6.1f} ms  {overhead:+8.1%}  {verdict}")
    print(f"peak RSS: gunicorn worker {worker_peak} MB (master, which loaded the models before the fork: "
          f"{master_peak:.0f} MB); this process (bare segmenter) {peak_rss_mb():.0f} MB")
    print(f"at end: {load_average()}")


if __name__ == "__main__":
    main()
