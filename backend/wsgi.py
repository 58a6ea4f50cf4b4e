"""WSGI entry point: ``gunicorn backend.wsgi:app`` (settings from the environment, see
``backend.settings``; server options in ``gunicorn.conf.py``)."""

import logging
import os

from backend.app import create_app

logging.basicConfig(
    level=os.environ.get("LOG_LEVEL", "INFO").upper(),
    format="%(asctime)s %(levelname)s %(name)s: %(message)s",
)

app = create_app()
