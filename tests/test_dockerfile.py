"""The Dockerfile's checkpoint stage copies only the modules ``download-sam`` needs (so that code
changes don't download the checkpoint again): every module that command imports must be in that
``COPY``, or the build fails on a fresh machine."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _sam_stage_copies() -> list[str]:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    stage = dockerfile.split(" AS sam\n", 1)[1].split("\nFROM ", 1)[0]
    copy = re.search(r"^COPY ((?:[^\n]*\\\n)*[^\n]*)", stage, re.MULTILINE).group(1)
    sources = copy.replace("\\\n", " ").split()[:-1]
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
