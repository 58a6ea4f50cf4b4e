"""The one SAM model-type registry: complete for the loader and download-sam, the default the same
as Docker's, and the README's SAM models table listing exactly its types."""

import re
from importlib import resources
from pathlib import Path

from segment_anything import sam_model_registry

from backend.segmenters import sam_types
from backend.segmenters.sam_types import DEFAULT_SAM_TYPE, SAM1, SAM21, SAM_TYPES
from backend.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_every_type_names_an_architecture_and_an_official_checkpoint():
    assert {t.family for t in SAM_TYPES.values()} == {SAM1, SAM21}
    for name, registered in SAM_TYPES.items():
        assert registered.name == name
        if registered.family == SAM21:
            assert resources.files("sam2").joinpath(registered.config).is_file()
            assert registered.url == f"https://dl.fbaipublicfiles.com/segment_anything_2/092824/{name}.pt"
        else:
            assert registered.config in sam_model_registry
            assert registered.url.startswith(f"https://dl.fbaipublicfiles.com/segment_anything/sam_{name}_")
        assert re.fullmatch(r"[0-9a-f]{64}", registered.sha256) and registered.size > 100_000_000
    assert len({t.filename for t in SAM_TYPES.values()}) == len(SAM_TYPES)


def test_unknown_types_are_refused_naming_the_known_ones():
    assert sam_types.sam_type("vit_b") is SAM_TYPES["vit_b"]
    try:
        sam_types.sam_type("vit_x")
    except ValueError as exc:
        assert "'vit_x'" in str(exc) and "sam2.1_hiera_tiny, " in str(exc)
    else:
        raise AssertionError("vit_x was accepted")


def test_the_default_type_is_dockers():
    assert Settings().sam_model_type == Settings.from_env({}).sam_model_type == DEFAULT_SAM_TYPE
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert re.findall(r"^ARG SAM_MODEL_TYPE=(\S+)$", dockerfile, re.M) == [DEFAULT_SAM_TYPE] * 2
    compose = (REPO_ROOT / "docker-compose.yml").read_text()
    assert re.findall(r"SAM_MODEL_TYPE: \$\{SAM_MODEL_TYPE:-(\S+)\}", compose) == [DEFAULT_SAM_TYPE]


def test_the_readme_table_lists_every_type_with_its_family_and_file():
    readme = (REPO_ROOT / "README.md").read_text()
    rows = re.findall(r"^\| `([\w.]+)` \| (SAM [\d.]+) \| [^|]+ \| `([^`]+)` \((\d+) MB\)", readme, re.M)
    assert rows == [(t.name, t.family, t.filename, str(round(t.size / 1e6))) for t in SAM_TYPES.values()]
