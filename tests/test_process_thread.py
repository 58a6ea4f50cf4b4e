"""ProcessThread: one running thread per process, started again in a forked child (gunicorn's
workers are forked from a master that may have started it)."""

import os
import threading

from backend.process_thread import ProcessThread


def test_one_thread_per_process_and_a_new_one_after_it_ended():
    release = threading.Event()
    runs = []

    def body():
        runs.append(threading.current_thread().name)
        release.wait(5)

    thread = ProcessThread(body, "worker-x")
    assert thread.ensure_running() is True
    assert thread.ensure_running() is False  # still running
    assert thread.is_alive()
    release.set()
    thread.join(5)
    assert not thread.is_alive()
    release.clear()
    assert thread.ensure_running() is True  # ended: started again
    release.set()
    thread.join(5)
    assert runs == ["worker-x", "worker-x"]


def test_a_forked_child_starts_its_own_thread():
    stop = threading.Event()
    ran_in = []

    def body():
        ran_in.append(os.getpid())
        stop.wait(5)

    thread = ProcessThread(body, "survives-fork")
    thread.ensure_running()
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # the child: the parent's thread is not here
        try:
            alive_before = thread.is_alive()
            started = thread.ensure_running()
            stop.set()
            thread.join(5)
            ok = not alive_before and started and ran_in[-1] == os.getpid()
            os.write(write_end, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write_end)
    answer = os.read(read_end, 1)
    os.waitpid(child, 0)
    os.close(read_end)
    stop.set()
    thread.join(5)
    assert answer == b"1"
    assert ran_in[0] == os.getpid()
