"""A trained proposal model: its weights directory, and proposals for one image.

Weights directory: ``proposals.pt`` (fp16 state dict), with a labeller ``labeller.pt``
(``labeller.py``), and ``manifest.json`` (written last, atomically): format, labels, detector
config, threshold, score calibration, the files' sha256, and provenance (training data counts,
held-out figures). Loading verifies the sha256.

Labels: with a labeller, an object's label is the labeller's, from its mask (``relabelled``), not
the detector's: the detector says where objects are and how sure it is, the labeller which label.

Scores: FCOS's own score (sqrt of class probability times centre-ness) mapped through a logistic
calibration fitted on held-out annotated tasks (``calibration.py``): the probability that the
proposal is a correct one (IoU >= 0.5 with an object of its label). One proposal per object: FCOS
suppresses overlaps within a label, and ``propose`` then across labels, so an object never gets two
proposals of different labels; a box mostly inside a more confident box of its label (a part of
that object) is left out too.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch
from torchvision.ops import nms

from backend.checksums import sha256_of
from backend.files import write_atomic
from backend.proposals.annotations import MAX_OBJECTS, check_image
from backend.proposals.calibration import IDENTITY, Calibration
from backend.proposals.labeller import Labeller
from backend.proposals.network import DetectorConfig, build_detector

FORMAT = "fcos-efficientnet-lite0/1"
MANIFEST = "manifest.json"
WEIGHTS = "proposals.pt"
LABELLER = "labeller.pt"
DEFAULT_THRESHOLD = 0.5  # until held-out tasks choose one
CROSS_LABEL_IOU = 0.6  # two proposals of different labels overlapping this much are one object
# A box lying this much (of its own area) inside a more confident box of its label is a part of that
# object: FCOS fires on parts (a limb, a wheel) that IoU suppression keeps, as their IoU is small.
PART_OF_BOX = 0.8
FLOOR = 0.05  # raw scores below this are never proposals (and not worth calibrating)
MIN_BOX_PX = 1.0  # narrower or lower boxes are no objects (natural px)


class ProposalWeightsError(ValueError):
    """A proposal weights directory is missing, incomplete or does not match its manifest."""


class HasPixels(Protocol):
    array: np.ndarray  # (H, W, 3) uint8 RGB, natural orientation (a backend.prompts.LoadedImage)


@dataclass(frozen=True)
class Proposal:
    """One object found: its label, box (x0, y0, x1, y1) in natural pixels, calibrated confidence,
    and its extreme points (4, 2) x, y when the model predicts them (this one does not: None)."""

    label: str
    box: tuple[float, float, float, float]
    score: float
    extreme_points: np.ndarray | None = None


class ProposalModel:
    def __init__(self, detector, labels: Sequence[str], config: DetectorConfig, *, threshold: float = DEFAULT_THRESHOLD,
                 calibration: Calibration = IDENTITY, manifest: dict | None = None, device: str = "cpu",
                 labeller: Labeller | None = None):
        self.detector = detector.to(device).eval()
        self.labeller = labeller
        self.labels = tuple(labels)
        self.config = config
        self.threshold = float(threshold)
        self.calibration = calibration
        self.manifest = manifest or {}
        self.device = device

    @classmethod
    def load(cls, weights_dir: str | Path, device: str = "cpu") -> "ProposalModel":
        """The model in ``weights_dir``; raises ProposalWeightsError when it is not a complete, intact one."""
        weights_dir = Path(weights_dir)
        try:
            manifest = json.loads((weights_dir / MANIFEST).read_text())
        except FileNotFoundError:
            raise ProposalWeightsError(f"no {MANIFEST} in {weights_dir}") from None
        except json.JSONDecodeError as exc:
            raise ProposalWeightsError(f"{weights_dir / MANIFEST} is not valid JSON: {exc.msg}") from None
        try:
            if manifest["format"] != FORMAT:
                raise ProposalWeightsError(f"{weights_dir} holds {manifest['format']!r}, not {FORMAT!r}")
            config = DetectorConfig(**manifest["config"])
            labels, entry = list(manifest["labels"]), manifest["files"]["model"]
            threshold, calibration = float(manifest["threshold"]), Calibration(**manifest["calibration"])
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ProposalWeightsError):
                raise
            raise ProposalWeightsError(f"{weights_dir / MANIFEST} is incomplete: {exc}") from None
        detector = build_detector(config, len(labels), pretrained=False)
        state = torch.load(_checked(weights_dir, entry), map_location="cpu", weights_only=True)
        detector.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
        labeller = manifest["files"].get("labeller")
        labeller = Labeller.from_state(torch.load(_checked(weights_dir, labeller), map_location="cpu", weights_only=True)) \
            if labeller else None
        return cls(detector, labels, config, threshold=threshold, calibration=calibration, manifest=manifest, device=device,
                   labeller=labeller)

    def save(self, out_dir: str | Path, provenance: dict) -> dict:
        """Write the weights (fp16) and then the manifest, each atomically; returns the manifest."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        state = {k: (v.half() if v.is_floating_point() else v).cpu() for k, v in self.detector.state_dict().items()}
        write_atomic(out_dir / WEIGHTS, lambda handle: torch.save(state, handle))
        files = {"model": {**_entry(out_dir / WEIGHTS), "parameters": sum(p.numel() for p in self.detector.parameters())}}
        if self.labeller is not None:
            write_atomic(out_dir / LABELLER, lambda handle: torch.save(self.labeller.state(), handle))
            files["labeller"] = _entry(out_dir / LABELLER)
        manifest = {
            "format": FORMAT, "labels": list(self.labels), "config": asdict(self.config),
            "threshold": self.threshold, "calibration": asdict(self.calibration), "files": files, **provenance,
        }
        write_atomic(out_dir / MANIFEST, lambda handle: handle.write(json.dumps(manifest, indent=2) + "\n"), text=True)
        self.manifest = manifest
        return manifest

    def propose(self, image: HasPixels, threshold: float | None = None, max_objects: int = MAX_OBJECTS) -> list[Proposal]:
        """The objects found in ``image``, most confident first: calibrated score >= ``threshold``
        (the model's own when None), at most ``max_objects``, one per object."""
        threshold = self.threshold if threshold is None else float(threshold)
        boxes, scores, labels = self.detections(image.array)
        keep = np.flatnonzero(scores >= threshold)[: max(0, int(max_objects))]
        return [Proposal(self.labels[labels[i]], tuple(float(v) for v in boxes[i]), float(scores[i])) for i in keep]

    def relabelled(self, proposal: Proposal, array: np.ndarray, mask: np.ndarray) -> Proposal:
        """``proposal`` with the labeller's label for its object ``mask`` (itself without a labeller)."""
        if self.labeller is None:
            return proposal
        return replace(proposal, label=self.labels[int(self.labeller.probabilities(array, [mask])[0].argmax())])

    @torch.no_grad()
    def detections(self, array: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every candidate above the raw floor after suppression: boxes (N, 4) natural px, calibrated
        scores (N,) descending, label indices (N,)."""
        array = check_image(array)
        tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float().div(255).to(self.device)
        output = self.detector([tensor])[0]
        sizes = output["boxes"][:, 2:] - output["boxes"][:, :2]
        keep = (output["scores"] >= FLOOR) & (sizes >= MIN_BOX_PX).all(dim=1)
        boxes, raw, labels = output["boxes"][keep], output["scores"][keep], output["labels"][keep] - 1
        keep = nms(boxes, raw, CROSS_LABEL_IOU)  # sorted by score, descending
        keep = keep[_wholes(boxes[keep], labels[keep])]
        boxes, raw, labels = (t[keep].cpu().numpy() for t in (boxes, raw, labels))
        height, width = array.shape[:2]
        boxes = np.clip(boxes.astype(np.float64), 0, [width, height, width, height])
        return boxes, self.calibration.apply(raw.astype(np.float64)), labels.astype(np.int64)


def _entry(path: Path) -> dict:
    return {"file": path.name, "sha256": sha256_of(path), "bytes": path.stat().st_size}


def _checked(weights_dir: Path, entry: dict) -> Path:
    """The file of a manifest ``entry``, once its sha256 matches; ProposalWeightsError otherwise."""
    try:
        path, expected = weights_dir / entry["file"], entry["sha256"]
    except (KeyError, TypeError):
        raise ProposalWeightsError(f"{weights_dir / MANIFEST} is incomplete: a file entry lacks its name or sha256") from None
    if not path.is_file():
        raise ProposalWeightsError(f"missing weights file {path}")
    if sha256_of(path) != expected:
        raise ProposalWeightsError(f"{path} does not match the sha256 in its manifest")
    return path


def _wholes(boxes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Indices of the boxes (most confident first) that are no part of a more confident box of
    their label (``PART_OF_BOX`` of their area inside it)."""
    corners_min = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    corners_max = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inside = (corners_max - corners_min).clamp(min=0).prod(dim=-1)  # [i, k]: i's area inside k
    area = (boxes[:, 2:] - boxes[:, :2]).prod(dim=-1).clamp(min=1e-6)
    part_of = ((inside / area[:, None] >= PART_OF_BOX) & (labels[:, None] == labels[None, :])).cpu().numpy()
    kept = np.zeros(len(boxes), bool)
    for i in range(len(boxes)):
        kept[i] = not (part_of[i] & kept).any()
    return torch.from_numpy(np.flatnonzero(kept)).to(boxes.device)
