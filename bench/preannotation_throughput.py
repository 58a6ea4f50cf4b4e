"""Pre-annotation throughput: tasks per minute from an import of tasks carrying a detector's boxes
until every task holds a brush prediction in Label Studio, with 1 and with 2 RQ workers.

Starts a real Label Studio 1.23 (``LS_VENV`` or ``.lsvenv``), and per worker count a fresh
redis-server, the backend (``gunicorn``, REDIS_URL set) and N ``python -m backend worker``
processes, through the integration tests' helpers. A project connected with
``{"preannotate_on_import": true}`` imports ``--tasks`` 600x400 images (data: URIs, each a
different picture, so no embedding is reused), each with one rectangle prediction; Label Studio's
TASKS_CREATED webhook starts the job, whose chunks the workers share. The clock runs from the
import call to the last prediction seen through Label Studio's API; the figure includes planning,
each chunk loading the segmenters, and storing the predictions.

``--sam random`` (default) uses a SAM ViT-B checkpoint of the real architecture with random weights
(the same compute as the real model); ``--sam none`` sends boxes to the extreme-point model's box
mode. Each worker runs its chunk with ``--threads`` torch threads (PREANNOTATE_THREADS).

    .venv/bin/python bench/preannotation_throughput.py [--tasks 50] [--workers 1 2] [--sam random|none]

Writes bench/results/preannotation_throughput.json (appending one record per run) and prints the
figures. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests"))  # for tests/support

from support.backend_server import BackendServer  # noqa: E402
from support.ls_server import LabelStudio, find_venv  # noqa: E402
from support.preannotation_project import connect_project, import_boxed_tasks, wait_until_predicted  # noqa: E402
from support.processes import ServerProcess  # noqa: E402
from support.redis_server import RedisServer  # noqa: E402
from sam_latency import cpu_description  # noqa: E402

WIDTH, HEIGHT = 600, 400
RESULTS = REPO_ROOT / "bench" / "results" / "preannotation_throughput.json"
TIMEOUT_S = 4 * 3600.0


def random_sam_checkpoint(directory: Path) -> Path:
    import torch
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    path = directory / "sam_vit_b_random.pth"
    torch.save(sam_model_registry["vit_b"]().state_dict(), path)
    return path


def measure(label_studio: LabelStudio, workers: int, tasks: int, checkpoint: Path, threads: int, chunk: int,
            workdir: Path, offset: int) -> dict:
    redis = RedisServer(shutil.which("redis-server"), workdir)
    env = {"REDIS_URL": redis.url, "PREANNOTATE_CHUNK_TASKS": str(chunk), "PREANNOTATE_THREADS": str(threads),
           "DEVICE": "cpu"}
    backend = BackendServer(workdir, checkpoint, label_studio.url, label_studio.personal_access_token, extra_env=env)
    worker_env = {**os.environ, **env, "MODEL_DIR": str(backend.model_dir), "SAM_MODEL_TYPE": "vit_b",
                  "SAM_CHECKPOINT": str(checkpoint), "LABEL_STUDIO_URL": label_studio.url,
                  "LABEL_STUDIO_API_KEY": label_studio.personal_access_token}
    processes = [ServerProcess(f"worker {n}", [sys.executable, "-m", "backend", "worker", "--name", f"bench-w{n}"],
                               worker_env, cwd=REPO_ROOT, log_path=workdir / f"worker{n}.log")
                 for n in range(1, workers + 1)]
    try:
        time.sleep(5.0)  # the workers connect to Redis
        api = label_studio.api
        project, ml = connect_project(api, backend, f"throughput, {workers} worker(s)")
        started = time.monotonic()
        ids = import_boxed_tasks(api, project, tasks, WIDTH, HEIGHT, offset=offset)
        def job() -> dict | None:
            jobs = requests.get(f"{backend.url}/jobs", params={"project": project, "type": "preannotate"},
                                auth=backend.auth, timeout=10).json()["jobs"]
            return jobs[-1] if jobs else None

        def hopeless() -> str | None:
            current = job()
            if current and current["state"] in ("finished", "failed") and current["progress"].get("predicted") != tasks:
                return f"the job ended {current['state']}: {current['error'] or current['progress'].get('errors')}"
            return None

        wait_until_predicted(api, project, ids, ml["model_version"], TIMEOUT_S,
                             lambda: "\n".join(p.log_tail(20) for p in processes), hopeless)
        elapsed = time.monotonic() - started
        final = job()
        return {"workers": workers, "tasks": tasks, "seconds": round(elapsed, 1),
                "tasks_per_min": round(tasks / elapsed * 60, 2), "model_version": ml["model_version"],
                "job_rate_per_min": final["progress"].get("rate_per_min"), "job_failed": final["progress"].get("failed")}
    finally:
        for process in processes:
            process.stop()
        backend.stop()
        redis.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--sam", choices=("random", "none"), default="random")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker (PREANNOTATE_THREADS)")
    parser.add_argument("--chunk", type=int, default=5, help="tasks per chunk (PREANNOTATE_CHUNK_TASKS)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="preannotation-bench-") as temporary:
        root = Path(temporary)
        checkpoint = random_sam_checkpoint(root) if args.sam == "random" else root / "no-sam-checkpoint.pth"
        label_studio = LabelStudio(find_venv(), root / "label_studio")
        try:
            runs = []
            for index, workers in enumerate(args.workers):
                workdir = root / f"run{index}"
                workdir.mkdir()
                run = measure(label_studio, workers, args.tasks, checkpoint, args.threads, args.chunk, workdir,
                              offset=index * args.tasks)
                runs.append(run)
                print(f"{workers} worker(s): {args.tasks} tasks in {run['seconds']} s = {run['tasks_per_min']} "
                      f"tasks/min ({run['model_version']}; job's own rate {run['job_rate_per_min']}/min, "
                      f"{run['job_failed']} failed)", flush=True)
        finally:
            label_studio.stop()
    record = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": cpu_description(),
              "platform": platform.platform(), "sam": args.sam, "threads_per_worker": args.threads,
              "chunk_tasks": args.chunk, "image": f"{WIDTH}x{HEIGHT}", "runs": runs}
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    RESULTS.write_text(json.dumps(previous + [record], indent=1) + "\n")
    print(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
