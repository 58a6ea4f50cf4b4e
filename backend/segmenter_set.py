"""The segmenters this server answers with, loaded once at start-up.

SAM loads when ``SAM_CHECKPOINT`` names an existing file; the extreme-point model when its weights
folder (``EXTREME_WEIGHTS``, default ``model_weights/extreme``) has a ``manifest.json``. A
segmenter that is not configured, or fails to load, is left out (the server still starts) and
``status`` says why and how to fix it, for ``/health``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from backend.settings import Settings

log = logging.getLogger(__name__)

SAM_HOW_TO = ("set SAM_CHECKPOINT to a SAM checkpoint file (SAM_MODEL_TYPE vit_b/vit_l/vit_h), "
              "or run python -m backend download-sam vit_b")
SAM_MISSING = "missing: " + SAM_HOW_TO


@dataclass
class SegmenterSet:
    """sam / extreme: objects with ``segment(image, prompt) -> Segmentation``, or None.

    sam_name: e.g. "sam-vit_b"; extreme_version: the extreme-point model's version string.
    status: per segmenter, "loaded …" or what is missing, for /health.
    """

    sam: object | None = None
    extreme: object | None = None
    sam_name: str = ""
    extreme_version: str = ""
    status: dict[str, str] = field(default_factory=dict)

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
        found = cls()
        status = {}
        if settings.sam_checkpoint is None:
            status["sam"] = SAM_MISSING
        elif not settings.sam_checkpoint.is_file():
            status["sam"] = f"missing: SAM_CHECKPOINT {settings.sam_checkpoint} does not exist; " + SAM_HOW_TO
        else:
            try:
                from backend.segmenters.embedding_cache import EmbeddingCache
                from backend.segmenters.sam import SamSegmenter

                cache = EmbeddingCache(settings.embedding_cache_size, settings.redis_url)
                found.sam = SamSegmenter.from_checkpoint(settings.sam_model_type, settings.sam_checkpoint, device, cache)
                found.sam_name = f"sam-{settings.sam_model_type}"
                status["sam"] = f"loaded ({found.sam_name} from {settings.sam_checkpoint.name} on {device})"
            except Exception as exc:  # a broken checkpoint must not keep the server down
                log.exception("SAM failed to load from %s", settings.sam_checkpoint)
                status["sam"] = f"failed to load {settings.sam_checkpoint}: {type(exc).__name__}: {exc}"
        manifest = settings.extreme_weights / "manifest.json"
        if not manifest.is_file():
            status["extreme"] = f"missing: no {manifest} (set EXTREME_WEIGHTS or train: python -m backend train)"
        else:
            try:
                from backend.segmenters.extreme import ExtremeSegmenter

                found.extreme = ExtremeSegmenter.load(settings.extreme_weights, device)
                found.extreme_version = str(found.extreme.version)
                status["extreme"] = f"loaded ({found.extreme_version} on {device})"
            except Exception as exc:
                log.exception("extreme-point model failed to load from %s", settings.extreme_weights)
                status["extreme"] = f"failed to load {settings.extreme_weights}: {type(exc).__name__}: {exc}"
        found.status = status
        return found
