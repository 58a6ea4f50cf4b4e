"""`python -m backend worker` without Redis explains the embedded mode instead of waiting forever."""

from __future__ import annotations

from backend.cli import main


def test_worker_without_redis_explains_the_embedded_worker(monkeypatch, capsys):
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert main(["worker"]) == 2
    assert "REDIS_URL is not set" in capsys.readouterr().err
