"""How fast background work goes and when it ends, one way for every kind of work (pre-annotation
jobs' tasks, embedding ahead's images)."""

from __future__ import annotations


def per_minute(done: int, seconds: float) -> float | None:
    """Items per minute when ``done`` items took ``seconds``; None without items or time to measure."""
    return round(done / seconds * 60, 2) if done > 0 and seconds > 0 else None


def eta_s(remaining: int, rate_per_min: float | None) -> float | None:
    """Seconds left for ``remaining`` items at ``rate_per_min``: 0 when nothing remains, None without a rate."""
    if not remaining:
        return 0.0
    return None if not rate_per_min else round(remaining / rate_per_min * 60, 1)
