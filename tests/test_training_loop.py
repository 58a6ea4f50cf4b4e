"""The training loop: a few steps reduce the loss; train() writes loadable weights and resumes."""

import numpy as np
import pytest
import torch

from backend.networks.weights import ModelConfig, read_manifest
from backend.segmenters.extreme import ExtremeSegmenter
from backend.training.datasets import SyntheticSamples
from backend.training.examples import make_example
from backend.training.train import CHECKPOINT, step_loss, train

torch.set_num_threads(1)
TINY = ModelConfig(crop_size=64, refine_size=128)


@pytest.mark.slow
def test_a_few_steps_reduce_the_loss():
    torch.manual_seed(0)
    coarse, refine = TINY.build(pretrained=False)
    samples = SyntheticSamples(2, seed=1)
    examples = [make_example(samples[i], TINY, np.random.default_rng(i)) for i in range(2)]
    batch = {key: torch.stack([e[key] for e in examples]) for key in examples[0]}
    optimizer = torch.optim.AdamW(list(coarse.parameters()) + list(refine.parameters()), lr=2e-3)
    losses = []
    for _ in range(10):
        loss, _ = step_loss(coarse, refine, batch, "cpu")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.8 * losses[0]


@pytest.mark.slow
def test_train_writes_weights_and_resumes(tmp_path):
    train_samples, val_samples = SyntheticSamples(4, seed=0), SyntheticSamples(1, seed=0, split="heldout")
    steps_seen = []
    metrics = train(train_samples, val_samples, None, tmp_path, steps=2, batch_size=2, config=TINY,
                    checkpoint_every=1, num_workers=0, version="t1",
                    progress_cb=lambda step, total, m: steps_seen.append((step, total)))
    assert steps_seen == [(1, 2), (2, 2)]
    assert metrics["steps"] == 2 and 0 <= metrics["val_miou_extreme"] <= 1 and 0 <= metrics["val_miou_box"] <= 1
    assert (tmp_path / CHECKPOINT).is_file()
    segmenter = ExtremeSegmenter.load(tmp_path)
    assert segmenter.version == "t1" and segmenter.config == TINY

    steps_seen.clear()
    train(train_samples, val_samples, None, tmp_path, steps=3, batch_size=2, config=TINY, num_workers=0,
          progress_cb=lambda step, total, m: steps_seen.append((step, total)))
    assert steps_seen == [(3, 3)]  # resumed after step 2
    assert read_manifest(tmp_path)["training"]["metrics"]["steps"] == 3
