"""One unit of embedding ahead: a task's image, loaded and embedded into the store unless it is
there already. The same code runs in the embedded scheduler's thread and in RQ workers."""

from __future__ import annotations

from dataclasses import dataclass

from backend.embeddings.preemption import background

EMBEDDED, STORED_ALREADY, FAILED = "embedded", "stored_already", "failed"


@dataclass(frozen=True)
class EmbedRequest:
    """A task's image: ``url`` as in the task's data (``task_id`` resolves cloud-storage URIs)."""

    url: str
    task_id: int | None = None
    project: str | None = None


def embed_task_image(sam, images, request: EmbedRequest) -> str:
    """EMBEDDED (computed here) or STORED_ALREADY (in the store, or computed meanwhile by another
    process that this one waited for). ``sam``: a SAM segmenter (``embedding``, ``embedding_key``,
    ``embedding_cache``); ``images``: an ``ImageLoader``. Raises ``ImageError`` when the image cannot
    be loaded, ``Preempted`` when a request needed the encoder meanwhile (nothing stored)."""
    image = images.load(request.url, task_id=request.task_id, background=True)
    if sam.embedding_cache.contains(sam.embedding_key(image)):
        return STORED_ALREADY
    with background():
        sam.embedding(image, background=True)
    return EMBEDDED if sam.embedding_cache.computed_last() else STORED_ALREADY
