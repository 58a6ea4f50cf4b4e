"""Training loop for the two-stage extreme-point model, and ``python -m backend train``.

``train(...)`` is the one code path for the default weights, the CLI and the retraining webhook:
it trains both stages jointly (the refinement stage sees the detached coarse logits), gives a share
of each batch simulated correction clicks (``simulated_corrections``), validates
mIoU from extreme points every ``eval_every`` steps, checkpoints every ``checkpoint_every`` steps
(resuming from ``out_dir/checkpoint.pt`` when present) and finally writes a weights directory
(``backend.networks.weights``) into ``out_dir``.

    python -m backend train --coco instances.json --images imgs/ --init model_weights/extreme --steps 1000 --out runs/x
    python -m backend train --ls-export export.json --images imgs/ --init model_weights/extreme --out runs/y
    python -m backend train --synthetic 12000 --steps 1200 --report 300 --out runs/z   # how the defaults were made
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from backend.files import write_atomic
from backend.networks.weights import ModelConfig, load_weights, save_weights, write_manifest
from backend.progress_output import progress_bar
from backend.prompts import PromptKind
from backend.segmenters.extreme import ExtremeSegmenter, refine_stage_input
from backend.training.anchoring import Anchoring
from backend.training.datasets import CocoSamples, LabelStudioSamples, Sample, SyntheticSamples
from backend.training.examples import TrainingExamples
from backend.training.simulated_corrections import CORRECTED_FRACTION, add_simulated_corrections
from backend.training.validation import click_curve, evaluate_miou

CHECKPOINT = "checkpoint.pt"
REPORT_CLICKS = 3
ProgressCallback = Callable[[int, int, dict], None]


def train(
    samples_train: Sequence[Sample],
    samples_val: Sequence[Sample],
    init_weights_dir: str | Path | None,
    out_dir: str | Path,
    steps: int,
    batch_size: int = 8,
    lr: float = 6e-4,
    seed: int = 0,
    device: str = "cpu",
    progress_cb: ProgressCallback | None = None,
    *,
    config: ModelConfig | None = None,
    eval_every: int = 500,
    checkpoint_every: int = 100,
    num_workers: int = 1,
    version: str | None = None,
    provenance: dict | None = None,
    anchoring: Anchoring | None = None,
    corrections: float = CORRECTED_FRACTION,
) -> dict:
    """Train (or fine-tune from `init_weights_dir`) and write a weights directory to `out_dir`.

    Without `init_weights_dir` the coarse encoder starts from ImageNet EfficientNet-Lite0 and
    `config` (default ``ModelConfig()``) sets the sizes. `progress_cb(step, steps, metrics)` is
    called after every step. With `anchoring` (fine-tuning a project's few annotations) the
    batch-norm statistics stay the parent's and the weights are pulled toward the parent's
    (``backend.training.anchoring``). `corrections` is the share of examples trained with 1-3
    simulated correction clicks. Empty `samples_val` skips validation. Returns the final
    metrics: steps, train_loss (mean of the last 50 steps), val_miou_extreme and val_miou_box (with
    validation samples), seconds, and the eval history.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError("steps and batch_size must be positive")
    if len(samples_train) == 0:
        raise ValueError("training needs at least one sample")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if init_weights_dir is not None:
        coarse, refine, config, _ = load_weights(Path(init_weights_dir), "cpu")
    else:
        config = config or ModelConfig()
        coarse, refine = config.build(pretrained=True)
    coarse.to(device)
    refine.to(device)
    parameters = list(coarse.parameters()) + list(refine.parameters())
    # With an anchor, no weight decay: decay pulls toward zero, the anchor toward the parent.
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=1e-4 if anchoring is None else 0.0)
    parent = [p.detach().clone() for p in parameters] if anchoring is not None else []

    def train_mode() -> None:
        if anchoring is None:
            coarse.train()
            refine.train()
        else:
            anchoring.train_mode(coarse, refine)

    train_mode()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(steps))
    state = {"step": 0, "history": [], "losses": [], "seconds": 0.0}
    checkpoint_path = out_dir / CHECKPOINT
    if checkpoint_path.exists():
        saved = torch.load(checkpoint_path, map_location=device, weights_only=False)
        coarse.load_state_dict(saved["coarse"])
        refine.load_state_dict(saved["refine"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = saved["state"]
        tqdm.write(f"resumed from {checkpoint_path} at step {state['step']}")

    def save_checkpoint() -> None:
        write_atomic(checkpoint_path, lambda f: torch.save(
            {"coarse": coarse.state_dict(), "refine": refine.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "state": state}, f))

    def validate(kinds=(PromptKind.EXTREME,)) -> dict:
        segmenter = ExtremeSegmenter(coarse, refine, config, "training", device)
        result = {f"val_miou_{kind.value}": evaluate_miou(segmenter, samples_val, kind) for kind in kinds}
        if corrections > 0:  # is the model learning to follow clicks? (one simulated click after the points)
            result["val_miou_extreme_1_click"] = click_curve(segmenter, samples_val, 1)[1]
        train_mode()
        return result

    examples = TrainingExamples(samples_train, config, seed)
    batches_per_epoch = max(1, len(samples_train) // batch_size)
    bar = progress_bar(total=steps, initial=state["step"], desc="train", unit="step")  # lines when stderr is a log
    started = time.monotonic() - state["seconds"]
    while state["step"] < steps:
        epoch, skip = divmod(state["step"], batches_per_epoch)
        examples.epoch = epoch
        order = np.random.default_rng([seed, epoch]).permutation(len(samples_train))[skip * batch_size :]
        loader = torch.utils.data.DataLoader(
            examples, batch_size=batch_size, sampler=order.tolist(), num_workers=num_workers,
            drop_last=len(samples_train) >= batch_size, worker_init_fn=_single_threaded_opencv,
        )
        for batch in loader:
            if corrections > 0:
                coarse.eval()
                rng = np.random.default_rng([seed, state["step"]])
                batch = add_simulated_corrections(coarse, batch, rng, device, corrections)
                train_mode()
            loss, parts = step_loss(coarse, refine, batch, device)
            if anchoring is not None:
                loss = loss + anchoring.penalty(parameters, parent)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            state["step"] += 1
            state["losses"] = (state["losses"] + [loss.item()])[-50:]
            state["seconds"] = time.monotonic() - started
            metrics = {"loss": loss.item(), **parts, "lr": scheduler.get_last_lr()[0]}
            bar.set_postfix(loss=f"{np.mean(state['losses']):.4f}", refresh=False)
            bar.update(1)
            if state["step"] % eval_every == 0 and state["step"] < steps and len(samples_val):
                evaluation = validate()
                state["history"].append({"step": state["step"], **evaluation})
                tqdm.write(f"step {state['step']}: {json.dumps(evaluation)}")
                metrics.update(evaluation)
            if state["step"] % checkpoint_every == 0 or state["step"] == steps:
                save_checkpoint()
            if progress_cb is not None:
                progress_cb(state["step"], steps, metrics)
            if state["step"] >= steps:
                break
    bar.close()
    final = validate((PromptKind.EXTREME, PromptKind.BOX)) if len(samples_val) else {}
    if final:
        state["history"].append({"step": state["step"], **final})
        tqdm.write(f"final: {json.dumps(final)}")
    metrics = {
        "steps": state["step"], "train_loss": float(np.mean(state["losses"])), **final,
        "seconds": round(state["seconds"], 1), "history": state["history"],
    }
    save_weights(
        out_dir, coarse, refine, config, version or datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S"),
        {**(provenance or {}), "training": {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
                                             "device": device, "corrections": corrections,
                                             "train_samples": len(samples_train),
                                             "val_samples": len(samples_val), "metrics": metrics,
                                             **({"anchoring": asdict(anchoring)} if anchoring else {})}},
    )
    return metrics


def _single_threaded_opencv(_worker_id: int) -> None:
    # Each loader worker is already one process per core; OpenCV's own thread pool would oversubscribe.
    import cv2

    cv2.setNumThreads(1)


def _warmup_cosine(steps: int) -> Callable[[int], float]:
    warmup = max(1, min(100, steps // 10))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def step_loss(coarse, refine, batch: dict, device: str) -> tuple[torch.Tensor, dict]:
    """Loss of both stages on one batch: BCE + soft IoU for the coarse crop, and the same for the
    refinement stage on its training windows (it is fully convolutional)."""
    coarse_input = batch["coarse_input"].to(device)
    coarse_target = batch["coarse_target"].to(device)
    coarse_logits = coarse(coarse_input)
    coarse_loss = _mask_loss(coarse_logits, coarse_target)
    full_input = refine_stage_input(batch["refine_input"].to(device), coarse_logits.detach())
    refine_target = batch["refine_target"].to(device)
    half = full_input.shape[-1] // 2
    windows, targets = [], []
    for i, (x, y) in enumerate(batch["window"].tolist()):
        windows.append(full_input[i, :, y : y + half, x : x + half])
        targets.append(refine_target[i, :, y : y + half, x : x + half])
    refine_loss = _mask_loss(refine(torch.stack(windows)), torch.stack(targets))
    return coarse_loss + refine_loss, {"coarse_loss": coarse_loss.item(), "refine_loss": refine_loss.item()}


def _mask_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    bce = F.binary_cross_entropy_with_logits(logits, target)
    probabilities = torch.sigmoid(logits)
    intersection = (probabilities * target).sum(dim=(1, 2, 3))
    union = (probabilities + target - probabilities * target).sum(dim=(1, 2, 3))
    return bce + (1 - (intersection + 1) / (union + 1)).mean()


# ---- command line -------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_argument_group("training data (one source)")
    source.add_argument("--coco", type=Path, help="COCO instances JSON (with --images)")
    source.add_argument("--ls-export", type=Path, help="Label Studio JSON export (with --images)")
    source.add_argument("--images", type=Path, help="image folder for --coco / --ls-export")
    source.add_argument("--synthetic", type=int, metavar="N", help="N synthetic training samples")
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="share of --coco/--ls-export samples held out for validation (default 0.1)")
    parser.add_argument("--val-synthetic", type=int, default=150, metavar="N",
                        help="validation samples from the held-out synthetic split when training on --synthetic")
    parser.add_argument("--out", type=Path, required=True, help="output directory (checkpoint + weights)")
    parser.add_argument("--init", type=Path, help="weights directory to fine-tune (default: ImageNet encoder)")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=6e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 … or auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--workers", type=int, default=1, help="data loader worker processes")
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--corrections", type=float, default=CORRECTED_FRACTION, metavar="FRACTION",
                        help="share of training examples given 1-3 simulated correction clicks "
                             f"(default {CORRECTED_FRACTION}; 0 trains the first mask only)")
    parser.add_argument("--crop-size", type=int, default=ModelConfig.crop_size,
                        help="coarse crop side (multiple of 32; refinement uses twice it); ignored with --init")
    parser.add_argument("--version", help="version string for the manifest (default: a UTC timestamp)")
    parser.add_argument("--report", type=int, default=0, metavar="N",
                        help="after training, add held-out synthetic figures on N samples (model from extreme "
                             "points and boxes, after 0-3 simulated correction clicks, GrabCut from the "
                             "points' box) to the manifest")
    parser.add_argument("--report-only", action="store_true",
                        help="skip training: write the --report figures for the weights already in --out")


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if args.report_only:
        if args.report < 1:
            print("--report-only needs --report N", file=sys.stderr)
            return 2
        add_heldout_report(args.out, args.report, args.seed, device)
        return 0
    sources = [s for s in (args.coco, args.ls_export, args.synthetic) if s]
    if len(sources) != 1:
        print("choose exactly one of --coco, --ls-export, --synthetic", file=sys.stderr)
        return 2
    if args.synthetic:
        samples_train = SyntheticSamples(args.synthetic, args.seed, "train")
        samples_val = SyntheticSamples(args.val_synthetic, args.seed, "heldout")
        data = f"synthetic: {args.synthetic} training scenes (train photos), {args.val_synthetic} held-out"
    else:
        if args.images is None:
            print("--coco and --ls-export need --images", file=sys.stderr)
            return 2
        samples = CocoSamples(args.coco, args.images) if args.coco else LabelStudioSamples(args.ls_export, args.images)
        split = len(samples) - max(1, int(round(args.val_fraction * len(samples))))
        if split < 1:
            print(f"only {len(samples)} samples: too few to train and validate", file=sys.stderr)
            return 2
        samples_train = torch.utils.data.Subset(samples, range(split))
        samples_val = torch.utils.data.Subset(samples, range(split, len(samples)))
        data = f"{args.coco or args.ls_export}: {split} training, {len(samples) - split} validation samples"
    provenance = {
        "data": data,
        "command": "python -m backend train " + shlex.join(sys.argv[2:] if sys.argv[1:2] == ["train"] else sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, {device}",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    config = ModelConfig(crop_size=args.crop_size, refine_size=2 * args.crop_size)
    metrics = train(
        samples_train, samples_val, args.init, args.out, args.steps, args.batch_size, args.lr, args.seed, device,
        config=config, eval_every=args.eval_every, checkpoint_every=args.checkpoint_every,
        num_workers=args.workers, version=args.version, provenance=provenance, corrections=args.corrections,
    )
    if args.report:
        add_heldout_report(args.out, args.report, args.seed, device)
    print(json.dumps({k: v for k, v in metrics.items() if k != "history"}, indent=2))
    return 0


def add_heldout_report(weights_dir: Path, count: int, seed: int, device: str) -> dict:
    """Measure the weights on `count` held-out synthetic samples and store the figures in the manifest."""
    from backend.networks.weights import read_manifest
    from backend.segmenters.grabcut import GrabCutSegmenter

    samples = SyntheticSamples(count, seed + 1, "heldout")  # a different stream from the training-time validation
    segmenter = ExtremeSegmenter.load(weights_dir, device)
    report = {
        "data": f"{count} held-out synthetic samples (seed {seed + 1}, photos and shapes unseen in training)",
        "miou_extreme_points": round(evaluate_miou(segmenter, samples, PromptKind.EXTREME), 4),
        "miou_box": round(evaluate_miou(segmenter, samples, PromptKind.BOX), 4),
        "miou_grabcut_points_box": round(evaluate_miou(GrabCutSegmenter(), samples, PromptKind.EXTREME), 4),
        "miou_extreme_after_clicks": [round(v, 4) for v in click_curve(segmenter, samples, REPORT_CLICKS)],
        "clicks": f"0-{REPORT_CLICKS} simulated correction clicks after exact extreme points "
                  "(backend.training.correction_clicks, 2 px jitter)",
    }
    manifest = read_manifest(weights_dir)
    manifest["validation"] = report
    write_manifest(weights_dir, manifest)
    print(json.dumps(report, indent=2))
    return report
