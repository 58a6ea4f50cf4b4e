"""A real Label Studio server on localhost for integration tests.

Label Studio lives in its own virtualenv (its dependencies clash with the backend's): ``$LS_VENV``,
else ``<repo>/.lsvenv`` (what ``scripts/install.sh --tests`` creates; on a dev machine it may be a symlink to an
existing LS venv). The server gets a fresh data directory, an admin user, and the settings a
backend on localhost needs (PROTOCOL.md): ``ML_BLOCK_LOCAL_IP=false``,
``SSRF_PROTECTION_ENABLED=false``, and prediction validation switched on.

Start-up cost: applying Label Studio's migrations to an empty SQLite database takes about 40 s on
two cores, a start on a migrated database about 5 s. The migrated empty database is therefore made
once per Label Studio version, cached, and copied into every fresh data directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from support.ls_api import LabelStudioApi
from support.processes import ServerProcess, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ls-segmentation-backend-tests"
USERNAME = "admin@example.com"
# The password only guards a throw-away server on 127.0.0.1 that lives as long as the test run.
PASSWORD = "integration-test-password"

LS_SETTINGS = {
    "ML_BLOCK_LOCAL_IP": "false",  # the backend under test listens on 127.0.0.1
    "SSRF_PROTECTION_ENABLED": "false",  # ... and so does the webhook LS creates for it
    "fflag_feat_utc_210_prediction_validation_15082025": "true",  # store only predictions that validate
    # No calls home: CI may have no internet, and test runs are nobody's telemetry.
    "LATEST_VERSION_CHECK": "false",
    "COLLECT_ANALYTICS": "false",
    "SENTRY_DSN": "",
    "FRONTEND_SENTRY_DSN": "",
}
STARTUP_TIMEOUT_S = 300.0


class LabelStudioUnavailable(RuntimeError):
    """No usable Label Studio installation; the message says how to get one."""


def find_venv() -> Path:
    """The Label Studio virtualenv; LabelStudioUnavailable when there is none."""
    candidate = Path(os.environ["LS_VENV"]) if os.environ.get("LS_VENV") else REPO_ROOT / ".lsvenv"
    if not (candidate / "bin" / "label-studio").exists():
        raise LabelStudioUnavailable(
            f"no Label Studio at {candidate}: create it with "
            f"`bash scripts/install.sh --tests` (or `python3 -m venv .lsvenv && .lsvenv/bin/pip install label-studio==1.23.2`), "
            f"or point LS_VENV at an existing one"
        )
    return candidate


def installed_version(venv: Path) -> str:
    dists = sorted(venv.glob("lib/python3*/site-packages/label_studio-*.dist-info"))
    if not dists:
        raise LabelStudioUnavailable(f"{venv} has a label-studio command but no label_studio package")
    return dists[0].name.removeprefix("label_studio-").removesuffix(".dist-info")


class LabelStudio:
    """A running Label Studio: ``url``, an admin ``api`` session and the admin's Personal Access Token."""

    def __init__(self, venv: Path, workdir: Path):
        """Start Label Studio with its data under ``workdir`` and wait until it answers."""
        self.venv = venv
        self.version = installed_version(venv)
        data_dir = workdir / "data"
        data_dir.mkdir(parents=True)
        env = {**os.environ, **LS_SETTINGS}
        shutil.copyfile(_migrated_database(venv, self.version, env), data_dir / "label_studio.sqlite3")
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        env.update(
            LABEL_STUDIO_BASE_DATA_DIR=str(data_dir),
            LABEL_STUDIO_USERNAME=USERNAME,  # `start` creates this admin user
            LABEL_STUDIO_PASSWORD=PASSWORD,
        )
        argv = [str(venv / "bin" / "label-studio"), "start", "--no-browser", "--internal-host", "127.0.0.1"]
        self._argv, self._env, self._workdir = argv + ["--port", str(port)], env, workdir
        self.startup_s = self._start()
        try:  # (the server stops if this fails)
            self.api = LabelStudioApi(self.url, USERNAME, PASSWORD)
            # What a user does under Account & Settings -> Personal Access Token -> Create.
            self.personal_access_token: str = self.api.post("/api/token/")["token"]
        except Exception:
            self.process.stop()
            raise

    def _start(self) -> float:
        self.process = ServerProcess("Label Studio", self._argv, self._env, cwd=self._workdir,
                                     log_path=self._workdir / "label_studio.log")
        try:
            return self.process.wait_until_healthy(
                f"{self.url}/health", STARTUP_TIMEOUT_S, lambda r: r.ok and r.json().get("status") == "UP"
            )
        except Exception:
            self.process.stop()
            raise

    def stop(self) -> None:
        self.process.stop()

    def start_again(self) -> float:
        """After ``stop``: the same server (address, data, users, tokens) again; seconds to healthy.
        (The log of the previous run is replaced.)"""
        return self._start()


def _migrated_database(venv: Path, version: str, env: dict[str, str]) -> Path:
    """An empty, fully migrated database for this Label Studio version (made once, then cached)."""
    cached = CACHE_DIR / f"label-studio-{version}-empty.sqlite3"
    if cached.exists():
        return cached
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE_DIR) as work:
        # Every label-studio command migrates its database first; `version` then only prints.
        migrate = subprocess.run(
            [str(venv / "bin" / "label-studio"), "version"],
            env={**env, "LABEL_STUDIO_BASE_DATA_DIR": work},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=STARTUP_TIMEOUT_S,
        )
        if migrate.returncode != 0:
            tail = "\n".join(migrate.stdout.decode(errors="replace").splitlines()[-40:])
            raise LabelStudioUnavailable(f"migrating a Label Studio database failed:\n{tail}")
        os.replace(Path(work) / "label_studio.sqlite3", cached)  # atomic: concurrent runs never see half a file
    return cached

