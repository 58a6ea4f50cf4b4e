"""Training a project's proposal model from its annotated tasks (the same call from jobs, tests and bench).

Fine-tunes the detector (``network.py``) from a previous version (``init_dir``: its weights, with
the rows of labels both know carried over), else from the class-agnostic base (``base_dir``: every
label starts as its ``object`` row, see ``base.py``), else from the ImageNet encoder with a fresh
FPN and head, on augmented batches (``augment.py``). Given ``mask_of`` (how serving makes an object's
mask from its box), a labeller (``labeller.py``) is fitted on the training objects' masks (an
annotation's own, else ``mask_of``'s) at their images' own size and labels the proposals from then on. With held-out examples,
the score calibration is fitted and the threshold chosen on them, and their figures go into the
manifest and the returned metrics.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from backend.proposals.annotations import ProposalError, prepare
from backend.proposals.augment import augment
from backend.proposals.base import load_base, start_from
from backend.proposals.calibration import fit_calibration
from backend.proposals.evaluate import MaskOf, collect, figures, heldout_threshold, recalibrated
from backend.proposals.labeller import Labeller
from backend.proposals.model import DEFAULT_THRESHOLD, ProposalModel
from backend.proposals.network import DetectorConfig, build_detector

BATCH_SIZE = 4
LEARNING_RATE = 1e-3
WARMUP_STEPS = 10
STEPS_PER_IMAGE = 24  # default steps: this many per annotated image, within STEPS_RANGE
STEPS_RANGE = (100, 480)
DEFAULT_CONFIG = DetectorConfig()


def default_steps(images: int) -> int:
    return int(min(max(STEPS_PER_IMAGE * images, STEPS_RANGE[0]), STEPS_RANGE[1]))


def train_proposal_model(
    examples: Sequence[tuple],
    labels: Sequence[str],
    out_dir: str | Path,
    *,
    heldout: Sequence[tuple] = (),
    init_dir: str | Path | None = None,
    base_dir: str | Path | None = None,
    steps: int | None = None,
    device: str | None = None,
    progress_cb: Callable[[int, int, dict], None] | None = None,
    seed: int = 0,
    config: DetectorConfig = DEFAULT_CONFIG,
    provenance: dict | None = None,
    mask_of: MaskOf | None = None,
) -> dict:
    """Train on ``examples`` (``(image, [(label, geometry)])``, see ``annotations``) for ``labels``,
    save the model into ``out_dir`` and return its metrics: ``training`` (counts of what was used
    and left out, steps, seconds, final loss), ``threshold``, and with ``heldout`` the held-out
    figures at that threshold. Starting from a previous version or the base, the detector has their
    ``config``; ``config`` is for a start from the ImageNet encoder. Raises ProposalError when there
    is nothing to learn from."""
    labels = list(dict.fromkeys(labels))
    if not labels:
        raise ProposalError("a proposal model needs at least one label")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    started = time.monotonic()
    source = ProposalModel.load(init_dir) if init_dir is not None else load_base(base_dir)
    if source is not None:
        config = source.config
    prepared, counts = prepare(examples, labels, config.long_side)
    if counts.objects == 0:
        raise ProposalError(
            f"no object to learn from: {counts.images} images, {counts.unknown_label} objects of other labels, "
            f"{counts.empty_or_degenerate} empty, {counts.too_small} too small"
        )
    steps = default_steps(len(prepared)) if steps is None else int(steps)
    if steps < 1:
        raise ProposalError(f"steps must be at least 1, got {steps}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    detector = build_detector(config, len(labels), pretrained=source is None)
    if source is not None:
        start_from(detector, source, labels)
    detector.to(device).train()
    parameters = [p for p in detector.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=LEARNING_RATE, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, steps))
    losses = []
    for step in range(1, steps + 1):
        images, targets = _batch(prepared, rng, device)
        loss, loss_parts = optimisation_step(detector, images, targets, optimizer, parameters)
        schedule.step()
        losses.append(float(loss.detach()))
        if progress_cb is not None:
            progress_cb(step, steps, {"loss": float(np.mean(losses[-10:])),
                                      **{k: float(v.detach()) for k, v in loss_parts.items()}})
    labeller = _fit_labeller(prepared, len(labels), mask_of) if mask_of is not None else None
    train_seconds = time.monotonic() - started
    model = ProposalModel(detector, labels, config, device=device, labeller=labeller)
    metrics = {
        "training": {**counts.as_dict(), "steps": steps, "batch_size": BATCH_SIZE, "seconds": round(train_seconds, 1),
                     "final_loss": float(np.mean(losses[-10:])), "device": device, "seed": seed,
                     "init": _init_name(init_dir, source),
                     "labels_from": "labeller (object masks)" if labeller is not None else "detector"},
        "threshold": DEFAULT_THRESHOLD,
    }
    if heldout:
        results = collect(model, heldout, mask_of)
        calibration = fit_calibration(
            np.concatenate([r.scores for r in results]), np.concatenate([r.correct for r in results])
        )
        results = recalibrated(results, calibration)
        model.calibration, model.threshold = calibration, heldout_threshold(results)
        metrics["threshold"] = model.threshold
        metrics["heldout"] = figures(results, model.threshold, model.labels)
    model.save(out_dir, {**(provenance or {}), **metrics})
    return metrics


def _fit_labeller(prepared, label_count: int, mask_of: MaskOf) -> Labeller | None:
    """The labeller from the training objects (their masks, else ``mask_of``'s) at their images' own
    size, as serving shows it objects — not at the detector's size: on four 12-task bench projects
    mask F1 0.66 / 0.52 / 0.37 / 0.44 became 0.66 / 0.55 / 0.39 / 0.44."""
    objects = [(item.natural_image, target.natural_mask if target.natural_mask is not None
                else mask_of(item.natural_image, tuple(float(v) for v in target.natural_box)), target.label)
               for item in prepared for target in item.targets]
    return Labeller.fit(objects, label_count)


def optimisation_step(detector, images, targets, optimizer, parameters) -> tuple[torch.Tensor, dict]:
    """One step on a batch: the detector's summed losses back-propagated, gradients clipped, the
    optimiser stepped; returns the loss and its parts (a project's training and the base's share it)."""
    loss_parts = detector(images, targets)
    loss = sum(loss_parts.values())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(parameters, 5.0)
    optimizer.step()
    return loss, loss_parts


def _batch(prepared, rng: np.random.Generator, device: str):
    return detector_inputs([augment(prepared[int(i)], prepared, rng) for i in rng.integers(len(prepared), size=BATCH_SIZE)],
                           device)


def detector_inputs(pairs, device: str):
    """(image uint8 HxWx3, [Target]) pairs -> FCOS's training inputs: image tensors in [0, 1] and
    targets with 1-based labels."""
    images, targets = [], []
    for image, objects in pairs:
        images.append(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div(255).to(device))
        boxes = np.array([t.box for t in objects], np.float32).reshape(-1, 4)
        targets.append({"boxes": torch.from_numpy(boxes).to(device),
                        "labels": torch.tensor([t.label + 1 for t in objects], dtype=torch.int64, device=device)})
    return images, targets


def _lr_factor(step: int, steps: int) -> float:
    if step < WARMUP_STEPS:
        return (step + 1) / WARMUP_STEPS
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - WARMUP_STEPS) / max(1, steps - WARMUP_STEPS))))


def _init_name(init_dir, source: ProposalModel | None) -> str:
    if init_dir is not None:
        return str(init_dir)
    if source is None:
        return "imagenet"
    return f"base {source.manifest['files']['model']['sha256'][:12]}"
