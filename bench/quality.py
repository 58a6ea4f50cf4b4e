"""Quality bench: the study's comparison on the held-out synthetic set, with the default weights.

    .venv/bin/python bench/quality.py                     # offline methods, 100 held-out scenes
    .venv/bin/python bench/quality.py --sam-checkpoint model_weights/sam_vit_b_01ec64.pth

Writes the held-out set once under runs/bench/ (COCO format, reused afterwards while the
generator's source is unchanged: its hash is in the folder's name), then runs
``python -m backend evaluate`` on it: the custom model from 4 extreme points and from the tight
box, GrabCut from the tight box, and SAM from the tight and loose boxes when a checkpoint is given.
Prints the tables (per shape family: mIoU, boundary F-score, fraction of the mask outside the
object; latency with the custom model's stages) and writes report.md, miou.csv, boundary_f.csv,
outside.csv, latency.csv, per_object.csv and miou_by_category.png to bench/results/quality/ (the
README quotes the tables and shows the chart).

The held-out split uses photos and shape families the training never saw (see
``backend.training.synthetic``); scene seed 1 is the stream of the manifest's held-out report
(which samples one object per scene; here every object of every scene counts).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # run as a script from anywhere

from backend.evaluation import evaluate  # noqa: E402
from backend.segmenters.sam_types import SAM_TYPES  # noqa: E402
from backend.training import synthetic  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=100, help="held-out scenes (2-5 objects each; default 100)")
    parser.add_argument("--data-seed", type=int, default=1, help="held-out scene stream (default 1)")
    parser.add_argument("--sam-checkpoint", type=Path, help="add SAM's tight/loose box methods")
    parser.add_argument("--sam-model-type", default="vit_b", choices=list(SAM_TYPES))
    parser.add_argument("--extreme-weights", type=Path, help="default: the committed model_weights/extreme")
    parser.add_argument("--device", default="cpu", help="cpu (default, for CPU latency), cuda or auto")
    # One thread by default: on a small shared machine, two torch threads stall whenever another
    # process holds a core (measured here: p90 2.7 s per object with two threads, under 75 ms with one).
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1; 0 = torch's choice)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "quality")
    args = parser.parse_args()

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    # The generator's source in the name: a set written by an older generator is never reused.
    generator = hashlib.sha256(Path(synthetic.__file__).read_bytes()).hexdigest()[:10]
    data_dir = REPO_ROOT / "runs" / "bench" / f"heldout-seed{args.data_seed}-{args.scenes}-{generator}"
    annotations = data_dir / "instances.json"
    if not annotations.is_file():  # write_coco writes instances.json last: present means complete
        print(f"writing {args.scenes} held-out synthetic scenes to {data_dir}")
        synthetic.write_coco(data_dir, args.scenes, args.data_seed, split="heldout")
    # Relative paths keep the machine's directory layout out of the committed report.
    command = [os.path.relpath(annotations), os.path.relpath(data_dir / "images"), "--out", str(args.out)]
    command += ["--device", args.device]
    methods = ["custom-extreme", "custom-box", "grabcut"]
    if args.sam_checkpoint:
        methods += ["sam-box", "sam-loose-box"]
        command += ["--sam-checkpoint", str(args.sam_checkpoint), "--sam-model-type", args.sam_model_type]
    command += ["--methods", ",".join(methods)]
    if args.extreme_weights:
        command += ["--extreme-weights", str(args.extreme_weights)]
    evaluate_parser = argparse.ArgumentParser()
    evaluate.add_arguments(evaluate_parser)
    return evaluate.run(evaluate_parser.parse_args(command))


if __name__ == "__main__":
    sys.exit(main())
