"""The learning test: retraining teaches a project its own labeling policy.

    .venv/bin/python bench/learning_policy.py [--tasks 60] [--steps 150] [--weights model_weights/extreme]

The project's annotators fill every hole inside an object's outline (a "fill holes" labeling
policy), while the default weights learned exact masks that keep holes. The project's tasks are
held-out synthetic scenes (photos and shape families the default weights never saw); its
annotations are the objects with a noticeable hole (at least ``--min-hole`` of the filled area),
holes filled. The script runs a real training job, the code path the webhook takes (cross-validate
fine-tuning by task, publish on a clear paired gain), with a reader serving these annotations in
place of Label Studio, and prints the job's cross-validated mIoU against the project's masks
before and after, and, on ``--heldout`` further tasks of the same project, the served model's
mIoU against the project's masks and against the exact ones.

Results (JSON) go to --out (default bench/results/learning_policy.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.ndimage import binary_fill_holes

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # run as a script from anywhere

from backend.jobs.store import JobStore  # noqa: E402
from backend.active_learning.layout import Layout  # noqa: E402
from backend.active_learning.ls_data import AnnotatedTask, ProjectData, crop_sample  # noqa: E402
from backend.active_learning.trainer import FINE_TUNE_BATCH, FINE_TUNE_LR, ExtremeTrainer  # noqa: E402
from backend.active_learning.training_job import run_training_job  # noqa: E402
from backend.active_learning.versions import VersionRegistry  # noqa: E402
from backend.settings import Settings  # noqa: E402
from backend.training.synthetic import generate_scene  # noqa: E402

PROJECT = "1"


def hole_fraction(mask: np.ndarray) -> tuple[np.ndarray, float]:
    """(mask with its holes filled, share of the filled area the holes make up)."""
    filled = binary_fill_holes(mask)
    return filled, 1.0 - mask.sum() / max(1, filled.sum())


def fill_holes_project(tasks: int, seed: int, min_hole: float) -> tuple[list[AnnotatedTask], dict[int, list]]:
    """Up to ``tasks`` annotated tasks: held-out synthetic scenes whose objects with a hole of at
    least ``min_hole`` of their filled area are annotated with the hole filled; and, per task id,
    the same objects' exact masks (holes kept, same crops) as the control."""
    annotated, exact, index = [], {}, 0
    while len(annotated) < tasks and index < 20 * tasks:
        scene = generate_scene(seed, index, "heldout")
        task = AnnotatedTask(task_id=index + 1, annotation_id=index + 1)
        for mask in scene.masks:
            filled, holes = hole_fraction(mask)
            if holes >= min_hole:
                task.samples.append(crop_sample(scene.image, filled))
                task.labels.append("object")
                exact.setdefault(task.task_id, []).append(crop_sample(scene.image, mask))  # same box, same crop
        if task.samples:
            annotated.append(task)
        index += 1
    return annotated, exact


class StaticReader:
    """Serves a fixed list of annotated tasks, as ``LabelStudioProjectReader.read`` would."""

    def __init__(self, tasks: list[AnnotatedTask]):
        self.tasks = tasks

    def read(self, project, progress=lambda done, total: None) -> ProjectData:
        progress(len(self.tasks), len(self.tasks))
        return ProjectData(tasks=self.tasks, skipped=[])


def run(weights: Path, tasks: int, steps: int, seed: int = 7, min_hole: float = 0.08, threads: int = 0,
        batch_size: int = FINE_TUNE_BATCH, lr: float = FINE_TUNE_LR, heldout: int = 6) -> dict:
    """Run one training job on the fill-holes project; returns the job's result, timings, and on
    ``heldout`` further tasks the mIoU against the project's masks and, as the control, against
    the exact masks (holes kept), before and after."""
    annotated, exact = fill_holes_project(tasks + heldout, seed, min_hole)
    project_tasks, heldout_tasks = annotated[:tasks], annotated[tasks:]
    trainer = ExtremeTrainer(device="cpu", threads=threads, batch_size=batch_size, lr=lr)
    with tempfile.TemporaryDirectory() as model_dir:
        settings = Settings(model_dir=Path(model_dir), extreme_weights=weights, train_steps=steps)
        jobs = JobStore(Layout(settings.model_dir))
        job = jobs.create(PROJECT, "bench: fill-holes policy")
        started = time.monotonic()
        run_training_job(settings, job.id, trainer=trainer, reader=StaticReader(project_tasks))
        seconds = time.monotonic() - started
        done = jobs.get(job.id)
        if done.state != "finished":
            raise RuntimeError(f"the training job failed: {done.error}")
        filled_val = [sample for task in heldout_tasks for sample in task.samples]
        exact_val = [sample for task in heldout_tasks for sample in exact[task.task_id]]
        trained = VersionRegistry.from_settings(settings).get(PROJECT, done.result["version"]).path \
            if done.result["published"] else weights
        control = {"heldout_miou_before": round(trainer.evaluate(weights, filled_val), 4),
                   "heldout_miou_after": round(trainer.evaluate(trained, filled_val), 4),
                   "heldout_instances": len(filled_val),
                   "exact_miou_before": round(trainer.evaluate(weights, exact_val), 4),
                   "exact_miou_after": round(trainer.evaluate(trained, exact_val), 4)}
    shown = weights.resolve().relative_to(REPO_ROOT) if weights.resolve().is_relative_to(REPO_ROOT) else weights
    return {**done.result, **control, "seconds": round(seconds, 1), "heldout_tasks": len(heldout_tasks),
            "batch_size": batch_size, "lr": lr,
            "weights": str(shown), "seed": seed, "min_hole": min_hole,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {trainer.threads} torch threads"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=Settings().extreme_weights, help="default weights directory")
    parser.add_argument("--tasks", type=int, default=60, help="annotated tasks in the project")
    parser.add_argument("--steps", type=int, default=0, help="fine-tuning steps per model (0: scaled with the data)")
    parser.add_argument("--heldout", type=int, default=12, help="further tasks of the project to measure on")
    parser.add_argument("--batch-size", type=int, default=FINE_TUNE_BATCH, help="default: the jobs' own")
    parser.add_argument("--lr", type=float, default=FINE_TUNE_LR, help="default: the jobs' own")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: half the cores)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--min-hole", type=float, default=0.08, help="least hole share of an annotated object")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "learning_policy.json")
    args = parser.parse_args()
    if not (args.weights / "manifest.json").is_file():
        print(f"no weights at {args.weights} (manifest.json missing): train them or pass --weights", file=sys.stderr)
        return 2
    result = run(args.weights, args.tasks, args.steps, args.seed, args.min_hole, args.threads, args.batch_size, args.lr,
                 args.heldout)
    print(f"fill-holes project: {result['tasks']} tasks, {result['instances']} annotated objects; "
          f"{result['heldout_tasks']} further tasks ({result['heldout_instances']} objects) to measure on")
    print(f"the job's cross-validated mIoU against the project's masks: before {result['miou_before']:.4f} "
          f"({result['parent']}), after {result['miou_after']:.4f}; published: {result['published']} "
          f"({result['reason']}; {result['steps']} steps, {result['seconds']:.0f} s)")
    print(f"held-out tasks, against the project's masks: before {result['heldout_miou_before']:.4f}, "
          f"after {result['heldout_miou_after']:.4f}")
    print(f"control, against the exact masks (holes kept): before {result['exact_miou_before']:.4f}, "
          f"after {result['exact_miou_after']:.4f} (the model adopted the project's policy if this falls)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
