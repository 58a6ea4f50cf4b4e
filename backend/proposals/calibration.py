"""Honest scores: a logistic map from the detector's raw score to the probability that a proposal
is correct, fitted on held-out annotated tasks (Platt scaling on the raw score's logit).

Two parameters only, pulled towards the identity, because a project's held-out set is a few
tasks: the map can shift and stretch the detector's scores but never reorders them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_EPS = 1e-6
_PRIOR = 1.0  # strength of the pull towards the identity map (slope 1, offset 0)


@dataclass(frozen=True)
class Calibration:
    slope: float = 1.0
    offset: float = 0.0

    def apply(self, raw: np.ndarray) -> np.ndarray:
        return _sigmoid(self.slope * _logit(np.asarray(raw, np.float64)) + self.offset)


IDENTITY = Calibration()


def fit_calibration(raw: np.ndarray, correct: np.ndarray) -> Calibration:
    """The map fitted to raw scores and whether each proposal was correct; the identity when the
    held-out proposals are all right or all wrong (nothing to fit)."""
    raw, correct = np.asarray(raw, np.float64), np.asarray(correct, np.float64)
    if len(raw) == 0 or correct.min() == correct.max():
        return IDENTITY
    x = np.stack([_logit(raw), np.ones_like(raw)], axis=1)
    theta = np.array([1.0, 0.0])
    prior = np.array([1.0, 0.0])
    for _ in range(50):  # Newton steps on the penalised log-likelihood
        p = _sigmoid(x @ theta)
        gradient = x.T @ (p - correct) + _PRIOR * (theta - prior)
        hessian = x.T @ (x * (p * (1 - p))[:, None]) + _PRIOR * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.abs(step).max() < 1e-8:
            break
    slope = max(float(theta[0]), 0.05)  # never reverse the ranking
    return Calibration(slope, float(theta[1]))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))
