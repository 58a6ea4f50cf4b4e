"""Scores for the publish decision from every annotated task: k-fold cross-validation by task.

Each fold's tasks are held out once: the parent is fine-tuned on the other folds' instances (the
same procedure, with steps scaled to that share) and both the parent and that candidate score the
held-out fold's instances. So every annotated instance gets a paired (parent, candidate) score
from a candidate that never saw its image, and the decision rests on all of them instead of one
or two held-out tasks. The model that is published is then fine-tuned on all tasks: the folds
measure the procedure, each on less data than the published model gets, which errs on the side
of keeping the parent.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from backend.active_learning.ls_data import AnnotatedTask
from backend.active_learning.split import task_folds
from backend.active_learning.trainer import Trainer

FOLDS = 2  # each fold trains on half the tasks: two fine-tunes' cost, and a cautious estimate

# progress(fraction done of the whole cross-validation, message)
Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class PairedScores:
    parent: list[float]
    candidate: list[float]
    folds: int
    steps: list[int]  # per fold

    @property
    def method(self) -> str:
        return f"paired bootstrap over instances, {self.folds}-fold cross-validation by task"


def too_few_annotations(tasks: Sequence[AnnotatedTask], min_instances: int) -> str | None:
    """Why a job should not train on ``tasks`` (None when it should): cross-validation needs two
    tasks, and fewer than ``min_instances`` instances decide nothing but noise."""
    instances = sum(len(task.samples) for task in tasks)
    if len(tasks) >= 2 and instances >= min_instances:
        return None
    more = []
    if len(tasks) < 2:
        more.append(f"{2 - len(tasks)} more annotated task")
    if instances < min_instances:
        more.append(f"{min_instances - instances} more annotated instance(s)")
    return (f"not trained: {len(tasks)} annotated task(s) with {instances} instance(s); the publish decision "
            f"compares the model with a fine-tuned one on instances of tasks it did not train on, which needs at "
            f"least 2 tasks and TRAIN_MIN_INSTANCES={min_instances} instances to tell a gain from noise: "
            f"annotate {' and '.join(more)}")


def cross_validate(
    trainer: Trainer, tasks: Sequence[AnnotatedTask], parent_dir: Path, work_dir: Path, version: str,
    steps_for: Callable[[int], int], progress: Progress, folds: int = FOLDS,
) -> PairedScores:
    """Paired per-instance scores of the parent and of fold candidates fine-tuned without the instance's task."""
    groups = task_folds(tasks, folds)
    parent, candidate, steps = [], [], []
    for index, held_out in enumerate(groups):
        train = [sample for group in groups if group is not held_out for task in group for sample in task.samples]
        val = [sample for task in held_out for sample in task.samples]
        fold = f"fold {index + 1}/{len(groups)}"
        fold_dir = Path(work_dir) / f"fold-{index + 1}"
        steps.append(steps_for(len(train)))
        trainer.fine_tune(
            train, parent_dir, fold_dir, steps[-1], f"{version}-fold{index + 1}",
            lambda step, total, message: progress((index + 0.9 * step / total) / len(groups),
                                                  f"{fold}: step {step}/{total} {message}".strip()),
        )
        progress((index + 0.9) / len(groups), f"{fold}: scoring {len(val)} held-out instances")
        parent += trainer.scores(parent_dir, val)
        candidate += trainer.scores(fold_dir, val)
        shutil.rmtree(fold_dir, ignore_errors=True)
    progress(1.0, f"{len(parent)} instances scored")
    return PairedScores(parent, candidate, len(groups), steps)
