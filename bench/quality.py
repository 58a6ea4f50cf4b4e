"""Quality bench: the study's comparison with the default weights, on the real-photo held-out set
and on the held-out synthetic set, with the correction-click protocol.

    .venv/bin/python bench/quality.py                     # offline methods
    .venv/bin/python bench/quality.py --sam-checkpoint model_weights/sam_vit_b_01ec64.pth

Three runs of ``python -m backend evaluate``, each writing its report.md, CSVs and chart:

- ``real/``: the real-photo set's held-out part (``backend.evaluation.real_photos``: photos shipped
  with scikit-image and matplotlib, true masks; never trained on), first masks and correction
  clicks (IoU after 0..3 clicks, NoC@90), and each object's IoU (the coffee cup among them);
- ``synthetic/``: every object of the held-out synthetic scenes, first masks, per shape family;
- ``synthetic-clicks/``: the click protocol on a seeded sample of those objects (a method that
  ignores clicks runs up to 20 of them per object: the whole set would take hours on a CPU).

Methods: the custom model from 4 extreme points and from the tight box, GrabCut from the tight box,
and SAM from the tight and loose boxes when a checkpoint is given. Results go to
bench/results/quality/ (the README quotes the tables and shows the chart). The synthetic set is
written once under runs/bench/ (COCO format, reused while the generator's source is unchanged: its
hash is in the folder's name); its held-out split uses photos and shape families the training never
saw (see ``backend.training.synthetic``), scene seed 1 being the stream of the manifest's held-out
report (which samples one object per scene; here every object of every scene counts).
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
    parser.add_argument(
        "--click-objects", type=int, default=60, help="synthetic objects the click protocol samples (default 60)"
    )
    parser.add_argument("--sam-checkpoint", type=Path, help="add SAM's tight/loose box methods")
    parser.add_argument("--sam-model-type", default="vit_b", choices=list(SAM_TYPES))
    parser.add_argument("--extreme-weights", type=Path, help="default: the committed model_weights/extreme")
    parser.add_argument("--device", default="cpu", help="cpu (default, for CPU latency), cuda or auto")
    # One thread by default: on a small shared machine, two torch threads stall whenever another
    # process holds a core (measured here: p90 2.7 s per object with two threads, under 75 ms with one).
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1; 0 = torch's choice)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "quality")
    parser.add_argument("--only", choices=["real", "synthetic", "synthetic-clicks"], action="append",
                        help="run only these parts (repeatable; default all three)")
    args = parser.parse_args()

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    common = ["--device", args.device]
    methods = ["custom-extreme", "custom-box", "grabcut"]
    if args.sam_checkpoint:
        methods += ["sam-box", "sam-loose-box"]
        common += ["--sam-checkpoint", str(args.sam_checkpoint), "--sam-model-type", args.sam_model_type]
    common += ["--methods", ",".join(methods)]
    if args.extreme_weights:
        common += ["--extreme-weights", str(args.extreme_weights)]
    parts = args.only or ["real", "synthetic", "synthetic-clicks"]
    runs = {"real": ["--real-photos", "heldout"]}
    if {"synthetic", "synthetic-clicks"} & set(parts):
        # Relative paths keep the machine's directory layout out of the committed report.
        annotations, images = (os.path.relpath(path) for path in synthetic_set(args.scenes, args.data_seed))
        runs["synthetic"] = [annotations, images, "--clicks", "0"]
        runs["synthetic-clicks"] = [annotations, images, "--max-objects", str(args.click_objects)]
    for part in parts:
        print(f"== {part}", flush=True)
        evaluate_parser = argparse.ArgumentParser()
        evaluate.add_arguments(evaluate_parser)
        status = evaluate.run(evaluate_parser.parse_args([*runs[part], *common, "--out", str(args.out / part)]))
        if status:
            return status
    return 0


def synthetic_set(scenes: int, data_seed: int) -> tuple[Path, Path]:
    """The held-out synthetic set's instances.json and image folder, written on first use."""
    # The generator's source in the name: a set written by an older generator is never reused.
    generator = hashlib.sha256(Path(synthetic.__file__).read_bytes()).hexdigest()[:10]
    data_dir = REPO_ROOT / "runs" / "bench" / f"heldout-seed{data_seed}-{scenes}-{generator}"
    annotations = data_dir / "instances.json"
    if not annotations.is_file():  # write_coco writes instances.json last: present means complete
        print(f"writing {scenes} held-out synthetic scenes to {data_dir}")
        synthetic.write_coco(data_dir, scenes, data_seed, split="heldout")
    return annotations, data_dir / "images"


if __name__ == "__main__":
    sys.exit(main())
