"""Pre-annotation against a real Label Studio 1.23: a project with ``preannotate_on_import`` imports
tasks carrying a detector's rectangle predictions; Label Studio's webhook (TASKS_CREATED) starts a
job, and brush predictions of the project's model version appear in Label Studio without anyone
clicking "Retrieve predictions" — one per task, and a later "Retrieve predictions" adds none.

Once with the embedded worker (no REDIS_URL), once with REDIS_URL and two `python -m backend worker`
processes sharing the job's chunks. No SAM checkpoint: boxes go to the extreme-point model's box
mode, which is fast on a CPU; the masks are checked for size and frame, not quality.

Two runs on one project at once (the command line during a job, a second job on RQ) store each
prediction once; a job deletes only the older predictions this backend stored, never another
backend's, a newer version's after a rollback, or a prediction holding a rectangle.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from support.backend_server import BackendServer
from label_studio_sdk.converter.brush import decode_rle
from support.preannotation_project import connect_project, import_boxed_tasks, predictions_by_task, rectangle, \
    wait_until_predicted
from support.processes import ServerProcess

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
WIDTH, HEIGHT = 120, 90
TIMEOUT_S = 240.0


def backend_without_sam(workdir, label_studio, extra_env: dict[str, str]) -> BackendServer:
    with pytest.MonkeyPatch.context() as patch:  # BackendServer passes its own environment on
        patch.delenv("REDIS_URL", raising=False)
        for key, value in extra_env.items():
            patch.setenv(key, value)
        return BackendServer(workdir, workdir / "no-sam-checkpoint.pth", label_studio.url,
                             label_studio.personal_access_token)


def check_one_brush_prediction_per_task(api, project: int, tasks: list[int], version: str) -> None:
    ours = predictions_by_task(api, project, version)
    assert sorted(ours) == sorted(tasks)
    for task in tasks:
        (prediction,) = ours[task]
        (region,) = prediction["result"]
        assert region["type"] == "brushlabels" and region["value"]["brushlabels"] == ["Cat"]
        assert (region["original_width"], region["original_height"]) == (WIDTH, HEIGHT)
        mask = decode_rle(region["value"]["rle"]).reshape(HEIGHT, WIDTH, 4)[:, :, 3]
        assert mask.any() and set(np.unique(mask)) <= {0, 255}


def start_job(backend, project: int) -> str:
    """``POST /jobs`` for every task of ``project``; the job's id."""
    answer = requests.post(f"{backend.url}/jobs", json={"type": "preannotate", "project": project},
                           auth=backend.auth, timeout=10)
    assert answer.status_code == 202, answer.text
    return answer.json()["job"]["id"]


def command_line_env(label_studio, backend, redis_url: str = "") -> dict[str, str]:
    """The environment ``python -m backend preannotate`` runs with beside ``backend``."""
    return {**os.environ, "MODEL_DIR": str(backend.model_dir), "DEVICE": "cpu", "LABEL_STUDIO_URL": label_studio.url,
            "LABEL_STUDIO_API_KEY": label_studio.personal_access_token, "SAM_CHECKPOINT": "", "REDIS_URL": redis_url}


def preannotation_jobs(backend, project: int) -> list[dict]:
    return requests.get(f"{backend.url}/jobs", params={"project": project, "type": "preannotate"},
                        auth=backend.auth, timeout=10).json()["jobs"]


def wait_for_job(backend, job_id: str, timeout_s: float = TIMEOUT_S) -> dict:
    """The job once it has ended (or as it stands after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = requests.get(f"{backend.url}/jobs/{job_id}", auth=backend.auth, timeout=10).json()
        if job["state"] in ("finished", "failed") or time.monotonic() > deadline:
            return job
        time.sleep(0.5)


@pytest.fixture(scope="module")
def embedded_backend(label_studio, tmp_path_factory):
    server = backend_without_sam(tmp_path_factory.mktemp("preannotate-embedded"), label_studio, {})
    yield server
    server.stop()


def test_imported_boxes_become_brush_predictions_without_retrieve_predictions(label_studio, embedded_backend):
    api, backend = label_studio.api, embedded_backend
    project, ml = connect_project(api, backend, "pre-annotation on import")
    tasks = import_boxed_tasks(api, project, 4, WIDTH, HEIGHT)
    version = ml["model_version"]
    wait_until_predicted(api, project, tasks, version, TIMEOUT_S, lambda: backend.process.log_tail())
    (job,) = preannotation_jobs(backend, project)
    job = wait_for_job(backend, job["id"])
    assert job["state"] == "finished" and job["trigger"] == "TASKS_CREATED (4 tasks)", job
    assert job["result"]["predicted"] == 4 and job["progress"]["done"] == job["progress"]["total"] == 4, job
    check_one_brush_prediction_per_task(api, project, tasks, version)

    # "Retrieve predictions" afterwards stores nothing twice: the tasks hold the connection's version.
    api.post(f"/api/dm/actions?id=retrieve_tasks_predictions&project={project}",
             json={"selectedItems": {"all": True, "excluded": []}})
    check_one_brush_prediction_per_task(api, project, tasks, version)
    # A job asked for by hand finds nothing left to do.
    answer = requests.post(f"{backend.url}/jobs", json={"type": "preannotate", "project": project},
                           auth=backend.auth, timeout=10)
    assert answer.status_code == 202, answer.text
    job = wait_for_job(backend, answer.json()["job"]["id"])
    assert job["state"] == "finished" and job["result"]["already_predicted"] == 4, job


def test_the_command_line_pre_annotates_a_project_that_does_not_on_import(label_studio, embedded_backend):
    api, backend = label_studio.api, embedded_backend
    project, ml = connect_project(api, backend, "pre-annotation from the command line", preannotate_on_import=False)
    tasks = import_boxed_tasks(api, project, 3, WIDTH, HEIGHT)
    assert preannotation_jobs(backend, project) == []  # the import started nothing
    command = [sys.executable, "-m", "backend", "preannotate", "--project", str(project), "--tasks",
               ",".join(map(str, tasks[:2]))]
    done = subprocess.run(command, env=command_line_env(label_studio, backend), cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 tasks, 2 predicted" in done.stdout and "pre-annotating" in done.stderr  # the summary; tqdm's bar
    assert sorted(predictions_by_task(api, project, ml["model_version"])) == sorted(tasks[:2])
    (job,) = preannotation_jobs(backend, project)
    assert job["state"] == "finished" and job["trigger"] == "python -m backend preannotate"


def job_state(backend, job_id: str) -> dict:
    return requests.get(f"{backend.url}/jobs/{job_id}", auth=backend.auth, timeout=10).json()


def task_errors(job: dict) -> str:
    """The job with its per-task error messages first, so an assertion says which error path failed a task."""
    return f"task errors: {job['progress'].get('errors')}; job: {job}"


def wait_for_progress(backend, job_id: str, reached, timeout_s: float = TIMEOUT_S) -> dict:
    deadline = time.monotonic() + timeout_s
    while not reached(job := job_state(backend, job_id)):
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    return job


def test_a_label_studio_outage_mid_job_pauses_it_and_fails_no_task(label_studio, embedded_backend):
    api, backend = label_studio.api, embedded_backend
    project, ml = connect_project(api, backend, "pre-annotation through an outage", preannotate_on_import=False)
    tasks = import_boxed_tasks(api, project, 30, WIDTH, HEIGHT)
    answer = requests.post(f"{backend.url}/jobs", json={"type": "preannotate", "project": project, "tasks": tasks},
                           auth=backend.auth, timeout=10)
    job_id = answer.json()["job"]["id"]
    job = wait_for_progress(backend, job_id, lambda job: job["progress"].get("done", 0) >= 2)
    assert job["state"] == "running", "the job must still be running when Label Studio stops"
    label_studio.stop()
    try:
        job = wait_for_progress(backend, job_id, lambda job: job["progress"].get("stage") == "waiting", 60)
        assert job["state"] == "running" and job["progress"]["failed"] == 0, task_errors(job)
        assert job["progress"]["message"].startswith("waiting for Label Studio (") and "retrying in" in job["progress"]["message"]
        time.sleep(5)  # a few more tries while it is down
        job = job_state(backend, job_id)
        assert job["progress"]["failed"] == 0, task_errors(job)
    finally:
        label_studio.start_again()
    job = wait_for_job(backend, job_id)
    assert job["state"] == "finished" and job["result"]["failed"] == 0, task_errors(job)
    assert job["result"]["predicted"] + job["result"]["already_predicted"] == 30, job
    check_one_brush_prediction_per_task(api, project, tasks, ml["model_version"])


def test_the_command_line_during_a_backend_job_stores_each_prediction_once(label_studio, embedded_backend):
    """Two runs on one project at once: the second waits for the first, then finds every task
    predicted; nothing is stored twice and no task is recorded as failed."""
    api, backend = label_studio.api, embedded_backend
    project, ml = connect_project(api, backend, "the command line during a job", preannotate_on_import=False)
    tasks = import_boxed_tasks(api, project, 16, WIDTH, HEIGHT)
    job_id = start_job(backend, project)
    command = [sys.executable, "-m", "backend", "preannotate", "--project", str(project)]
    done = subprocess.run(command, env=command_line_env(label_studio, backend), cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    job = wait_for_job(backend, job_id)
    assert job["state"] == "finished", job
    check_one_brush_prediction_per_task(api, project, tasks, ml["model_version"])
    results = [job["result"] for job in preannotation_jobs(backend, project)]
    assert len(results) == 2 and all(result["failed"] == 0 for result in results), results
    assert sum(result["predicted"] for result in results) == 16, results


def publish_default_weights_as(model_dir: Path, project: int, name: str, workdir: Path) -> None:
    """Publish a copy of the default extreme-point weights as version ``name`` of ``project``: a new
    model version without training (the project serves it from its next request)."""
    from backend.active_learning.layout import Layout
    from backend.active_learning.versions import VersionRegistry
    from backend.checksums import sha256_of
    from backend.settings import Settings

    default = Settings().extreme_weights
    staged = workdir / f"staged-{name}"
    shutil.copytree(default, staged)
    files = {path.name: sha256_of(path) for path in staged.iterdir()}
    registry = VersionRegistry(Layout(model_dir), default)
    registry.publish(str(project), name, staged, files, parent=registry.default.name, metrics={})


def test_a_job_deletes_only_the_older_predictions_this_backend_stored(label_studio, tmp_path):
    """Beside the backend's own predictions: another backend instance's (even of the same version),
    a ``segassist-`` prediction holding a rectangle, and after a PINNED_VERSIONS rollback the newer
    version's. Each new version replaces only the backend's own older ones."""
    api = label_studio.api
    backend = backend_without_sam(tmp_path, label_studio, {})
    try:
        project, ml = connect_project(api, backend, "whose predictions", preannotate_on_import=False)
        tasks = import_boxed_tasks(api, project, 2, WIDTH, HEIGHT)
        default_version = ml["model_version"]
        assert wait_for_job(backend, start_job(backend, project))["result"]["predicted"] == 2
        ours = {task: prediction["id"] for task, (prediction,) in predictions_by_task(api, project, default_version).items()}
        foreign = {}
        for task, (prediction,) in predictions_by_task(api, project, default_version).items():
            box = rectangle((5, 5, 40, 40), WIDTH, HEIGHT)  # Label Studio refuses a from_name not in the config
            foreign[task] = [
                api.post("/api/predictions/", json={"task": task, "model_version": default_version, "score": 0.5,
                                                    "result": prediction["result"]})["id"],  # another instance's
                api.post("/api/predictions/", json={"task": task, "model_version": "segassist-old+nosam", "score": 0.5,
                                                    "result": prediction["result"] + [box]})["id"],
            ]
        version = {n: f"segassist-p{project}-v{n}+nosam" for n in (1, 2)}
        publish_default_weights_as(backend.model_dir, project, f"p{project}-v1", tmp_path)
        assert wait_for_job(backend, start_job(backend, project))["result"]["predicted"] == 2
        publish_default_weights_as(backend.model_dir, project, f"p{project}-v2", tmp_path)
        assert wait_for_job(backend, start_job(backend, project))["result"]["predicted"] == 2
    finally:
        backend.stop()
    # Rollback: p<project>-v1 serves again; v2's predictions are newer, they stay.
    backend = backend_without_sam(tmp_path, label_studio, {"PINNED_VERSIONS": json.dumps({str(project): f"p{project}-v1"})})
    try:
        job = wait_for_job(backend, start_job(backend, project))
        assert job["state"] == "finished" and job["result"]["predicted"] == 2, job
    finally:
        backend.stop()
    for task in tasks:
        held = {p["id"]: p["model_version"] for p in api.get(f"/api/predictions/?task={task}")}
        assert ours[task] not in held  # the backend's own default-weights prediction: replaced
        assert all(pid in held for pid in foreign[task]), held  # not the backend's: kept
        assert sorted(v for v in held.values() if v.startswith(f"segassist-p{project}-")) == [version[1], version[2]]
        assert "detector-v1" in held.values()


@pytest.fixture(scope="module")
def scaled_out(label_studio, redis_server, tmp_path_factory):  # noqa: F811
    """(backend, [worker, worker]) with REDIS_URL and chunks of 2 tasks."""
    workdir = tmp_path_factory.mktemp("preannotate-rq")
    env = {"REDIS_URL": redis_server.url, "PREANNOTATE_CHUNK_TASKS": "2", "PREANNOTATE_THREADS": "1"}
    backend = backend_without_sam(workdir, label_studio, env)
    worker_env = {**os.environ, **env, "MODEL_DIR": str(backend.model_dir), "DEVICE": "cpu",
                  "SAM_CHECKPOINT": str(workdir / "no-sam-checkpoint.pth"),
                  "LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": label_studio.personal_access_token}
    workers = [ServerProcess(f"worker {n}", [sys.executable, "-m", "backend", "worker", "--name", f"w{n}"],
                             worker_env, cwd=REPO_ROOT, log_path=workdir / f"worker{n}.log") for n in (1, 2)]
    yield backend, workers
    for worker in workers:
        worker.stop()
    backend.stop()


def test_with_redis_two_workers_share_one_projects_pre_annotation(label_studio, redis_server, scaled_out):  # noqa: F811
    from redis import Redis
    from rq import Worker

    api, (backend, workers) = label_studio.api, scaled_out
    project, ml = connect_project(api, backend, "pre-annotation across workers")
    tasks = import_boxed_tasks(api, project, 8, WIDTH, HEIGHT)
    version = ml["model_version"]
    wait_until_predicted(api, project, tasks, version, TIMEOUT_S,
                         lambda: "\n".join(w.log_tail(30) for w in workers) + backend.process.log_tail(30))
    (job,) = preannotation_jobs(backend, project)
    job = wait_for_job(backend, job["id"])
    assert job["state"] == "finished" and job["result"]["predicted"] == 8 and job["pid"] is None, job
    check_one_brush_prediction_per_task(api, project, tasks, version)
    done_by = {w.name: w.successful_job_count for w in Worker.all(connection=Redis.from_url(redis_server.url))}
    assert len(done_by) == 2 and all(count > 0 for count in done_by.values()), done_by


def chunk_in_hand(backend, project: int, job_id: str, workers: list) -> tuple[Path, int, object]:
    """Wait until a worker has taken one of the job's chunks; (the chunk's owner record on disk, its
    work horse's pid, the worker process whose work horse runs it)."""
    state_dir = backend.model_dir / "active_learning" / "projects" / str(project) / "jobs" / job_id
    deadline = time.monotonic() + TIMEOUT_S
    while not (owners := sorted(state_dir.glob("owner-*.json"))):
        if time.monotonic() > deadline:
            job = requests.get(f"{backend.url}/jobs/{job_id}", auth=backend.auth, timeout=10).json()
            logs = "\n".join(w.log_tail(40) for w in workers) + "\n" + backend.process.log_tail(80)
            raise AssertionError(f"no chunk was taken; the job: {job}\n{logs}")
        time.sleep(0.05)
    horse = json.loads(owners[0].read_text())["pid"]
    parent = int(Path(f"/proc/{horse}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return owners[0], horse, next(w for w in workers if w.pid == parent)


def test_with_redis_a_killed_workers_chunk_is_queued_again_at_once(label_studio, redis_server, scaled_out):  # noqa: F811
    """RQ notices a SIGKILLed worker only when its registration expires (7.5 min); the chunk's owner
    on disk (host:pid) tells the dispatcher at once, and the other worker finishes it."""
    import signal

    api, (backend, workers) = label_studio.api, scaled_out
    project, ml = connect_project(api, backend, "a worker killed mid-chunk", preannotate_on_import=False)
    tasks = import_boxed_tasks(api, project, 12, WIDTH, HEIGHT, offset=100)
    answer = requests.post(f"{backend.url}/jobs", json={"type": "preannotate", "project": project, "tasks": tasks},
                           auth=backend.auth, timeout=10)
    job_id = answer.json()["job"]["id"]
    _, horse, victim = chunk_in_hand(backend, project, job_id, workers)
    os.killpg(victim.pid, signal.SIGKILL)  # the machine goes down: worker and work horse at once
    try:
        os.kill(horse, signal.SIGKILL)
    except ProcessLookupError:
        pass
    killed_at = time.monotonic()
    job = wait_for_job(backend, job_id)
    assert job["state"] == "finished" and job["result"]["failed"] == 0, job
    assert job["result"]["predicted"] + job["result"]["already_predicted"] == 12, job
    assert time.monotonic() - killed_at < 180, "the chunk must not wait for RQ's cleanup"
    check_one_brush_prediction_per_task(api, project, tasks, ml["model_version"])
    assert "died; queued again" in backend.process.log_tail(400)


def test_with_redis_a_worker_shutdown_hands_its_chunk_back(label_studio, redis_server, scaled_out):  # noqa: F811
    """SIGTERM to a worker (a deploy) reaches its work horse: the chunk stops after the task in hand,
    is handed back (no attempt counted) and finished by another worker; the worker exits."""
    import signal

    from redis import Redis
    from rq import Worker

    api, (backend, workers) = label_studio.api, scaled_out
    workdir = backend.model_dir.parent
    env = {**os.environ, "REDIS_URL": redis_server.url, "PREANNOTATE_CHUNK_TASKS": "2", "PREANNOTATE_THREADS": "1",
           "MODEL_DIR": str(backend.model_dir), "DEVICE": "cpu", "SAM_CHECKPOINT": str(workdir / "no-sam-checkpoint.pth"),
           "LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": label_studio.personal_access_token}
    workers += [ServerProcess(f"worker {n}", [sys.executable, "-m", "backend", "worker", "--name", f"w{n}"], env,
                              cwd=REPO_ROOT, log_path=workdir / f"worker{n}.log") for n in (3, 4)]
    redis, deadline = Redis.from_url(redis_server.url), time.monotonic() + TIMEOUT_S
    while not {"w3", "w4"} <= {w.name for w in Worker.all(connection=redis)}:  # the job starts with none loading
        assert time.monotonic() < deadline, "\n".join(w.log_tail(20) for w in workers)
        time.sleep(0.5)
    project, ml = connect_project(api, backend, "a worker shut down mid-chunk", preannotate_on_import=False)
    tasks = import_boxed_tasks(api, project, 12, WIDTH, HEIGHT, offset=200)
    answer = requests.post(f"{backend.url}/jobs", json={"type": "preannotate", "project": project, "tasks": tasks},
                           auth=backend.auth, timeout=10)
    job_id = answer.json()["job"]["id"]
    owner, horse, victim = chunk_in_hand(backend, project, job_id, workers)
    chunk, state_dir = int(owner.stem.split("-")[1]), owner.parent
    os.kill(victim.pid, signal.SIGTERM)  # the worker only, as `docker stop` does
    deadline = time.monotonic() + 60
    while victim.exit_code() is None:
        assert time.monotonic() < deadline, victim.log_tail()
        time.sleep(0.1)
    job = wait_for_job(backend, job_id)
    assert job["state"] == "finished" and job["result"]["failed"] == 0, job
    assert job["result"]["predicted"] + job["result"]["already_predicted"] == 12, job
    assert json.loads((state_dir / f"released-{chunk:05d}.json").read_text()) == 1, victim.log_tail()


def test_with_redis_a_second_job_while_one_runs_stores_each_prediction_once(label_studio, redis_server, scaled_out):
    api, (backend, _) = label_studio.api, scaled_out
    project, ml = connect_project(api, backend, "two jobs on RQ", preannotate_on_import=False)
    tasks = import_boxed_tasks(api, project, 8, WIDTH, HEIGHT)
    first = start_job(backend, project)
    deadline = time.monotonic() + TIMEOUT_S
    while requests.get(f"{backend.url}/jobs/{first}", auth=backend.auth, timeout=10).json()["state"] == "queued":
        assert time.monotonic() < deadline, "the first job never started"
        time.sleep(0.2)
    second = start_job(backend, project)
    assert second != first  # not merged: the first is running
    jobs = [wait_for_job(backend, job_id) for job_id in (first, second)]
    assert all(job["state"] == "finished" and job["result"]["failed"] == 0 for job in jobs), jobs
    assert jobs[1]["started_at"] >= jobs[0]["finished_at"], "the second run waited for the first"
    assert sum(job["result"]["predicted"] for job in jobs) == 8, jobs
    check_one_brush_prediction_per_task(api, project, tasks, ml["model_version"])
