"""Pre-annotation jobs with an in-memory Label Studio and geometric fake segmenters: what is stored,
what is skipped, per-task errors, resuming after a stop, and the RQ chunking."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest
from preannotation_fakes import PROJECT_ID, FakeLabelStudio, SharedRunLocks, box_task, fake_model
from segmentation_fakes import CONFIG, H, PROJECT, W, box_mask, rectangle, task

import backend.preannotation.chunks as chunks
from backend.jobs.store import FAILED as JOB_FAILED, FINISHED, MAX_ATTEMPTS, QUEUED, RUNNING, JobStore
from backend.jobs.types import PREANNOTATE
from backend.jobs.layout import JobLayout
from backend.jobs.lifecycle import Stopped
from backend.preannotation.job import run_preannotation_job
from backend.preannotation.progress import ALREADY_PREDICTED, FAILED, NO_PROMPTS, PREDICTED, JobTasks
from backend.protocol import mask_from_region
from backend.settings import Settings

BOXES = {1: (20, 10, 80, 60), 2: (100, 20, 190, 90), 3: (0, 0, 50, 50)}


@pytest.fixture
def settings(tmp_path):
    return Settings(model_dir=tmp_path, preannotate_chunk_tasks=2)


@pytest.fixture
def model(settings):
    model = fake_model(settings.model_dir)
    model.setup(PROJECT, CONFIG, {"preannotate_on_import": True})
    return model


def new_job(settings, tasks=(), scope=None):
    return JobStore(JobLayout(settings.model_dir)).create(PROJECT_ID, "test", PREANNOTATE,
                                                       {"tasks": list(tasks), "scope": scope})


def run(settings, job, model, ls):
    run_preannotation_job(settings, job.id, model=model, tasks_api=ls)
    return JobStore(JobLayout(settings.model_dir)).get(job.id)


def test_every_task_gets_one_brush_prediction_of_the_project_version(settings, model):
    ls = FakeLabelStudio([box_task(i, box) for i, box in BOXES.items()])
    job = run(settings, new_job(settings, scope="all"), model, ls)
    version = model.model_version_for(PROJECT_ID)
    assert job.state == FINISHED, job.error
    assert job.result == {"total": 3, PREDICTED: 3, ALREADY_PREDICTED: 0, NO_PROMPTS: 0, FAILED: 0,
                          "model_version": version}
    for task_id, box in BOXES.items():
        detector, ours = ls.predictions_of(task_id)
        assert detector["model_version"] == "detector-v1"
        assert ours["model_version"] == version and ours["score"] == pytest.approx(0.9)
        (region,) = ours["result"]
        assert region["type"] == "brushlabels" and region["value"]["brushlabels"] == ["Car"]
        assert np.array_equal(mask_from_region(region, W, H), box_mask(*box))


def test_a_finished_job_logs_one_line_with_its_counts(settings, model, caplog):
    ls = FakeLabelStudio([box_task(1), task(2)])
    with caplog.at_level(logging.INFO, logger="backend.preannotation.job"):
        job = run(settings, new_job(settings, tasks=[1, 2]), model, ls)
    ended = [record.getMessage() for record in caplog.records
             if f"job {job.id} for project {PROJECT_ID} finished" in record.getMessage()]
    assert len(ended) == 1, caplog.text
    assert "total 2" in ended[0] and f"{PREDICTED} 1" in ended[0] and f"{NO_PROMPTS} 1" in ended[0]
    assert f"{FAILED} 0" in ended[0]


def test_a_second_job_predicts_nothing_twice(settings, model):
    ls = FakeLabelStudio([box_task(i, box) for i, box in BOXES.items()])
    run(settings, new_job(settings, scope="all"), model, ls)
    job = run(settings, new_job(settings, scope="all"), model, ls)
    assert job.result[ALREADY_PREDICTED] == 3 and job.result[PREDICTED] == 0
    assert len(ls.created) == 3


def test_one_bad_task_never_stops_the_job_and_each_error_is_recorded(settings, model):
    ls = FakeLabelStudio([
        box_task(1), box_task(2, url="http://images.test/gone.jpg"), task(3), box_task(4), box_task(5, project=8),
        box_task(6, box=(300, 300, 400, 400)),
    ], broken=[4])
    job = run(settings, new_job(settings, tasks=[1, 2, 3, 4, 5, 6, 99]), model, ls)
    assert job.state == FINISHED
    assert job.result[PREDICTED] == 1 and job.result[NO_PROMPTS] == 1 and job.result[FAILED] == 5
    errors = job.progress["errors"]
    assert set(errors) == {"2", "4", "5", "6", "99"}
    assert "image not loaded" in errors["2"] and "HTTP 400" in errors["4"] and "HTTP 404" in errors["99"]
    assert "belongs to project 8" in errors["5"] and "outside the image" in errors["6"]
    assert [p["task"] for p in ls.created] == [1]


def test_progress_shows_done_total_rate_and_eta(settings, model):
    ls = FakeLabelStudio([box_task(i) for i in range(1, 6)])
    job = run(settings, new_job(settings, scope="all"), model, ls)
    progress = job.progress
    assert (progress["done"], progress["total"], progress["fraction"]) == (5, 5, 1.0)
    assert progress["rate_per_min"] > 0 and progress["eta_s"] == 0
    assert progress["model_version"] == model.model_version_for(PROJECT_ID)


class StopsAt(FakeLabelStudio):
    """SIGTERM (a shutdown) arrives while the job reads task ``stop_at``."""

    def __init__(self, tasks, stop_at):
        super().__init__(tasks)
        self.stop_at = stop_at

    def task(self, task_id):
        if task_id == self.stop_at:
            self.stop_at = None
            raise Stopped()
        return super().task(task_id)


def test_a_stopped_job_goes_back_to_the_queue_and_resumes_where_it_stopped(settings, model):
    ls = StopsAt([box_task(i) for i in range(1, 6)], stop_at=4)
    job = run(settings, new_job(settings, scope="all"), model, ls)
    assert job.state == QUEUED and "SIGTERM" in job.progress["message"] and job.progress["done"] == 3
    ls.reads.clear()
    job = run(settings, job, model, ls)
    assert job.state == FINISHED and job.attempts == 1, "a shutdown is no failed attempt"
    assert ls.reads == [4, 5], "the resumed job must start at the first task without an outcome"
    assert job.result[PREDICTED] == 5 and len(ls.created) == 5


def test_more_shutdowns_than_max_attempts_never_fail_a_job(settings, model):
    ls = FakeLabelStudio([box_task(i) for i in range(1, 3 * MAX_ATTEMPTS + 3)])
    job = new_job(settings, scope="all")
    for stop_at in range(2, 3 * MAX_ATTEMPTS + 2, 3):  # a deploy's restarts, one every few tasks
        stopping = StopsAt([], stop_at)
        stopping.tasks = ls.tasks
        job = run(settings, job, model, stopping)
        assert job.state == QUEUED and job.attempts == 0, (job.state, job.error)
    job = run(settings, job, model, ls)
    assert job.state == FINISHED and job.result[PREDICTED] == 3 * MAX_ATTEMPTS + 2 and job.attempts == 1


def test_a_job_whose_process_keeps_dying_fails_after_max_attempts(settings):
    jobs = JobStore(JobLayout(settings.model_dir))
    job = new_job(settings, tasks=[1])
    for attempt in range(1, MAX_ATTEMPTS + 1):
        jobs.mark_running(job.id, 4242)
        job = jobs.abandon(job.id, "the pre-annotation process was killed by SIGKILL")
        assert job.state == (QUEUED if attempt < MAX_ATTEMPTS else JOB_FAILED)
    assert f"({MAX_ATTEMPTS} attempts)" in job.error


def test_a_dead_pre_annotation_process_is_requeued_by_the_reaper(settings):
    import subprocess
    import sys

    jobs = JobStore(JobLayout(settings.model_dir))
    job = new_job(settings, tasks=[1])
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    jobs.mark_running(job.id, int(dead.stdout))
    (reaped,) = jobs.reap_dead()
    assert reaped.state == QUEUED and "died" in reaped.progress["message"]


def older_model(settings):
    """The serving model before its extreme-point model was retrained: version ``segassist-v0+sam-fake``."""
    model = fake_model(settings.model_dir)
    model.segmenters = replace(model.segmenters, extreme_version="v0")
    return model


def brush_prediction(pid, version, *extra_regions):
    return {"id": pid, "model_version": version, "result": [{"type": "brushlabels", "from_name": "mask",
                                                             "to_name": "image", "value": {}}, *extra_regions]}


def test_a_new_version_replaces_only_the_backends_own_older_predictions(settings, model):
    ls = FakeLabelStudio([box_task(1), box_task(2)])
    run(settings, new_job(settings, tasks=[1, 2]), older_model(settings), ls)
    ours = [p["id"] for p in ls.created]
    # Beside ours: another backend instance's of the same version, and one with a rectangle of a tool
    # no longer in the config (someone's input, whatever its from_name).
    ls.tasks[1]["predictions"] += [brush_prediction(900, "segassist-v0+sam-fake"),
                                   brush_prediction(901, "segassist-v0+sam-fake", rectangle(0, 0, 10, 10) | {
                                       "from_name": "gone_tool"})]
    job = run(settings, new_job(settings, tasks=[1, 2]), model, ls)
    assert job.result[PREDICTED] == 2 and sorted(ls.deleted) == sorted(ours)
    assert [p["id"] for p in ls.predictions_of(1)][:3] == [501, 900, 901]
    assert not (settings.model_dir / "active_learning" / "projects" / "7" / "predictions" / "1.json").read_text() \
        .count(str(ours[0]))


def test_after_a_rollback_the_newer_versions_predictions_stay(settings, model):
    ls = FakeLabelStudio([box_task(1)])
    newer = fake_model(settings.model_dir)
    newer.segmenters = replace(newer.segmenters, extreme_version="p7-v2")
    run(settings, new_job(settings, tasks=[1]), newer, ls)
    pinned = fake_model(settings.model_dir)  # PINNED_VERSIONS='{"7": "p7-v1"}'
    pinned.segmenters = replace(pinned.segmenters, extreme_version="p7-v1")
    job = run(settings, new_job(settings, tasks=[1]), pinned, ls)
    assert job.result[PREDICTED] == 1 and ls.deleted == []
    assert [p["model_version"] for p in ls.predictions_of(1)][1:] == ["segassist-p7-v2+sam-fake",
                                                                      "segassist-p7-v1+sam-fake"]


def test_a_store_interrupted_before_it_was_recorded_leaves_no_orphan(settings, model):
    from backend.preannotation.owned_predictions import OwnedPredictions

    ls = FakeLabelStudio([box_task(1)])
    record = OwnedPredictions(JobLayout(settings.model_dir).project_dir(PROJECT_ID))
    record.storing(1, "segassist-v0+sam-fake", ls.predictions(1))
    entry = {key: value for key, value in brush_prediction(0, "segassist-v0+sam-fake").items() if key != "id"}
    orphan = ls.create_prediction(1, entry)  # and then the process died
    job = run(settings, new_job(settings, tasks=[1]), model, ls)
    assert job.result[PREDICTED] == 1 and ls.deleted == [orphan]


class StoredMeanwhile(FakeLabelStudio):
    """Another process stores the current version on a task while this job computes its masks."""

    def __init__(self, tasks, version):
        super().__init__(tasks)
        self.version = version

    def task(self, task_id):
        value = super().task(task_id)
        self.tasks[task_id]["predictions"].append(brush_prediction(800 + task_id, self.version))
        return value


def test_a_task_stored_by_someone_else_meanwhile_is_not_stored_twice(settings, model):
    ls = StoredMeanwhile([box_task(1)], model.model_version_for(PROJECT_ID))
    job = run(settings, new_job(settings, tasks=[1]), model, ls)
    assert job.result[ALREADY_PREDICTED] == 1 and ls.created == []


class DeletedMeanwhile(FakeLabelStudio):
    """Someone deletes the task's predictions of ``version`` right after the job read the task."""

    def __init__(self, tasks, version):
        super().__init__(tasks)
        self.version = version

    def predictions(self, task_id):
        listed = super().predictions(task_id)
        self.tasks[task_id]["predictions"] = [p for p in listed if p["model_version"] != self.version]
        return listed


def test_an_older_prediction_already_gone_is_no_failure(settings, model):
    ls = FakeLabelStudio([box_task(1)])
    run(settings, new_job(settings, tasks=[1]), older_model(settings), ls)
    ls = DeletedMeanwhile([ls.tasks[1]], "segassist-v0+sam-fake")
    job = run(settings, new_job(settings, tasks=[1]), model, ls)
    assert job.result[PREDICTED] == 1 and job.result[FAILED] == 0 and job.progress["errors"] == {}
    assert ls.deleted and len(ls.created) == 1


def waiting_behind_another_run(settings, model):
    """(jobs, job, Label Studio, the other run's lock, the job's thread): a job started while another
    run (e.g. python -m backend preannotate, in another process) holds the project, once it waits."""
    import threading
    import time

    from backend.jobs.run_lock import ProjectRunLock

    jobs = JobStore(JobLayout(settings.model_dir))
    other = ProjectRunLock(jobs.layout.project_dir(PROJECT_ID), PROJECT_ID, "preannotation", "p7-other-run")
    other.acquire()
    ls, job = FakeLabelStudio([box_task(1)]), new_job(settings, tasks=[1])
    waiting = threading.Thread(target=run, args=(settings, job, model, ls))
    waiting.start()
    deadline = time.monotonic() + 10
    while "p7-other-run" not in jobs.get(job.id).progress.get("message", ""):
        assert time.monotonic() < deadline, jobs.get(job.id).progress
        time.sleep(0.05)
    return jobs, job, ls, other, waiting


def test_a_second_run_waits_for_the_projects_running_one(settings, model):
    jobs, job, ls, other, waiting = waiting_behind_another_run(settings, model)
    assert ls.reads == [] and jobs.get(job.id).state == RUNNING
    other.release()
    waiting.join(10)
    assert jobs.get(job.id).state == FINISHED and jobs.get(job.id).result[PREDICTED] == 1


def test_a_run_waiting_for_the_project_can_be_cancelled(settings, model):
    jobs, job, ls, other, waiting = waiting_behind_another_run(settings, model)
    jobs.cancel(job.id)
    waiting.join(10)
    other.release()
    assert jobs.get(job.id).state == "cancelled" and ls.reads == []


def test_a_run_waiting_for_the_project_gives_way_to_a_queued_training_job(settings, model):
    from backend.jobs.run_lock import ProjectRunLock

    jobs = JobStore(JobLayout(settings.model_dir))
    with ProjectRunLock(jobs.layout.project_dir(PROJECT_ID), PROJECT_ID, "preannotation", "p7-other-run"):
        jobs.create(PROJECT_ID, "10 new annotations")
        job = new_job(settings, tasks=[1])
        run_preannotation_job(settings, job.id, model=model, tasks_api=FakeLabelStudio([box_task(1)]),
                              yield_to_first=True)
    job = jobs.get(job.id)
    assert job.state == QUEUED and "training" in job.progress["message"] and job.attempts == 0


def test_unlabeled_scope_leaves_annotated_tasks_alone(settings, model):
    annotated = box_task(2)
    annotated["annotations"] = [{"id": 1, "result": [rectangle(10, 10, 50, 50)], "was_cancelled": False}]
    ls = FakeLabelStudio([box_task(1), annotated])
    job = run(settings, new_job(settings, scope="unlabeled"), model, ls)
    assert job.result["total"] == 1 and [p["task"] for p in ls.created] == [1]


def test_a_project_never_set_up_reads_its_labeling_config_from_label_studio(tmp_path):
    settings = Settings(model_dir=tmp_path)
    model = fake_model(tmp_path)  # no /setup stored
    ls = FakeLabelStudio([box_task(1)])
    job = run(settings, new_job(settings, tasks=[1]), model, ls)
    assert job.result[PREDICTED] == 1


class FakeQueue:
    connection = None

    def __init__(self):
        self.enqueued: list[tuple] = []

    def enqueue(self, function, *args, job_id, **options):
        self.enqueued.append((function.__name__, args, job_id))


def planned_with_redis(settings, task_count: int, monkeypatch, locks: SharedRunLocks | None = None):
    """(settings, Label Studio, jobs, job, queue): a job of ``task_count`` tasks planned into RQ chunks."""
    settings = replace(settings, redis_url="redis://unused")
    monkeypatch.setattr(chunks, "run_lock", (locks or SharedRunLocks()).lock)
    ls = FakeLabelStudio([box_task(i) for i in range(1, task_count + 1)])
    job, queue = new_job(settings, scope="all"), FakeQueue()
    chunks.plan_rq_chunks(settings, job.id, queue=queue, tasks_api=ls)
    return settings, ls, JobStore(JobLayout(settings.model_dir)), job, queue


def test_with_redis_a_job_splits_into_chunks_that_workers_share(settings, model, monkeypatch):
    settings, ls, jobs, job, queue = planned_with_redis(settings, 5, monkeypatch)
    assert [name for name, _, _ in queue.enqueued] == ["run_rq_chunk"] * 3  # 5 tasks, 2 per chunk
    assert jobs.get(job.id).state == RUNNING and jobs.get(job.id).pid is None
    # Two workers take chunks in any order; the one that completes the job finishes it.
    for chunk in (2, 0):
        chunks.work_chunk(settings, job.id, chunk, model, tasks_api=ls)
        assert jobs.get(job.id).state == RUNNING
    # The worker on chunk 1 died: RQ marks it failed; the dispatcher queues it again.
    monkeypatch.setattr(chunks, "rq_status", lambda connection, rq_id: "failed" if rq_id.endswith("-c1") else "finished")
    queue.enqueued.clear()
    assert chunks.poll_chunks(jobs, queue, jobs.get(job.id)) is False
    assert [rq_id for _, _, rq_id in queue.enqueued] == [f"{job.id}-c1-a2"], "a new RQ id per attempt"
    chunks.work_chunk(settings, job.id, 1, model, tasks_api=ls)
    assert jobs.get(job.id).state == FINISHED and jobs.get(job.id).result[PREDICTED] == 5
    assert len(ls.created) == 5


def test_with_redis_a_second_job_stays_queued_while_the_project_runs_another(settings, model, monkeypatch):
    locks = SharedRunLocks()
    settings, ls, jobs, first, queue = planned_with_redis(settings, 3, monkeypatch, locks)
    second = new_job(settings, scope="all")
    chunks.plan_rq_chunks(settings, second.id, queue=queue, tasks_api=ls)
    assert jobs.get(second.id).state == QUEUED and first.id in jobs.get(second.id).progress["message"]
    assert [rq_id for _, _, rq_id in queue.enqueued] == [f"{first.id}-c0", f"{first.id}-c1"]
    for chunk in (0, 1):
        chunks.work_chunk(settings, first.id, chunk, model, tasks_api=ls)
    assert jobs.get(first.id).state == FINISHED and locks.holders == {}  # the last chunk freed the project
    chunks.plan_rq_chunks(settings, second.id, queue=queue, tasks_api=ls)  # queued again by the dispatcher
    for chunk in (0, 1):
        chunks.work_chunk(settings, second.id, chunk, model, tasks_api=ls)
    assert jobs.get(second.id).result[ALREADY_PREDICTED] == 3 and len(ls.created) == 3


def test_a_chunk_lost_too_often_records_its_tasks_as_failed_and_the_job_ends(settings, monkeypatch):
    settings, ls, jobs, job, queue = planned_with_redis(settings, 2, monkeypatch)
    monkeypatch.setattr(chunks, "rq_status", lambda connection, rq_id: "failed")
    monkeypatch.setattr(chunks, "POLL_EVERY_S", 0.0)
    for _ in range(MAX_ATTEMPTS):
        chunks.poll_chunks(jobs, queue, jobs.get(job.id))
    job = jobs.get(job.id)
    assert len(queue.enqueued) == 1 + (MAX_ATTEMPTS - 1)
    assert job.state == FINISHED and job.result[FAILED] == 2
    assert "stopped 3 times" in job.progress["errors"]["1"]
    assert JobTasks(jobs.layout, PROJECT_ID, job.id).complete()


class TrainingArrivesAt(FakeLabelStudio):
    """Someone's annotations queue a training job while the job reads task ``task_id``."""

    def __init__(self, tasks, task_id, jobs):
        super().__init__(tasks)
        self.task_id, self.jobs, self.training = task_id, jobs, None

    def task(self, task_id):
        if task_id == self.task_id:
            self.training = self.jobs.create(PROJECT_ID, "10 new annotations")
        return super().task(task_id)


def test_in_the_embedded_worker_a_queued_training_job_goes_first(settings, model):
    from backend.jobs.executors import EmbeddedExecutor

    jobs = JobStore(JobLayout(settings.model_dir))
    ls = TrainingArrivesAt([box_task(i) for i in range(1, 6)], task_id=2, jobs=jobs)
    job = new_job(settings, scope="all")
    run_preannotation_job(settings, job.id, model=model, tasks_api=ls, yield_to_first=True)
    job = jobs.get(job.id)
    assert job.state == QUEUED and job.progress["done"] == 2 and job.attempts == 0, "pauses after its chunk"
    assert "training" in job.progress["message"]
    assert EmbeddedExecutor(settings, jobs)._next_job().id == ls.training.id  # the older job waits
    jobs.finish(ls.training.id, {})
    run_preannotation_job(settings, job.id, model=model, tasks_api=ls, yield_to_first=True)
    job = jobs.get(job.id)
    assert job.state == FINISHED and job.result[PREDICTED] == 5 and job.attempts == 1


@pytest.mark.slow
def test_a_killed_pre_annotation_process_is_resumed_at_its_first_task_without_an_outcome(settings, model):
    import os
    import signal

    from active_learning_fakes import wait_for
    from preannotation_fakes import SLOW_TASKS, slow_fake_preannotation

    from backend.jobs.executors import EmbeddedExecutor

    jobs = JobStore(JobLayout(settings.model_dir))
    executor = EmbeddedExecutor(settings, jobs, slow_fake_preannotation)
    job = new_job(settings, scope="all")
    executor.poll()  # spawns the first process
    first = executor.running_pid()
    wait_for(lambda: (jobs.get(job.id).progress.get("done") or 0) >= 3, 60)
    os.kill(first, signal.SIGKILL)
    job = wait_for(lambda: (j := jobs.get(job.id)).state == FINISHED and j, 90, executor.poll)
    assert job.attempts == 2 and job.result[PREDICTED] == SLOW_TASKS
    tasks = JobTasks(jobs.layout, PROJECT_ID, job.id)
    workers = [tasks.outcomes(chunk)[task]["worker"] for chunk, ids in enumerate(tasks.chunks()) for task in ids]
    pids = [int(worker.rsplit(":", 1)[1]) for worker in workers]
    second = pids[-1]
    assert second != first and first in pids
    assert pids == sorted(pids, key=lambda pid: pid == second), "the second process redid none of the first's tasks"


class GoesDown(FakeLabelStudio):
    """Label Studio stops answering at the ``at``-th call of ``method`` for ``calls`` calls; each
    refused call records the job's progress message as it stood."""

    def __init__(self, tasks, method, at, calls, settings, job_id):
        super().__init__(tasks)
        self.method, self.at, self.calls = method, at, calls
        self.jobs, self.job_id, self.messages = JobStore(JobLayout(settings.model_dir)), job_id, []

    def _answer(self):
        if self.down_for:
            self.messages.append(self.jobs.get(self.job_id).progress.get("message", ""))
        super()._answer()

    def __getattribute__(self, name):
        if name == object.__getattribute__(self, "method"):
            self.at -= 1
            if self.at == 0:
                self.down_for = self.calls
        return super().__getattribute__(name)


@pytest.fixture
def no_waiting(monkeypatch):
    import backend.preannotation.job as job_module
    from backend.jobs.backoff import Backoff

    waits = []
    monkeypatch.setattr(job_module, "Backoff", lambda: Backoff(0.001, 0.004))
    monkeypatch.setattr(job_module.time, "sleep", waits.append)
    return waits


@pytest.mark.parametrize("method", ["task", "create_prediction", "task_ids"])
def test_a_label_studio_outage_pauses_the_job_and_fails_no_task(settings, model, no_waiting, method):
    job = new_job(settings, scope="all")
    ls = GoesDown([box_task(i) for i in range(1, 6)], method, at=1 if method == "task_ids" else 3, calls=6,
                  settings=settings, job_id=job.id)
    computed = []
    batch_prediction = model.batch_prediction
    model.batch_prediction = lambda task, context: computed.append(task["id"]) or batch_prediction(task, context)
    job = run(settings, job, model, ls)
    assert job.state == FINISHED and job.result[PREDICTED] == 5 and job.result[FAILED] == 0, job.progress
    assert sorted(p["task"] for p in ls.created) == [1, 2, 3, 4, 5]
    assert sorted(computed) == [1, 2, 3, 4, 5], "a mask computed before the outage is stored, not computed again"
    assert len(no_waiting) == 6 and all(0 < wait <= 0.004 for wait in no_waiting)
    assert all(m.startswith("waiting for Label Studio (could not reach Label Studio") and "retrying in" in m
               for m in ls.messages[1:]), ls.messages


def test_a_transient_image_download_from_label_studio_waits_and_another_image_error_fails_the_task(
        settings, model, no_waiting):
    from segmentation_fakes import IMAGE_URL

    from backend.images import ImageFetchError, NotAnImage

    failures = {IMAGE_URL: [ImageFetchError("downloading failed with HTTP 502", transient=True)] * 2,
                "http://images.test/text.jpg": [NotAnImage("not an image")] * 5}
    load = model.images.load

    def flaky_load(url, task_id=None, background=False):
        if failures.get(url):
            raise failures[url].pop()
        return load(url, task_id=task_id, background=background)

    model.images.load = flaky_load
    ls = FakeLabelStudio([box_task(1), box_task(2, url="http://images.test/text.jpg")])
    job = run(settings, new_job(settings, scope="all"), model, ls)
    assert job.result[PREDICTED] == 1 and job.result[FAILED] == 1 and len(no_waiting) == 2
    assert "not an image" in job.progress["errors"]["2"]


def test_an_image_download_whose_token_refresh_finds_label_studio_down_waits_and_fails_no_task(
        settings, no_waiting, requests_mock):
    """The access token of a Personal Access Token is refreshed when an image on Label Studio is
    downloaded; Label Studio refusing that connection is the outage, not an answer about the task."""
    import base64
    import io

    import requests
    from PIL import Image

    from backend.images import ImageLoader

    def jwt(claims: str) -> str:
        return "eyJhbGciOiJIUzI1NiJ9." + base64.urlsafe_b64encode(claims.encode()).rstrip(b"=").decode() + ".c2ln"

    ls_url, image_path = "http://ls.test:8080", "/data/upload/7/cat.png"
    png = io.BytesIO()
    Image.new("RGB", (W, H)).save(png, "PNG")
    requests_mock.post(f"{ls_url}/api/token/refresh/",
                       [{"exc": requests.ConnectionError("connection refused")}] * 2
                       + [{"json": {"access": jwt('{"token_type": "access", "iat": 0, "exp": 300}')}}])
    requests_mock.get(ls_url + image_path, content=png.getvalue())
    loader = ImageLoader(replace(settings, label_studio_url=ls_url,
                                 label_studio_api_key=jwt('{"token_type": "refresh"}')))
    model = fake_model(settings.model_dir, images=loader)
    model.setup(PROJECT, CONFIG, {"preannotate_on_import": True})
    ls = FakeLabelStudio([box_task(1, url=image_path)])
    job = run(settings, new_job(settings, scope="all"), model, ls)
    assert job.result[PREDICTED] == 1 and job.result[FAILED] == 0, job.progress.get("errors")
    assert len(no_waiting) == 2, "the job waited out both refused refreshes"


class CancelledAt(FakeLabelStudio):
    """``DELETE /jobs/<id>`` arrives while the job reads task ``at``."""

    def __init__(self, tasks, at, jobs, job_id):
        super().__init__(tasks)
        self.at, self.jobs, self.job_id = at, jobs, job_id

    def task(self, task_id):
        if task_id == self.at:
            self.jobs.cancel(self.job_id)
        return super().task(task_id)


def test_a_cancelled_job_stops_at_the_next_task_and_keeps_its_work(settings, model):
    jobs = JobStore(JobLayout(settings.model_dir))
    job = new_job(settings, scope="all")
    ls = CancelledAt([box_task(i) for i in range(1, 7)], at=3, jobs=jobs, job_id=job.id)
    job = run(settings, job, model, ls)
    assert job.state == "cancelled" and job.finished_at is not None
    assert sorted(p["task"] for p in ls.created) == [1, 2, 3], "the task in hand is finished, no other is started"
    assert job.result[PREDICTED] == 3 and job.result["total"] == 6


def test_a_cancelled_rq_job_stops_its_chunks(settings, model, monkeypatch):
    monkeypatch.setattr(chunks, "run_lock", SharedRunLocks().lock)  # RQ's: the job's chunks share it
    jobs = JobStore(JobLayout(settings.model_dir))
    job = new_job(settings, scope="all")
    ls = CancelledAt([box_task(i) for i in range(1, 7)], at=2, jobs=jobs, job_id=job.id)
    chunks.plan_rq_chunks(settings, job.id, queue=FakeQueue(), tasks_api=ls)
    for chunk in range(3):
        chunks.work_chunk(settings, job.id, chunk, model, tasks_api=ls)
    assert jobs.get(job.id).state == "cancelled" and sorted(p["task"] for p in ls.created) == [1, 2]


def test_planning_and_progress_read_the_plan_once_and_each_outcome_once(settings, monkeypatch):
    import backend.preannotation.progress as progress

    reads = []
    read_json = progress.read_json
    monkeypatch.setattr(progress, "read_json", lambda path, *default: reads.append(path.name) or read_json(path, *default))
    tasks = JobTasks(JobLayout(settings.model_dir), PROJECT_ID, "p7-big")
    chunked = tasks.plan(range(1, 100_001), 16)
    for task_id in chunked[0][:3]:
        tasks.record(0, task_id, PREDICTED)
    for _ in range(3):  # a process's rounds: what is pending, the summary, whether it is done
        assert sum(len(tasks.pending(chunk)) for chunk in range(len(chunked))) == 100_000 - 3
        assert tasks.summary(since=0)["done"] == 3 and not tasks.complete()
    again = JobTasks(JobLayout(settings.model_dir), PROJECT_ID, "p7-big")  # another process
    assert again.pending(0) == chunked[0][3:]
    assert reads == ["plan.json"], "the plan is read once by the process that did not write it, and nothing else"


def test_outcomes_are_appended_a_torn_line_is_worked_again_and_the_earlier_format_is_read(settings):
    from backend.files import write_json_atomic

    tasks = JobTasks(JobLayout(settings.model_dir), PROJECT_ID, "p7-job")
    tasks.plan([1, 2, 3, 4, 5, 6], 3)
    tasks.record(0, 1, PREDICTED)
    tasks.record(0, 2, FAILED, "HTTP 404")
    with open(tasks.directory / "chunk-00000.jsonl", "ab") as file:
        file.write(b'{"task": 3, "outcome": "pred')  # killed mid-write
    write_json_atomic(tasks.directory / "chunk-00001.json", {"4": {"outcome": NO_PROMPTS, "message": "", "at": 1.0}})
    fresh = JobTasks(JobLayout(settings.model_dir), PROJECT_ID, "p7-job")
    assert fresh.pending(0) == [3] and fresh.pending(1) == [5, 6]
    summary = fresh.summary(since=0)
    assert (summary["done"], summary[PREDICTED], summary[FAILED], summary[NO_PROMPTS]) == (3, 1, 1, 1)
    assert summary["errors"] == {"2": "HTTP 404"}


def test_tasks_over_the_cap_are_reported_not_dropped_silently(settings, model):
    from backend.preannotation.trigger import request_preannotation

    from active_learning_fakes import RecordingExecutor

    settings = replace(settings, preannotate_max_tasks=4)
    jobs = JobStore(JobLayout(settings.model_dir))
    job, _ = request_preannotation(jobs, RecordingExecutor(), PROJECT_ID, "import", tasks=range(1, 4), max_tasks=4)
    job, merged = request_preannotation(jobs, RecordingExecutor(), PROJECT_ID, "import", tasks=range(3, 7), max_tasks=4)
    assert merged and job.params["tasks"] == [1, 2, 3, 4] and job.params["over_cap"] == 2
    ls = FakeLabelStudio([box_task(i) for i in range(1, 7)])
    job = run(settings, job, model, ls)
    assert job.state == FINISHED and job.result["total"] == 4 and job.result["not_planned"] == 2
    assert "2 tasks over PREANNOTATE_MAX_TASKS not planned" in job.progress["message"]

    job = run(settings, new_job(settings, tasks=[1], scope="all"), model, ls)  # the cap holds at planning too
    assert job.result["total"] == 4 and job.result["not_planned"] == 2 and job.result[ALREADY_PREDICTED] == 4


def test_a_started_chunk_whose_worker_died_is_queued_again_at_once(settings, monkeypatch):
    import json
    import os
    import socket
    import subprocess
    import sys
    import time

    from backend.preannotation.chunk_owner import OWNER_STALE_S, owner_file

    settings, ls, jobs, job, queue = planned_with_redis(settings, 6, monkeypatch)
    monkeypatch.setattr(chunks, "rq_status", lambda connection, rq_id: "finished" if rq_id == job.id else "started")
    monkeypatch.setattr(chunks, "POLL_EVERY_S", 0.0)
    directory = JobTasks(jobs.layout, PROJECT_ID, job.id).directory
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    owners = {0: {"host": socket.gethostname(), "pid": int(dead.stdout), "at": time.time()},  # killed here
              1: {"host": socket.gethostname(), "pid": os.getpid(), "at": time.time()},  # working
              2: {"host": "elsewhere", "pid": 1, "at": time.time() - OWNER_STALE_S - 1}}  # a silent host
    for chunk, owner in owners.items():
        owner_file(directory, chunk).write_text(json.dumps(owner))
    queue.enqueued.clear()
    chunks.poll_chunks(jobs, queue, jobs.get(job.id))
    assert sorted(rq_id for _, _, rq_id in queue.enqueued) == [f"{job.id}-c0-a2", f"{job.id}-c2-a2"]
    assert not owner_file(directory, 0).exists() and owner_file(directory, 1).exists()


def test_a_chunk_is_owned_on_disk_while_it_runs(tmp_path):
    from backend.preannotation.chunk_owner import ChunkOwner, dead_owner, owner_file

    with ChunkOwner(tmp_path, 3):
        assert owner_file(tmp_path, 3).exists() and dead_owner(tmp_path, 3) is None
    assert not owner_file(tmp_path, 3).exists() and dead_owner(tmp_path, 3) is None


def test_a_chunk_handed_back_at_a_shutdown_is_queued_again_without_counting_an_attempt(settings, model, monkeypatch):
    settings, ls, jobs, job, queue = planned_with_redis(settings, 2, monkeypatch)
    directory = JobTasks(jobs.layout, PROJECT_ID, job.id).directory

    class Here:
        def job_model(self, threads):
            return model

    here = Here()
    here.settings = settings
    monkeypatch.setattr(chunks.Components, "of_this_process", staticmethod(lambda: here))

    def stopped(*args):
        raise Stopped()

    monkeypatch.setattr(chunks, "work_chunk", stopped)
    monkeypatch.setattr(chunks, "rq_status", lambda connection, rq_id: "finished" if "-c" in rq_id else None)
    monkeypatch.setattr(chunks, "POLL_EVERY_S", 0.0)
    for restart in range(MAX_ATTEMPTS + 2):  # a deploy's restarts, each while the chunk runs
        chunks.run_rq_chunk(job.id, 0)
        queue.enqueued.clear()
        chunks.poll_chunks(jobs, queue, jobs.get(job.id))
        assert [rq_id for _, _, rq_id in queue.enqueued] == [chunks.chunk_id(job.id, 0, restart + 2)]
    assert jobs.get(job.id).state == RUNNING and JobTasks(jobs.layout, PROJECT_ID, job.id).pending(0) == [1, 2]
    assert not list(directory.glob("owner-*"))
