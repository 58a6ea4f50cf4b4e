"""Segment Anything (SAM) for box, click and extreme-point prompts, with cached image embeddings.

Follows ``segment_anything.SamPredictor`` (resize the longest side to the encoder's input size,
pad, encode once; prompt encoder + mask decoder per prompt), but keeps no per-image state in the
object: the embedding lives in an ``EmbeddingCache`` keyed by image content, so one segmenter
serves concurrent requests on different images.

Frames. Prompts arrive in natural-image pixels (``backend.prompts``: continuous coordinates,
(0, 0) = top-left corner of the image). SAM's *input frame* is the image resized so its longest
side is ``img_size`` (1024), top-left aligned and zero-padded to a square. SAM's prompt encoder
adds 0.5 to every coordinate (it takes pixel indices and moves them to pixel centres), so a
natural point p is passed as ``p * scale - 0.5`` and lands exactly on ``p * scale``.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch
from segment_anything import sam_model_registry
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide

from backend.images import LoadedImage
from backend.prompts import Prompt, PromptKind, Segmentation
from backend.segmenters.embedding_cache import EmbeddingCache

MODEL_TYPES = ("vit_b", "vit_l", "vit_h")
# Points this far outside the image (percent rounding in Label Studio) are moved onto its edge.
_EDGE_TOLERANCE_PX = 0.5


class SamSegmenter:
    """``segment(image, prompt) -> Segmentation`` with SAM.

    BOX: the box, plus any clicks in ``prompt.points``. POINTS: positive/negative clicks.
    EXTREME: the box bounding the 4 points plus the 4 points as positive clicks.
    A single click alone is ambiguous, so SAM proposes 3 masks; every other prompt gets one mask.
    The answer is the proposal with the highest predicted IoU, which is also the score.

    Thread-safe: the image encoder runs under the cache's per-image computation and one encoder
    pass at a time (two at once would only split the cores and double the peak memory); the
    decoder is cheap and runs concurrently.
    """

    def __init__(self, sam_model: Sam, model_name: str, cache: EmbeddingCache):
        self.sam = sam_model.eval()
        self.model_name = model_name
        self.embedding_cache = cache
        self._resize = ResizeLongestSide(sam_model.image_encoder.img_size)
        self._encoder_lock = threading.Lock()

    @classmethod
    def from_checkpoint(
        cls, model_type: str, checkpoint_path: str | Path, device: str, cache: EmbeddingCache
    ) -> "SamSegmenter":
        """A segmenter with the weights in ``checkpoint_path`` (never downloads).

        Raises ValueError for an unknown model type or a checkpoint of another architecture,
        FileNotFoundError when the file is missing.
        """
        if model_type not in MODEL_TYPES:
            raise ValueError(f"unknown SAM model type {model_type!r}; expected one of {', '.join(MODEL_TYPES)}")
        path = Path(checkpoint_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"SAM checkpoint {path} does not exist; download it with `python -m backend download-sam {model_type}`"
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated download, an HTML error page, a foreign pickle, …
            raise ValueError(f"{path} cannot be read as a PyTorch checkpoint ({type(exc).__name__})") from None
        sam = sam_model_registry[model_type]()
        try:
            sam.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError):
            raise ValueError(
                f"{path} is not a SAM {model_type} checkpoint (its weights do not fit that architecture)"
            ) from None
        return cls(sam.to(device), f"sam-{model_type}", cache)

    def segment(self, image: LoadedImage, prompt: Prompt) -> Segmentation:
        """The mask for ``prompt`` on ``image``: bool (H, W) at the natural image size.

        Raises ValueError for prompts that do not fit the image (points outside it, boxes with
        no area inside it, a kind without the inputs it needs).
        """
        height, width = image.height, image.width
        box, points, labels = _sam_inputs(prompt, width, height)
        input_h, input_w = self._resize.get_preprocess_shape(height, width, self._resize.target_length)
        scale = np.array([input_w / width, input_h / height])  # natural -> input frame, per axis
        device = self.sam.device

        def input_frame(xy: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(xy * scale - 0.5, dtype=torch.float32, device=device)

        point_input = None
        if points is not None:
            point_input = (input_frame(points)[None], torch.as_tensor(labels, device=device)[None])
        box_input = None if box is None else input_frame(box.reshape(2, 2)).reshape(1, 4)
        with torch.no_grad():
            sparse, dense = self.sam.prompt_encoder(points=point_input, boxes=box_input, masks=None)
            low_res_logits, predicted_iou = self.sam.mask_decoder(
                image_embeddings=self.embedding(image).to(device),
                image_pe=self.sam.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=box is None and len(points) == 1,  # one click alone
            )
            best = int(predicted_iou[0].argmax())
            # Upscale only the chosen proposal: for a large photo each full-size float mask is big.
            logits = self.sam.postprocess_masks(low_res_logits[:, best : best + 1], (input_h, input_w), (height, width))
            mask = (logits[0, 0] > self.sam.mask_threshold).cpu().numpy()
        score = float(predicted_iou[0, best].clamp(0.0, 1.0))
        return Segmentation(mask=mask, score=score, label=prompt.label, model=self.model_name)

    def embedding(self, image: LoadedImage, background: bool = False) -> torch.Tensor:
        """The image encoder's output (1, C, img_size/16, img_size/16) for ``image``: computed on
        first use (seconds on CPU), then served from the cache. ``background``: computed ahead of
        any request (``EmbeddingCache.get_or_compute``)."""
        return self.embedding_cache.get_or_compute(self.embedding_key(image), lambda: self._encode(image.array),
                                                   background=background)

    def embedding_key(self, image: LoadedImage) -> str:
        """The cache key of ``image``'s embedding: this model and the image's content."""
        return f"{self.model_name}:{image.key}"

    def _encode(self, array: np.ndarray) -> torch.Tensor:
        with self._encoder_lock, torch.no_grad():
            resized = self._resize.apply_image(array)  # (input_h, input_w, 3) uint8, longest side img_size
            pixels = torch.as_tensor(resized, device=self.sam.device).permute(2, 0, 1)[None].float()
            return self.sam.image_encoder(self.sam.preprocess(pixels))


def _sam_inputs(
    prompt: Prompt, width: int, height: int
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Validated (box (4,) or None, points (N, 2) or None, point labels (N,) or None) in natural pixels."""
    points = _points_inside(np.asarray(prompt.points, dtype=np.float64).reshape(-1, 2), width, height)
    labels = np.asarray(prompt.point_labels, dtype=np.int64).reshape(-1)
    if len(labels) != len(points):
        raise ValueError(f"{len(points)} points but {len(labels)} point labels")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("point labels must be 1 (positive click) or 0 (negative click)")
    if prompt.kind == PromptKind.BOX:
        if prompt.box is None:
            raise ValueError("a box prompt needs a box")
        box = _box_inside(np.asarray(prompt.box, dtype=np.float64), width, height)
        return box, (points if len(points) else None), (labels if len(points) else None)
    if prompt.kind == PromptKind.POINTS:
        if not (labels == 1).any():
            raise ValueError("a click prompt needs at least one positive click")
        return None, points, labels
    if prompt.kind == PromptKind.EXTREME:
        if len(points) != 4:
            raise ValueError(f"an extreme-point prompt needs exactly 4 points, got {len(points)}")
        box = _box_inside(np.concatenate([points.min(axis=0), points.max(axis=0)]), width, height)
        return box, points, np.ones(4, dtype=np.int64)
    raise ValueError(f"SAM cannot answer a {prompt.kind!r} prompt")


def _points_inside(points: np.ndarray, width: int, height: int) -> np.ndarray:
    if not np.isfinite(points).all():
        raise ValueError("point coordinates must be finite numbers")
    low, high = -_EDGE_TOLERANCE_PX, np.array([width, height]) + _EDGE_TOLERANCE_PX
    outside = ((points < low) | (points > high)).any(axis=1)
    if outside.any():
        x, y = points[outside][0]
        raise ValueError(f"point ({x:.1f}, {y:.1f}) lies outside the {width}x{height} image")
    return np.clip(points, 0, [width, height])


def _box_inside(box: np.ndarray, width: int, height: int) -> np.ndarray:
    """``box`` (x0, y0, x1, y1) clipped to the image; ValueError if no area is left."""
    if box.shape != (4,) or not np.isfinite(box).all():
        raise ValueError("a box must be 4 finite numbers (x0, y0, x1, y1)")
    clipped = np.clip(box, 0, [width, height, width, height])
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        x0, y0, x1, y1 = box
        raise ValueError(f"box ({x0:.1f}, {y0:.1f}, {x1:.1f}, {y1:.1f}) has no area inside the {width}x{height} image")
    return clipped
