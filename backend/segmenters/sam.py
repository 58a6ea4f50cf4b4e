"""Segment Anything for box, click and extreme-point prompts: SAM 1 and SAM 2.1 behind one facade,
with cached image features.

``SamSegmenter`` does what both families share: validating prompts, moving them into the model's
input frame, the choice between one mask and three proposals, picking the proposal with the highest
predicted IoU and upscaling only that one to the natural image size, and computing the image
features once per image through an ``EmbeddingCache`` keyed by image content (so one segmenter
serves concurrent requests on different images). What differs between the families lives in small
adapters with the same four methods: ``SegmentAnything`` here (SAM 1, ``segment_anything``) and
``Sam21`` in ``backend.segmenters.sam21``.

Frames. Prompts arrive in natural-image pixels (``backend.prompts``: continuous coordinates,
(0, 0) = top-left corner of the image). Each adapter maps them to its *input frame* by one scale
per axis (``input_scale``). Both families' prompt encoders add 0.5 to every coordinate (they take
pixel indices and move them to pixel centres), so a natural point p is passed as
``p * scale - 0.5`` and lands exactly on ``p * scale``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, Union

import numpy as np
import torch
from segment_anything import sam_model_registry
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide

from backend.prompts import LoadedImage, Prompt, PromptError, PromptKind, Segmentation
from backend.segmenters import sam21
from backend.embeddings.cache import EmbeddingCache
from backend.segmenters.sam_types import SAM1, SAM21, SAM_TYPES, sam_type

# SAM_PRECISION: the image encoder's arithmetic (the decoder is cheap and stays float32).
PRECISIONS = ("auto", "float32", "bfloat16")
# Points this far outside the image (percent rounding in Label Studio) are moved onto its edge.
_EDGE_TOLERANCE_PX = 0.5

# What an adapter's encoder returns and the cache keeps: a tensor, or named tensors (SAM 2.1).
Features = Union[torch.Tensor, dict[str, torch.Tensor]]


class PromptableModel(Protocol):
    """A SAM family's image encoder, prompt encoder + mask decoder and mask upscaling.

    Points and boxes reach ``decode`` as float tensors in the input frame, already shifted by -0.5
    (see the module docstring): box (4,) x0, y0, x1, y1; points (N, 2) with int labels (N,) 1/0.
    """

    mask_threshold: float

    @property
    def device(self) -> torch.device: ...

    def input_scale(self, height: int, width: int) -> np.ndarray:
        """(x scale, y scale) from natural pixels to the input frame."""

    def encode(self, array: np.ndarray) -> Features:
        """The image features of an (H, W, 3) uint8 RGB image (seconds on a CPU)."""

    def feature_shapes(self) -> tuple | dict[str, tuple]:
        """The shapes ``encode`` returns (``codec.shapes_of`` of its features): a stored embedding of
        other shapes is not served."""

    def decode(
        self,
        features: Features,
        box: torch.Tensor | None,
        points: torch.Tensor | None,
        labels: torch.Tensor | None,
        multimask: bool,
        mask_input: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(low-res mask logits (1, K, h, w), predicted IoU (1, K)): K = 3 proposals or 1 mask.
        ``mask_input``: low-res logits (1, 1, h, w) of the previous answer to refine, or None."""

    def upscale(self, low_res_logits: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Low-res logits (1, 1, h, w) -> logits (1, 1, height, width) at the natural size."""


class SamSegmenter:
    """``segment(image, prompt) -> Segmentation`` with SAM 1 or SAM 2.1.

    BOX: the box, plus any clicks in ``prompt.points``. POINTS: positive/negative clicks.
    EXTREME: the box bounding the first 4 points plus those 4 as positive clicks, then any further
    points as correction clicks with their labels.
    A single click alone is ambiguous, so SAM proposes 3 masks; every other prompt gets one mask.
    The answer is the proposal with the highest predicted IoU, which is also the score.

    Correction clicks refine instead of starting over: a BOX with clicks and an EXTREME prompt with
    corrections are decoded as the annotator built them, the box (or box and extreme points) first,
    then one click more at a time, each run taking the previous one's low-res logits as its mask
    input (as SAM was trained for interactive use, and as Meta's predictors take ``mask_input``).
    The image features are computed once, so each further run is one decoder pass (milliseconds).

    Thread-safe: the image encoder runs under the cache's per-image computation and one encoder
    pass at a time (two at once would only split the cores and double the peak memory); the
    decoder is cheap and runs concurrently.
    """

    def __init__(self, model: PromptableModel, model_name: str, cache: EmbeddingCache,
                 encoder_dtype: torch.dtype = torch.float32):
        self.model = model
        self.model_name = model_name  # e.g. "sam-vit_b", "sam2.1-hiera_tiny"
        self.embedding_cache = cache
        self.encoder_dtype = encoder_dtype  # float32, or bfloat16 under autocast (``encoder_dtype``)
        self._encoder_lock = threading.Lock()

    @classmethod
    def from_checkpoint(
        cls, model_type: str, checkpoint_path: str | Path, device: str,
        cache: EmbeddingCache | Callable[[], EmbeddingCache], precision: str = "float32",
    ) -> "SamSegmenter":
        """A segmenter with the weights in ``checkpoint_path``, an official checkpoint file of
        ``model_type`` (one of ``sam_types.SAM_TYPES``), its image encoder at ``precision`` (one of
        ``PRECISIONS``, see ``encoder_dtype``); never downloads. ``cache``, or a function making it,
        called once the checkpoint has loaded (so that no store is created for a file that fails).

        Raises ValueError for an unknown model type or precision, an unreadable file or a checkpoint
        of another architecture, FileNotFoundError when the file is missing.
        """
        sam_type(model_type)  # ValueError naming the known types
        dtype = encoder_dtype(model_type, precision, device)
        path = Path(checkpoint_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"SAM checkpoint {path} does not exist; download it with `python -m backend download-sam {model_type}`"
            )
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated download, an HTML error page, a foreign pickle, …
            raise ValueError(f"{path} cannot be read as a PyTorch checkpoint ({type(exc).__name__})") from None
        family = adapter_for(model_type)
        network = family.build(model_type)
        try:
            network.load_state_dict(family.state_dict_of(checkpoint))
        except (RuntimeError, TypeError, AttributeError, KeyError, ValueError):
            raise ValueError(f"{path} is not a {model_type} checkpoint ({_mismatch_hint(path, model_type)})") from None
        return cls(family(network.to(device)), family.model_name(model_type), cache() if callable(cache) else cache,
                   dtype)

    def segment(self, image: LoadedImage, prompt: Prompt) -> Segmentation:
        """The mask for ``prompt`` on ``image``: bool (H, W) at the natural image size.

        Raises ValueError for prompts that do not fit the image (points outside it, boxes with
        no area inside it, a kind without the inputs it needs).
        """
        height, width = image.height, image.width
        box, points, labels, first = _sam_inputs(prompt, width, height)
        scale = self.model.input_scale(height, width)
        device = self.model.device

        def input_frame(xy: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(xy * scale - 0.5, dtype=torch.float32, device=device)

        count = 0 if points is None else len(points)
        with torch.no_grad():
            features = _each_tensor(self.embedding(image), lambda tensor: tensor.to(device))
            previous = None
            for used in range(first, count + 1) if count else [0]:  # one click more per run (corrections)
                low_res_logits, predicted_iou = self.model.decode(
                    features,
                    box=None if box is None else input_frame(box.reshape(2, 2)).reshape(4),
                    points=input_frame(points[:used]) if used else None,
                    labels=torch.as_tensor(labels[:used], device=device) if used else None,
                    multimask=box is None and used == 1,  # one click alone
                    mask_input=previous,
                )
                best = int(predicted_iou[0].argmax())
                previous = low_res_logits[:, best : best + 1]
            # Upscale only the chosen proposal: for a large photo each full-size float mask is big.
            logits = self.model.upscale(previous, height, width)
            mask = (logits[0, 0] > self.model.mask_threshold).cpu().numpy()
        score = float(predicted_iou[0, best].clamp(0.0, 1.0))
        return Segmentation(mask=mask, score=score, label=prompt.label, model=self.model_name)

    def embedding(self, image: LoadedImage, background: bool = False) -> Features:
        """The image features the decoder needs for ``image`` (SAM 1: one tensor (1, 256, 64, 64);
        SAM 2.1: a dict of tensors): computed on first use (seconds on CPU), then served from the
        cache, which may hand them back on the CPU. ``background``: computed ahead of any request
        (``EmbeddingCache.get_or_compute``)."""
        return self.embedding_cache.get_or_compute(self.embedding_key(image), lambda: self._encode(image.array),
                                                   background=background, shapes=self.model.feature_shapes())

    @property
    def precision(self) -> str:
        """The image encoder's precision by name: "float32" or "bfloat16"."""
        return str(self.encoder_dtype).removeprefix("torch.")

    def embedding_key(self, image: LoadedImage) -> str:
        """The cache key of ``image``'s features: this model, its encoder's precision (bfloat16
        features differ a little from float32 ones) and the image's content."""
        precision = "" if self.encoder_dtype == torch.float32 else f"-{self.precision}"
        return f"{self.model_name}{precision}:{image.key}"

    def _encode(self, array: np.ndarray) -> Features:
        reduced = self.encoder_dtype != torch.float32
        with self._encoder_lock, torch.no_grad(), torch.autocast(
            self.model.device.type, dtype=self.encoder_dtype, enabled=reduced
        ):
            features = self.model.encode(array)
        return _each_tensor(features, torch.Tensor.float)  # the decoder and the embedding store take float32


class SegmentAnything:
    """SAM 1 (``segment_anything``): the image is resized so its longest side is ``img_size`` (1024),
    top-left aligned and zero-padded to a square; masks are upscaled to that square, the padding cut
    off, then resized to the natural size (as ``segment_anything.SamPredictor`` does)."""

    def __init__(self, sam: Sam):
        self.sam = sam.eval()
        self.mask_threshold = sam.mask_threshold
        self._resize = ResizeLongestSide(sam.image_encoder.img_size)

    @staticmethod
    def build(model_type: str) -> Sam:
        """SAM ``model_type`` with random weights, on the CPU."""
        return sam_model_registry[SAM_TYPES[model_type].config]()

    @staticmethod
    def state_dict_of(checkpoint: dict) -> dict:
        return checkpoint  # the official files are the bare state dict

    @staticmethod
    def model_name(model_type: str) -> str:
        return f"sam-{model_type}"

    @property
    def device(self) -> torch.device:
        return self.sam.device

    def input_scale(self, height: int, width: int) -> np.ndarray:
        input_h, input_w = self._input_size(height, width)
        return np.array([input_w / width, input_h / height])

    def feature_shapes(self) -> tuple:
        encoder = self.sam.prompt_encoder
        return (1, encoder.embed_dim, *encoder.image_embedding_size)

    def encode(self, array: np.ndarray) -> torch.Tensor:
        resized = self._resize.apply_image(array)  # (input_h, input_w, 3) uint8, longest side img_size
        pixels = torch.as_tensor(resized, device=self.sam.device).permute(2, 0, 1)[None].float()
        return self.sam.image_encoder(self.sam.preprocess(pixels))

    def decode(self, features, box, points, labels, multimask, mask_input=None):
        sparse, dense = self.sam.prompt_encoder(
            points=None if points is None else (points[None], labels[None]),
            boxes=None if box is None else box[None],
            masks=mask_input,
        )
        return self.sam.mask_decoder(
            image_embeddings=features,
            image_pe=self.sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )

    def upscale(self, low_res_logits: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return self.sam.postprocess_masks(low_res_logits, self._input_size(height, width), (height, width))

    def _input_size(self, height: int, width: int) -> tuple[int, int]:
        return self._resize.get_preprocess_shape(height, width, self._resize.target_length)


def adapter_for(model_type: str) -> type[SegmentAnything] | type[sam21.Sam21]:
    """The adapter class of ``model_type``'s family (``build``, ``state_dict_of``, ``model_name``)."""
    return SegmentAnything if SAM_TYPES[model_type].family == SAM1 else sam21.Sam21


def _mismatch_hint(path: Path, model_type: str) -> str:
    """Why a checkpoint may not fit, and which setting fixes it when its file name says."""
    reason = "its weights do not fit that architecture"
    named_for = [other for other, official in SAM_TYPES.items() if official.filename == path.name]
    if named_for and named_for[0] != model_type:
        return f"{reason}; it is named like the {named_for[0]} file: set SAM_MODEL_TYPE={named_for[0]}"
    return f"{reason}; the official file is {SAM_TYPES[model_type].filename}"


def encoder_dtype(model_type: str, precision: str, device: str) -> torch.dtype:
    """The image encoder's dtype for SAM_PRECISION ``precision`` on ``device``.

    "auto": bfloat16 for SAM 2.1, whose models Meta trained in bfloat16 mixed precision and runs
    under bfloat16 autocast, where ``device`` computes bfloat16 natively (CUDA GPUs that support it,
    CPUs with AVX512-BF16 or AMX: about 1.7x faster there); float32 for SAM 1 (Meta runs it in
    float32) and everywhere else. "float32" / "bfloat16" force one. Raises ValueError for an unknown
    precision, or bfloat16 on a device that would only emulate it (slower than float32).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown SAM_PRECISION {precision!r}; expected one of {', '.join(PRECISIONS)}")
    native = native_bfloat16(device)
    if precision == "bfloat16" and not native:
        raise ValueError(f"SAM_PRECISION=bfloat16, but {device} has no native bfloat16 arithmetic "
                         "(it would be slower than float32); use auto or float32")
    if precision == "bfloat16" or (precision == "auto" and native and SAM_TYPES[model_type].family == SAM21):
        return torch.bfloat16
    return torch.float32


def native_bfloat16(device: str) -> bool:
    """Whether ``device`` ("cpu", "cuda", "cuda:1", …) computes bfloat16 in hardware."""
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def _each_tensor(features: Features, function) -> Features:
    """``function`` applied to the tensor, or to each named tensor (SAM 2.1)."""
    if isinstance(features, dict):
        return {name: function(tensor) for name, tensor in features.items()}
    return function(features)


def _sam_inputs(
    prompt: Prompt, width: int, height: int
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None, int]:
    """Validated (box (4,) or None, points (N, 2) or None, point labels (N,) or None, how many
    points the first decoder run takes: the rest are corrections, one more per run) in natural pixels."""
    points = _points_inside(np.asarray(prompt.points, dtype=np.float64).reshape(-1, 2), width, height)
    labels = np.asarray(prompt.point_labels, dtype=np.int64).reshape(-1)
    if len(labels) != len(points):
        raise PromptError(f"{len(points)} points but {len(labels)} point labels")
    if not np.isin(labels, (0, 1)).all():
        raise PromptError("point labels must be 1 (positive click) or 0 (negative click)")
    if prompt.kind == PromptKind.BOX:
        if prompt.box is None:
            raise PromptError("a box prompt needs a box")
        box = _box_inside(np.asarray(prompt.box, dtype=np.float64), width, height)
        return box, (points if len(points) else None), (labels if len(points) else None), 0
    if prompt.kind == PromptKind.POINTS:
        if not (labels == 1).any():
            raise PromptError("a click prompt needs at least one positive click")
        return None, points, labels, len(points)
    if prompt.kind == PromptKind.EXTREME:
        if len(points) < 4:
            raise PromptError(f"an extreme-point prompt needs 4 points (then any corrections), got {len(points)}")
        extreme = points[:4]
        box = _box_inside(np.concatenate([extreme.min(axis=0), extreme.max(axis=0)]), width, height)
        return box, points, np.concatenate([np.ones(4, dtype=np.int64), labels[4:]]), 4
    raise PromptError(f"SAM cannot answer a {prompt.kind!r} prompt")


def _points_inside(points: np.ndarray, width: int, height: int) -> np.ndarray:
    if not np.isfinite(points).all():
        raise PromptError("point coordinates must be finite numbers")
    low, high = -_EDGE_TOLERANCE_PX, np.array([width, height]) + _EDGE_TOLERANCE_PX
    outside = ((points < low) | (points > high)).any(axis=1)
    if outside.any():
        x, y = points[outside][0]
        raise PromptError(f"point ({x:.1f}, {y:.1f}) lies outside the {width}x{height} image")
    return np.clip(points, 0, [width, height])


def _box_inside(box: np.ndarray, width: int, height: int) -> np.ndarray:
    """``box`` (x0, y0, x1, y1) clipped to the image; ValueError if no area is left."""
    if box.shape != (4,) or not np.isfinite(box).all():
        raise PromptError("a box must be 4 finite numbers (x0, y0, x1, y1)")
    clipped = np.clip(box, 0, [width, height, width, height])
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        x0, y0, x1, y1 = box
        raise PromptError(f"box ({x0:.1f}, {y0:.1f}, {x1:.1f}, {y1:.1f}) has no area inside the {width}x{height} image")
    return clipped
