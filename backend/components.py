"""The one composition root: every long-lived part of the backend, built from settings on first use.
The web app (``create_app``), a job's process (pre-annotation's serving model) and an RQ worker
(embeddings) all take their parts from a ``Components``, so each is built one way everywhere.

With ``background=False`` (a test app serving with fakes) there are no jobs, no retraining, no
per-project versions and no ``/jobs``: webhooks go to the event log (and embedding ahead) only.
"""

from __future__ import annotations

import os
import time
from functools import cached_property
from typing import Callable

from backend.settings import Settings


class Components:
    _this_process: "Components | None" = None
    _this_pid: int | None = None

    def __init__(self, settings: Settings | None = None, *, segmenters=None, images=None, executor=None,
                 clock: Callable[[], float] = time.time, background: bool = True):
        """Parts given here (tests give fakes) are used instead of being built."""
        self.settings = settings or Settings.from_env()
        self.background = background
        self.clock = clock
        # embedding ahead is built by the web app (it needs this process's SAM); None elsewhere
        self.embed_ahead = None
        if segmenters is not None:
            self.segmenters = segmenters
        if images is not None:
            self.images = images
        if executor is not None:
            self.executor = executor

    @classmethod
    def of_this_process(cls) -> "Components":
        """The parts of this worker process, from its environment, built once (RQ workers keep SAM
        loaded between jobs)."""
        if cls._this_process is None or cls._this_pid != os.getpid():
            cls._this_process, cls._this_pid = cls(), os.getpid()
        return cls._this_process

    # -- serving --------------------------------------------------------------------------------

    @cached_property
    def segmenters(self):
        from backend.segmenter_set import SegmenterSet

        return SegmenterSet.load(self.settings)

    @cached_property
    def images(self):
        from backend.images import ImageLoader

        return ImageLoader(self.settings)

    @cached_property
    def project_store(self):
        from backend.project_store import ProjectStore

        return ProjectStore.in_model_dir(self.settings.model_dir)

    @cached_property
    def project_models(self):
        """Each project's extreme-point version (None without background work: every project is
        served ``segmenters.extreme``)."""
        if not self.background:
            return None
        from backend.active_learning.serving import ProjectModels

        return ProjectModels.for_settings(self.settings, self.segmenters.extreme)

    @cached_property
    def model(self):
        """The ``SegmentationModel`` the web app serves and pre-annotation jobs predict with."""
        from backend.model import SegmentationModel

        return SegmentationModel(self.settings, self.segmenters, self.images, self.project_store, self.webhooks,
                                 self.project_models, self.embed_ahead)

    def job_model(self, threads: int | None = None):
        """``model`` for a job's own process: ``threads`` bounds torch's threads first."""
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        return self.model

    # -- background work ------------------------------------------------------------------------

    @cached_property
    def jobs(self):
        if not self.background:
            return None
        from backend.jobs.layout import JobLayout
        from backend.jobs.store import JobStore

        return JobStore(JobLayout(self.settings.model_dir))

    @cached_property
    def executor(self):
        if not self.background:
            return None
        from backend.jobs.executors import make_executor

        return make_executor(self.settings, self.jobs)

    @cached_property
    def retraining(self):
        from backend.active_learning.retraining import Retraining

        return Retraining(self.settings, self.jobs, self.executor, self.clock) if self.background else None

    @cached_property
    def preannotation(self):
        from backend.preannotation.trigger import Preannotation

        return Preannotation(self.settings, self.jobs, self.executor, self.project_store) if self.background else None

    @cached_property
    def dispatcher(self):
        """The dispatcher (started per web worker process by ``gunicorn.conf.py``), or None."""
        if not self.background:
            return None
        from backend.jobs.dispatcher import Dispatcher

        return Dispatcher(self.jobs, self.executor, [self.retraining.queue_due], self.settings)

    # -- webhooks -------------------------------------------------------------------------------

    @cached_property
    def event_log(self):
        from backend.event_log import JsonlEventLog

        return JsonlEventLog(self.settings.model_dir / "events.jsonl")

    @cached_property
    def webhooks(self):
        """Every event to the log, then to retraining, pre-annotation and embedding ahead."""
        from backend.webhooks import Webhooks

        sinks = [self.event_log, self.retraining, self.preannotation, self.embed_ahead]
        return Webhooks([sink for sink in sinks if sink is not None])
