"""``python -m backend download-sam TYPE [--dir DIR]``: fetch an official SAM 1 or SAM 2.1 checkpoint.

TYPE is one of ``vit_b``, ``vit_l``, ``vit_h`` (SAM 1) or ``sam2.1_hiera_tiny``, ``sam2.1_hiera_small``,
``sam2.1_hiera_base_plus``, ``sam2.1_hiera_large`` (SAM 2.1).

The file is streamed to a temporary file next to the target, its sha256 checked, and only then
renamed into place (atomic on one filesystem), so the target path never holds a partial or
corrupt checkpoint. The server itself never downloads: it reads ``SAM_CHECKPOINT``.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests

from backend.checksums import sha256_of
from backend.files import write_atomic
from backend.settings import REPO_ROOT

DEFAULT_DIR = REPO_ROOT / "model_weights"
_CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Checkpoint:
    url: str
    sha256: str
    size: int  # bytes

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


# URLs: the segment-anything README ("Model Checkpoints"). The README publishes no checksums; the
# sha256 values and sizes are those of the Git LFS pointers of independent Hugging Face mirrors of
# the official files, which all agree, e.g.
# https://huggingface.co/ybelkada/segment-anything/blob/7790786db131bcdc639f24a915d9f2c331d843ee/checkpoints/sam_vit_b_01ec64.pth
# (b),
# https://huggingface.co/sam-hq-team/sam-hq-training/commit/d401202bc7a12ffcf56557bd3f2c38d1a154f4e8 (b, l, h),
# https://huggingface.co/netradrishti/sam/commit/0ca332df7096f034b3d7f18f9ce6b6912dbce70b (b, l, h).
CHECKPOINTS = {
    "vit_b": Checkpoint(
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
        "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
        375_042_383,
    ),
    "vit_l": Checkpoint(
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
        "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
        1_249_524_607,
    ),
    "vit_h": Checkpoint(
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
        "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
        2_564_550_879,
    ),
    # URLs: facebookresearch/sam2's checkpoints/download_ckpts.sh (the SAM 2.1 release, September 2024).
    # Meta publishes no checksums for them either. The sha256 values and sizes are those of the Git
    # LFS pointers of the same files on Hugging Face, which agree wherever they were found:
    # Meta's own repositories https://huggingface.co/facebook/sam2.1-hiera-tiny/blob/main/sam2.1_hiera_tiny.pt
    # and https://huggingface.co/facebook/sam2.1-hiera-small/blob/main/sam2.1_hiera_small.pt (tiny, small);
    # https://huggingface.co/camenduru/sam2-1-hiera/commit/cdd35a45a78a3a93bc99988f4b56db40131a823a (all four);
    # https://huggingface.co/Promethe-us/sam2/commit/d105770bf428b28f3527a9b9d0c7ef2a26511b8a (tiny, base_plus);
    # https://huggingface.co/tictag-io-demo/sam2.1-hiera-large/blob/main/sam2.1_hiera_large.pt (large).
    # Not checked here against a download from the URLs below (no internet on the development machines).
    "sam2.1_hiera_tiny": Checkpoint(
        "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_tiny.pt",
        "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69",
        156_008_466,
    ),
    "sam2.1_hiera_small": Checkpoint(
        "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_small.pt",
        "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38",
        184_416_285,
    ),
    "sam2.1_hiera_base_plus": Checkpoint(
        "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_base_plus.pt",
        "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5",
        323_606_802,
    ),
    "sam2.1_hiera_large": Checkpoint(
        "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_large.pt",
        "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318",
        898_083_611,
    ),
}


class DownloadError(Exception):
    """The checkpoint could not be downloaded or did not verify; nothing was written to the target."""


def checkpoint_path(model_type: str, directory: Path = DEFAULT_DIR) -> Path:
    """Where ``download`` puts the ``model_type`` checkpoint."""
    return Path(directory) / CHECKPOINTS[model_type].filename


def download(
    model_type: str,
    directory: Path = DEFAULT_DIR,
    timeout_s: float = 60.0,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> Path:
    """Download and verify the ``model_type`` checkpoint into ``directory``; return its path.

    A file already there with the right sha256 is kept; one with another sha256 is replaced.
    ``progress(bytes_done, bytes_total)`` is called after every chunk.
    """
    checkpoint = CHECKPOINTS[model_type]
    target = checkpoint_path(model_type, directory)
    if target.is_file() and sha256_of(target) == checkpoint.sha256:
        return target

    def stream(out) -> None:
        digest = hashlib.sha256()
        done = 0
        with requests.get(checkpoint.url, stream=True, timeout=timeout_s) as response:
            if response.status_code != 200:
                raise DownloadError(f"{checkpoint.url} answered HTTP {response.status_code}")
            for chunk in response.iter_content(_CHUNK_BYTES):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                progress(done, checkpoint.size)
        if digest.hexdigest() != checkpoint.sha256:  # raising here discards the file
            raise DownloadError(
                f"{checkpoint.url}: sha256 {digest.hexdigest()} ({done} bytes) does not match the expected "
                f"{checkpoint.sha256} ({checkpoint.size} bytes); the file was discarded"
            )

    try:
        write_atomic(target, stream)
    except requests.RequestException as exc:
        raise DownloadError(f"downloading {checkpoint.url} failed ({type(exc).__name__}: {exc})") from None
    return target




def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_type", choices=list(CHECKPOINTS), help="which SAM model (SAM_MODEL_TYPE)")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"target directory (default: {DEFAULT_DIR})")


def run(args: argparse.Namespace) -> int:
    checkpoint = CHECKPOINTS[args.model_type]
    print(f"{args.model_type}: {checkpoint.url} ({checkpoint.size / 1e6:.0f} MB) -> {args.dir}", file=sys.stderr)
    last_decile = -1

    def report(done: int, total: int) -> None:
        nonlocal last_decile
        decile = 10 * done // max(total, 1)
        if decile != last_decile:
            print(f"  {10 * decile}%", file=sys.stderr)
            last_decile = decile

    try:
        path = download(args.model_type, args.dir, progress=report)
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"verified {path} (sha256 {checkpoint.sha256[:12]}…)", file=sys.stderr)
    print(f"use it with: SAM_MODEL_TYPE={args.model_type} SAM_CHECKPOINT={path.resolve()}")
    return 0
