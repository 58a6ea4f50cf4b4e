"""A training job's proposal step (project option ``proposals``): train the project's proposal model
from its annotated tasks and publish it as a new version only if it is not worse.

1. Read every annotated task whole (``proposal_data``); a task annotated with no object is a true
   negative. Below ``PROPOSALS_MIN_TASKS`` annotated tasks nothing is trained (cold start): the job's
   result, ``/health`` and the status page say how many more are needed.
2. Hold out about a quarter of the tasks, chosen by a hash of the task id (``split.task_hash``, so a
   task keeps its side as the project grows; at least one held out, at least one trained on).
3. Train on the rest, starting from the serving proposal model when there is one, else from the
   class-agnostic base (``PROPOSALS_BASE_WEIGHTS``; absent: the ImageNet encoder) (``backend.proposals``),
   with a labeller that labels each object from its mask (made by the serving version's
   extreme-point box mode where an annotation has none, and for every held-out proposal);
   the confidence threshold is chosen on the held-out tasks (best F1, pulled towards 0.3 when they hold
   few objects: ``evaluate.heldout_threshold``), where the score calibration is
   fitted too.
4. Compare on the held-out tasks, each model at its own threshold: the new one is published when its
   F1 (recall and precision together) is not lower than the serving proposal model's. A project's
   first proposal model is published unless it finds none of the held-out objects.
5. Publish a version holding the proposal model in ``proposals/`` and the serving version's
   extreme-point weights copied over, so a project's first proposal model is a new version (in
   ``/versions``, carried by ``model_version``) even when the extreme-point model did not change.

The outcome (trained or not, why, held-out recall / precision / F1, threshold, counts) is returned
for the job's result and kept in ``proposals.json`` beside the project's versions for ``/health``.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

from backend.active_learning.layout import Layout
from backend.active_learning.proposal_data import ProposalData, ProposalTask
from backend.active_learning.split import task_hash
from backend.active_learning.trainer import training_threads
from backend.active_learning.versions import PROPOSALS_DIR, stage_weights_of
from backend.files import write_json_atomic
from backend.project_options import ProjectOptions
from backend.project_store import ProjectStore

logger = logging.getLogger(__name__)

HELDOUT_FRACTION = 0.25
# Where a job stages the proposal version (inside its staging directory, removed with it).
STAGING_SUBDIR = "proposal-version"

# progress(fraction done, message)
StepProgress = Callable[[float, str], None]


class ProposalTrainer(Protocol):
    def train(self, examples: Sequence[tuple], heldout: Sequence[tuple], labels: Sequence[str], out_dir: Path,
              init_dir: Path | None, progress: Callable[[int, int, dict], None], masks_from: Path) -> dict:
        """Train a proposal model into ``out_dir``; its metrics, with ``heldout`` figures and ``threshold``.
        ``masks_from``: the extreme-point weights whose box mode makes objects' masks (the labeller's)."""

    def evaluate(self, weights_dir: Path, heldout: Sequence[tuple], masks_from: Path) -> dict:
        """Held-out figures (recall, precision, f1, objects, correct, …) of a saved model at its threshold."""


class BackendProposalTrainer:
    """``backend.proposals`` on the job's device and threads."""

    def __init__(self, device: str, threads: int, steps: int | None = None, seed: int = 0,
                 base_dir: Path | None = None):
        self.device, self.threads, self.steps, self.seed, self.base_dir = device, threads, steps, seed, base_dir

    @classmethod
    def from_settings(cls, settings) -> "BackendProposalTrainer":
        return cls(settings.resolved_device(), training_threads(settings.train_threads),
                   settings.proposals_steps or None, base_dir=settings.proposals_base)

    def train(self, examples, heldout, labels, out_dir, init_dir, progress, masks_from) -> dict:
        import torch

        from backend.proposals import train_proposal_model

        torch.set_num_threads(self.threads)
        return train_proposal_model(examples, labels, out_dir, heldout=heldout, init_dir=init_dir, base_dir=self.base_dir,
                                    steps=self.steps,
                                    device=self.device, progress_cb=progress, seed=self.seed,
                                    provenance={"data": f"Label Studio annotations: {len(examples)} training, "
                                                        f"{len(heldout)} held-out tasks"},
                                    mask_of=self._mask_of(masks_from))

    def evaluate(self, weights_dir, heldout, masks_from) -> dict:
        import torch

        from backend.proposals import ProposalModel, evaluate_proposals

        torch.set_num_threads(self.threads)
        return evaluate_proposals(ProposalModel.load(weights_dir, self.device), heldout,
                                  mask_of=self._mask_of(masks_from))

    def _mask_of(self, weights_dir: Path):
        """``mask_of`` for ``backend.proposals``: the box mode of the extreme-point weights in ``weights_dir``."""
        from backend.proposal_masks import box_mask_of
        from backend.segmenters.extreme import ExtremeSegmenter

        return box_mask_of(ExtremeSegmenter.load(weights_dir, self.device))


@dataclass(frozen=True)
class Decision:
    publish: bool
    reason: str


def proposals_enabled(settings, project: str) -> bool:
    """Whether ``project``'s options (server default, then its /setup) turn proposals on; never for a
    project that never sent /setup to this backend (the server default alone decides nothing there)."""
    setup = ProjectStore.in_model_dir(settings.model_dir).load(project)
    return setup is not None and ProjectOptions.for_project(settings.default_options, setup).proposals


def split_heldout(tasks: Sequence[ProposalTask]) -> tuple[list[ProposalTask], list[ProposalTask]]:
    """(training tasks, held-out tasks): about HELDOUT_FRACTION held out by task-id hash, at least one
    each (the caller has two or more tasks)."""
    ranked = sorted(tasks, key=lambda t: task_hash(t.task_id))
    held = sum(task_hash(t.task_id) < HELDOUT_FRACTION for t in ranked)
    held = min(max(held, 1), len(ranked) - 1)
    return ranked[held:], ranked[:held]


def decide(new: dict, serving: dict | None) -> Decision:
    """Publish or not, from held-out figures at each model's own threshold (see the module docstring)."""
    figures = _figures(new)
    if serving is None:
        if new.get("objects") and not new.get("correct"):
            return Decision(False, f"finds none of the {new['objects']} held-out objects ({figures})")
        return Decision(True, f"the project's first proposal model ({figures})")
    if new["f1"] < serving["f1"]:
        return Decision(False, f"held-out F1 would fall from {serving['f1']:.3f} to {new['f1']:.3f} "
                               f"(serving: {_figures(serving)}; new: {figures})")
    return Decision(True, f"held-out F1 {serving['f1']:.3f} -> {new['f1']:.3f} ({figures})")


def train_proposals(settings, project: str, job_id: str, registry, data: ProposalData, progress: StepProgress,
                    staging: Path, trainer: ProposalTrainer | None = None) -> dict:
    """The proposal step of training job ``job_id`` on the project's annotated tasks ``data``
    (``ProposalDataReader.read``), run under the project's training lock: what it did, for the job's
    result; also written to the project's ``proposals.json``. Raises the trainer's errors
    (``backend.proposals.ProposalError``: nothing to learn from)."""
    counts = {"annotated_tasks": len(data.tasks), "negative_tasks": sum(not t.objects for t in data.tasks),
              "objects": sum(len(t.objects) for t in data.tasks), "skipped_tasks": data.skipped[:20]}
    needed = settings.proposals_min_tasks - len(data.tasks)
    if needed > 0:
        message = (f"cold start: {len(data.tasks)} annotated tasks, {needed} more needed "
                   f"(PROPOSALS_MIN_TASKS={settings.proposals_min_tasks})")
        return _outcome(settings, project, {"trained": False, "published": False, "version": None, "needed": needed,
                                            **counts, "reason": message}, message)
    train, heldout = split_heldout(data.tasks)
    serving = registry.serving(project)
    previous = registry.with_proposals(project)
    init_dir = previous.path / PROPOSALS_DIR if previous is not None else None
    name = registry.next_name(project)
    out = Path(staging) / STAGING_SUBDIR
    shutil.rmtree(out, ignore_errors=True)
    metrics = trainer_or_default(trainer, settings).train(
        [t.example for t in train], [t.example for t in heldout], data.labels, out / PROPOSALS_DIR, init_dir,
        lambda step, steps, values: progress(0.2 + 0.65 * step / steps,
                                             f"proposals: step {step}/{steps} loss {values.get('loss', 0):.4f}"),
        serving.path)
    new = metrics["heldout"]
    before = None
    if previous is not None:
        progress(0.9, f"proposals: the serving model ({previous.name}) on {len(heldout)} held-out tasks")
        before = trainer_or_default(trainer, settings).evaluate(init_dir, [t.example for t in heldout], serving.path)
    decision = decide(new, before)
    summary = {**counts, "train_tasks": len(train), "heldout_tasks": len(heldout), "threshold": metrics["threshold"],
               "heldout": _rounded(new), "serving_heldout": _rounded(before) if before is not None else None,
               "serving_model": previous.name if previous is not None else None,
               "training": metrics.get("training", {})}
    if not decision.publish:
        message = f"not published: {decision.reason}"
        return _outcome(settings, project, {"trained": True, "published": False, "version": None, **summary,
                                            "reason": decision.reason}, message)
    progress(0.95, f"proposals: publishing {name}")
    files = stage_weights_of(serving, out)
    version = registry.publish(project, name, out, files, parent=serving.name, job=job_id,
                               metrics={"proposals": summary, "extreme": f"weights of {serving.name}"},
                               policies=serving.policies)
    message = f"published {version.name}: {decision.reason}"
    progress(1.0, f"proposals: {version.name} serves project {project}")
    return _outcome(settings, project, {"trained": True, "published": True, "version": version.name, **summary,
                                        "reason": decision.reason}, message)


def trainer_or_default(trainer: ProposalTrainer | None, settings) -> ProposalTrainer:
    return trainer or BackendProposalTrainer.from_settings(settings)


def outcome_line(result: dict) -> str:
    """The proposal step in one line (for the job's summary and the log)."""
    if result.get("error"):
        return f"proposals: failed: {result['error']}"
    if result.get("published"):
        return f"proposals: published {result.get('version')} ({result.get('reason')})"
    return f"proposals: not published: {result.get('reason')}"


def record_failure(settings, project: str, error: str) -> dict:
    """The step's result when it failed (bad data, Label Studio down): the job goes on; serving is unchanged."""
    return _outcome(settings, project, {"trained": False, "published": False, "version": None, "error": error},
                    f"failed: {error}; serving is unchanged")


def _outcome(settings, project: str, result: dict, message: str) -> dict:
    write_status(settings, project, {"message": message, "needed": result.get("needed", 0),
                                     "annotated_tasks": result.get("annotated_tasks"), "at": time.time()})
    return result


def write_status(settings, project: str, status: dict) -> None:
    write_json_atomic(Layout(settings.model_dir).proposals_status_file(project), status)


def _figures(figures: dict) -> str:
    return (f"recall {figures.get('recall', 0):.2f}, precision {figures.get('precision', 0):.2f} at threshold "
            f"{figures.get('threshold', 0):.2f} on {figures.get('objects', 0)} objects")


def _rounded(figures: dict) -> dict:
    return {key: round(value, 4) if isinstance(value, float) else value for key, value in figures.items()}
