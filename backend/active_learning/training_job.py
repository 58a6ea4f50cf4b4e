"""The body of one training job: read the project's annotations from Label Studio, cross-validate
fine-tuning the serving version on them (``cross_validation``), and only when the paired
comparison shows a clear gain (``publish_decision``) fine-tune it on all of them and publish the
result as the project's next version. With the project option ``proposals`` on, the job then
trains the project's proposal model (``proposal_training``), which may publish a version of its own.

Runs in its own process (the embedded runner spawns one per job; an RQ worker runs it in its
work-horse), never in a web worker. Whatever happens, the job file says so: finished with its
metrics, or failed with a reason. A kill -9 cannot be caught: the job is then found dead by its
pid/heartbeat (``JobStore.reap_dead``), and the version pointer was never touched.

Label Studio down while the annotations are read (unreachable, 5xx, 429 after retries, its images
not served): the read is tried again with a capped, jittered backoff for up to
``LABEL_STUDIO_OUTAGE_LIMIT_S``, then the job fails saying so, serving unchanged. It does not wait
longer: a training job holds the project (and the embedded runner) while it waits, and the next
annotation or "Start training" queues another.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from backend.active_learning.layout import Layout
from backend.active_learning.learned_policies import learn_policies
from backend.active_learning.ls_data import LabelStudioProjectReader, ProjectDataError
from backend.active_learning.cross_validation import cross_validate, too_few_annotations
from backend.active_learning.model_card import ModelCard
from backend.active_learning.proposal_data import ProposalDataReader
from backend.active_learning.proposal_training import (outcome_line, proposals_enabled, record_failure,
                                                       train_proposals)
from backend.active_learning.publish_decision import decide
from backend.active_learning.trainer import ExtremeTrainer, Trainer, fine_tune_steps
from backend.active_learning.versions import VersionError, VersionRegistry, stage_weights_of, verify_files
from backend.images import ImageError, ImageLoader
from backend.jobs.backoff import Backoff
from backend.label_studio_client import LabelStudioUnavailable
from backend.jobs.lifecycle import Heartbeat, ProgressWriter, Stopped, failures_recorded
from backend.jobs.run_lock import ProjectRunLock
from backend.jobs.store import FINISHED, RUNNING, Job, JobStore, outcome_summary
from backend.jobs.types import follow_ups

logger = logging.getLogger(__name__)

# Share of the job's progress bar per stage.
STAGES = {"proposals": (0.0, 1.0), "waiting": (0.0, 0.0), "fetching": (0.0, 0.1), "policies": (0.1, 0.12),
          "cross-validating": (0.12, 0.6),
          "training": (0.6, 0.97), "publishing": (0.97, 1.0)}
# Errors whose messages are written for users; anything else is reported with its type too.
EXPECTED_ERRORS = (ProjectDataError, VersionError, ImageError)
# How long reading the annotations waits for Label Studio to come back before the job fails.
LABEL_STUDIO_OUTAGE_LIMIT_S = 300.0


@dataclass(frozen=True)
class JobContext:
    job_id: str
    project: str
    registry: VersionRegistry


class Progress:
    """The training stages as one progress bar: ``progress(stage, done, message)`` writes
    {"stage", "fraction", "message"} to the job file (throttled; a stage's end always)."""

    def __init__(self, jobs: JobStore, job_id: str, card: ModelCard | None = None,
                 span: tuple[float, float] = (0.0, 1.0), writer=None):
        self._write = writer or ProgressWriter(jobs, job_id)
        self._card = card
        self._jobs, self._job_id, self._span = jobs, job_id, span

    def within(self, low: float, high: float) -> "Progress":
        """The same bar, its stages drawn between ``low`` and ``high`` (a job that trains two models)."""
        return Progress(self._jobs, self._job_id, self._card, (low, high), self._write)

    def __call__(self, stage: str, done: float, message: str = "") -> None:
        low, high = STAGES[stage]
        fraction = low + (high - low) * min(max(done, 0.0), 1.0)
        fraction = self._span[0] + (self._span[1] - self._span[0]) * fraction
        value = {"stage": stage, "fraction": round(fraction, 4), "message": message}
        self._write(value, force=done >= 1.0)
        if self._card is not None:
            self._card.show_progress(value)


def run_training_job(settings, job_id: str, trainer: Trainer | None = None, reader=None,
                     card: ModelCard | None = None, proposal_trainer=None, proposal_reader=None) -> None:
    """Run job ``job_id`` to its end; its outcome is written to the job file, logged and shown on
    Label Studio's model card (``card``, default: ``ModelCard`` from the settings), never raised."""
    layout = Layout(settings.model_dir)
    jobs = JobStore(layout)
    job = jobs.mark_running(job_id, os.getpid())
    if job.state != RUNNING:  # cancelled before it started
        return
    context = JobContext(job_id, job.project, VersionRegistry.from_settings(settings))
    card = card or ModelCard(settings, job)
    progress = Progress(jobs, job_id, card)
    staging = layout.staging_dir(job.project, job_id)
    try:
        with failures_recorded(jobs, job_id, EXPECTED_ERRORS):
            try:
                with Heartbeat(jobs, job_id) as heartbeat:
                    progress("waiting", 0.0, "waiting for the project's previous job to end")
                    with training_lock(layout, job.project, job_id, settings.redis_url) as lock:
                        heartbeat.keep_alive = lock.keep_alive
                        proposals = proposals_enabled(settings, job.project)
                        images = ImageLoader(settings)  # both models read the same images: one download each
                        result = _train_and_publish(
                            context, settings, trainer or ExtremeTrainer.from_settings(settings),
                            reader or LabelStudioProjectReader(settings, image_loader=images),
                            progress.within(0.0, 0.5) if proposals else progress, staging,
                        )
                        if proposals:
                            result["proposals"] = _proposal_step(context, settings, progress.within(0.5, 1.0), staging,
                                                                 proposal_reader, proposal_trainer, images)
                result.update(follow_ups(settings, job, result))
                jobs.finish(job_id, result)
            except Stopped:
                jobs.fail(job_id, "stopped by SIGTERM (worker shutdown) before finishing; serving is unchanged")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    job = jobs.get(job_id)
    log = logger.info if job.state == FINISHED else logger.warning
    log("training job %s for project %s %s", job_id, job.project, outcome_summary(job))
    shown = card.show_outcome(job)
    jobs.update(job_id, lambda ended: ended.result.update(shown))


def show_lost_job(settings, job: Job, card: ModelCard | None = None) -> None:
    """A job whose process died (``JobStore.reap_dead``) on the model card, which would otherwise
    show its last progress ("training 40%") for good; never raised."""
    shown = (card or ModelCard(settings, job)).show_outcome(job)
    JobStore(Layout(settings.model_dir)).update(job.id, lambda ended: ended.result.update(shown))


def training_lock(layout: Layout, project: str, job_id: str, redis_url: str) -> ProjectRunLock:
    """One training job per project at a time (``projects/<id>/train.lock``, or the Redis key
    ``segmentation-backend:train:<id>``)."""
    return ProjectRunLock(layout.project_dir(project), project, "train", job_id, redis_url)


def _train_and_publish(context: JobContext, settings, trainer: Trainer, reader, progress: Callable, staging) -> dict:
    project = context.project
    data = read_annotations(reader, project, progress)
    samples = [sample for task in data.tasks for sample in task.samples]
    base = context.registry.serving(project)
    name = context.registry.next_name(project)
    summary = {"parent": base.name, "tasks": len(data.tasks), "instances": len(samples), "skipped_tasks": data.skipped[:20]}
    shortfall = too_few_annotations(data.tasks, settings.train_min_instances)
    if shortfall:
        return {"published": False, "version": None, **summary, "reason": f"{shortfall}; {base.name} keeps serving"}

    progress("policies", 0.0, f"the labeling policies of {len(samples)} annotated instances")
    learned = learn_policies(base.policies, trainer.masks(base.path, samples), [mask for _, mask in samples],
                             [label for task in data.tasks for label in task.labels])

    def steps_for(instances: int) -> int:
        return fine_tune_steps(instances, settings.train_steps)

    paired = cross_validate(trainer, data.tasks, base.path, Path(staging) / "folds", name, steps_for,
                            lambda done, message: progress("cross-validating", done, message))
    decision = decide(paired.parent, paired.candidate, paired.method)
    steps = steps_for(len(samples))
    metrics = {"miou_before": round(decision.miou_before, 4), "miou_after": round(decision.miou_after, 4),
               "decision": decision.as_result(), "steps": steps, "fold_steps": paired.steps,
               "train_instances": len(samples), "val_instances": decision.instances, **summary, **learned.as_result()}
    if decision.publish:
        out = Path(staging)
        files = trainer.fine_tune(
            samples, base.path, out, steps, name,
            lambda step, total, message: progress("training", step / total, f"all tasks: step {step}/{total} {message}".strip()),
        )
        verify_files(out, files, "the trained checkpoint")  # a torn or damaged write stops here
        reason = "; ".join(filter(None, [f"a clear gain: {decision.summary()}", learned.summary()]))
    elif learned.changes:  # the parent's weights, served with the policies learned from the project
        out = Path(staging) / "policies"
        files = stage_weights_of(base, out)
        metrics.update(miou_before=round(learned.miou_before, 4), miou_after=round(learned.miou_after, 4),
                       figures="mIoU with the learned policies", steps=0)
        reason = f"{learned.summary()}; the fine-tuned model is not taken: {decision.verdict(base.name)}"
    else:
        return {"published": False, "version": None, **metrics, "reason": decision.reason(base.name)}
    progress("publishing", 0.0, f"publishing {name}")
    version = context.registry.publish(project, name, out, files, parent=base.name, metrics=metrics,
                                       job=context.job_id, policies=learned.policies)
    progress("publishing", 1.0, f"{version.name} serves project {project}")
    return {"published": True, "version": version.name, **metrics, "reason": reason}


def read_annotations(reader, project: str, progress: Callable):
    """The project's annotations (``reader.read``), waiting out a Label Studio outage for up to
    ``LABEL_STUDIO_OUTAGE_LIMIT_S``; then ``LabelStudioUnavailable`` saying so."""
    backoff, started = Backoff(), time.monotonic()
    while True:
        progress("fetching", 0.0, "reading annotations from Label Studio")
        try:
            return reader.read(project, progress=lambda done, total: progress("fetching", done / total,
                                                                              f"task {done}/{total}"))
        except (ProjectDataError, ImageError) as exc:
            if not exc.transient:
                raise
            wait_s, waited_s = backoff.next_wait(), time.monotonic() - started
            if waited_s + wait_s > LABEL_STUDIO_OUTAGE_LIMIT_S:
                raise LabelStudioUnavailable(
                    f"Label Studio did not answer for {waited_s:.0f} s while the project's annotations were read "
                    f"({exc}); serving is unchanged, and the next training request tries again") from None
            message = f"waiting for Label Studio ({str(exc)[:300]}), retrying in {wait_s:.0f} s"
            logger.warning("training of project %s: %s", project, message)
            progress("fetching", 0.0, message)
            time.sleep(wait_s)


def _proposal_step(context: JobContext, settings, progress: Progress, staging, reader, trainer,
                   images: ImageLoader) -> dict:
    """The proposal model's part of the job, reading the project's images through the job's ``images``;
    its failure on the project's data (Label Studio not configured included) is recorded in the
    result and leaves the extreme-point outcome and serving as they are."""
    from backend.proposals import ProposalError

    try:
        data = read_annotations(reader or ProposalDataReader(settings, image_loader=images), context.project, progress)
        result = train_proposals(settings, context.project, context.job_id, context.registry, data,
                                 lambda done, message: progress("proposals", done, message), staging, trainer)
    except EXPECTED_ERRORS + (ProposalError,) as exc:
        result = record_failure(settings, context.project, str(exc))
    logger.info("training job %s for project %s: %s", context.job_id, context.project, outcome_line(result))
    return result


def result_summary(result: dict) -> str:
    """A finished training job in one line: published or not, with the figures."""
    figures = (f"{result.get('figures', 'held-out mIoU')} {result.get('miou_before')} -> {result.get('miou_after')} on "
               f"{result.get('val_instances', '?')} instances, {result.get('train_instances', '?')} training "
               f"instances, {result.get('steps', '?')} steps")
    proposals = f"; {outcome_line(result['proposals'])}" if result.get("proposals") else ""
    if result.get("published"):
        return f"published {result.get('version')} ({figures}){proposals}"
    return f"not published: {result.get('reason') or figures}{proposals}"
