"""Fixtures shared across the suite: one real Label Studio and one backend on localhost per test run
(tests/integration and tests/browser), a throw-away redis-server per module (the helpers live in
tests/support).

Without a Label Studio installation or the ``redis-server`` binary (Debian package ``redis-server``)
the tests that need them are skipped locally (with the reason) but fail on CI (``CI=true``), where a
silent skip would hide that nothing was tested.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.backend_server import BackendServer
from support.ls_server import LabelStudio, LabelStudioUnavailable, find_venv
from support.redis_server import RedisServer


def skip_locally_fail_on_ci(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


REPO_ROOT = Path(__file__).resolve().parents[1]
# What a test run may leave in the checkout: bytecode caches, the virtualenvs, and the browser tests'
# screenshots and timings (README "Tests"). Anything else belongs under tmp_path.
RUN_LEAVES = {"__pycache__", ".pytest_cache", ".git", ".venv", ".lsvenv", "lsvenv"}
RUN_OUTPUTS = ("var/browser/",)


def checkout_files() -> set[str]:
    """Every file under the repository root, ignored ones too, less ``RUN_LEAVES`` and ``RUN_OUTPUTS``."""
    files = set()
    for folder, subfolders, names in os.walk(REPO_ROOT):
        subfolders[:] = [name for name in subfolders if name not in RUN_LEAVES]
        relative = Path(folder).relative_to(REPO_ROOT).as_posix() + "/"
        if not relative.startswith(RUN_OUTPUTS):
            files.update(relative + name for name in names if not name.endswith(".pyc"))
    return files


@pytest.fixture(scope="session", autouse=True)
def checkout_stays_clean() -> Iterator[None]:
    """Fails the run when a test wrote into the checkout (git-ignored places such as var/ included)."""
    before = checkout_files()
    yield
    written = sorted(checkout_files() - before)
    if written:
        pytest.fail(f"the test run wrote into the checkout ({len(written)} new files; tests must use tmp_path): "
                    + ", ".join(written[:10]), pytrace=False)


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudio]:
    try:
        venv = find_venv()
    except LabelStudioUnavailable as exc:
        skip_locally_fail_on_ci(f"Label Studio is unavailable: {exc}")
    server = LabelStudio(venv, tmp_path_factory.mktemp("label_studio"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sam_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SAM ViT-B checkpoint with random weights (real architecture and file format, ~375 MB):
    the backend loads it through its normal path, and masks keep the right size and frame,
    though their content is arbitrary."""
    import torch
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sam") / "sam_vit_b_random.pth"
    torch.save(sam_model_registry["vit_b"]().state_dict(), path)
    return path


@pytest.fixture(scope="session")
def backend(
    label_studio: LabelStudio, sam_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BackendServer]:
    server = BackendServer(
        tmp_path_factory.mktemp("backend"), sam_checkpoint, label_studio.url, label_studio.personal_access_token
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        skip_locally_fail_on_ci("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(binary, tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread for the test: tiny models gain nothing from more, and the machine is shared."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
