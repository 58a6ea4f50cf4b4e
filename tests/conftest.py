"""Session fixtures shared by tests/integration and tests/browser: one real Label Studio and one
backend on localhost per test run (the helpers live in tests/integration).

Without a Label Studio installation the tests are skipped locally (with the reason) but fail on CI
(``CI=true``), where a silent skip would hide that nothing was tested.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "integration"))
from backend_server import BackendServer  # noqa: E402
from ls_server import LabelStudio, LabelStudioUnavailable, find_venv  # noqa: E402


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudio]:
    try:
        venv = find_venv()
    except LabelStudioUnavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but Label Studio is unavailable: {exc}", pytrace=False)
        pytest.skip(str(exc))
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


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread for the test: tiny models gain nothing from more, and the machine is shared."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
