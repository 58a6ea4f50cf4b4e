"""The learning test, reduced (bench/learning_policy.py has the full one): a project whose
annotators fill holes retrains the default weights, and held-out mIoU against its masks rises
while mIoU against the exact (holes kept) masks falls: the model took on the project's policy."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from backend.settings import Settings

BENCH = Path(__file__).resolve().parents[1] / "bench" / "learning_policy.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("learning_policy", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_retraining_learns_the_projects_fill_holes_policy(capsys):
    weights = Settings.from_env().extreme_weights
    if not (weights / "manifest.json").is_file():
        pytest.skip(f"no default weights at {weights} yet")
    result = load_bench().run(weights, tasks=16, steps=20, threads=1)
    with capsys.disabled():
        print(f"\nfill-holes policy, held-out mIoU {result['miou_before']:.3f} -> {result['miou_after']:.3f}; "
              f"exact masks {result['exact_miou_before']:.3f} -> {result['exact_miou_after']:.3f}")
    assert result["published"]
    assert result["miou_after"] >= result["miou_before"] + 0.03
    assert result["exact_miou_after"] < result["exact_miou_before"]
