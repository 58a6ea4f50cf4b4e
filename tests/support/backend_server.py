"""The real backend, served by gunicorn on localhost, as Label Studio users run it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from support.processes import ServerProcess, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
BASIC_AUTH = ("ls-backend", "integration-basic-auth")
STARTUP_TIMEOUT_S = 180.0


class BackendServer:
    """``gunicorn backend.wsgi:app`` with Basic Auth, a SAM checkpoint, and a Label Studio PAT.

    One worker (with threads): it computes each image's SAM embedding once and reuses it for every
    later prompt on that image; several workers would each encode the image again, which takes
    15-50 s on two CPU cores.
    """

    def __init__(
        self,
        workdir: Path,
        sam_checkpoint: Path,
        label_studio_url: str,
        personal_access_token: str,
        extra_env: dict[str, str] | None = None,
    ):
        """Start the backend and wait until ``/health`` answers; ``extra_env`` adds or overrides
        settings (e.g. ``REDIS_URL``, ``EXTREME_WEIGHTS``)."""
        self.model_dir = workdir / "model_dir"
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.auth = BASIC_AUTH
        env = {
            **os.environ,
            "BASIC_AUTH_USER": BASIC_AUTH[0],
            "BASIC_AUTH_PASS": BASIC_AUTH[1],
            "MODEL_DIR": str(self.model_dir),
            "SAM_MODEL_TYPE": "vit_b",
            "SAM_CHECKPOINT": str(sam_checkpoint),
            "DEVICE": "cpu",
            "LABEL_STUDIO_URL": label_studio_url,
            "LABEL_STUDIO_API_KEY": personal_access_token,
            "WORKERS": "1",
            **(extra_env or {}),
        }
        # Other server options come from the repository's gunicorn.conf.py, as in production. No
        # control socket: its default path is per user, shared with any other gunicorn running.
        argv = [sys.executable, "-m", "gunicorn", "backend.wsgi:app", "--bind", f"127.0.0.1:{port}"]
        argv.append("--no-control-socket")
        self.process = ServerProcess("backend", argv, env, cwd=REPO_ROOT, log_path=workdir / "backend.log")
        try:
            self.startup_s = self.process.wait_until_healthy(
                f"{self.url}/health", STARTUP_TIMEOUT_S, lambda r: r.ok, auth=self.auth
            )
        except Exception:
            self.process.stop()
            raise

    def stop(self) -> None:
        self.process.stop()
