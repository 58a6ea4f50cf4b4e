"""What ``/setup`` told about each project, on disk so every gunicorn worker, every replica
sharing ``MODEL_DIR``, and a restarted server see it.

Layout: ``<MODEL_DIR>/projects/<project id>/setup.json``, written atomically
(``backend.files``), so a reader never sees a half-written file. Label Studio names a project
``"<id>.<created timestamp>"``; state is keyed by the numeric id.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from backend.files import read_json, write_json_atomic


class ProjectIdError(ValueError):
    """The project reference is not Label Studio's "<id>.<timestamp>" (or a bare id)."""


def project_id(reference) -> str:
    """The numeric id in Label Studio's project reference: ``"12.1700000000"`` -> ``"12"``."""
    text = str(reference).strip() if isinstance(reference, (str, int)) and not isinstance(reference, bool) else ""
    head = text.split(".", 1)[0]
    if not head.isdigit() or not head.isascii() or len(head) > 18:  # Label Studio's ids are 64-bit
        raise ProjectIdError(f'project must be Label Studio\'s "<id>.<timestamp>", got {str(reference)[:40]!r}')
    return str(int(head))


def project_dir(parent: Path, reference) -> Path:
    """A project's own folder under ``parent``, named by its numeric id: every per-project tree under
    ``MODEL_DIR`` (setups here, training state in ``active_learning.layout``) names it this way."""
    return Path(parent) / project_id(reference)


@dataclass(frozen=True)
class ProjectSetup:
    """One project's ``/setup``: label config, extra params as given, and the model version answered."""

    project_id: str
    label_config: str
    extra_params: dict
    model_version: str
    updated_at: float = 0.0


class ProjectStore:
    def __init__(self, root: Path):
        """``root``: the folder holding one sub-folder per project (``<MODEL_DIR>/projects``)."""
        self.root = Path(root)

    @classmethod
    def in_model_dir(cls, model_dir: Path) -> "ProjectStore":
        """The store every process shares: ``MODEL_DIR/projects``."""
        return cls(Path(model_dir) / "projects")

    def _path(self, pid: str) -> Path:
        return project_dir(self.root, pid) / "setup.json"

    def save(self, setup: ProjectSetup) -> None:
        write_json_atomic(self._path(setup.project_id), asdict(setup) | {"updated_at": setup.updated_at or time.time()})

    def load(self, pid: str) -> ProjectSetup | None:
        """The project's last setup, or None if ``/setup`` never reached this ``MODEL_DIR``."""
        record = read_json(self._path(pid))
        return None if record is None else ProjectSetup(**record)

    def list(self) -> list[ProjectSetup]:
        """Every project whose ``/setup`` reached this ``MODEL_DIR``, most recently set up first."""
        setups = [setup for path in self.root.glob("*/setup.json") if (setup := self.load(path.parent.name))]
        return sorted(setups, key=lambda setup: setup.updated_at, reverse=True)
