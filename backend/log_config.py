"""One log format and level for every process of the backend: web workers (``backend.wsgi``), RQ
workers (``python -m backend worker``) and the spawned process of each training job, which starts
from a fresh interpreter and would otherwise drop its INFO lines (job started, published or not)."""

from __future__ import annotations

import logging
import os

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging() -> None:
    """Log to stderr at ``LOG_LEVEL`` (default INFO); a no-op where logging is already set up."""
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO").upper(), format=FORMAT)
