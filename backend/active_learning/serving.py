"""The extreme-point segmenter each project is served with: its serving version's weights, loaded
lazily, cached per version, and switched as soon as a new version is published or pinned.

Every call reads the project's small ``active.json`` pointer (see versions.py), so all gunicorn
workers and replicas switch on their next request without any signal; a version already loaded is
reused, so a switch costs one load per process.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable

from backend.active_learning.versions import VersionInfo, VersionRegistry

logger = logging.getLogger(__name__)


class ProjectModels:
    """Per-project segmenters. ``load(weights_dir)`` builds one (e.g. ``ExtremeSegmenter.load`` on a
    device); ``default`` is the already loaded default-weights segmenter (or None if there is none).
    At most ``cache_size`` project versions stay in memory besides it (least recently used dropped)."""

    def __init__(self, registry: VersionRegistry, load: Callable[[Path], object], default: object | None,
                 cache_size: int = 4):
        self.registry = registry
        self.default = default
        self._load = load
        self._cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], object] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def for_settings(cls, settings, default: object | None, registry: VersionRegistry | None = None) -> "ProjectModels":
        """Project versions from ``settings.model_dir`` (or ``registry``), each loaded lazily on this
        process's device."""
        device = settings.resolved_device()

        def load(weights_dir):
            from backend.segmenters.extreme import ExtremeSegmenter

            return ExtremeSegmenter.load(weights_dir, device)

        return cls(registry or VersionRegistry.from_settings(settings), load, default)

    def version_for(self, project: str | None) -> VersionInfo:
        """The version serving ``project`` (the default one when ``project`` is None)."""
        return self.registry.default if project is None else self.registry.serving(project)

    def segmenter_for(self, project: str | None) -> tuple[object | None, VersionInfo]:
        """The segmenter for ``project`` and the version it runs. A version that fails to load is
        logged and the default weights answer instead (and are reported as the version)."""
        version = self.version_for(project)
        if version.project is None:
            return self.default, version
        key = (version.project, version.name)
        with self._lock:  # one load per version even under concurrent requests
            if key not in self._cache:
                try:
                    self._cache[key] = self._load(version.path)
                except Exception:  # remembered as None: not retried on every request
                    logger.exception("could not load version %s of project %s; serving the default weights",
                                     version.name, version.project)
                    self._cache[key] = None
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
            self._cache.move_to_end(key)
            segmenter = self._cache[key]
        return (segmenter, version) if segmenter is not None else (self.default, self.registry.default)
