"""``python -m backend evaluate``: the study's comparison on a COCO-format dataset, or with
``--real-photos`` on the bundled real-photo set (``backend.evaluation.real_photos``).

Every non-crowd object is segmented by each method from a prompt derived from its ground-truth
mask: the custom model from 4 extreme points, SAM from the tight and the loose (+20% per side)
box, the custom model in box mode and GrabCut from the tight box. Per object it records IoU, the
boundary F-score (outline pixels within ``--boundary-tolerance`` px of the true outline) and the
fraction of the mask outside the object (how far a box-mode mask floods the background), and the
custom model's per-stage times (coarse, refine). Several SAM models (e.g. SAM 1
vit_b and SAM 2.1 hiera_tiny) are compared in one run by repeating ``--sam-checkpoint`` and
``--sam-model-type``; their methods are then named ``sam-box@<model>``. Then each first mask is
corrected by simulated clicks (``backend.evaluation.clicks``, ``--clicks``): IoU after 0, 1, 2, 3
corrections and NoC@90 per method. Writes report.md (the three tables per category, latency per
method, the click tables, each named object's IoU), miou.csv, boundary_f.csv, outside.csv,
latency.csv, clicks.csv, per_object.csv and miou_by_category.png.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from dataclasses import replace
from pathlib import Path

from backend.coco import CocoObjects
from backend.segmenters.grabcut import GrabCutSegmenter
from backend.evaluation.clicks import ClickProtocol
from backend.evaluation.harness import METHODS, METHODS_BY_NAME, Method, ObjectResult, Segmenter, evaluate
from backend.evaluation.mask_metrics import BOUNDARY_TOLERANCE_PX
from backend.evaluation.real_photos import SPLITS, RealPhotoSet, evaluation_images
from backend.evaluation.report import markdown, summarize, write_report
from backend.segmenters.sam_types import SAM_TYPES
from backend.settings import REPO_ROOT, Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    settings = Settings.from_env()
    parser.add_argument("annotations", type=Path, nargs="?", help="COCO instances JSON (polygons or RLE masks)")
    parser.add_argument("images", type=Path, nargs="?", help="directory the images' file_name entries are relative to")
    parser.add_argument(
        "--real-photos",
        choices=[*SPLITS, "all"],
        help="evaluate on the bundled real-photo set instead of a COCO set: its held-out part (never trained on), "
        "its train part or all; categories are the objects' kinds (solid, thin, text)",
    )
    parser.add_argument(
        "--methods",
        type=_method_names,
        default=[method.name for method in METHODS],
        help="comma-separated methods to compare (default: all; "
        + "; ".join(f"{m.name}: {m.description}" for m in METHODS).replace("%", "%%")  # argparse %-formats help
        + ")",
    )
    parser.add_argument(
        "--sam-checkpoint",
        type=Path,
        action="append",
        help="SAM checkpoint (default: $SAM_CHECKPOINT); repeat it, each with its --sam-model-type, to compare "
        "several SAM models; without one the SAM methods are skipped",
    )
    parser.add_argument(
        "--sam-model-type",
        action="append",
        choices=list(SAM_TYPES),
        help="the model type of each --sam-checkpoint, in the same order (default: $SAM_MODEL_TYPE, "
        f"now {settings.sam_model_type})",
    )
    parser.add_argument(
        "--extreme-weights",
        type=Path,
        help=f"custom model weights directory (default: $EXTREME_WEIGHTS or {settings.extreme_weights})",
    )
    parser.add_argument(
        "--max-objects", type=_int_at_least(1), help="evaluate a seeded random sample of this many objects"
    )
    parser.add_argument("--min-area", type=float, default=0.0, help="skip objects of fewer pixels (default 0)")
    parser.add_argument(
        "--jitter",
        type=float,
        default=0.0,
        help="imprecise extreme clicks, seeded: each lands within this fraction of the object's larger side "
        "(e.g. 0.03; default 0 = exact extreme pixels)",
    )
    parser.add_argument(
        "--boundary-tolerance",
        type=_non_negative_float,
        default=BOUNDARY_TOLERANCE_PX,
        help=f"pixels an outline may be off and still count in the boundary F-score (default {BOUNDARY_TOLERANCE_PX})",
    )
    parser.add_argument(
        "--clicks",
        type=_int_at_least(0),
        default=ClickProtocol.corrections,
        help="correction-click protocol: report the IoU after 0..N simulated correction clicks (RITM's: the interior "
        "of the largest error region, positive or negative) and NoC@90 (default %(default)s; 0 = first masks only)",
    )
    parser.add_argument(
        "--max-clicks",
        type=_int_at_least(4, " (the extreme points' clicks)"),
        default=ClickProtocol.max_clicks,
        help="NoC@90's cap, the first prompt's clicks included (4 extreme points count 4, a box 2); an object not at "
        "0.90 by then counts the cap (default %(default)s)",
    )
    parser.add_argument(
        "--click-jitter",
        type=_non_negative_float,
        default=ClickProtocol.jitter_px,
        help="pixels a simulated correction click may land off the error region's most interior pixel "
        "(default %(default)s)",
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "evaluate", help="output directory")
    parser.add_argument("--device", default=settings.device, help="cpu, cuda, cuda:N or auto (default: $DEVICE)")
    parser.add_argument("--seed", type=int, default=0, help="for --max-objects sampling, --jitter and GrabCut")


def _method_names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in METHODS_BY_NAME]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS_BY_NAME)}"
        )
    return names


def _int_at_least(minimum: int, why: str = ""):
    """An argparse type: an int of at least ``minimum`` (``why`` says the reason in the error)."""
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}{why}, got {value}")
        return value

    parse.__name__ = f"int_at_least_{minimum}"  # argparse names the type in its "invalid ... value" error
    return parse


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be at least 0, got {text}")
    return value


def run(args: argparse.Namespace) -> int:
    wanted = [method for method in METHODS if method.name in args.methods]
    device = Settings(device=args.device).resolved_device()
    if (args.real_photos is None) == (args.annotations is None) or (args.annotations is None) != (args.images is None):
        print("error: give a COCO set (annotations and images) or --real-photos, not both", file=sys.stderr)
        return 2
    try:
        dataset = load_dataset(args)
        segmenters, notes = load_segmenters(args, {method.segmenter for method in wanted}, device)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"note: {note}")
    methods = runnable_methods(wanted, segmenters)
    if not methods:
        print("error: none of the requested methods can run (see the notes above)", file=sys.stderr)
        return 2
    if not len(dataset):
        print(f"error: no objects in {args.annotations} match (non-crowd, area >= {args.min_area})", file=sys.stderr)
        return 2
    protocol = ClickProtocol(args.clicks, args.max_clicks, args.click_jitter) if args.clicks else None
    results = evaluate(
        dataset, methods, segmenters, len(dataset), args.jitter, args.seed, args.boundary_tolerance, protocol
    )
    summary = summarize(results, [method.name for method in methods], args.boundary_tolerance, args.clicks)
    notes = run_notes(args, dataset, segmenters, device) + notes + result_notes(results, methods)
    files = write_report(summary, results, args.out, notes)
    print(markdown(summary, notes))
    clicks_csv = f", {files.clicks_csv}" if files.clicks_csv else ""
    print(f"wrote {files.markdown}, {files.miou_csv}, {files.boundary_csv}, {files.outside_csv}, {files.latency_csv}, "
          f"{files.results_csv}, {files.chart}{clicks_csv}")
    return 0


def load_dataset(args: argparse.Namespace) -> CocoObjects | RealPhotoSet:
    if args.real_photos:
        if args.max_objects or args.min_area:
            raise ValueError("--max-objects and --min-area select COCO objects; the real-photo set is evaluated whole")
        return evaluation_images(args.real_photos)
    return CocoObjects(args.annotations, args.images, args.min_area, args.max_objects, args.seed)


def load_segmenters(args: argparse.Namespace, needed: set[str], device: str) -> tuple[dict[str, Segmenter], list[str]]:
    """The segmenters the requested methods need, keyed like ``Method.segmenter``, and notes on
    those skipped. A path the user named that does not exist is an error, a missing default a note."""
    settings = Settings.from_env()
    segmenters: dict[str, Segmenter] = {}
    notes: list[str] = []
    if "extreme" in needed:
        weights = args.extreme_weights or settings.extreme_weights
        if not (weights / "manifest.json").is_file():
            if args.extreme_weights:
                raise FileNotFoundError(f"no custom model weights (manifest.json) in {weights}")
            notes.append(
                f"custom-model methods skipped: no weights in {weights} (train them or pass --extreme-weights)"
            )
        else:
            from backend.segmenters.extreme import ExtremeSegmenter

            segmenters["extreme"] = ExtremeSegmenter.load(weights, device, settings.extreme_native_refine)
    if "sam" in needed:
        sams = sam_models(args, settings)
        if not sams:
            notes.append("SAM methods skipped: no --sam-checkpoint (or SAM_CHECKPOINT)")
        for model_type, checkpoint in sams:
            if not checkpoint.is_file():
                raise FileNotFoundError(f"SAM checkpoint not found: {checkpoint}")
        from backend.embeddings.cache import EmbeddingCache
        from backend.segmenters.sam import SamSegmenter

        for model_type, checkpoint in sams:
            # Objects come image by image: one cached embedding serves both methods of a SAM model.
            sam = SamSegmenter.from_checkpoint(model_type, checkpoint, device, EmbeddingCache(capacity=1),
                                               settings.sam_precision)  # as the server runs it
            segmenters["sam" if len(sams) == 1 else f"sam@{sam.model_name}"] = sam
    if "grabcut" in needed:
        segmenters["grabcut"] = GrabCutSegmenter(seed=args.seed)
    return segmenters, notes


def sam_models(args: argparse.Namespace, settings: Settings) -> list[tuple[str, Path]]:
    """(model type, checkpoint) of each SAM model to evaluate; ValueError when the two lists differ."""
    checkpoints = args.sam_checkpoint or ([settings.sam_checkpoint] if settings.sam_checkpoint else [])
    types = args.sam_model_type or [settings.sam_model_type] * len(checkpoints)
    if len(types) != len(checkpoints):
        raise ValueError(
            f"{len(checkpoints)} --sam-checkpoint but {len(types)} --sam-model-type: give one type per checkpoint"
        )
    return list(zip(types, checkpoints))


def runnable_methods(wanted: list[Method], segmenters: dict[str, Segmenter]) -> list[Method]:
    """``wanted`` methods whose segmenter is loaded; a SAM method once per SAM model, named
    ``<method>@<model>`` when there are several (segmenter keys ``sam@<model>``)."""
    methods = []
    for method in wanted:
        if method.segmenter != "sam":
            methods += [method] if method.segmenter in segmenters else []
            continue
        for key in segmenters:
            if key == "sam":
                methods.append(method)
            elif key.startswith("sam@"):
                methods.append(replace(method, name=f"{method.name}@{key.removeprefix('sam@')}", segmenter=key))
    return methods


def run_notes(
    args: argparse.Namespace, dataset: CocoObjects | RealPhotoSet, segmenters: dict[str, Segmenter], device: str
) -> list[str]:
    """What was measured, so a table can be read (and reproduced) on its own."""
    models = ", ".join(dict.fromkeys(segmenter.model_name for segmenter in segmenters.values()))
    jitter = f"{args.jitter} of the object's larger side" if args.jitter else "none (exact extreme pixels)"
    where = device
    if device == "cpu":
        import torch

        # The load says whether other processes shared the cores, i.e. how far to trust the latencies.
        load = f", 1-min load average at the end {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
        where = f"cpu: {cpu_model()} ({torch.get_num_threads()} torch threads, {os.cpu_count()} cores{load})"
    if args.real_photos:
        data = (f"data: the real-photo set, {args.real_photos} ({len(dataset)} objects in {dataset.n_images} photos "
                "shipped with scikit-image and matplotlib, true masks from backend/evaluation/real_photos.json)")
    else:
        data = (f"data: {args.annotations} ({len(dataset)} objects in {dataset.n_images} images, min area {args.min_area} px"
                + (f", sample of {args.max_objects}" if args.max_objects else "") + ")")
    if getattr(segmenters.get("extreme"), "native", None) is not None:
        models += " with its masks refined at the photos' resolution (EXTREME_NATIVE_REFINE)"
    return [
        data,
        f"models: {models}; device: {where}; extreme-point jitter: {jitter}; seed: {args.seed}",
        *([f"correction clicks: {args.clicks} reported, NoC@90 capped at {args.max_clicks} clicks (4 extreme points "
           f"count 4, a box 2), each click within {args.click_jitter:g} px of the largest error region's most "
           "interior pixel"] if args.clicks else []),
    ]


def cpu_model() -> str:
    """The CPU's model name where the system tells it (Linux), else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{platform.machine()} {line.split(':', 1)[1].strip()}"
    except OSError:
        pass
    return platform.machine() or "unknown"


def result_notes(results: list[ObjectResult], methods: list[Method]) -> list[str]:
    """Caveats a reader of the tables needs: failures, and where SAM's embedding time went."""
    notes = []
    for method in methods:
        failed = [result for result in results if result.method == method.name and result.error]
        if failed:
            notes.append(f"{method.name} failed on {len(failed)} object(s), scored IoU 0; first: {failed[0].error}")
    for sam in dict.fromkeys(method.segmenter for method in methods if method.segmenter.startswith("sam")):
        sam_methods = [method.name for method in methods if method.segmenter == sam]
        notes.append(
            f"SAM computes one image embedding per image, shared by {' and '.join(sam_methods)}: its cost is in "
            f"{sam_methods[0]}'s latency on each image's first object"
        )
    return notes
