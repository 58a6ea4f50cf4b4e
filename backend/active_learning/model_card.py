"""A training job's progress and outcome where the user looks: the ML backend's card in Label Studio
(*Settings → Model*), through ``PATCH /api/ml/<id>``.

What Label Studio 1.23.2 offers (``label_studio/ml/models.py``, ``serializers.py``, ``api.py``; the
card is ``MachineLearningList.jsx`` of its web app):

- The card shows the backend's state (Connected, Error, Training, …), its ``title`` and URL; the
  ``description`` shows in the card's *Edit* form. So the title carries a short status after the
  user's own title ("segmentation assist — training 40%", "… — published p3-v2 (held-out mIoU
  0.61 → 0.72)", "… — not published (p3-v1 serves)", "… — training failed"), the description the
  whole outcome.
- ``PATCH /api/ml/<id>`` checks the connection again (our ``/health`` and ``/setup``) and needs the
  backend's ``url``, ``project`` and authentication in its body. Label Studio then takes
  ``model_version`` from our ``/setup`` answer (the connection's *auto_update*, on by default), so
  after a publish the ML backend's ``model_version`` is the new version at once.
- A new title keeps the project's choice of predictions: Label Studio moves ``project.model_version``
  along when it named the old title.
- Which ML backend is ours: with ``ML_BACKEND_URL``, the project's backends with that URL; else
  those whose ``model_version`` is one of ours (``segassist-…``). ``GET /api/ml?project=`` makes
  Label Studio call every backend's ``/health`` and ``/setup`` first: never call it inside ``/setup``.

Label Studio down or refusing never fails the training job: the failure is logged, the job's later
progress is not sent, its outcome is still tried, and ``show_outcome`` says how it went (the job's
result keeps that).
"""

from __future__ import annotations

import logging
import re
import time
from typing import Callable

from backend.jobs.store import FAILED, FINISHED, Job, outcome_summary
from backend.label_studio_client import LabelStudioClient, LabelStudioError
from backend.model import MODEL_VERSION_PREFIX

logger = logging.getLogger(__name__)

SEPARATOR = " — "
DEFAULT_TITLE = "segmentation assist"
# The status this module appended to a title earlier (replaced, never stacked).
_STATUS = re.compile(rf"{SEPARATOR}(?:training|published|not published)\b.*\Z", re.S)
# Running jobs update the card when their stage changes, and at most this often within a stage.
PROGRESS_INTERVAL_S = 60.0
CARD_TIMEOUT_S = 15.0  # Label Studio calls /health and /setup of the backend three times per update


class NotConnected(LabelStudioError):
    """No ML backend of the project is this backend."""


def base_title(title: str | None) -> str:
    """The user's title without the status this module added."""
    return _STATUS.sub("", title or "").strip() or DEFAULT_TITLE


def running_status(progress: dict) -> str:
    fraction = progress.get("fraction")
    return f"training {round(100 * fraction)}%" if isinstance(fraction, (int, float)) else "training"


def outcome_status(job: Job) -> str:
    """The short status of an ended job for the title."""
    if job.state == FAILED:
        return "training failed"
    result = job.result
    if result.get("published"):
        before, after = result.get("miou_before"), result.get("miou_after")
        label = result.get("figures", "held-out mIoU")
        figures = f" ({label} {before} → {after})" if before is not None and after is not None else ""
        return f"published {result.get('version')}{figures}"
    parent = result.get("parent")
    return f"not published ({parent} serves)" if parent else "not published"


def description(job: Job, progress: dict | None = None) -> str:
    """The card's description: the job, then its progress or its outcome in full."""
    if progress is not None:
        state = f"{progress.get('stage', 'starting')}: {progress.get('message', '')}".strip(": ")
    else:
        state = outcome_summary(job)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return f"Training job {job.id} ({job.trigger}), {stamp}:\n{state}"


class ModelCard:
    """One training job's card updates. ``client``: the Label Studio client (default: from settings)."""

    def __init__(self, settings, job: Job, client: LabelStudioClient | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.job = job
        self.client = client or LabelStudioClient.from_settings(settings, timeout_s=CARD_TIMEOUT_S)
        self.backend_url = settings.ml_backend_url
        self._clock = clock
        self._failed = False
        self._shown: tuple[str, float] | None = None  # (stage, when) of the last progress sent

    def show_progress(self, progress: dict) -> None:
        """The running job's progress ({"stage", "fraction", "message"}), when its stage changed or
        ``PROGRESS_INTERVAL_S`` passed; nothing more once Label Studio failed to take one."""
        stage, now = progress.get("stage"), self._clock()
        if self._failed or (self._shown and self._shown[0] == stage and now - self._shown[1] < PROGRESS_INTERVAL_S):
            return
        self._shown = (stage, now)
        try:
            self._show(running_status(progress), description(self.job, progress))
        except Exception as exc:  # whatever Label Studio does, the job trains on
            self._failed = True
            logger.warning("training job %s: Label Studio's model card not updated (%s); its progress is on the "
                           "status page", self.job.id, _reason(exc))

    def show_outcome(self, job: Job) -> dict:
        """The ended ``job`` on the card; what joins its result: ``{"label_studio": …}`` with the ML
        backends updated and their model version, or why not; nothing for a job that has not ended."""
        if job.state not in (FINISHED, FAILED):
            return {}
        try:
            updated = self._show(outcome_status(job), description(job))
        except Exception as exc:
            reason = _reason(exc)
            logger.warning("training job %s: its outcome is not on Label Studio's model card: %s", job.id, reason)
            return {"label_studio": {"model_card": f"not updated: {reason}"}}
        logger.info("training job %s: outcome shown on ML backend %s in Label Studio", job.id,
                    ", ".join(str(backend.get("id")) for backend in updated))
        return {"label_studio": {"model_card": "updated", "ml_backends": [backend.get("id") for backend in updated],
                                 "model_version": updated[0].get("model_version")}}

    def _show(self, status: str, text: str) -> list[dict]:
        backends = [backend for backend in self.client.ml_backends(self.job.project) if self._ours(backend)]
        if not backends:
            which = (f"URL {self.backend_url} (ML_BACKEND_URL)" if self.backend_url
                     else f"model version {MODEL_VERSION_PREFIX}… (set ML_BACKEND_URL to name it by URL)")
            raise NotConnected(f"no ML backend of project {self.job.project} has {which}")
        return [self.client.update_ml_backend(backend, {
            "title": f"{base_title(backend.get('title'))}{SEPARATOR}{status}", "description": text,
        }) for backend in backends]

    def _ours(self, backend: dict) -> bool:
        if self.backend_url:
            return str(backend.get("url") or "").rstrip("/") == self.backend_url
        return str(backend.get("model_version") or "").startswith(MODEL_VERSION_PREFIX)


def _reason(exc: Exception) -> str:
    """A safe reason: LabelStudioErrors are written for users; anything else by its type."""
    return str(exc) if isinstance(exc, LabelStudioError) else f"{type(exc).__name__}: {str(exc)[:200]}"
