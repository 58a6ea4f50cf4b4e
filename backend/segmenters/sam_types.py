"""The SAM model types this backend serves, in one table: for each ``SAM_MODEL_TYPE``, its family
(SAM 1 or SAM 2.1), the architecture to build (``segment_anything``'s registry key, or the ``sam2``
package's config), and the official checkpoint (URL, sha256, size).

Read by the loader (``backend.segmenters.sam``, ``sam21``), ``python -m backend download-sam``
(``backend.sam_checkpoints``), the settings' default, and checked against the README's SAM models
table by the tests. Importing it loads no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

SAM1, SAM21 = "SAM 1", "SAM 2.1"


@dataclass(frozen=True)
class SamType:
    name: str  # SAM_MODEL_TYPE
    family: str  # SAM1 or SAM21
    config: str  # SAM 1: the segment_anything registry key; SAM 2.1: the sam2 package's config file
    url: str  # the official checkpoint
    sha256: str
    size: int  # bytes

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


_SAM21_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
_SAM1_URL = "https://dl.fbaipublicfiles.com/segment_anything/"

# SAM 2.1 URLs: facebookresearch/sam2's checkpoints/download_ckpts.sh (the SAM 2.1 release, September
# 2024); configs: the sam2 package's, for those checkpoints' architectures. Meta publishes no checksums.
# The sha256 values and sizes are those of the Git LFS pointers of the same files on Hugging Face, which
# agree wherever they were found: Meta's own repositories
# https://huggingface.co/facebook/sam2.1-hiera-tiny/blob/main/sam2.1_hiera_tiny.pt and
# https://huggingface.co/facebook/sam2.1-hiera-small/blob/main/sam2.1_hiera_small.pt (tiny, small);
# https://huggingface.co/camenduru/sam2-1-hiera/commit/cdd35a45a78a3a93bc99988f4b56db40131a823a (all four);
# https://huggingface.co/Promethe-us/sam2/commit/d105770bf428b28f3527a9b9d0c7ef2a26511b8a (tiny, base_plus);
# https://huggingface.co/tictag-io-demo/sam2.1-hiera-large/blob/main/sam2.1_hiera_large.pt (large).
# SAM 1 URLs: the segment-anything README ("Model Checkpoints"), which publishes no checksums either; the
# sha256 values and sizes are those of the Git LFS pointers of independent Hugging Face mirrors of the
# official files, which all agree, e.g.
# https://huggingface.co/ybelkada/segment-anything/blob/7790786db131bcdc639f24a915d9f2c331d843ee/checkpoints/sam_vit_b_01ec64.pth
# (b), https://huggingface.co/sam-hq-team/sam-hq-training/commit/d401202bc7a12ffcf56557bd3f2c38d1a154f4e8
# (b, l, h), https://huggingface.co/netradrishti/sam/commit/0ca332df7096f034b3d7f18f9ce6b6912dbce70b (b, l, h).
# Not checked here against a download from the URLs (no internet on the development machines).
SAM_TYPES: dict[str, SamType] = {t.name: t for t in (
    SamType("sam2.1_hiera_tiny", SAM21, "configs/sam2.1/sam2.1_hiera_t.yaml", _SAM21_URL + "sam2.1_hiera_tiny.pt",
            "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69", 156_008_466),
    SamType("sam2.1_hiera_small", SAM21, "configs/sam2.1/sam2.1_hiera_s.yaml", _SAM21_URL + "sam2.1_hiera_small.pt",
            "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38", 184_416_285),
    SamType("sam2.1_hiera_base_plus", SAM21, "configs/sam2.1/sam2.1_hiera_b+.yaml",
            _SAM21_URL + "sam2.1_hiera_base_plus.pt",
            "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5", 323_606_802),
    SamType("sam2.1_hiera_large", SAM21, "configs/sam2.1/sam2.1_hiera_l.yaml", _SAM21_URL + "sam2.1_hiera_large.pt",
            "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318", 898_083_611),
    SamType("vit_b", SAM1, "vit_b", _SAM1_URL + "sam_vit_b_01ec64.pth",
            "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912", 375_042_383),
    SamType("vit_l", SAM1, "vit_l", _SAM1_URL + "sam_vit_l_0b3195.pth",
            "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622", 1_249_524_607),
    SamType("vit_h", SAM1, "vit_h", _SAM1_URL + "sam_vit_h_4b8939.pth",
            "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e", 2_564_550_879),
)}
# The CPU choice (README "SAM models"); the Docker image downloads it by default.
DEFAULT_SAM_TYPE = "sam2.1_hiera_tiny"


def sam_type(name: str) -> SamType:
    """The registered type ``name``; ValueError naming the known ones otherwise."""
    try:
        return SAM_TYPES[name]
    except KeyError:
        raise ValueError(f"unknown SAM model type {name!r}; expected one of {', '.join(SAM_TYPES)}") from None
