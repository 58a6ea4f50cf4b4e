"""The Docker image, built and served by a real Docker engine, and docker-compose.yml validated.

The image is built as an offline machine can (``SAM_MODEL_TYPE=none``: no checkpoint download;
``TORCH_INDEX_URL=`` empty: torch from the default index), started with ``--network=host`` on a
free port, and asked what Label Studio asks: ``/health`` and an extreme-point ``/predict``, whose
mask must cover the drawn object; ``GET /`` must be the HTML status page.

Without a Docker engine (or ``docker-compose``) the tests skip locally and fail with ``CI=true``.
``.ci/run`` starts an engine first; by hand: ``SCRATCH=<empty dir> bash
../shared/docker/docker-local.sh up``, then ``pytest -m docker``, then ``… docker-local.sh down``.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from support.processes import free_port

from backend.protocol import mask_from_region
from backend.training.mask_prompts import extreme_points

pytestmark = pytest.mark.docker

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE_TAG = "segmentation-backend:ci"
BUILD_ARGS = ["--build-arg", "SAM_MODEL_TYPE=none", "--build-arg", "TORCH_INDEX_URL="]
BUILD_TIMEOUT_S = 40 * 60
STARTUP_TIMEOUT_S = 180
AUTH = ("docker-test", "docker-test-pass")
W, H = 320, 240
CONFIG = """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="mask" toName="image"><Label value="Ball"/></BrushLabels>
  <KeyPointLabels name="extreme_points" toName="image" smart="true"><Label value="Ball"/></KeyPointLabels>
</View>"""


def _unavailable(reason: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


def _docker() -> str:
    """The docker client with BuildKit built in: Debian's /usr/bin/docker where present."""
    client = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else shutil.which("docker")
    if client is None:
        _unavailable("no docker client installed")
    if subprocess.run([client, "info"], capture_output=True, timeout=30).returncode != 0:
        _unavailable("no Docker engine answers (start one: SCRATCH=<dir> bash ../shared/docker/docker-local.sh up)")
    return client


def _report(config: pytest.Config, line: str) -> None:
    """A line on the terminal even under -q and output capture: CI's log carries the figures."""
    with config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
        config.get_terminal_writer().line(line)


@pytest.fixture(scope="module")
def image(pytestconfig: pytest.Config) -> str:
    docker = _docker()
    started = time.monotonic()
    build = subprocess.run(
        [docker, "build", "--network=host", *BUILD_ARGS, "-t", IMAGE_TAG, str(REPO_ROOT)],
        env={**os.environ, "DOCKER_BUILDKIT": "1"}, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
    )
    assert build.returncode == 0, f"docker build failed:\n{build.stderr[-6000:]}"
    size = subprocess.run([docker, "image", "inspect", "--format", "{{.Size}}", IMAGE_TAG],
                          capture_output=True, text=True, check=True).stdout.strip()
    _report(pytestconfig, f"\ndocker build: {time.monotonic() - started:.0f} s, image {IMAGE_TAG} {int(size) / 1e9:.2f} GB")
    return IMAGE_TAG


@pytest.fixture(scope="module")
def server(image: str):
    docker = _docker()
    port = free_port()
    name = f"segmentation-backend-ci-{port}"
    subprocess.run(
        [docker, "run", "-d", "--rm", "--network=host", "--name", name, "-e", f"PORT={port}",
         "-e", f"BASIC_AUTH_USER={AUTH[0]}", "-e", f"BASIC_AUTH_PASS={AUTH[1]}", "-e", "WORKERS=1",
         "-e", "THREADS=2", image],
        check=True, capture_output=True, timeout=60,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(docker, name, url)
        yield url
    finally:
        logs = subprocess.run([docker, "logs", name], capture_output=True, text=True, timeout=30)
        print(f"--- container log ---\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}")
        subprocess.run([docker, "stop", "-t", "10", name], capture_output=True, timeout=60)


def _wait_healthy(docker: str, name: str, url: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/health", auth=AUTH, timeout=2).ok:
                return
        except requests.RequestException:
            pass
        running = subprocess.run([docker, "inspect", "--format", "{{.State.Running}}", name],
                                 capture_output=True, text=True)
        assert running.stdout.strip() == "true", "the container exited before /health answered"
        time.sleep(1)
    raise AssertionError(f"/health did not answer within {STARTUP_TIMEOUT_S} s")


def _ball_image() -> tuple[str, np.ndarray]:
    """A data: URI of an orange disc on a grey, noisy background, and the disc's mask."""
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:H, 0:W]
    ball = (cols - 150) ** 2 + (rows - 110) ** 2 <= 60 ** 2
    pixels = np.clip(rng.normal(110, 12, (H, W, 3)), 0, 255).astype(np.uint8)
    pixels[ball] = (235, 130, 40)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode(), ball


def test_health_says_what_is_loaded(server):
    response = requests.get(f"{server}/health", auth=AUTH, timeout=5)
    assert response.status_code == 200
    health = response.json()
    assert health["status"] == "UP"
    assert "extreme" in health["loaded"]
    assert health["sam"].startswith("missing"), "SAM_MODEL_TYPE=none builds an image without a checkpoint"
    assert requests.get(f"{server}/health", timeout=5).status_code == 401, "Basic Auth is on"


def test_extreme_points_predict_inside_the_container(server):
    image_uri, ball = _ball_image()
    keypoints = [
        {"id": f"p{i}", "type": "keypointlabels", "from_name": "extreme_points", "to_name": "image",
         "original_width": W, "original_height": H, "image_rotation": 0, "is_positive": True,
         "value": {"x": float(100 * x / W), "y": float(100 * y / H), "width": 0.5, "keypointlabels": ["Ball"]}}
        for i, (x, y) in enumerate(extreme_points(ball))
    ]
    body = {"tasks": [{"id": 1, "data": {"image": image_uri}}], "project": "1.1700000000",
            "label_config": CONFIG, "params": {"context": {"result": keypoints}}}
    response = requests.post(f"{server}/predict", json=body, auth=AUTH, timeout=60)
    assert response.status_code == 200, response.text
    regions = [r for r in response.json()["results"][0]["result"] if r["type"] == "brushlabels"]
    assert len(regions) == 1
    mask = mask_from_region(regions[0], W, H)
    iou = (mask & ball).sum() / (mask | ball).sum()
    assert iou > 0.85, f"the disc's mask has IoU {iou:.3f}"


def test_status_page_is_html(server):
    response = requests.get(f"{server}/", auth=AUTH, timeout=10)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/html")
    assert "Segmentation backend for Label Studio" in response.text and "loaded (" in response.text


def test_compose_file_is_valid(tmp_path):
    compose = shutil.which("docker-compose")
    if compose is None:
        _unavailable("docker-compose is not installed (Debian package docker-compose)")
    secrets = {"BASIC_AUTH_USER": "ls", "BASIC_AUTH_PASS": "pw", "REDIS_PASSWORD": "0123abcd"}
    # An empty --env-file: a developer's .env must not hide what compose does without one.
    (tmp_path / "empty.env").write_text("")
    command = [compose, "-f", str(REPO_ROOT / "docker-compose.yml"), "--env-file", str(tmp_path / "empty.env"), "config"]
    env = {key: value for key, value in os.environ.items() if key not in secrets}
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT, env={**env, **secrets})
    assert result.returncode == 0, result.stderr
    assert "redis://:0123abcd@redis:6379/0" in result.stdout and "127.0.0.1:9090:9090" in result.stdout
    for missing in secrets:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
                                env={**env, **{k: v for k, v in secrets.items() if k != missing}})
        assert result.returncode != 0 and missing in result.stderr.rsplit(": set ", 1)[-1]  # named in our message
