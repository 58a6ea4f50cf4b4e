"""Whether a fine-tuned model replaces its parent: a paired comparison with a confidence interval.

Every annotated instance is scored twice, by the parent and by a candidate that never saw the
instance's task (cross-validation by task, ``backend.active_learning.cross_validation``). The
per-instance gains (candidate IoU - parent IoU) are paired, so the instances' own difficulty
cancels out; a paired bootstrap over the instances gives a 95% interval of the mean gain. The
candidate is published only when that interval does not reach below zero: a clear gain. A mean
gain inside the noise keeps the parent, as does a loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_CHUNK_VALUES = 2_000_000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class PublishDecision:
    publish: bool
    miou_before: float  # the parent's mean IoU over the instances
    miou_after: float  # the candidates' mean IoU over the same instances
    mean_gain: float
    ci95: tuple[float, float]
    instances: int
    method: str

    def as_result(self) -> dict:
        """The job result's ``decision``: JSON-ready, rounded for people."""
        figures = asdict(self)
        figures.pop("publish")
        figures.pop("miou_before")
        figures.pop("miou_after")
        figures["mean_gain"] = round(self.mean_gain, 4)
        figures["ci95"] = [round(bound, 4) for bound in self.ci95]
        return figures

    def summary(self) -> str:
        """The figures in words: gain, interval, instances, method."""
        low, high = self.ci95
        return (f"mean paired gain {self.mean_gain:+.4f}, 95% interval [{low:+.4f}, {high:+.4f}] "
                f"over {self.instances} instances ({self.method})")

    def verdict(self, parent: str) -> str:
        """Why the candidate is not taken, with the figures (only meaningful when ``publish`` is false)."""
        if self.mean_gain < 0:
            verdict = f"held-out mIoU fell from {self.miou_before:.4f} ({parent}) to {self.miou_after:.4f}"
        else:
            verdict = (f"no clear gain: held-out mIoU {self.miou_before:.4f} ({parent}) -> {self.miou_after:.4f} "
                       f"is within the noise")
        return f"{verdict}; {self.summary()}"

    def reason(self, parent: str) -> str:
        """Why nothing is published (only meaningful when ``publish`` is false)."""
        return f"{self.verdict(parent)}; {parent} keeps serving"


def decide(parent_scores: Sequence[float], candidate_scores: Sequence[float], method: str, seed: int = 0) -> PublishDecision:
    """Publish when the 95% paired-bootstrap interval of the mean per-instance gain lies at or above zero.

    ``parent_scores[i]`` and ``candidate_scores[i]`` are the IoUs of the same instance; ``method``
    says where they come from (for the result); the bootstrap is seeded, so the same scores always
    give the same decision."""
    parent = np.asarray(parent_scores, np.float64)
    candidate = np.asarray(candidate_scores, np.float64)
    if parent.shape != candidate.shape or parent.ndim != 1 or len(parent) == 0:
        raise ValueError(f"need paired scores of the same instances, got {parent.shape} and {candidate.shape}")
    gains = candidate - parent
    low, high = paired_bootstrap_interval(gains, seed)
    return PublishDecision(
        publish=bool(low >= 0.0), miou_before=float(parent.mean()), miou_after=float(candidate.mean()),
        mean_gain=float(gains.mean()), ci95=(low, high), instances=len(gains), method=method,
    )


def paired_bootstrap_interval(gains: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """The central CONFIDENCE interval of the mean of ``gains`` over resamples of the instances."""
    rng = np.random.default_rng(seed)
    chunk = max(1, BOOTSTRAP_CHUNK_VALUES // len(gains))  # bounded memory on large projects
    means = np.concatenate([
        gains[rng.integers(0, len(gains), size=(min(chunk, BOOTSTRAP_RESAMPLES - done), len(gains)))].mean(axis=1)
        for done in range(0, BOOTSTRAP_RESAMPLES, chunk)
    ])
    tail = (1.0 - CONFIDENCE) / 2
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)
