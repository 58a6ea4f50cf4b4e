"""The model side of a training job: score a weights directory, fine-tune one into another.

``ExtremeTrainer`` runs the extreme-point model's own training code (``backend.training.train``),
the same code path as ``python -m backend train``, anchored to the parent weights
(``backend.training.anchoring``); jobs only see the ``Trainer`` protocol, so the orchestration is
tested with fakes. ``fine_tune_steps`` scales a job's steps with its instances.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from backend.checksums import sha256_of
from backend.training.anchoring import Anchoring
from backend.training.datasets import Sample

# progress(step, total steps, message)
StepProgress = Callable[[int, int, str], None]


# A fine-tune's steps: STEPS_PER_INSTANCE per training instance (with batches of FINE_TUNE_BATCH, each
# instance is seen about 12 times, in 12 different crops and prompts), within [MIN_STEPS, MAX_STEPS].
STEPS_PER_INSTANCE = 3
MIN_STEPS = 30
MAX_STEPS = 300
# AdamW moves every weight by about the learning rate per step, whatever its gradient: at 3e-4 (the
# peak rate of the parent's own training, which ended near 6e-6) 30-60 steps moved all 3.8 M weights
# and cost 6 points of IoU on masks that were the model's own. At 3e-5 it lost none, but learned no
# policy either; 1e-4 loses less than 3e-4 and still learns a fill-holes policy from 16 tasks in 20
# steps (docs/active_learning.md has the measurements).
FINE_TUNE_LR = 1e-4
# With AdamW the distance travelled depends on the steps, not the batch: 4 per step halves a step's
# cost against 8 for the same number of updates.
FINE_TUNE_BATCH = 4


def fine_tune_steps(instances: int, configured: int = 0) -> int:
    """Steps of a fine-tune on ``instances`` training instances: ``configured`` if set (TRAIN_STEPS),
    else STEPS_PER_INSTANCE per instance within [MIN_STEPS, MAX_STEPS], so a few tasks cost a few
    dozen steps and a large project does not train for hours."""
    if configured > 0:
        return configured
    return min(MAX_STEPS, max(MIN_STEPS, STEPS_PER_INSTANCE * instances))


class Trainer(Protocol):
    def scores(self, weights_dir: Path, samples: Sequence[Sample]) -> list[float]:
        """IoU of the weights in ``weights_dir`` on each of ``samples``, from exact extreme points."""

    def masks(self, weights_dir: Path, samples: Sequence[Sample]) -> list[np.ndarray]:
        """The masks those IoUs are of: one bool (h, w) mask per sample."""

    def fine_tune(
        self, train: Sequence[Sample], init_weights_dir: Path, out_dir: Path, steps: int, version: str,
        progress: StepProgress,
    ) -> dict[str, str]:
        """Fine-tune ``init_weights_dir`` into a loadable weights directory ``out_dir`` whose manifest
        names ``version``; returns {relative path: sha256} of every file to publish."""


def training_threads(configured: int = 0) -> int:
    """Torch threads for training: ``configured`` if set, else half the cores, so that serving keeps
    the rest."""
    return configured if configured > 0 else max(1, (os.cpu_count() or 2) // 2)


class ExtremeTrainer:
    def __init__(self, device: str = "cpu", threads: int = 0, batch_size: int = FINE_TUNE_BATCH,
                 lr: float = FINE_TUNE_LR, seed: int = 0,
                 anchoring: Anchoring | None = None):
        self.device, self.batch_size, self.lr, self.seed = device, batch_size, lr, seed
        self.anchoring = anchoring or Anchoring()
        self.threads = training_threads(threads)

    @classmethod
    def from_settings(cls, settings) -> "ExtremeTrainer":
        return cls(device=settings.resolved_device(), threads=settings.train_threads)

    def scores(self, weights_dir: Path, samples: Sequence[Sample]) -> list[float]:
        from backend.training.validation import iou

        return [iou(predicted, mask) for predicted, (_, mask) in zip(self.masks(weights_dir, samples), samples)]

    def masks(self, weights_dir: Path, samples: Sequence[Sample]) -> list[np.ndarray]:
        from backend.segmenters.extreme import ExtremeSegmenter
        from backend.training.validation import instance_masks

        self._bound_threads()
        return instance_masks(ExtremeSegmenter.load(weights_dir, self.device), samples)

    def evaluate(self, weights_dir: Path, samples: Sequence[Sample]) -> float:
        """Mean IoU of ``scores`` (for benches and checks)."""
        return float(np.mean(self.scores(weights_dir, samples)))

    def fine_tune(
        self, train: Sequence[Sample], init_weights_dir: Path, out_dir: Path, steps: int, version: str,
        progress: StepProgress,
    ) -> dict[str, str]:
        from backend.networks.weights import MANIFEST, read_manifest
        from backend.training.train import train as train_model

        self._bound_threads()
        train_model(
            train, [], init_weights_dir, out_dir, steps, batch_size=self.batch_size, lr=self.lr, seed=self.seed,
            device=self.device, progress_cb=lambda step, total, metrics: progress(step, total, f"loss {metrics['loss']:.4f}"),
            eval_every=steps + 1, checkpoint_every=steps, num_workers=0, version=version,
            provenance={"data": f"Label Studio annotations: {len(train)} instances"}, anchoring=self.anchoring,
        )
        manifest = read_manifest(out_dir)
        files = {entry["file"]: entry["sha256"] for entry in manifest["files"].values() if isinstance(entry, dict)}
        # The manifest itself has no recorded hash: record it as written, so its copy is verified too.
        files[MANIFEST] = sha256_of(Path(out_dir) / MANIFEST)
        return files

    def _bound_threads(self) -> None:
        import torch

        torch.set_num_threads(self.threads)
