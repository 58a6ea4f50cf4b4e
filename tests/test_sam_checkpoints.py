"""download-sam: streaming download from a local HTTP server, sha256 verification, atomic rename."""

import argparse
import hashlib
import http.server
import threading
from dataclasses import replace

import pytest

from backend import sam_checkpoints
from backend.sam_checkpoints import DownloadError, download
from backend.segmenters.sam_types import SAM_TYPES

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB: several download chunks


class FileServer:
    """Serves ``PAYLOAD`` at /full and a connection that dies halfway through at /cut, on 127.0.0.1."""

    def __init__(self):
        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path not in ("/full", "/cut"):
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(PAYLOAD)))
                self.end_headers()
                self.wfile.write(PAYLOAD if self.path == "/full" else PAYLOAD[: len(PAYLOAD) // 2])
                self.close_connection = True

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server():
    server = FileServer()
    yield server
    server.close()


def serve_as_vit_b(monkeypatch, url: str, sha256: str = hashlib.sha256(PAYLOAD).hexdigest()) -> None:
    monkeypatch.setitem(SAM_TYPES, "vit_b", replace(SAM_TYPES["vit_b"], url=url, sha256=sha256, size=len(PAYLOAD)))


def test_download_verifies_and_renames_into_place(server, monkeypatch, tmp_path):
    serve_as_vit_b(monkeypatch, f"{server.url}/full")
    progress = []
    path = download("vit_b", tmp_path / "weights", progress=lambda done, total: progress.append((done, total)))
    assert path == tmp_path / "weights" / "full"
    assert path.read_bytes() == PAYLOAD
    assert progress[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert sorted(p.name for p in path.parent.iterdir()) == ["full"]  # no temporary file left


@pytest.mark.parametrize("path, sha256, error", [
    ("full", "0" * 64, "does not match"),  # checksum mismatch
    ("cut", hashlib.sha256(PAYLOAD).hexdigest(), "failed"),  # broken transfer
    ("missing", hashlib.sha256(PAYLOAD).hexdigest(), "HTTP 404"),  # HTTP error
])
def test_failed_download_is_reported_and_leaves_no_file(server, monkeypatch, tmp_path, path, sha256, error):
    serve_as_vit_b(monkeypatch, f"{server.url}/{path}", sha256)
    with pytest.raises(DownloadError, match=error):
        download("vit_b", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_interrupt_leaves_no_partial_file(server, monkeypatch, tmp_path):
    serve_as_vit_b(monkeypatch, f"{server.url}/full")

    def interrupt(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        download("vit_b", tmp_path, progress=interrupt)
    assert list(tmp_path.iterdir()) == []


def test_verified_file_is_kept_and_a_corrupt_one_replaced(server, monkeypatch, tmp_path):
    serve_as_vit_b(monkeypatch, f"{server.url}/full")
    (tmp_path / "full").write_bytes(PAYLOAD)
    download("vit_b", tmp_path, progress=lambda done, total: pytest.fail("downloaded a verified file again"))

    (tmp_path / "full").write_bytes(b"corrupt")
    download("vit_b", tmp_path)
    assert (tmp_path / "full").read_bytes() == PAYLOAD


def test_command_line(server, monkeypatch, tmp_path, capsys):
    serve_as_vit_b(monkeypatch, f"{server.url}/full")
    parser = argparse.ArgumentParser()
    sam_checkpoints.add_arguments(parser)
    assert sam_checkpoints.run(parser.parse_args(["vit_b", "--dir", str(tmp_path)])) == 0
    assert f"SAM_CHECKPOINT={tmp_path / 'full'}" in capsys.readouterr().out

    serve_as_vit_b(monkeypatch, f"{server.url}/full", sha256="0" * 64)
    assert sam_checkpoints.run(parser.parse_args(["vit_b", "--dir", str(tmp_path / "other")])) == 1
    assert "does not match" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["vit_x"])

