"""The learning curve: held-out mIoU of a project's model after 2, 5, 10, 20 annotated tasks.

    .venv/bin/python bench/learning_curve.py [--points 2 5 10 20] [--heldout 8] [--annotators accept correct fill]
    .venv/bin/python bench/learning_curve.py --merge a.json b.json   # one table and plot of separate runs

Projects of natural-photo objects: the generator's held-out split (photos and shape families the
default weights never trained on, ``backend.training.synthetic``). Three kinds of annotators:

- ``accept``: they take the model's mask as it comes (prompted with the object's exact extreme
  points), so the project's masks ARE the parent's predictions: training must not make it worse;
- ``correct``: they correct the model's masks to the true object masks;
- ``fill``: their policy fills every hole inside an object's outline, which the default weights
  keep (the tasks are scenes with at least one object with a hole of ``--min-hole`` or more);
- ``merge``: their policy merges touching instances into one region (a bunch of grapes, a crowd),
  which the default weights, trained on single objects, do not (the tasks are scenes where at
  least two objects touch; each region is prompted with its own extreme points).

For every number of annotated tasks the script runs a real training job (the webhook's code path:
cross-validated publish decision, fine-tune on all tasks, publish) from the default weights on the
first N tasks, and measures the serving model (the published version with the policies it learned,
or the parent when the job kept it) on separate held-out tasks of the same project annotated the
same way. It prints a table,
writes the raw figures to --out (JSON) and a plot beside it (PNG).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from scipy import ndimage

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # run as a script from anywhere
sys.path.insert(0, str(REPO_ROOT / "bench"))

from learning_policy import StaticReader, hole_fraction  # noqa: E402

from backend.jobs.store import JobStore  # noqa: E402
from backend.active_learning.layout import Layout  # noqa: E402
from backend.active_learning.learned_policies import describe, policy_ious  # noqa: E402
from backend.active_learning.ls_data import AnnotatedTask, crop_sample  # noqa: E402
from backend.policies import overlap_groups  # noqa: E402
from backend.active_learning.trainer import ExtremeTrainer  # noqa: E402
from backend.active_learning.training_job import run_training_job  # noqa: E402
from backend.active_learning.versions import VersionRegistry  # noqa: E402
from backend.prompts import LoadedImage, PromptKind  # noqa: E402
from backend.segmenters.extreme import ExtremeSegmenter  # noqa: E402
from backend.settings import Settings  # noqa: E402
from backend.training.datasets import MIN_MASK_PIXELS  # noqa: E402
from backend.training.synthetic import SHAPE_FAMILIES, generate_scene  # noqa: E402
from backend.training.validation import prompt_for  # noqa: E402

PROJECT = "1"
ANNOTATORS = ("accept", "correct", "fill", "merge")
HELDOUT_SEED_OFFSET = 1000  # held-out tasks come from another scene stream: separate tasks of the project


class Annotator:
    """Turns a scene into an annotated task, following one of ANNOTATORS' policies."""

    def __init__(self, policy: str, parent: ExtremeSegmenter, min_hole: float, family: str | None = None):
        if policy not in ANNOTATORS:
            raise ValueError(f"annotator must be one of {ANNOTATORS}, got {policy!r}")
        self.policy, self.parent, self.min_hole, self.family = policy, parent, min_hole, family

    def task(self, task_id: int, image: np.ndarray, masks: list[np.ndarray], families: list[str]) -> AnnotatedTask | None:
        """The task's annotation, or None when this project would not contain the scene."""
        if self.family is not None:  # a project of one kind of object: only those are annotated
            masks = [mask for mask, family in zip(masks, families) if family == self.family]
        if self.policy == "fill" and not any(hole_fraction(mask)[1] >= self.min_hole for mask in masks):
            return None
        if self.policy == "merge":
            merged = merged_instances(masks)
            if len(merged) == len(masks):  # no two objects touch: nothing to merge in this scene
                return None
            masks = merged
        task = AnnotatedTask(task_id=task_id, annotation_id=task_id)
        for mask in masks:
            crop, truth = crop_sample(image, mask)
            if self.policy == "accept":
                prompt = prompt_for(truth, PromptKind.EXTREME)
                annotation = self.parent.segment(LoadedImage(crop, f"task {task_id}"), prompt).mask
            elif self.policy == "fill":
                annotation = hole_fraction(truth)[0]
            else:
                annotation = truth
            if annotation.sum() >= MIN_MASK_PIXELS:
                task.samples.append((crop, annotation))
                task.labels.append("object")
        return task if task.samples else None


def merged_instances(masks: list[np.ndarray]) -> list[np.ndarray]:
    """The masks with every group of touching ones (8-connected across their borders) as one union.
    Masks touch, directly or through others, exactly when they share a connected part of their union."""
    if not masks:
        return []
    parts, _ = ndimage.label(np.logical_or.reduce(masks), structure=np.ones((3, 3), bool))
    footprints = [np.isin(parts, np.unique(parts[mask])) for mask in masks]
    return [np.logical_or.reduce([masks[i] for i in group]) for group in overlap_groups(footprints)]


def project_tasks(annotator: Annotator, count: int, seed: int, first_id: int) -> list[AnnotatedTask]:
    """``count`` annotated tasks from held-out-split scenes of stream ``seed``."""
    tasks, index = [], 0
    while len(tasks) < count:
        if index > 50 * count:
            raise RuntimeError(f"the generator gave too few scenes for the {annotator.policy!r} project")
        scene = generate_scene(seed, index, "heldout")
        task = annotator.task(first_id + index, scene.image, scene.masks, scene.families)
        if task is not None:
            tasks.append(task)
        index += 1
    return tasks


def curve(policy: str, weights: Path, points: list[int], heldout: int, seed: int, min_hole: float,
          trainer: ExtremeTrainer, settings: dict, family: str | None = None) -> Iterator[dict]:
    """One annotator's curve, yielded as far as it got after every point: the parent's held-out
    mIoU, then per point the job's outcome and the serving model's held-out mIoU on the same
    held-out instances."""
    annotator = Annotator(policy, ExtremeSegmenter.load(weights), min_hole, family)
    tasks = project_tasks(annotator, max(points), seed, first_id=1)
    held_tasks = project_tasks(annotator, heldout, seed + HELDOUT_SEED_OFFSET, first_id=100_000)
    held_out = [sample for task in held_tasks for sample in task.samples]
    held_labels = [label for task in held_tasks for label in task.labels]
    parent_scores = trainer.scores(weights, held_out)
    rows = []
    for count in points:
        with tempfile.TemporaryDirectory() as model_dir:
            job_settings = Settings(model_dir=Path(model_dir), extreme_weights=weights, **settings)
            jobs = JobStore(Layout(job_settings.model_dir))
            job = jobs.create(PROJECT, f"bench: {policy}, {count} tasks")
            started, cpu_started = time.monotonic(), time.process_time()
            run_training_job(job_settings, job.id, trainer=trainer, reader=StaticReader(tasks[:count]))
            # CPU time beside wall time: on a shared machine the wall time says more about the load
            seconds, cpu_seconds = time.monotonic() - started, time.process_time() - cpu_started
            done = jobs.get(job.id)
            if done.state != "finished":
                raise RuntimeError(f"the training job failed: {done.error}")
            result = done.result
            serving = parent_scores
            if result["published"]:
                version = VersionRegistry.from_settings(job_settings).get(PROJECT, result["version"])
                # as the project is served: the version's weights, then the policies it learned
                serving = policy_ious(version.policies, trainer.masks(version.path, held_out),
                                      [mask for _, mask in held_out], held_labels)
        gains = np.asarray(serving) - np.asarray(parent_scores)
        rows.append({
            "tasks": count, "instances": result["instances"], "published": result["published"],
            "heldout_miou": round(float(np.mean(serving)), 4), "heldout_gain": round(float(gains.mean()), 4),
            "heldout_gain_sd": round(float(gains.std()), 4), "decision": result.get("decision"),
            "reason": result.get("reason"), "steps": result.get("steps"), "fold_steps": result.get("fold_steps"),
            "learned_policies": result.get("policies"),
            "job_seconds": round(seconds, 1), "job_cpu_seconds": round(cpu_seconds, 1),
        })
        print(f"  {policy:8s} {count:3d} tasks: {format_row(rows[-1], float(np.mean(parent_scores)))}", flush=True)
        yield {"annotator": policy, "heldout_tasks": heldout, "heldout_instances": len(held_out),
               "parent_heldout_miou": round(float(np.mean(parent_scores)), 4), "points": rows}


def format_row(row: dict, parent: float) -> str:
    decision = row["decision"]
    estimate = (f"CV gain {decision['mean_gain']:+.3f} [{decision['ci95'][0]:+.3f}, {decision['ci95'][1]:+.3f}]"
                if decision else "not trained (too few instances)")
    outcome = "published" if row["published"] else "kept parent"
    return (f"{row['instances']:3d} inst | held-out {parent:.3f} -> {row['heldout_miou']:.3f} "
            f"({row['heldout_gain']:+.3f}) | {estimate} | policies: {learned(row)} | {outcome} | {job_time(row)}")


def table(curves: list[dict]) -> str:
    lines = ["| annotators | tasks (instances) | parent held-out mIoU | serving held-out mIoU | "
             "job's cross-validated gain [95% interval] | learned policies | job's decision | job time, wall (CPU) |",
             "|---|---|---|---|---|---|---|---|"]
    for item in curves:
        for row in item["points"]:
            decision = row["decision"]
            estimate = (f"{decision['mean_gain']:+.3f} [{decision['ci95'][0]:+.3f}, {decision['ci95'][1]:+.3f}]"
                        if decision else "below TRAIN_MIN_INSTANCES")
            lines.append(
                f"| {item['annotator']} | {row['tasks']} ({row['instances']}) | {item['parent_heldout_miou']:.3f} | "
                f"{row['heldout_miou']:.3f} ({row['heldout_gain']:+.3f}) | {estimate} | {learned(row)} | "
                f"{'published' if row['published'] else 'parent kept'} | {job_time(row)} |")
    return "\n".join(lines)


def learned(row: dict) -> str:
    """The policies the job's version learned ("-" for runs from before policies were learned)."""
    policies = row.get("learned_policies")
    return "-" if policies is None else describe(policies)


def job_time(row: dict) -> str:
    """Wall seconds, and CPU seconds where the run recorded them (older runs did not)."""
    cpu = row.get("job_cpu_seconds")
    return f"{row['job_seconds']:.0f} s" + (f" ({cpu:.0f} s)" if cpu is not None else "")


def plot(curves: list[dict], path: Path, title: str) -> bool:
    """The curves as a PNG at ``path``: the serving model's held-out mIoU beside the default weights',
    and each job's cross-validated gain with its 95% interval. False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullFormatter
    except ImportError:
        return False
    figure, (served, estimated) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=110)
    ticks = sorted({row["tasks"] for item in curves for row in item["points"]})
    for index, item in enumerate(curves):
        colour, offset = f"C{index}", 1 + 0.04 * (index - 1)  # side by side where intervals overlap
        xs = [row["tasks"] for row in item["points"]]
        served.plot(xs, [row["heldout_miou"] for row in item["points"]], "o-", color=colour,
                    label=f"{item['annotator']}: serving model")
        served.axhline(item["parent_heldout_miou"], color=colour, linestyle="--", linewidth=1,
                       label=f"{item['annotator']}: default weights")
        decided = [row for row in item["points"] if row["decision"]]
        gains = [row["decision"]["mean_gain"] for row in decided]
        errors = [[gain - row["decision"]["ci95"][0] for gain, row in zip(gains, decided)],
                  [row["decision"]["ci95"][1] - gain for gain, row in zip(gains, decided)]]
        estimated.errorbar([row["tasks"] * offset for row in decided], gains, yerr=errors, fmt="o", color=colour,
                           capsize=3, label=item["annotator"])
    estimated.axhline(0.0, color="grey", linewidth=1)
    for axes, label in ((served, "held-out mIoU (project's masks)"),
                        (estimated, "job's cross-validated gain, 95% interval")):
        axes.set_xscale("log")
        axes.set_xlim(min(ticks) / 1.3, max(ticks) * 1.3)  # positive limits even for a panel with no point
        axes.set_xticks(ticks)
        axes.set_xticklabels([str(tick) for tick in ticks])
        axes.xaxis.set_minor_formatter(NullFormatter())
        axes.set_xlabel("annotated tasks")
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7, loc="lower right")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True


def merge(runs: list[Path], out: Path) -> int:
    """Join separate runs' curves into one result, table and plot (the runs' machine lines are kept)."""
    loaded = [json.loads(run.read_text()) for run in runs]
    curves = [item for run in loaded for item in run["curves"]]
    machines = sorted({run["machine"] for run in loaded})
    out.write_text(json.dumps({
        "weights": loaded[0]["weights"], "machine": "; ".join(machines), "minutes": [run["minutes"] for run in loaded],
        "seed": loaded[0]["seed"], "min_hole": loaded[0]["min_hole"], "train_steps": loaded[0]["train_steps"],
        "curves": curves, "merged_from": [run.name for run in runs],
    }, indent=2) + "\n")
    print(table(curves))
    image = out.with_suffix(".png")
    if plot(curves, image, f"learning curve from {Path(loaded[0]['weights']).name} ({'; '.join(machines)})"):
        print(f"plot: {image}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=Settings().extreme_weights, help="default weights directory")
    parser.add_argument("--annotators", nargs="+", choices=ANNOTATORS, default=list(ANNOTATORS))
    parser.add_argument("--points", type=int, nargs="+", default=[2, 5, 10, 20], help="annotated tasks per point")
    parser.add_argument("--heldout", type=int, default=8, help="held-out tasks per project")
    parser.add_argument("--threads", type=int, default=0, help="torch threads of a job (0: half the cores)")
    parser.add_argument("--steps", type=int, default=0, help="TRAIN_STEPS (0: scaled with the instances)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--min-hole", type=float, default=0.08,
                        help="least hole share of a 'fill' project's holed object")
    parser.add_argument("--family", choices=SHAPE_FAMILIES["heldout"],
                        help="a project of one kind of object: only scenes with objects of this shape family, "
                             "and only those objects annotated")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "learning_curve.json")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="JSON",
                        help="no training: join the curves of these runs (e.g. one per annotator, run side by "
                             "side) into --out")
    args = parser.parse_args()
    if args.merge:
        return merge(args.merge, args.out)
    if not (args.weights / "manifest.json").is_file():
        print(f"no weights at {args.weights} (manifest.json missing): train them or pass --weights", file=sys.stderr)
        return 2
    trainer = ExtremeTrainer(device="cpu", threads=args.threads)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, {trainer.threads} torch threads"
    shown = args.weights.resolve()
    shown = shown.relative_to(REPO_ROOT) if shown.is_relative_to(REPO_ROOT) else shown
    args.out.parent.mkdir(parents=True, exist_ok=True)
    image = args.out.with_suffix(".png")
    started = time.monotonic()
    curves = []
    for policy in args.annotators:
        for partial in curve(policy, args.weights, sorted(args.points), args.heldout, args.seed, args.min_hole,
                             trainer, {"train_steps": args.steps}, args.family):
            minutes = (time.monotonic() - started) / 60
            # written after every point, so a long run's figures so far are kept if it is stopped
            args.out.write_text(json.dumps({
                "weights": str(shown), "machine": machine, "minutes": round(minutes, 1), "seed": args.seed,
                "min_hole": args.min_hole, "train_steps": args.steps, "family": args.family,
                "curves": curves + [partial],
            }, indent=2) + "\n")
            plotted = plot(curves + [partial], image, f"learning curve from {shown.name} ({machine})")
        curves.append(partial)
    print(table(curves))
    print(f"{machine}; whole curve {minutes:.1f} min; raw figures: {args.out}"
          + (f"; plot: {image}" if plotted else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
