"""WSGI entry point: ``gunicorn backend.wsgi:app`` (settings from the environment, see
``backend.settings``; server options in ``gunicorn.conf.py``)."""

from backend.app import create_app
from backend.log_config import configure_logging
from backend.project_options import OptionError

configure_logging()
try:
    app = create_app()
except OptionError as exc:
    # A bad server default (POLICIES, POLICIES_FILE) stops the start with its message: gunicorn
    # prints a RuntimeError's as "Error: …" (preloading), or halts on a worker that fails to boot.
    raise RuntimeError(f"cannot start: {exc}") from None
