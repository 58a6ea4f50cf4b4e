"""The learning test, reduced (bench/learning_policy.py has the full one): a project whose
annotators fill holes retrains the default weights, and held-out mIoU against its masks rises
while mIoU against the exact (holes kept) masks falls: the model took on the project's policy.
And the other side (bench/learning_curve.py has the curve): fine-tuning on masks that are the
model's own predictions leaves it where it was."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from backend.active_learning.trainer import ExtremeTrainer
from backend.segmenters.extreme import ExtremeSegmenter
from backend.settings import Settings

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load_bench(name: str = "learning_policy"):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def default_weights() -> Path:
    weights = Settings.from_env().extreme_weights
    if not (weights / "manifest.json").is_file():
        pytest.skip(f"no default weights at {weights} yet")
    return weights


@pytest.mark.slow
def test_retraining_learns_the_projects_fill_holes_policy(capsys):
    result = load_bench().run(default_weights(), tasks=16, steps=20, threads=1, heldout=4)
    with capsys.disabled():
        print(f"\nfill-holes policy, held-out mIoU {result['miou_before']:.3f} -> {result['miou_after']:.3f}; "
              f"exact masks {result['exact_miou_before']:.3f} -> {result['exact_miou_after']:.3f}")
    assert result["published"] and result["decision"]["ci95"][0] > 0
    assert result["miou_after"] >= result["miou_before"] + 0.03
    assert result["heldout_miou_after"] > result["heldout_miou_before"]
    assert result["exact_miou_after"] < result["exact_miou_before"]


@pytest.mark.slow
def test_fine_tuning_on_the_models_own_masks_leaves_it_where_it_was(tmp_path, capsys):
    """Anchored fine-tuning on annotations that are the parent's predictions (an annotator who
    accepts every mask): held-out IoU on further such tasks stays within 0.02 of the parent's."""
    weights = default_weights()
    curve = load_bench("learning_curve")
    annotator = curve.Annotator("accept", ExtremeSegmenter.load(weights), min_hole=0.08)
    tasks = curve.project_tasks(annotator, 4, seed=3, first_id=1)
    held_out = [s for task in curve.project_tasks(annotator, 2, seed=1003, first_id=100) for s in task.samples]
    trainer = ExtremeTrainer(threads=1)
    trainer.fine_tune([s for task in tasks for s in task.samples], weights, tmp_path, 12, "accepted",
                      lambda step, total, message: None)
    before, after = trainer.evaluate(weights, held_out), trainer.evaluate(tmp_path, held_out)
    with capsys.disabled():
        print(f"\naccepted masks, {len(held_out)} held-out instances: mIoU {before:.3f} -> {after:.3f}")
    assert abs(after - before) <= 0.02


def test_the_merge_annotator_joins_touching_instances_transitively_and_keeps_apart_ones():
    merged_instances = load_bench("learning_curve").merged_instances
    masks = [np.zeros((12, 12), bool) for _ in range(4)]
    masks[0][0:3, 0:3] = True
    masks[1][3:6, 3:6] = True  # touches the first at a corner only
    masks[2][3:6, 6:8] = True  # touches the second along a side
    masks[3][9:12, 9:12] = True  # apart
    merged = merged_instances(masks)
    assert len(merged) == 2
    assert np.array_equal(merged[0], masks[0] | masks[1] | masks[2])
    assert np.array_equal(merged[1], masks[3])
    assert all(m.sum() == 9 for m in merged_instances(masks[:1] + masks[3:]))
