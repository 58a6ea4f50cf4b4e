"""The Docker files without an engine: the Dockerfile's checkpoint stage copies only the modules
``download-sam`` needs (so that code changes don't download the checkpoint again), and every module
that command imports must be in those ``COPY``s, or the build fails on a fresh machine; the image
copies only what the server runs (no .env); compose protects Redis and the backend by default."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]


def _sam_stage_copies() -> list[str]:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    stage = dockerfile.split(" AS sam\n", 1)[1].split("\nFROM ", 1)[0]
    sources = []
    for copy in re.findall(r"^COPY ((?:[^\n]*\\\n)*[^\n]*)", stage, re.MULTILINE):
        *files, target = copy.replace("\\\n", " ").split()
        assert all(Path(file).parent == Path(target) for file in files), f"{files} keep their folder: {target}"
        sources += files
    assert sources and all(s.startswith("backend/") for s in sources), sources
    return sources


def test_download_sam_runs_from_the_files_the_checkpoint_stage_copies(tmp_path):
    for source in _sam_stage_copies():
        (tmp_path / source).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / source, tmp_path / source)
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    result = subprocess.run([sys.executable, "-m", "backend", "download-sam", "--help"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"add the missing module to the Dockerfile's sam stage COPY:\n{result.stderr}"
    assert "download-sam" in result.stdout


def _final_stage() -> str:
    return (REPO_ROOT / "Dockerfile").read_text().rsplit("\nFROM ", 1)[1]


def test_the_image_copies_only_what_the_server_runs():
    copies = [line.split()[1:] for line in _final_stage().splitlines()
              if line.startswith("COPY ") and not line.startswith("COPY --from=")]  # other stages' output
    sources = [source for *sources, _ in copies for source in sources]
    assert sorted(sources) == ["backend/", "gunicorn.conf.py", "model_weights/", "requirements.txt"]


def test_env_files_stay_out_of_the_image_and_the_repository():
    dockerignore = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    assert ".env*" in dockerignore and "**/.env*" in dockerignore
    for name in (".env", ".env.production"):
        ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", name], cwd=REPO_ROOT)
        assert ignored.returncode == 0, f"{name} is not in .gitignore"


def test_compose_protects_redis_and_the_backend_by_default():
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    redis = services["redis"]
    assert "ports" not in redis and "--requirepass" in redis["command"]
    assert redis["command"][redis["command"].index("--requirepass") + 1].startswith("${REDIS_PASSWORD:?")
    environment = compose["x-backend"]["environment"]
    assert environment["REDIS_URL"].startswith("redis://:${REDIS_PASSWORD:?")
    assert environment["BASIC_AUTH_USER"].startswith("${BASIC_AUTH_USER:?")
    assert environment["BASIC_AUTH_PASS"].startswith("${BASIC_AUTH_PASS:?")
    published = [port for service in services.values() for port in service.get("ports", [])]
    assert published == ["${BACKEND_ADDRESS:-127.0.0.1}:9090:9090"]
