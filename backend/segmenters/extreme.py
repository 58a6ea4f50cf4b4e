"""Custom two-stage model inference: 4 extreme points (or a box), and any correction clicks after
them -> mask at natural image size.

Correction clicks (the prompt's points after the 4 extreme points, or a box prompt's points) are
two more input channels, positive and negative; a positive click outside the crop window grows the
prompt box to contain it (``prompt_crop.box_with_clicks``). Each click re-runs the whole model
with every click so far: the answer depends on the clicks, not on an earlier mask.

Pipeline per object: crop window = prompt box + margin (``backend.networks.prompt_crop``) ->
coarse net at ``crop_size`` -> refinement net on the same window at ``refine_size`` -> refined
probabilities pasted back into the natural frame and thresholded at 0.5; with a ``NativeRefinement``
(``backend.segmenters.native_refine``) the uncertain pixels are first decided again by their colour
at the photo's resolution.

Score: the mean certainty max(p, 1 - p) of the refined probabilities over the predicted mask and
a band around its outline (within 5% of the crop side), i.e. how decided the model is
where it matters; near 1 for a crisp confident mask, near 0.5 where it is guessing. It is
computed in crop pixels, so it does not depend on the photo's resolution.
"""

from __future__ import annotations

import time
from pathlib import Path
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from backend.networks.coarse import CoarseNet
from backend.networks.prompt_crop import CropWindow, box_with_clicks, crop_window, network_input
from backend.networks.refine import LOGIT_SCALE, RefineNet
from backend.networks.weights import ModelConfig, load_weights
from backend.prompts import EXTREME_POINTS, Prompt, PromptError, PromptKind, Segmentation
from backend.segmenters.native_refine import NativeRefinement

SCORE_BAND = 0.05


class HasPixels(Protocol):
    array: np.ndarray  # (H, W, 3) uint8 RGB, natural orientation


class ExtremeSegmenter:
    def __init__(self, coarse: CoarseNet, refine: RefineNet, config: ModelConfig, version: str, device: str = "cpu",
                 native: NativeRefinement | None = None):
        self.coarse = coarse.to(device).eval()
        self.refine = refine.to(device).eval()
        self.config = config
        self.version = version
        self.device = device
        self.native = native

    @classmethod
    def load(cls, weights_dir: str | Path, device: str = "cpu", native_refine: bool = False) -> "ExtremeSegmenter":
        """Load a weights directory (manifest.json + sha256-verified stage files); raises WeightsError.
        ``native_refine``: masks refined at the photo's resolution (``NativeRefinement()``)."""
        coarse, refine, config, manifest = load_weights(Path(weights_dir), device)
        return cls(coarse, refine, config, str(manifest["version"]), device, NativeRefinement() if native_refine else None)

    @property
    def model_name(self) -> str:
        return f"extreme-{self.version}"

    def segment(self, image: HasPixels, prompt: Prompt) -> Segmentation:
        """Mask (H, W) bool of the natural image for an EXTREME prompt (4 points, any order, then any
        correction clicks) or a BOX prompt (its points are correction clicks); ``stage_ms`` holds
        the wall time of the coarse stage, the refinement and the paste-back ("native" instead of
        "paste" with a native-resolution refinement)."""
        geometry = prompt_geometry(prompt)
        stage_ms: dict[str, float] = {}
        window, crop = self.predict_crop(image.array, geometry, stage_ms)
        start = time.perf_counter()
        if self.native is None:
            mask = window.paste(crop, image.array.shape[:2], threshold=0.5)
        else:
            mask = self.native.mask(image.array, window, crop)
        stage_ms["paste" if self.native is None else "native"] = (time.perf_counter() - start) * 1000
        return Segmentation(
            mask=mask, score=certainty_score(crop), label=prompt.label, model=self.model_name, stage_ms=stage_ms
        )

    @torch.no_grad()
    def predict_crop(
        self, image: np.ndarray, geometry: "PromptGeometry", stage_ms: dict[str, float] | None = None
    ) -> tuple[CropWindow, np.ndarray]:
        """The crop window and its (R, R) float32 foreground probabilities for a prompt's geometry
        (natural pixels). Each stage's wall time (its input crop included) goes into ``stage_ms``
        ("coarse", "refine") when given."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
        stage_ms = {} if stage_ms is None else stage_ms
        box = box_with_clicks(geometry.box, geometry.positive, self.config.margin)
        window = crop_window(box, self.config.margin)
        start = time.perf_counter()
        # The crop and its mirror image in one batch; averaging the two cancels any left/right bias.
        coarse_input = self._input(image, window, geometry, box, self.config.crop_size)
        coarse_logits = self.coarse(_with_mirror(coarse_input))
        stage_ms["coarse"], start = self._since(start), time.perf_counter()
        refine_input = _with_mirror(self._input(image, window, geometry, box, self.config.refine_size))
        probabilities = torch.sigmoid(self.refine(refine_stage_input(refine_input, coarse_logits)))
        averaged = ((probabilities[0, 0] + probabilities[1, 0].flip(-1)) / 2).float().cpu().numpy()
        stage_ms["refine"] = self._since(start)
        return window, averaged

    def _since(self, start: float) -> float:
        """Milliseconds since ``start``, after the device's queued work is done (CUDA runs asynchronously)."""
        if self.device.startswith("cuda"):
            torch.cuda.synchronize(self.device)
        return (time.perf_counter() - start) * 1000

    def _input(self, image, window: CropWindow, geometry: "PromptGeometry", box, size: int) -> torch.Tensor:
        array = network_input(
            window.extract(image, size), window.to_crop(geometry.points, size), window.box_to_crop(box, size),
            window.to_crop(geometry.positive, size), window.to_crop(geometry.negative, size),
        )
        return torch.from_numpy(array)[None].to(self.device)


def _with_mirror(batch: torch.Tensor) -> torch.Tensor:
    """(1, C, H, W) -> (2, C, H, W): the input and its left-right mirror image."""
    return torch.cat([batch, batch.flip(-1)])


def certainty_score(probabilities: np.ndarray) -> float:
    """Mean of max(p, 1 - p) over the predicted mask and a band around it ( ``SCORE_BAND`` of the
    crop side), for (R, R) crop probabilities; 0 when nothing is predicted."""
    mask = (probabilities > 0.5).astype(np.uint8)
    if not mask.any():
        return 0.0
    radius = max(1, int(SCORE_BAND * probabilities.shape[0]))
    region = cv2.dilate(mask, np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)) > 0
    certainty = np.maximum(probabilities[region], 1.0 - probabilities[region])
    return float(certainty.mean())


def refine_stage_input(refine_input: torch.Tensor, coarse_logits: torch.Tensor) -> torch.Tensor:
    """(B, 8, R, R) refinement input: (B, 7, R, R) RGB/heatmap/box/clicks at the refinement size with
    the (B, 1, S, S) coarse logits upsampled to R and scaled inserted as channel 3."""
    coarse_up = F.interpolate(coarse_logits, size=refine_input.shape[-2:], mode="bilinear", align_corners=False)
    return torch.cat([refine_input[:, :3], coarse_up / LOGIT_SCALE, refine_input[:, 3:]], dim=1)


@dataclass(frozen=True)
class PromptGeometry:
    """What the model reads from a prompt, in natural pixels: the extreme points (4, 2) (empty for
    a box), the prompt box (x0, y0, x1, y1), and the correction clicks, positive and negative (k, 2)."""

    points: np.ndarray
    box: tuple[float, float, float, float]
    positive: np.ndarray
    negative: np.ndarray


def prompt_geometry(prompt: Prompt) -> PromptGeometry:
    """The geometry of an EXTREME prompt (4 extreme points, then correction clicks) or a BOX prompt
    (its points are correction clicks); a PromptError for any other prompt, fewer than 4 extreme
    points, labels that do not match the points, or non-finite coordinates."""
    if prompt.kind not in (PromptKind.EXTREME, PromptKind.BOX):
        raise PromptError(f"the extreme-point model takes EXTREME or BOX prompts, not {prompt.kind.value}")
    points = np.asarray(prompt.points, np.float32).reshape(-1, 2)
    labels = np.asarray(prompt.point_labels).reshape(-1)
    if len(labels) != len(points):
        raise PromptError(f"{len(points)} points but {len(labels)} point labels")
    if not np.isfinite(points).all():
        raise PromptError("prompt points must be finite")
    if not np.isin(labels, (0, 1)).all():
        raise PromptError("point labels must be 1 (positive) or 0 (negative)")
    if prompt.kind == PromptKind.EXTREME:
        if len(points) < EXTREME_POINTS:
            raise PromptError(f"an extreme-point prompt needs {EXTREME_POINTS} points, got {len(points)}")
        if not labels[:EXTREME_POINTS].all():
            raise PromptError(f"the first {EXTREME_POINTS} points of an extreme-point prompt must be positive")
        extreme, clicks, click_labels = points[:EXTREME_POINTS], points[EXTREME_POINTS:], labels[EXTREME_POINTS:]
        (x0, y0), (x1, y1) = extreme.min(axis=0), extreme.max(axis=0)
        box = (float(x0), float(y0), float(x1), float(y1))
    else:
        if prompt.box is None:
            raise PromptError("a box prompt needs a box")
        x0, y0, x1, y1 = (float(v) for v in prompt.box)
        if not all(np.isfinite((x0, y0, x1, y1))):
            raise PromptError("a box prompt needs a finite box")
        extreme, clicks, click_labels = np.zeros((0, 2), np.float32), points, labels
        box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    return PromptGeometry(extreme, box, clicks[click_labels == 1], clicks[click_labels == 0])
