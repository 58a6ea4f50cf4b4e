"""WSGI entry point: ``gunicorn backend.wsgi:app`` (settings from the environment, see
``backend.settings``; server options in ``gunicorn.conf.py``)."""

from backend.app import create_app
from backend.log_config import configure_logging

configure_logging()
app = create_app()
