"""Fine-tuning anchored to the parent: the batch-norm statistics stay the parent's, the weights
learn, and the L2-SP penalty keeps them closer to the parent than fine-tuning without it."""

from __future__ import annotations

import pytest
import torch
from support.square_samples import squares

from backend.networks.weights import ModelConfig, load_weights, save_weights
from backend.training.anchoring import Anchoring
from backend.training.train import train


@pytest.fixture(scope="module")
def tiny_parent(tmp_path_factory):
    torch.manual_seed(0)
    config = ModelConfig(crop_size=64, refine_size=128, decoder_channels=16, refine_width=8)
    directory = tmp_path_factory.mktemp("parent")
    save_weights(directory, *config.build(pretrained=False), config, "tiny-v0", {})
    return directory


def fine_tuned(parent, out_dir, anchoring):
    train(squares(6), [], parent, out_dir, steps=4, batch_size=3, lr=3e-3, num_workers=0, anchoring=anchoring)
    return load_weights(out_dir)


def state(module) -> dict[str, torch.Tensor]:
    return {name: value.float() for name, value in module.state_dict().items()}


def test_anchored_fine_tuning_keeps_the_statistics_and_stays_closer_to_the_parent(tiny_parent, tmp_path):
    parent_coarse, parent_refine, _, _ = load_weights(tiny_parent)
    anchored_coarse, anchored_refine, _, manifest = fine_tuned(tiny_parent, tmp_path / "anchored", Anchoring(strength=50.0))
    free_coarse, free_refine, _, _ = fine_tuned(tiny_parent, tmp_path / "free", Anchoring(strength=0.0))
    assert manifest["training"]["anchoring"] == {"strength": 50.0, "freeze_batch_norm": True}

    before, after = state(parent_coarse), state(anchored_coarse)
    statistics = [name for name in before if "running_" in name]
    assert statistics and all(torch.equal(before[name], after[name]) for name in statistics)
    assert not torch.equal(before["stem.0.weight"], after["stem.0.weight"])  # the encoder learned
    assert not torch.equal(before["head.1.weight"], after["head.1.weight"])  # and the decoder
    assert not torch.equal(state(parent_refine)["residual.weight"], state(anchored_refine)["residual.weight"])

    def drift(coarse, refine) -> float:
        moved = {**{f"c.{k}": v for k, v in state(coarse).items()}, **{f"r.{k}": v for k, v in state(refine).items()}}
        start = {**{f"c.{k}": v for k, v in before.items()}, **{f"r.{k}": v for k, v in state(parent_refine).items()}}
        return sum(float(((moved[k] - start[k]) ** 2).sum()) for k in start if "running_" not in k and "num_batches" not in k)

    assert drift(anchored_coarse, anchored_refine) < drift(free_coarse, free_refine)
