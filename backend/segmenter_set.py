"""The segmenters this server answers with, loaded once at start-up.

SAM loads when ``SAM_CHECKPOINT`` names an existing file; the extreme-point model when its weights
folder (``EXTREME_WEIGHTS``, default ``model_weights/extreme``) has a ``manifest.json``. A
segmenter that is not configured, or fails to load, is left out (the server still starts) and
``status`` says why and how to fix it, for ``/health``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from backend.segmenters.sam_types import DEFAULT_SAM_TYPE, SAM_TYPES
from backend.settings import Settings

log = logging.getLogger(__name__)

SAM_HOW_TO = (f"set SAM_CHECKPOINT to a SAM checkpoint file and SAM_MODEL_TYPE to its type ({', '.join(SAM_TYPES)}), "
              f"or run python -m backend download-sam {DEFAULT_SAM_TYPE}, which prints both")
SAM_MISSING = "missing: " + SAM_HOW_TO


@dataclass
class SegmenterSet:
    """sam / extreme: objects with ``segment(image, prompt) -> Segmentation``, or None.

    sam_name: e.g. "sam2.1-hiera_tiny" or "sam-vit_b"; extreme_version: the extreme-point model's version string.
    status: per segmenter, "loaded …" or what is missing, for /health.
    embeddings: the SAM embedding cache (``EmbeddingCache``) when SAM is loaded, for embedding ahead
    and /health.
    """

    sam: object | None = None
    extreme: object | None = None
    sam_name: str = ""
    extreme_version: str = ""
    status: dict[str, str] = field(default_factory=dict)
    embeddings: object | None = None

    def __post_init__(self):
        self.status.setdefault("sam", f"loaded ({self.sam_name})" if self.sam is not None else SAM_MISSING)
        self.status.setdefault("extreme", f"loaded ({self.extreme_version})" if self.extreme is not None
                               else "missing: no extreme-point model weights")

    @property
    def loaded(self) -> list[str]:
        return [name for name, model in (("sam", self.sam), ("extreme", self.extreme)) if model is not None]

    @classmethod
    def load(cls, settings: Settings) -> "SegmenterSet":
        device = settings.resolved_device()
        sam, sam_status = _load_sam(settings, device)
        extreme, extreme_status = _load_extreme(settings, device)
        return cls(sam=sam, extreme=extreme, sam_name=sam.model_name if sam else "",
                   extreme_version=str(extreme.version) if extreme else "",
                   status={"sam": sam_status, "extreme": extreme_status},
                   embeddings=sam.embedding_cache if sam else None)


def _load_sam(settings: Settings, device: str) -> tuple[object | None, str]:
    checkpoint = settings.sam_checkpoint
    if checkpoint is None:
        return None, SAM_MISSING
    if not checkpoint.is_file():
        return None, f"missing: SAM_CHECKPOINT {checkpoint} does not exist; {SAM_HOW_TO}"
    try:
        from backend.checksums import file_fingerprint
        from backend.embeddings.cache import EmbeddingCache
        from backend.segmenters.sam import SamSegmenter

        # The store outlives the process: its keys name the checkpoint, not just the architecture. It is
        # made once the checkpoint has loaded: a server without SAM keeps no embedding store.
        def cache():
            return EmbeddingCache.from_settings(settings, namespace=file_fingerprint(checkpoint))

        sam = SamSegmenter.from_checkpoint(settings.sam_model_type, checkpoint, device, cache, settings.sam_precision)
    except Exception as exc:  # a broken checkpoint must not keep the server down
        log.exception("SAM failed to load from %s", checkpoint)
        return None, f"failed to load {checkpoint}: {type(exc).__name__}: {exc}"
    return sam, f"loaded ({sam.model_name} from {checkpoint.name} on {device}, {sam.precision} encoder)"


def _load_extreme(settings: Settings, device: str) -> tuple[object | None, str]:
    manifest = settings.extreme_weights / "manifest.json"
    if not manifest.is_file():
        return None, f"missing: no {manifest} (set EXTREME_WEIGHTS or train: python -m backend train)"
    try:
        from backend.segmenters.extreme import ExtremeSegmenter

        extreme = ExtremeSegmenter.load(settings.extreme_weights, device, settings.extreme_native_refine)
    except Exception as exc:
        log.exception("extreme-point model failed to load from %s", settings.extreme_weights)
        return None, f"failed to load {settings.extreme_weights}: {type(exc).__name__}: {exc}"
    return extreme, f"loaded ({extreme.version} on {device})"
