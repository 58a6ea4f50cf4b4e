"""scripts/install.sh's choice of torch build, run as its function ``torch_index`` with fake
``nvidia-smi`` and ``curl`` first in PATH: the CPU index where there is no NVIDIA GPU and the index
answers, the machine's pip configuration otherwise, TORCH_INDEX_URL over both."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "install.sh"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def fake(bin_dir: Path, name: str, exit_code: int) -> None:
    """A command that records its arguments in bin_dir/<name>.args and exits with exit_code."""
    path = bin_dir / name
    path.write_text(f'#!/bin/sh\necho "$@" >> "{bin_dir / name}.args"\nexit {exit_code}\n')
    path.chmod(0o755)


def torch_index(tmp_path: Path, gpu: bool, index_answers: bool, **env) -> tuple[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake(bin_dir, "nvidia-smi", 0 if gpu else 9)
    fake(bin_dir, "curl", 0 if index_answers else 28)  # 28: curl's "operation timed out"
    environ = {key: value for key, value in os.environ.items() if key != "TORCH_INDEX_URL"}
    environ.update(PATH=f"{bin_dir}:{os.environ['PATH']}", **env)
    done = subprocess.run(["bash", "-c", f'source "{SCRIPT}" && torch_index'], env=environ, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip(), done.stderr


def curl_calls(tmp_path: Path) -> list[str]:
    args = tmp_path / "bin" / "curl.args"
    return args.read_text().splitlines() if args.exists() else []


def test_without_a_gpu_the_cpu_build_comes_from_its_index_when_it_answers(tmp_path):
    index, said = torch_index(tmp_path, gpu=False, index_answers=True)
    assert index == CPU_INDEX and "no NVIDIA GPU, so the CPU build" in said
    [call] = curl_calls(tmp_path)
    assert "--max-time 5" in call and call.endswith(f"{CPU_INDEX}/torch/")


def test_an_index_that_does_not_answer_falls_back_to_the_pip_configuration_and_says_so(tmp_path):
    index, said = torch_index(tmp_path, gpu=False, index_answers=False)
    assert index == ""
    assert f"{CPU_INDEX} did not answer (waited at most 5 s): torch through the pip configuration" in said


def test_with_an_nvidia_gpu_the_cuda_build_comes_through_the_pip_configuration(tmp_path):
    index, said = torch_index(tmp_path, gpu=True, index_answers=True)
    assert index == "" and "NVIDIA GPU answers nvidia-smi" in said and curl_calls(tmp_path) == []


@pytest.mark.parametrize("value", ["https://mirror.example/whl/cpu", ""])
def test_torch_index_url_overrides_the_probe(tmp_path, value):
    index, _ = torch_index(tmp_path, gpu=False, index_answers=True, TORCH_INDEX_URL=value)
    assert index == value and curl_calls(tmp_path) == []
