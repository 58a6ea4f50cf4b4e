"""The proposal model's learning curve on synthetic projects (issue 18).

    .venv/bin/python bench/proposals.py [--sizes 5,10,20,40] [--test 30] [--threads 1] [--steps N] [--base DIR|none]

A synthetic project has two labels by shape family — ``round`` (blob, polygon, ring) and
``branchy`` (limbs, tree; held-out scenes add the unseen horse and plant; the training split's
printed words are of neither label and stay unannotated) — and several objects per image, every scene resized to a 640 px longer side. Annotated tasks come from the generator's
training split; the test tasks ("unlabeled") from its held-out split: other photos, other
shapes, two unseen families. With ``--annotated-from heldout`` the annotated tasks come from the
held-out split too (scenes after the test ones): a project whose annotated and unlabeled tasks are
alike, as a real project's are, on photos and shape families neither the base nor the extreme-point
model trained on. For each project size n, the n annotated tasks are split as a
retraining job splits them (a fifth held out, at least one): the model trains on the rest, and
the held-out ones fit its score calibration and choose its threshold. Training starts from the
class-agnostic base (``--base``, default the committed ``model_weights/proposals``; ``none``: the
ImageNet encoder with a fresh FPN and head). On the test tasks each
proposal becomes a mask through the extreme-point model (default weights, box mode: this model
predicts boxes), labelled by the model's labeller from that mask (``--labels detector``: the
detector's own labels, no labeller; the held-out figures and threshold follow the same choice), one
mask per object as serving keeps them (``proposal_masks``), and the masks are
matched to the true ones (IoU >= 0.5, same label, most
confident first): recall, precision and mean IoU of the matched masks; beside them box-level
recall/precision, the box recall/precision on the tasks it trained on (does it fit them?),
training time, and the proposal time per 640 px image (the model alone), the
mask time and the label time (the labeller) per object. Raw output goes to --out (default bench/results/proposals.txt).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # run as a script from anywhere

from backend.prompts import LoadedImage  # noqa: E402
from backend.proposal_masks import box_mask_of, proposal_masks  # noqa: E402
from backend.proposals import ProposalModel, evaluate_proposals, train_proposal_model  # noqa: E402
from backend.proposals.evaluate import best_threshold, collect, figures  # noqa: E402
from backend.segmenters.extreme import ExtremeSegmenter  # noqa: E402
from backend.settings import Settings  # noqa: E402
from backend.training.synthetic import generate_scene  # noqa: E402
from backend.training.validation import iou  # noqa: E402

LABEL_OF_FAMILY = {"blob": "round", "polygon": "round", "ring": "round",
                   "limbs": "branchy", "tree": "branchy", "horse": "branchy", "plant": "branchy"}
LABELS = ("round", "branchy")
LONG_SIDE = 640
HELDOUT_FRACTION = 0.2  # as retraining splits a project's annotated tasks


def task(seed: int, index: int, split: str) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
    """A generator scene at a 640 px longer side with its objects as (label, mask)."""
    scene = generate_scene(seed, index, split)
    scale = LONG_SIDE / max(scene.image.shape[:2])
    size = (round(scene.image.shape[1] * scale), round(scene.image.shape[0] * scale))
    image = cv2.resize(scene.image, size, interpolation=cv2.INTER_LINEAR)
    masks = [cv2.resize(m.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0 for m in scene.masks]
    # Printed words (a training-split family) are of neither label: left unannotated, as a project
    # leaves out what its labels do not name.
    return image, [(LABEL_OF_FAMILY[f], m) for f, m in zip(scene.families, masks) if m.any() and f in LABEL_OF_FAMILY]


def mask_figures(model: ProposalModel, segmenter: ExtremeSegmenter, tests) -> dict:
    """Proposals -> box-mode masks as serving makes them (``proposal_masks``: one mask per object),
    matched to the true masks (IoU >= 0.5, same label, greedy by score)."""
    proposed = objects = 0
    ious, propose_s, mask_ms, label_ms = [], [], [], []
    segmenters = SimpleNamespace(sam=None, extreme=segmenter)
    for image, truth in tests:
        loaded = LoadedImage(array=image, key="bench")
        start = time.perf_counter()
        proposals = model.propose(loaded)
        propose_s.append(time.perf_counter() - start)

        def segment(prompt):
            start = time.perf_counter()
            segmentation = segmenter.segment(loaded, prompt)
            mask_ms.append((time.perf_counter() - start) * 1000)
            return segmentation

        def relabel(proposal, mask):
            start = time.perf_counter()
            relabelled = model.relabelled(proposal, image, mask)
            label_ms.append((time.perf_counter() - start) * 1000)
            return relabelled

        kept = proposal_masks(proposals, segment, segmenters, LABELS, relabel=relabel).segmentations
        taken = [False] * len(truth)
        for segmentation in kept:
            scores = [0.0 if taken[j] or label != segmentation.label else iou(segmentation.mask, m)
                      for j, (label, m) in enumerate(truth)]
            j = int(np.argmax(scores)) if scores else -1
            if j >= 0 and scores[j] >= 0.5:
                taken[j] = True
                ious.append(scores[j])
        proposed += len(kept)
        objects += len(truth)
    found = len(ious)
    return {
        "mask_recall": found / max(1, objects), "mask_precision": found / max(1, proposed),
        "matched_miou": float(np.mean(ious)) if ious else 0.0, "objects": objects, "proposals": proposed,
        "propose_s_median": float(np.median(propose_s)), "propose_s_p90": float(np.percentile(propose_s, 90)),
        "mask_ms_per_object_median": float(np.median(mask_ms)) if mask_ms else 0.0,
        "label_ms_per_object_median": float(np.median(label_ms)) if label_ms else 0.0,
    }


def report_progress(step: int, steps: int, values: dict) -> None:
    if step % 20 == 0 or step == steps:
        print(f"  step {step}/{steps} loss {values['loss']:.3f}", file=sys.stderr, flush=True)


def run_size(n: int, args, tests, segmenter) -> dict:
    first = args.test if args.annotated_from == "heldout" else 0  # held-out: the scenes after the test ones
    annotated = [task(args.seed, first + i, args.annotated_from) for i in range(n)]
    heldout_count = max(1, round(HELDOUT_FRACTION * n))
    train_tasks, heldout = annotated[heldout_count:], annotated[:heldout_count]
    mask_of = box_mask_of(segmenter) if args.labels == "labeller" else None
    with tempfile.TemporaryDirectory() as out_dir:
        start, cpu_start = time.perf_counter(), time.process_time()
        metrics = train_proposal_model(train_tasks, LABELS, out_dir, heldout=heldout, steps=args.steps,
                                       base_dir=None if args.base == "none" else args.base,
                                       device="cpu", seed=args.seed, progress_cb=report_progress, mask_of=mask_of)
        train_s, train_cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
        model = ProposalModel.load(out_dir)
    test_results = collect(model, tests, mask_of)
    boxes = figures(test_results, model.threshold, model.labels)
    # Is the score honest? Its mean over the kept proposals against their box precision.
    kept_scores = np.concatenate([r.scores[r.scores >= model.threshold] for r in test_results] or [np.zeros(0)])
    # The model apart from its threshold choice: the test tasks' own best threshold (an oracle).
    oracle_threshold = best_threshold(test_results)
    oracle = figures(test_results, oracle_threshold)
    fit = evaluate_proposals(model, train_tasks, mask_of=mask_of)
    masks = mask_figures(model, segmenter, tests)
    return {"tasks": n, "trained_on": len(train_tasks), "heldout": heldout_count, "train_s": train_s,
            "train_cpu_s": train_cpu_s, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "steps": metrics["training"]["steps"], "init": metrics["training"]["init"],
            "labels_from": metrics["training"]["labels_from"],
            "final_loss": metrics["training"]["final_loss"], "train_box_recall": fit["recall"],
            "train_box_precision": fit["precision"], "threshold": model.threshold,
            "calibration": model.manifest["calibration"], "box_recall": boxes["recall"],
            "box_precision": boxes["precision"], "box_per_label": boxes["per_label"],
            "mean_kept_score": float(kept_scores.mean()) if len(kept_scores) else 0.0,
            "oracle_threshold": oracle_threshold, "oracle_box_recall": oracle["recall"],
            "oracle_box_precision": oracle["precision"], **masks}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5,10,20,40")
    parser.add_argument("--test", type=int, default=30, help="unlabeled (test) tasks, held-out split")
    parser.add_argument("--annotated-from", choices=["train", "heldout"], default="train",
                        help="the generator split of the annotated tasks (default train; the test tasks are held-out)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the model's own choice)")
    parser.add_argument("--labels", choices=["labeller", "detector"], default="labeller",
                        help="labels from the labeller on each object's mask (as a training job does), or the detector's own")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", default=str(REPO_ROOT / "model_weights" / "extreme"))
    parser.add_argument("--base", default=str(Settings().proposals_base),
                        help="class-agnostic base the training starts from; 'none': the ImageNet encoder")
    parser.add_argument("--out", default=str(REPO_ROOT / "bench" / "results" / "proposals.txt"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    segmenter = ExtremeSegmenter.load(args.weights)
    tests = [task(args.seed, i, "heldout") for i in range(args.test)]
    rows = []
    for n in (int(v) for v in args.sizes.split(",")):
        rows.append(run_size(n, args, tests, segmenter))
        print(json.dumps(rows[-1]), flush=True)
    lines = [
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared, busy), "
        f"torch threads {args.threads}; {args.test} test tasks; annotated tasks from the {args.annotated_from} split; "
        f"seed {args.seed}; start: {rows[0]['init'] if rows else '-'}; labels from: {args.labels}",
        "| annotated tasks (train + held out) | steps | train s (CPU s) | threshold | mask recall | mask precision "
        "| matched mIoU | box recall | box precision | box recall, precision on its training tasks | box recall, precision at the test tasks' best threshold (oracle) | final loss "
        "| proposals s / 640 px image (median, p90) | mask ms / object |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['tasks']} ({r['trained_on']} + {r['heldout']}) | {r['steps']} | {r['train_s']:.0f} ({r['train_cpu_s']:.0f}) | {r['threshold']:.2f} "
            f"| {r['mask_recall']:.3f} | {r['mask_precision']:.3f} | {r['matched_miou']:.3f} | {r['box_recall']:.3f} "
            f"| {r['box_precision']:.3f} | {r['train_box_recall']:.2f}, {r['train_box_precision']:.2f} "
            f"| {r['oracle_box_recall']:.2f}, {r['oracle_box_precision']:.2f} at {r['oracle_threshold']:.2f} | {r['final_loss']:.2f} "
            f"| {r['propose_s_median']:.2f}, {r['propose_s_p90']:.2f} "
            f"| {r['mask_ms_per_object_median']:.0f} |"
        )
    table = "\n".join(lines)
    print(table)
    Path(args.out).write_text(table + "\n\n" + "\n".join(json.dumps(r) for r in rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
