"""Background embeddings give way to an annotator's: a computation running in a background thread
stops, between two of the encoder's layers, as soon as a request needs the encoder for another
image, and is retried later.

On a CPU one embedding takes many seconds and the encoder runs one image at a time, so without
this a prompt on a task nobody embedded yet would wait for whatever import the background was
busy with. The check is a global module forward pre-hook: it costs a few microseconds per layer
and raises only in threads marked as background, only while a request is waiting.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch


class Preempted(Exception):
    """A background computation stopped so a request could use the encoder; nothing was stored."""


_state = threading.local()
_waiting_lock = threading.Lock()
_waiting = 0  # requests of this process that want the encoder now
_hook_installed = False


@contextlib.contextmanager
def foreground_waiting() -> Iterator[None]:
    """Around a request's own computation: background ones in this process stop at their next layer."""
    global _waiting
    with _waiting_lock:
        _waiting += 1
    try:
        yield
    finally:
        with _waiting_lock:
            _waiting -= 1


@contextlib.contextmanager
def background() -> Iterator[None]:
    """Marks this thread's computations as preemptible for the duration of the block."""
    _install_hook()
    previous = getattr(_state, "background", False)
    _state.background = True
    try:
        yield
    finally:
        _state.background = previous


def foreground_busy() -> bool:
    """Whether a request of this process is computing an embedding now (background work waits)."""
    return _waiting > 0


def _check(module, args) -> None:
    if _waiting and getattr(_state, "background", False):
        raise Preempted("a request needs the encoder")


def _install_hook() -> None:
    global _hook_installed
    with _waiting_lock:
        if not _hook_installed:
            torch.nn.modules.module.register_module_forward_pre_hook(_check)
            _hook_installed = True
