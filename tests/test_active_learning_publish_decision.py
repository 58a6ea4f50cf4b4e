"""The publish decision: paired per-instance scores, a bootstrap interval, folds by task, the
minimum of annotations, and training steps that scale with the data."""

from __future__ import annotations

import numpy as np
import pytest
from active_learning_fakes import fake_task

from backend.active_learning.cross_validation import PairedScores, too_few_annotations
from backend.active_learning.publish_decision import decide
from backend.active_learning.split import task_folds
from backend.active_learning.trainer import MAX_STEPS, MIN_STEPS, STEPS_PER_INSTANCE, fine_tune_steps


def cv_method(folds: int) -> str:
    return PairedScores([], [], folds, []).method


def paired(gain_mean: float, gain_sd: float, instances: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Parent scores of varied difficulty and candidate scores that differ from them by random gains."""
    rng = np.random.default_rng(seed)
    parent = rng.uniform(0.5, 0.95, instances)
    return parent, np.clip(parent + rng.normal(gain_mean, gain_sd, instances), 0.0, 1.0)


def test_a_clear_gain_publishes_and_says_how_sure():
    decision = decide(*paired(0.06, 0.05, 30), method=cv_method(3))
    low, high = decision.ci95
    assert decision.publish and 0.0 < low < decision.mean_gain < high
    assert decision.instances == 30 and decision.method == "paired bootstrap over instances, 3-fold cross-validation by task"
    result = decision.as_result()
    assert set(result) == {"mean_gain", "ci95", "instances", "method"} and result["ci95"] == [round(low, 4), round(high, 4)]
    assert f"95% interval [{low:+.4f}, {high:+.4f}] over 30 instances" in decision.summary()


def test_a_clear_loss_is_refused_with_the_figures():
    parent, candidate = paired(-0.08, 0.05, 30)
    decision = decide(parent, candidate, method=cv_method(3))
    assert not decision.publish and decision.ci95[1] < 0
    reason = decision.reason("p3-v2")
    assert reason.startswith(f"held-out mIoU fell from {parent.mean():.4f} (p3-v2) to {candidate.mean():.4f}; mean paired gain -")
    assert reason.endswith("p3-v2 keeps serving")


def test_a_gain_within_the_noise_keeps_the_parent():
    """A small mean gain with a wide spread: the interval reaches below zero, so nothing changes."""
    parent, candidate = paired(0.005, 0.08, 20, seed=3)
    decision = decide(parent, candidate, method=cv_method(2))
    assert decision.mean_gain > 0 and decision.ci95[0] < 0 < decision.ci95[1]
    assert not decision.publish
    assert decision.reason("base-v0").startswith(f"no clear gain: held-out mIoU {parent.mean():.4f} (base-v0) -> ")


def test_the_same_scores_always_give_the_same_interval_and_more_instances_narrow_it():
    few, many = paired(0.02, 0.05, 10), paired(0.02, 0.05, 200)
    assert decide(*few, method=cv_method(2)).ci95 == decide(*few, method=cv_method(2)).ci95
    width = lambda d: d.ci95[1] - d.ci95[0]  # noqa: E731
    assert width(decide(*many, method=cv_method(3))) < width(decide(*few, method=cv_method(3))) / 2


def test_a_candidate_identical_on_every_instance_is_not_worse():
    scores = [0.0, 0.4, 0.9]
    decision = decide(scores, scores, method=cv_method(3))
    assert decision.publish and decision.ci95 == (0.0, 0.0) and decision.mean_gain == 0.0


@pytest.mark.parametrize("parent, candidate", [([0.5, 0.6], [0.5]), ([], [])])
def test_unpaired_scores_are_an_error(parent, candidate):
    with pytest.raises(ValueError, match="paired scores"):
        decide(parent, candidate, method=cv_method(2))


def test_too_few_annotations_say_how_many_more():
    assert too_few_annotations([fake_task(1, 3), fake_task(2, 3)], min_instances=6) is None
    message = too_few_annotations([fake_task(1, 2), fake_task(2, 2)], min_instances=6)
    assert "2 annotated task(s) with 4 instance(s)" in message and "annotate 2 more annotated instance(s)" in message
    assert "TRAIN_MIN_INSTANCES=6" in message
    assert "annotate 1 more annotated task" in too_few_annotations([fake_task(1, 9)], min_instances=6)


def test_folds_split_tasks_by_id_whatever_their_order():
    ids = list(range(1, 101))
    folds = task_folds(ids, 3, task_id=lambda t: t)
    assert sorted(len(fold) for fold in folds) == [33, 33, 34]
    assert sorted(t for fold in folds for t in fold) == ids
    again = task_folds(list(reversed(ids)), 3, task_id=lambda t: t)
    assert [sorted(fold) for fold in again] == [sorted(fold) for fold in folds]
    assert task_folds([7, 8], 3, task_id=lambda t: t) in ([[7], [8]], [[8], [7]])  # at most one fold per task
    with pytest.raises(ValueError, match="at least 2 tasks"):
        task_folds([7], 3, task_id=lambda t: t)


def test_training_steps_scale_with_the_instances_within_bounds_and_can_be_fixed():
    assert fine_tune_steps(1) == MIN_STEPS
    assert fine_tune_steps(40) == max(MIN_STEPS, STEPS_PER_INSTANCE * 40)
    assert fine_tune_steps(40) > fine_tune_steps(10)
    assert fine_tune_steps(100_000) == MAX_STEPS
    assert fine_tune_steps(5, configured=300) == 300
