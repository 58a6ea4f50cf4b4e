"""Progress output: plain lines at a bounded pace where stderr is a log, a live bar on a terminal."""

from __future__ import annotations

import io

from backend.progress_output import LineProgress, progress_bar


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_log_gets_one_line_per_interval_and_one_at_the_end():
    out, clock = io.StringIO(), Clock()
    progress = LineProgress(total=100, initial=10, desc="train", unit="step", stream=out, every_s=30, clock=clock)
    for _ in range(60):  # 60 steps, one per second
        clock.now += 1
        progress.set_postfix(loss="0.1234", refresh=True)
        progress.update(1)
    progress.close()
    progress.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines == ["train: 40/100 step (40%), 1 step/s, 1 min 0 s left, loss=0.1234",
                     "train: 70/100 step (70%), 1 step/s, 30 s left, loss=0.1234"]


def test_the_end_is_written_once_even_between_intervals():
    out, clock = io.StringIO(), Clock()
    progress = LineProgress(total=3, initial=0, desc="train", unit="step", stream=out, every_s=30, clock=clock)
    for _ in range(3):
        clock.now += 2
        progress.update(1)
    progress.close()
    assert out.getvalue() == "train: 3/3 step (100%), 0.5 step/s\n"


def test_a_terminal_keeps_the_live_bar_and_a_log_gets_lines():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    bar = progress_bar(total=5, desc="train", stream=Terminal())
    assert type(bar).__name__ == "tqdm"
    bar.close()
    assert isinstance(progress_bar(total=5, desc="train", stream=io.StringIO()), LineProgress)
