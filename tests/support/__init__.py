"""Helpers shared by unit, integration, browser and Docker tests and by bench/: real servers on free
localhost ports (Label Studio, the backend, redis-server) and Label Studio API calls. Imported as
``support.<module>`` (pytest puts tests/ on ``sys.path`` for tests/conftest.py; bench scripts add it)."""
