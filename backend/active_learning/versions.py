"""Per-project model versions: one lineage per project, published atomically, switched by a pointer
file that every process reads, pinned by configuration for rollback.

A project starts on the default weights (``settings.extreme_weights``). Each successful training
job publishes ``p<project>-v<n>`` whose parent is the version it was fine-tuned from:

    versions/<name>/            the trainer's files, exactly as staged (sha256-verified)
    versions/<name>/version.json  {"name", "project", "parent", "created_at", "metrics", "files", "job",
                                   "policies"}
    versions/<name>/proposals/  the project's proposal model, in a version that trained one (its extreme
                                weights then are new, or the parent's copied over); a version without one
                                is served the proposal model of its nearest ancestor that has one
    active.json                 {"version": "<name>"} — written last, atomically

Publishing copies the staged files into a hidden temporary directory, verifies every sha256
against what the trainer reported, renames the directory into place (atomic) and only then
rewrites ``active.json``. A crash at any point leaves the previous version serving. Versions are
never modified after publishing; serving re-verifies a version's checksums once per process before
loading it, and falls back along the parents past a corrupt one.

Rollback: ``PINNED_VERSIONS='{"<project id>": "<version name>"}'`` serves that version (any of the
project's, or the default's name) whatever ``active.json`` says; training continues from it.
"""

from __future__ import annotations

import logging
import re
import secrets
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from backend.files import read_json, write_json_atomic
from backend.checksums import sha256_of
from backend.active_learning.layout import Layout
from backend.project_store import project_id

logger = logging.getLogger(__name__)

VERSION_FILE = "version.json"
PROPOSALS_DIR = "proposals"  # a version's proposal model (backend.proposals), when it has one
_VERSION_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_PROJECT_VERSION = re.compile(r"^p(?P<project>[0-9]+)-v(?P<number>[0-9]+)$")


class VersionError(Exception):
    """A version cannot be published or served; the message is safe to show."""


class ChecksumError(VersionError):
    """Files differ from the sha256 recorded for them (corrupt or half-written checkpoint)."""


@dataclass(frozen=True)
class VersionInfo:
    """One model version.

    project: the project whose lineage it belongs to; None for the default weights.
    path: the directory ``ExtremeSegmenter.load`` reads.
    files: {relative path: sha256} of the weights files (empty for the default weights, whose own
    manifest is checked by their loader).
    metrics: e.g. {"miou_before": 0.71, "miou_after": 0.83, "val_tasks": 4, ...}.
    policies: the labeling policies learned from the project's annotations ({label: {policy key:
    value}}, ``learned_policies``), served under the project's own.
    """

    name: str
    project: str | None
    path: Path
    parent: str | None = None
    created_at: float | None = None
    metrics: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)
    job: str | None = None
    policies: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        value = asdict(self)
        del value["path"]  # where it lives on this host is not part of the record
        return value


def default_version_name(weights_dir: Path) -> str:
    """The default weights' version name: their manifest's "version" (or "name"), else the folder name."""
    manifest = read_json(Path(weights_dir) / "manifest.json", {}) or {}
    name = manifest.get("version") or manifest.get("name") or Path(weights_dir).name
    return str(name) if _VERSION_NAME.match(str(name)) else "extreme-default"


class VersionRegistry:
    def __init__(self, layout: Layout, default_weights: Path, pinned_versions: dict | None = None):
        self.layout = layout
        self.default = VersionInfo(name=default_version_name(default_weights), project=None, path=Path(default_weights))
        self.pinned = {project_id(p): str(name) for p, name in (pinned_versions or {}).items()}
        self._verified: dict[tuple[str, str], str | None] = {}  # (project, name) -> error or None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings) -> "VersionRegistry":
        return cls(Layout(settings.model_dir), settings.extreme_weights, settings.pinned_versions)

    # -- reading ----------------------------------------------------------------------------------

    def versions(self, project: str | None = None) -> list[VersionInfo]:
        """The default version then published ones, oldest first: every project's, or ``project``'s."""
        projects = self.layout.projects() if project is None else [project_id(project)]
        published = [version for p in projects for version in self._published(p)]
        return [self.default] + sorted(published, key=lambda v: (v.created_at or 0.0, v.name))

    def get(self, project: str, name: str) -> VersionInfo:
        if name == self.default.name:
            return self.default
        if not _VERSION_NAME.match(name):
            raise VersionError(f"not a version name: {name[:60]!r}")
        path = self.layout.versions_dir(project) / name
        record = read_json(path / VERSION_FILE)
        if record is None:
            raise VersionError(f"project {project} has no version {name!r}")
        return _info(record, path)

    def active(self, project: str) -> VersionInfo:
        """The version meant to serve ``project``: its pin, else its active pointer, else the default."""
        project = project_id(project)
        pinned = self.pinned.get(project)
        if pinned is not None:
            try:
                return self.get(project, pinned)
            except VersionError as exc:
                logger.error("PINNED_VERSIONS for project %s ignored: %s", project, exc)
        pointer = read_json(self.layout.active_file(project), {}) or {}
        if pointer.get("version"):
            try:
                return self.get(project, pointer["version"])
            except VersionError as exc:
                logger.error("active version of project %s unusable, serving the default: %s", project, exc)
        return self.default

    def serving(self, project: str) -> VersionInfo:
        """``active(project)`` if its files verify, else its nearest verified ancestor (or the default)."""
        project = project_id(project)
        version = self.active(project)
        while version.project is not None:
            error = self._verification_error(project, version)
            if error is None:
                return version
            try:
                version = self.get(project, version.parent) if version.parent else self.default
            except VersionError:
                version = self.default
        return version

    def with_proposals(self, project: str) -> VersionInfo | None:
        """The version whose proposal model serves ``project``: the serving version if it holds one,
        else its nearest ancestor that does; None before the project's first proposal model."""
        project = project_id(project)
        version = self.serving(project)
        seen = set()
        while version.project is not None and version.name not in seen:
            seen.add(version.name)
            if any(path.startswith(PROPOSALS_DIR + "/") for path in version.files):
                return version
            try:
                version = self.get(project, version.parent) if version.parent else self.default
            except VersionError:
                return None
            if version.project is not None and self._verification_error(project, version) is not None:
                return None
        return None

    def verify(self, version: VersionInfo) -> None:
        """Raise ChecksumError unless every recorded file exists with its recorded sha256."""
        verify_files(version.path, version.files, f"version {version.name}")

    # -- publishing -------------------------------------------------------------------------------

    def next_name(self, project: str) -> str:
        """The name the project's next version gets (stable while the project's training lock is held)."""
        project = project_id(project)
        numbers = [int(m["number"]) for v in self._published(project) if (m := _PROJECT_VERSION.match(v.name))]
        return f"p{project}-v{max(numbers, default=0) + 1}"

    def publish(
        self, project: str, name: str, staged: Path, files: dict[str, str], parent: str, metrics: dict,
        job: str | None = None, policies: dict | None = None,
    ) -> VersionInfo:
        """Publish the trainer's output in ``staged`` as version ``name`` of ``project`` and make it active.

        files: {relative path: sha256} as the trainer wrote them; every one must match after the copy.
        policies: the version's learned policies (``VersionInfo.policies``).
        Must run under the project's training lock. Raises ChecksumError (nothing published,
        serving unchanged) on any mismatch, VersionError if ``name`` exists.
        """
        project = project_id(project)
        if not files:
            raise VersionError("the trainer reported no files to publish")
        if not _VERSION_NAME.match(name) or name == self.default.name:
            raise VersionError(f"not a valid new version name: {name[:60]!r}")
        versions_dir = self.layout.versions_dir(project)
        versions_dir.mkdir(parents=True, exist_ok=True)
        if (versions_dir / name).exists():
            raise VersionError(f"project {project} already has a version {name}")
        temporary = versions_dir / f".tmp-{name}-{secrets.token_hex(4)}"
        try:
            temporary.mkdir()
            for relative in files:
                (temporary / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(staged / relative, temporary / relative)
            version = VersionInfo(
                name=name, project=project, path=versions_dir / name, parent=parent,
                created_at=time.time(), metrics=metrics, files=dict(files), job=job, policies=dict(policies or {}),
            )
            verify_files(temporary, version.files, f"version {name}")
            write_json_atomic(temporary / VERSION_FILE, version.to_json())
            temporary.rename(version.path)
        except FileNotFoundError as exc:
            raise ChecksumError(f"staged checkpoint incomplete: {Path(exc.filename).name} is missing") from None
        finally:
            shutil.rmtree(temporary, ignore_errors=True)
        write_json_atomic(self.layout.active_file(project), {"version": name, "switched_at": time.time()})
        logger.info("project %s now serves %s (parent %s)", project, name, parent)
        return version

    # -- internals --------------------------------------------------------------------------------

    def _published(self, project: str) -> list[VersionInfo]:
        versions_dir = self.layout.versions_dir(project)
        if not versions_dir.is_dir():
            return []
        found = []
        for path in versions_dir.iterdir():
            record = read_json(path / VERSION_FILE) if not path.name.startswith(".") else None
            if record is not None:
                found.append(_info(record, path))
        return found

    def _verification_error(self, project: str, version: VersionInfo) -> str | None:
        key = (project, version.name)
        with self._lock:
            if key not in self._verified:
                try:
                    self.verify(version)
                    self._verified[key] = None
                except ChecksumError as exc:
                    self._verified[key] = str(exc)
                    logger.error("not serving %s for project %s: %s", version.name, project, exc)
            return self._verified[key]


def lineage_position(project: str, name: str | None) -> int:
    """Where version ``name`` stands in ``project``'s lineage: n for its ``p<project>-v<n>`` (numbered
    in publishing order), 0 for anything else (the default weights, another project's versions)."""
    match = _PROJECT_VERSION.match(name or "")
    return int(match["number"]) if match and match["project"] == project_id(project) else 0


def stage_weights_of(version: VersionInfo, out: Path) -> dict[str, str]:
    """Copy ``version``'s extreme-point weights into ``out`` (beside what is already staged there, e.g.
    a proposal model), for a new version that keeps them; every file under ``out`` with its sha256."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for source in sorted(Path(version.path).iterdir()):
        if source.is_file() and source.name != VERSION_FILE:
            shutil.copyfile(source, out / source.name)
    files = {str(path.relative_to(out)): sha256_of(path) for path in sorted(out.rglob("*")) if path.is_file()}
    verify_files(out, files, f"the staged copy of {version.name}")
    return files


def verify_files(directory: Path, files: dict[str, str], what: str) -> None:
    """Raise ChecksumError unless each of ``files`` ({relative path: sha256}) exists under
    ``directory`` with that sha256; ``what`` names the directory in the message."""
    for relative, expected in files.items():
        path = Path(directory) / relative
        if not path.is_file():
            raise ChecksumError(f"{what}: file {relative} is missing")
        if sha256_of(path) != expected:
            raise ChecksumError(f"{what}: file {relative} does not match its sha256")


def _info(record: dict, path: Path) -> VersionInfo:
    return VersionInfo(**{key: record[key] for key in VersionInfo.__dataclass_fields__ if key in record and key != "path"}, path=path)
