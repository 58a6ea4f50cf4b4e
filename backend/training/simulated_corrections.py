"""Simulated correction clicks in training batches (RITM-style iterative sampling).

For a share of a batch's examples the coarse stage (no gradients, eval mode) predicts the crop,
``correction_clicks.next_click`` puts a click on the largest error against the true mask, and the
click is drawn into the example's click channels; 1 to ``MAX_CLICKS`` rounds, each with all the
clicks so far. The step then trains on those inputs against the true mask, so the model learns to
follow clicks; the examples left click-free keep the first mask from degrading.

Clicks are simulated in coarse-crop pixels (the crop window does not move during training) and
drawn at both stage sizes exactly as ``prompt_crop.network_input`` draws them at inference. The
coarse prediction stands in for the refined one: it places the click on the same error regions at a
third of the cost (the refinement at full size costs twice the coarse stage), which on a CPU is the
difference between a fine-tune in an hour and one in two.
"""

from __future__ import annotations

import numpy as np
import torch

from backend.networks.prompt_crop import point_heatmap
from backend.training.correction_clicks import next_click

CORRECTED_FRACTION = 0.6  # share of examples that get clicks; the rest train the first mask
CLICK_ROUNDS = (1, 2, 3)  # how many clicks a corrected example gets, with these probabilities:
ROUND_PROBABILITIES = (0.5, 0.3, 0.2)
JITTER_PX = 1.0  # click jitter in coarse-crop pixels (2 px of the refinement crop)
POSITIVE_CHANNEL, NEGATIVE_CHANNEL = 5, 6  # in coarse_input / refine_input (RGB, heatmap, box, +, -)


@torch.no_grad()
def add_simulated_corrections(
    coarse, batch: dict, rng: np.random.Generator, device: str, fraction: float = CORRECTED_FRACTION
) -> dict:
    """A copy of `batch` (``training.examples`` tensors) whose inputs carry simulated correction
    clicks for about `fraction` of its examples. The caller puts the coarse net in eval mode (and
    back): the clicks answer the predictions an annotator would see."""
    size = len(batch["coarse_input"])
    rounds = np.where(rng.random(size) < fraction, rng.choice(CLICK_ROUNDS, size, p=ROUND_PROBABILITIES), 0)
    if not rounds.any():
        return batch
    batch = {**batch, "coarse_input": batch["coarse_input"].clone(), "refine_input": batch["refine_input"].clone()}
    crop_size, refine_size = batch["coarse_input"].shape[-1], batch["refine_input"].shape[-1]
    truth = batch["coarse_target"][:, 0].numpy() > 0.5
    for round_index in range(int(rounds.max())):
        active = np.flatnonzero(rounds > round_index)
        predicted = (coarse(batch["coarse_input"][active].to(device))[:, 0] > 0).cpu().numpy()
        for row, index in enumerate(active):
            click = next_click(predicted[row], truth[index], rng, JITTER_PX)
            if click is None:
                rounds[index] = round_index  # nothing left to correct
                continue
            channel = POSITIVE_CHANNEL if click.positive else NEGATIVE_CHANNEL
            xy = np.array([[click.x, click.y]])
            for key, side in (("coarse_input", crop_size), ("refine_input", refine_size)):
                drawn = torch.from_numpy(point_heatmap(xy * side / crop_size, side))
                torch.maximum(batch[key][index, channel], drawn, out=batch[key][index, channel])
    return batch
