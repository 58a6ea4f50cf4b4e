"""The class-agnostic base of per-project proposal models, pretrained on the synthetic generator.

    python -m backend pretrain-proposals --out runs/proposals-base [--steps 2000] [--max-minutes 55]

Every object of a generator scene (``backend.training.synthetic``, its train split only: training
photos and shape families, never the held-out ones) is one label, ``object`` (``base.BASE_LABEL``),
so the detector learns objectness, box regression and centre-ness with exact boxes on many scenes;
batches get the same augmentation as a project's training (copy-paste between the batch's scenes,
scale, flip, colour). The data of a step are a function of the step and the seed, so a resumed run
sees the scenes it would have seen. The learning rate warms up and then stays constant, so a run
can be stopped at any checkpoint (``--max-minutes``) and still leave a finished base.
Pretraining may train more of the encoder than a project's fine-tune does (``--trainable-from``):
the base has the scenes to teach it, a project's handful of images do not; the base keeps the
config's ``trainable_from`` for the projects. ``--init`` continues a finished base (its weights,
steps and loss history) with a fresh optimiser, e.g. with more of the encoder trainable.

Resumable: ``out/checkpoint.pt`` every ``--checkpoint-every`` steps. At the end (the last step, or
the first checkpoint after ``--max-minutes``) the model is written into ``out`` as a proposal model
(``proposals.pt`` + ``manifest.json``, see ``model.py``), with its class-agnostic figures on
held-out-split scenes, the data, the command and the machine in the manifest.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from backend.files import write_atomic
from backend.proposals.annotations import prepare
from backend.proposals.augment import augment
from backend.proposals.base import BASE_LABEL, load_base
from backend.proposals.evaluate import best_threshold, collect, figures
from backend.proposals.model import MANIFEST, ProposalModel, ProposalWeightsError
from backend.proposals.network import DetectorConfig, build_detector
from backend.proposals.train import DEFAULT_CONFIG, detector_inputs, optimisation_step
from backend.training.synthetic import generate_scene

CHECKPOINT = "checkpoint.pt"
WARMUP_STEPS = 50
LOSS_EVERY = 25  # steps per entry of the loss history kept in the manifest
LOSS_COLUMNS = ("step", "loss", "classification", "bbox_regression", "bbox_ctrness")  # FCOS's loss parts


def scene_example(seed: int, index: int, split: str) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
    """Generator scene ``index`` as a proposal example: every object an ``object`` with its mask."""
    scene = generate_scene(seed, index, split)
    return scene.image, [(BASE_LABEL, mask) for mask in scene.masks]


def pretrain(out_dir: str | Path, steps: int, *, batch_size: int = 4, lr: float = 1e-3, seed: int = 0,
             validation: int = 10, checkpoint_every: int = 25, max_minutes: float | None = None,
             device: str = "cpu", config: DetectorConfig = DEFAULT_CONFIG, provenance: dict | None = None,
             progress_cb: Callable[[int, int, float], None] | None = None, trainable_from: int | None = None,
             init_dir: str | Path | None = None) -> dict:
    """Train (or resume) the base in ``out_dir`` up to ``steps`` steps, or until the first checkpoint
    after ``max_minutes`` of this run; write it there as a proposal model; return its manifest.
    ``trainable_from``: the first encoder block this pretraining trains (default: ``config``'s, which
    the written base keeps); ``init_dir``: without a checkpoint, continue that base."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if init_dir is not None and not (Path(init_dir) / MANIFEST).is_file():  # before load_base logs a fresh start
        raise ProposalWeightsError(f"no base to continue in {init_dir}: it holds no {MANIFEST}")
    source = load_base(init_dir) if init_dir is not None else None
    if source is not None:
        config = source.config
    trained = config if trainable_from is None else replace(config, trainable_from=trainable_from)
    detector = build_detector(trained, 1, pretrained=source is None).to(device).train()
    parameters = [p for p in detector.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=1e-4)
    step, seconds, losses = 0, 0.0, []
    if (out_dir / CHECKPOINT).is_file():
        state = torch.load(out_dir / CHECKPOINT, map_location=device, weights_only=True)
        detector.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, seconds, losses = int(state["step"]), float(state["seconds"]), list(state["losses"])
    elif source is not None:
        detector.load_state_dict(source.detector.state_dict())
        training = source.manifest.get("training", {})
        step, seconds = int(training.get("steps", 0)), float(training.get("seconds", 0.0))
        losses = list(training.get("loss_history", {}).get("rows", []))
    started = time.monotonic()
    recent = []
    while step < steps:
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / WARMUP_STEPS)
        rng = np.random.default_rng([seed, step])
        examples = [scene_example(seed, step * batch_size + k, "train") for k in range(batch_size)]
        prepared, _ = prepare(examples, [BASE_LABEL], config.long_side)
        images, targets = detector_inputs([augment(item, prepared, rng) for item in prepared], device)
        loss, loss_parts = optimisation_step(detector, images, targets, optimizer, parameters)
        step += 1
        recent.append([float(loss.detach())] + [float(loss_parts[key].detach()) for key in LOSS_COLUMNS[2:]])
        if step % LOSS_EVERY == 0 or step == steps:
            losses.append([step, *np.round(np.mean(recent, axis=0), 4).tolist()])
            recent = []
        if progress_cb is not None:
            progress_cb(step, steps, float(loss.detach()))
        out_of_time = max_minutes is not None and time.monotonic() - started > 60 * max_minutes
        if step % checkpoint_every == 0 or step == steps or out_of_time:
            state = {"model": detector.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                     "seconds": seconds + time.monotonic() - started, "losses": losses}
            write_atomic(out_dir / CHECKPOINT, lambda handle: torch.save(state, handle))
            if out_of_time:
                break
    seconds += time.monotonic() - started
    model = ProposalModel(detector, [BASE_LABEL], config, device=device)
    heldout = [scene_example(seed, index, "heldout") for index in range(validation)]
    results = collect(model, heldout)
    model.threshold = best_threshold(results) if heldout else model.threshold
    training = {"steps": step, "batch_size": batch_size, "lr": lr, "warmup_steps": WARMUP_STEPS, "seed": seed,
                "trainable_from": trained.trainable_from,
                "seconds": round(seconds, 1), "device": device,
                "loss_history": {"columns": list(LOSS_COLUMNS), "rows": losses}}
    heldout_figures = figures(results, model.threshold) if heldout else None
    return model.save(out_dir, {**(provenance or {}), "kind": "class-agnostic base", "training": training,
                                "heldout": heldout_figures})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="output directory (checkpoint + base model)")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop at the first checkpoint after this many minutes of this run, and write the base")
    parser.add_argument("--long-side", type=int, default=DEFAULT_CONFIG.long_side,
                        help="px: the detector's image size, kept by the projects' models that start from this base "
                             "(with --init: that base's)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--validation", type=int, default=10, help="held-out-split scenes for the manifest's figures")
    parser.add_argument("--checkpoint-every", type=int, default=25)
    parser.add_argument("--trainable-from", type=int, default=None,
                        help="first encoder block pretraining trains (default: the projects' own, "
                             f"{DEFAULT_CONFIG.trainable_from}; the base keeps that for them)")
    parser.add_argument("--init", type=Path, default=None,
                        help="without a checkpoint in --out: continue this base (weights, steps, loss history) "
                             "with a fresh optimiser")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, …")


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    provenance = {
        "data": f"synthetic (backend.training.synthetic), train split (training photos and shape families), "
                f"seed {args.seed}: scenes 0..{args.steps * args.batch_size - 1} at most, {args.batch_size} per step; "
                f"figures on {args.validation} held-out-split scenes",
        "command": "python -m backend pretrain-proposals " + shlex.join(
            sys.argv[2:] if sys.argv[1:2] == ["pretrain-proposals"] else sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                   f"{torch.get_num_threads()} torch threads, {args.device}",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }

    def report(step: int, steps: int, loss: float) -> None:
        if step % LOSS_EVERY == 0:
            print(f"step {step}/{steps} loss {loss:.3f} at {datetime.now(timezone.utc):%H:%M:%S}", flush=True)

    try:
        manifest = pretrain(args.out, args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                            validation=args.validation, checkpoint_every=args.checkpoint_every,
                            max_minutes=args.max_minutes, device=args.device, provenance=provenance,
                            progress_cb=report, config=replace(DEFAULT_CONFIG, long_side=args.long_side),
                            trainable_from=args.trainable_from, init_dir=args.init)
    except ProposalWeightsError as exc:  # a wrong --init: say so, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({key: manifest[key] for key in ("training", "heldout", "threshold")}, indent=2))
    return 0
