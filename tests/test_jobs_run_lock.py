"""A project's run lock without Redis (an flock under MODEL_DIR): one run per project and kind at a
time, the holder named for "waiting for ..." messages, freed when its process dies. (With Redis:
tests/integration/test_retraining_redis.py.)"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from backend.jobs.run_lock import ProjectRunLock, RunLockBusy


def lock(tmp_path, project="3", kind="preannotation", holder="job-a"):
    return ProjectRunLock(tmp_path / "projects" / project, project, kind, holder)


def test_a_second_run_of_the_project_waits_for_the_first(tmp_path):
    events = []
    first = lock(tmp_path)
    first.acquire()

    def second_run():
        with lock(tmp_path, holder="job-b"):
            events.append("second runs")

    waiting = threading.Thread(target=second_run)
    waiting.start()
    with lock(tmp_path, project="4", holder="job-c"):  # another project does not wait
        events.append("project 4 runs")
    with lock(tmp_path, kind="train", holder="job-d"):  # nor does another kind of run
        events.append("training runs")
    time.sleep(0.5)
    events.append("first ends")
    first.release()
    waiting.join(10)
    assert events == ["project 4 runs", "training runs", "first ends", "second runs"]


def test_a_busy_lock_names_its_holder_and_a_free_one_none(tmp_path):
    assert lock(tmp_path).current_holder() is None
    with lock(tmp_path, holder="p3-preannotate-1"):
        with pytest.raises(RunLockBusy) as busy:
            lock(tmp_path, holder="p3-preannotate-2").acquire(blocking=False)
        assert busy.value.holder == "p3-preannotate-1"
        assert lock(tmp_path, holder="anyone").current_holder() == "p3-preannotate-1"
    assert lock(tmp_path).current_holder() is None
    lock(tmp_path, holder="p3-preannotate-2").acquire(blocking=False)  # free again


def test_the_lock_of_a_killed_holder_is_free(tmp_path):
    script = ("import sys, time; from pathlib import Path; from backend.jobs.run_lock import ProjectRunLock; "
              "ProjectRunLock(Path(sys.argv[1]), '3', 'preannotation', 'killed-job').acquire(); "
              "print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "projects" / "3")], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert lock(tmp_path).current_holder() == "killed-job"
    finally:
        holder.kill()
        holder.wait()
    lock(tmp_path).acquire(blocking=False)
