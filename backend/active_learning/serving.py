"""The extreme-point segmenter each project is served with: its serving version's weights, loaded
lazily, cached per version, and switched as soon as a new version is published or pinned; likewise
its proposal model (project option ``proposals``), from the serving version or its nearest ancestor
that has one (``VersionRegistry.with_proposals``).

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

from backend.active_learning.versions import PROPOSALS_DIR, VersionInfo, VersionRegistry
from backend.files import read_json
from backend.project_store import project_id

logger = logging.getLogger(__name__)


class ProjectModels:
    """Per-project segmenters. ``load(weights_dir)`` builds one (e.g. ``ExtremeSegmenter.load`` on a
    device); ``default`` is the already loaded default-weights segmenter (or None if there is none).
    At most ``cache_size`` loaded models (extreme-point or proposal) stay in memory besides it (least recently used dropped)."""

    def __init__(self, registry: VersionRegistry, load: Callable[[Path], object], default: object | None,
                 cache_size: int = 8, load_proposals: Callable[[Path], object] | None = None):
        self.registry = registry
        self.default = default
        self._load = load
        self._load_proposals = load_proposals
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

            return ExtremeSegmenter.load(weights_dir, device, settings.extreme_native_refine)

        def load_proposals(weights_dir):
            from backend.proposals import ProposalModel

            return ProposalModel.load(weights_dir, device)

        return cls(registry or VersionRegistry.from_settings(settings), load, default, load_proposals=load_proposals)

    def version_for(self, project: str | None) -> VersionInfo:
        """The version serving ``project`` (the default one when ``project`` is None)."""
        return self.registry.default if project is None else self.registry.serving(project)

    def segmenter_for(self, project: str | None) -> tuple[object | None, VersionInfo]:
        """The segmenter for ``project`` and the version it runs. A version that fails to load is
        logged and the default weights answer instead (and are reported as the version)."""
        version = self.version_for(project)
        if version.project is None:
            return self.default, version
        segmenter = self._cached(("extreme", version.project, version.name), lambda: self._load(version.path),
                                 f"version {version.name} of project {version.project}; serving the default weights")
        return (segmenter, version) if segmenter is not None else (self.default, self.registry.default)

    def proposer_for(self, project: str) -> tuple[object | None, VersionInfo | None]:
        """The project's proposal model (``backend.proposals.ProposalModel``) and the version it comes
        from; (None, None) before its first one (or when it fails to load: logged once)."""
        version = self.registry.with_proposals(project)
        if version is None or self._load_proposals is None:
            return None, None
        model = self._cached(("proposals", version.project, version.name),
                             lambda: self._load_proposals(version.path / PROPOSALS_DIR),
                             f"the proposal model of version {version.name} of project {version.project}")
        return (model, version) if model is not None else (None, None)

    def proposals_status(self, project: str) -> dict:
        """The project's proposal model without loading it: ``serving`` (the version it comes from) and
        ``threshold`` when there is one, and the last training job's word on it (``message``,
        ``needed``: see ``proposal_training``)."""
        status = read_json(self.registry.layout.proposals_status_file(project_id(project)), {}) or {}
        version = self.registry.with_proposals(project)
        if version is not None:
            manifest = read_json(version.path / PROPOSALS_DIR / "manifest.json", {}) or {}
            status = {**status, "serving": version.name, "threshold": manifest.get("threshold")}
        return status

    def _cached(self, key: tuple, load: Callable[[], object], what: str) -> object | None:
        """``load()`` once per key (None remembered when it failed, so not retried on every request)."""
        with self._lock:  # one load per version even under concurrent requests
            if key not in self._cache:
                try:
                    self._cache[key] = load()
                except Exception:
                    logger.exception("could not load %s", what)
                    self._cache[key] = None
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
            self._cache.move_to_end(key)
            return self._cache[key]
