"""The weights directory: ``coarse.pt`` + ``refine.pt`` (fp16 state dicts) and ``manifest.json``.

The manifest holds the model configuration, each file's sha256 and parameter count, and
free-form provenance (training data, command, validation figures). Loading verifies sha256.
Weights saved before the correction-click channels (5 coarse / 6 refinement inputs) load with
zero kernels for the missing inputs: they take clicks and, without any, answer exactly as before.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from backend.checksums import sha256_of
from backend.files import write_atomic
from backend.networks.coarse import CoarseNet
from backend.networks.refine import RefineNet

MANIFEST = "manifest.json"
STAGES = ("coarse", "refine")


@dataclass(frozen=True)
class ModelConfig:
    crop_size: int = 192  # coarse input side, pixels (multiple of 32)
    refine_size: int = 384  # refinement input side, pixels (the same crop at higher resolution)
    margin: float = 0.15  # crop margin per side, fraction of the prompt box's larger side
    decoder_channels: int = 96
    refine_width: int = 32

    def build(self, pretrained: bool = False) -> tuple[CoarseNet, RefineNet]:
        return CoarseNet(self.crop_size, self.decoder_channels, pretrained=pretrained), RefineNet(self.refine_width)


class WeightsError(ValueError):
    """A weights directory is missing, incomplete or does not match its manifest."""


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def save_weights(
    out_dir: Path, coarse: CoarseNet, refine: RefineNet, config: ModelConfig, version: str, provenance: dict
) -> dict:
    """Write both stages as fp16 and the manifest (written last, atomically); returns the manifest."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, module in zip(STAGES, (coarse, refine)):
        path = out_dir / f"{name}.pt"
        state = {k: (v.half() if v.is_floating_point() else v) for k, v in module.state_dict().items()}
        torch.save({k: v.cpu() for k, v in state.items()}, path)
        files[name] = {
            "file": path.name, "sha256": sha256_of(path), "bytes": path.stat().st_size,
            "parameters": parameter_count(module),
        }
    total = sum(entry["parameters"] for entry in files.values())
    manifest = {"version": version, "config": asdict(config), "files": files, "parameters_total": total, **provenance}
    write_manifest(out_dir, manifest)
    return manifest


def write_manifest(out_dir: Path, manifest: dict) -> None:
    write_atomic(Path(out_dir) / MANIFEST, lambda f: f.write(json.dumps(manifest, indent=2) + "\n"), text=True)


def read_manifest(weights_dir: Path) -> dict:
    path = Path(weights_dir) / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise WeightsError(f"no {MANIFEST} in {weights_dir}") from None
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{path} is not valid JSON: {exc.msg}") from None


def with_missing_inputs_zeroed(state: dict, expected: dict) -> dict:
    """`state` with each convolution kernel that has fewer input channels than `expected`'s (the
    first layer of weights older than the click channels) padded with zero kernels for the
    missing, last, inputs; every other tensor as it is (a real mismatch still fails on load)."""
    out = dict(state)
    for key, tensor in state.items():
        want = expected.get(key)
        if (
            want is not None and tensor.ndim == 4 and want.ndim == 4 and tensor.shape[1] < want.shape[1]
            and tensor.shape[0] == want.shape[0] and tensor.shape[2:] == want.shape[2:]
        ):
            padded = torch.zeros(want.shape, dtype=tensor.dtype)
            padded[:, : tensor.shape[1]] = tensor
            out[key] = padded
    return out


def load_weights(weights_dir: Path, device: str = "cpu") -> tuple[CoarseNet, RefineNet, ModelConfig, dict]:
    """Both stages in eval mode (fp32) on `device`, their config and the manifest; sha256-verified."""
    weights_dir = Path(weights_dir)
    manifest = read_manifest(weights_dir)
    try:
        config = ModelConfig(**manifest["config"])
        entries = [manifest["files"][name] for name in STAGES]
    except (KeyError, TypeError) as exc:
        raise WeightsError(f"{weights_dir / MANIFEST} is incomplete: {exc}") from None
    coarse, refine = config.build(pretrained=False)
    for module, entry in zip((coarse, refine), entries):
        path = weights_dir / entry["file"]
        if not path.is_file():
            raise WeightsError(f"missing weights file {path}")
        if sha256_of(path) != entry["sha256"]:
            raise WeightsError(f"{path} does not match the sha256 in its manifest")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        module.load_state_dict(with_missing_inputs_zeroed(state, module.state_dict()))
        module.to(device).eval()
    return coarse, refine, config, manifest
