"""Training jobs: the job body with a fake trainer, failures reported with reasons, dead and killed
jobs detected, serving never switched to a version that was not cleanly published."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from active_learning_fakes import (FakeReader, FakeTrainer, connect, quick_fake_job, slow_fake_job, wait_for,
                                   write_fake_weights)

from backend.files import sha256_of_files
from backend.jobs.store import FAILED, FINISHED, RUNNING, JobStore
from backend.active_learning.layout import Layout
from backend.active_learning.ls_data import ProjectDataError
from backend.jobs.executors import EmbeddedExecutor
from backend.components import Components
from backend.active_learning.training_job import run_training_job, training_lock
from backend.active_learning.versions import VersionRegistry
from backend.settings import Settings


@pytest.fixture
def settings(tmp_path) -> Settings:
    weights = write_fake_weights(tmp_path / "default", 0.5, version="base-v0")
    return Settings(model_dir=tmp_path / "model_dir", extreme_weights=weights, train_steps=3)


def new_job(settings, project="3"):
    return JobStore(Layout(settings.model_dir)).create(project, "test")


def outcome(settings, job_id):
    return JobStore(Layout(settings.model_dir)).get(job_id)


def serving(settings, project="3") -> str:
    return VersionRegistry.from_settings(settings).serving(project).name


def test_a_better_model_is_published_and_the_next_job_fine_tunes_it(settings):
    trainer = FakeTrainer(gain=0.1)
    job = new_job(settings)
    run_training_job(settings, job.id, trainer=trainer, reader=FakeReader())
    done = outcome(settings, job.id)
    assert done.state == FINISHED and done.error is None and done.progress["fraction"] == 1.0
    assert done.result["published"] and done.result["version"] == "p3-v1"
    assert (done.result["miou_before"], done.result["miou_after"]) == (0.5, 0.6)
    assert done.result["tasks"] == 10 and done.result["instances"] == 10
    assert done.result["decision"]["instances"] == 10 and done.result["decision"]["ci95"] == [0.1, 0.1]
    assert "a clear gain: mean paired gain +0.1000" in done.result["reason"]
    # two folds, each trained on the other's five tasks, then the published model on all ten
    assert [call["train"] for call in trainer.calls] == [5, 5, 10]
    assert trainer.calls[-1] == {"init": settings.extreme_weights, "train": 10, "steps": 3, "version": "p3-v1"}
    assert serving(settings) == "p3-v1"
    assert not (settings.model_dir / "active_learning/projects/3/staging" / job.id).exists()

    second = new_job(settings)
    run_training_job(settings, second.id, trainer=trainer, reader=FakeReader())
    assert trainer.calls[-1]["init"].name == "p3-v1" and trainer.calls[-1]["version"] == "p3-v2"
    assert outcome(settings, second.id).result["parent"] == "p3-v1" and serving(settings) == "p3-v2"


def test_a_worse_model_is_not_published_and_the_final_model_is_not_trained(settings):
    trainer = FakeTrainer(gain=-0.05)
    job = new_job(settings)
    run_training_job(settings, job.id, trainer=trainer, reader=FakeReader())
    done = outcome(settings, job.id)
    assert done.state == FINISHED and not done.result["published"]
    assert "fell from 0.5000 (base-v0) to 0.4500" in done.result["reason"]
    assert "95% interval [-0.0500, -0.0500] over 10 instances" in done.result["reason"]
    assert len(trainer.calls) == 2 and all(call["version"].startswith("p3-v1-fold") for call in trainer.calls)
    assert serving(settings) == "base-v0"


def test_too_few_annotations_train_nothing_and_say_how_many_more_are_needed(settings):
    trainer = FakeTrainer()
    job = new_job(settings)
    run_training_job(settings, job.id, trainer=trainer, reader=FakeReader(task_ids=[1, 2, 3]))
    done = outcome(settings, job.id)
    assert done.state == FINISHED and not done.result["published"] and trainer.calls == []
    assert "3 annotated task(s) with 3 instance(s)" in done.result["reason"]
    assert "annotate 3 more annotated instance(s)" in done.result["reason"]
    assert done.result["reason"].endswith("base-v0 keeps serving")

    one_task = new_job(settings)
    run_training_job(settings, one_task.id, trainer=trainer, reader=FakeReader(task_ids=[1]))
    assert "annotate 1 more annotated task and 5 more annotated instance(s)" in outcome(settings, one_task.id).result["reason"]
    assert trainer.calls == []


def test_a_corrupt_checkpoint_fails_the_job_and_keeps_serving(settings):
    job = new_job(settings)
    run_training_job(settings, job.id, trainer=FakeTrainer(corrupt=True), reader=FakeReader())
    done = outcome(settings, job.id)
    assert done.state == FAILED and "does not match its sha256" in done.error
    assert serving(settings) == "base-v0"


class FailingReader:
    def read(self, project, progress):
        raise ProjectDataError("Label Studio answered HTTP 401 exporting project 3's annotations")


@pytest.mark.parametrize("reader, reason", [
    (FailingReader(), "HTTP 401"),
])
def test_data_problems_fail_the_job_with_their_reason(settings, reader, reason):
    job = new_job(settings)
    run_training_job(settings, job.id, trainer=FakeTrainer(), reader=reader)
    done = outcome(settings, job.id)
    assert done.state == FAILED and reason in done.error and done.finished_at is not None


@pytest.mark.parametrize("trainer, reader, outcome_line", [
    (FakeTrainer(gain=0.1), FakeReader(), "published p3-v1 (held-out mIoU 0.5 -> 0.6 on "),
    (FakeTrainer(gain=-0.05), FakeReader(), "not published: held-out mIoU fell from 0.5000 (base-v0) to 0.4500"),
    (FakeTrainer(), FailingReader(), "failed: Label Studio answered HTTP 401"),
])
def test_training_outcomes_reach_the_log_at_info(settings, caplog, trainer, reader, outcome_line):
    job = new_job(settings)
    with caplog.at_level(logging.INFO, logger="backend.active_learning"):
        run_training_job(settings, job.id, trainer=trainer, reader=reader)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("backend.active_learning")]
    assert any(line.startswith(f"training job {job.id} for project 3 {outcome_line}") for line in lines), lines


def test_a_job_left_running_by_a_dead_process_is_marked_failed(settings):
    jobs = JobStore(Layout(settings.model_dir))
    job = new_job(settings)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    jobs.mark_running(job.id, gone.pid)
    alive = new_job(settings, project="4")
    jobs.mark_running(alive.id, os.getpid())
    reaped = jobs.reap_dead()
    assert [j.id for j in reaped] == [job.id]
    assert jobs.get(job.id).state == FAILED and f"pid {gone.pid}" in jobs.get(job.id).error
    assert jobs.get(alive.id).state == RUNNING
    stale = jobs.reap_dead(now=time.time() + 3600)  # no heartbeat for an hour: dead wherever it ran
    assert [j.id for j in stale] == [alive.id] and "no heartbeat" in jobs.get(alive.id).error


def test_embedded_executor_runs_a_job_in_its_own_process(settings):
    learning = Components(settings, executor=EmbeddedExecutor(settings, JobStore(Layout(settings.model_dir)), quick_fake_job))
    connect(settings, 3)
    answer = learning.webhooks.handle("START_TRAINING", {"project": {"id": 3, "token": "secret"}})
    job = wait_for(lambda: (j := learning.jobs.get(answer["job"])).state in (FINISHED, FAILED) and j, 60, learning.dispatcher.tick)
    assert job.state == FINISHED and job.pid != os.getpid() and job.result["version"] == "p3-v1"
    assert serving(settings) == "p3-v1"


@pytest.mark.slow
def test_a_job_killed_mid_training_fails_and_serving_stays_on_the_old_version(tmp_path):
    weights = write_fake_weights(tmp_path / "default", 0.5, version="base-v0")
    settings = Settings(model_dir=tmp_path / "model_dir", extreme_weights=weights, train_steps=300)
    registry = VersionRegistry.from_settings(settings)
    staged = write_fake_weights(tmp_path / "v1", 0.6)
    registry.publish("3", "p3-v1", staged, sha256_of_files(staged), "base-v0", {})
    executor = EmbeddedExecutor(settings, JobStore(Layout(settings.model_dir)), slow_fake_job)
    learning = Components(settings, executor=executor)
    connect(settings, 3)
    job_id = learning.webhooks.handle("START_TRAINING", {"project": {"id": 3}})["job"]

    wait_for(lambda: learning.jobs.get(job_id).progress.get("stage") == "cross-validating", 60, learning.dispatcher.tick)
    os.kill(executor.running_pid(), signal.SIGKILL)
    job = wait_for(lambda: (j := learning.jobs.get(job_id)).state == FAILED and j, 10, learning.dispatcher.tick)
    assert "killed by SIGKILL" in job.error
    assert serving(settings) == "p3-v1"
    assert [v.name for v in registry.versions("3")] == ["base-v0", "p3-v1"]


def test_the_training_lock_admits_one_job_per_project(tmp_path):
    layout, events = Layout(tmp_path), []
    first = training_lock(layout, "3", "job-1", "").__enter__()

    def second_job():
        with training_lock(layout, "3", "job-2", ""):
            events.append("second runs")

    waiting = threading.Thread(target=second_job)
    waiting.start()
    with training_lock(layout, "4", "job-3", ""):  # another project does not wait
        events.append("project 4 runs")
    time.sleep(0.5)
    events.append("first ends")
    first.__exit__(None, None, None)
    waiting.join(10)
    assert events == ["project 4 runs", "first ends", "second runs"]


def test_old_ended_jobs_are_pruned_per_project(settings):
    jobs = JobStore(Layout(settings.model_dir))
    ended = [new_job(settings) for _ in range(4)]
    for job in ended:
        jobs.fail(job.id, "test")
    queued, other = new_job(settings), new_job(settings, project="4")
    jobs.fail(other.id, "test")
    jobs.prune(keep_per_project=2)
    assert {j.id for j in jobs.list()} == {ended[2].id, ended[3].id, queued.id, other.id}


class UnavailableReader:
    """Label Studio down for the first ``calls`` reads, then the fake project's annotations."""

    def __init__(self, calls):
        self.calls, self.reads = calls, 0

    def read(self, project, progress):
        self.reads += 1
        if self.reads <= self.calls:
            from backend.label_studio_client import LabelStudioUnavailable

            raise LabelStudioUnavailable("Label Studio answered HTTP 502 while exporting project 3")
        return FakeReader().read(project, progress)


def test_a_short_label_studio_outage_while_reading_annotations_is_waited_out_a_long_one_fails_clearly(
        settings, monkeypatch):
    import backend.active_learning.training_job as training_job
    from backend.jobs.backoff import Backoff

    monkeypatch.setattr(training_job, "Backoff", lambda: Backoff(0.01, 0.02))
    monkeypatch.setattr(training_job, "LABEL_STUDIO_OUTAGE_LIMIT_S", 0.3)
    job = new_job(settings)
    run_training_job(settings, job.id, trainer=FakeTrainer(gain=0.1), reader=UnavailableReader(calls=3))
    assert outcome(settings, job.id).state == FINISHED and serving(settings) == "p3-v1"

    reader = UnavailableReader(calls=1000)
    job = new_job(settings)
    run_training_job(settings, job.id, trainer=FakeTrainer(gain=0.1), reader=reader)
    done = outcome(settings, job.id)
    assert done.state == FAILED and "Label Studio did not answer for" in done.error
    assert "HTTP 502" in done.error and "serving is unchanged" in done.error and serving(settings) == "p3-v1"
    assert 5 < reader.reads < 60, "tried again within the limit, then gave up"
