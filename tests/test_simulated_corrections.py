"""Simulated corrections in training batches and the click curve of validation."""

import numpy as np
import torch

from backend.prompts import PromptKind, Segmentation
from backend.training.simulated_corrections import NEGATIVE_CHANNEL, POSITIVE_CHANNEL, add_simulated_corrections
from backend.training.validation import click_curve

S, R = 32, 64


def batch_with_a_square(size=4):
    """Examples whose true mask is the square [8, 24) of the coarse crop; inputs without clicks."""
    target = torch.zeros(size, 1, S, S)
    target[:, :, 8:24, 8:24] = 1
    return {
        "coarse_input": torch.zeros(size, 7, S, S), "refine_input": torch.zeros(size, 7, R, R),
        "coarse_target": target, "refine_target": torch.nn.functional.interpolate(target, size=(R, R)),
    }


class Predicts(torch.nn.Module):
    """A coarse stage that predicts a fixed mask, ignoring its input: 0 -> nothing, 1 -> everything."""

    def __init__(self, everything: bool):
        super().__init__()
        self.everything = everything

    def forward(self, x):
        return torch.full((len(x), 1, S, S), 5.0 if self.everything else -5.0)


def test_a_missed_object_gets_a_positive_click_inside_it_at_both_sizes():
    batch = batch_with_a_square()
    out = add_simulated_corrections(Predicts(everything=False), batch, np.random.default_rng(0), "cpu", fraction=1)
    for index in range(4):
        coarse = out["coarse_input"][index]
        row, col = np.unravel_index(int(torch.argmax(coarse[POSITIVE_CHANNEL])), (S, S))
        assert 8 <= row < 24 and 8 <= col < 24 and coarse[POSITIVE_CHANNEL].max() > 0.9
        assert not coarse[NEGATIVE_CHANNEL].any() and not coarse[:POSITIVE_CHANNEL].any()
        refine = out["refine_input"][index]
        refine_row, refine_col = np.unravel_index(int(torch.argmax(refine[POSITIVE_CHANNEL])), (R, R))
        assert abs(refine_row - 2 * row) <= 2 and abs(refine_col - 2 * col) <= 2  # the same click, twice the size
    assert not batch["coarse_input"].any()  # the caller's batch is left as it was


def test_a_spill_gets_a_negative_click_outside_the_object():
    out = add_simulated_corrections(Predicts(everything=True), batch_with_a_square(), np.random.default_rng(1),
                                    "cpu", fraction=1)
    for coarse in out["coarse_input"]:
        row, col = np.unravel_index(int(torch.argmax(coarse[NEGATIVE_CHANNEL])), (S, S))
        assert not (8 <= row < 24 and 8 <= col < 24) and coarse[NEGATIVE_CHANNEL].max() > 0.9
        assert not coarse[POSITIVE_CHANNEL].any()


def test_without_corrections_the_batch_is_unchanged():
    batch = batch_with_a_square()
    out = add_simulated_corrections(Predicts(everything=False), batch, np.random.default_rng(2), "cpu", fraction=0)
    assert out is batch


def test_about_the_fraction_of_examples_gets_clicks():
    batch = batch_with_a_square(size=200)
    out = add_simulated_corrections(Predicts(everything=False), batch, np.random.default_rng(3), "cpu", fraction=0.6)
    clicked = out["coarse_input"][:, POSITIVE_CHANNEL].flatten(1).amax(dim=1) > 0
    assert 0.5 < clicked.float().mean() < 0.7


class FixesAfterOneClick:
    """Nothing from the extreme points alone; the true square once a positive click arrives."""

    def __init__(self, truth):
        self.truth = truth

    def segment(self, image, prompt):
        clicked = len(prompt.points) > 4 and prompt.point_labels[4] == 1
        return Segmentation(self.truth if clicked else np.zeros_like(self.truth), 1.0, prompt.label, "fake")


def test_click_curve_follows_the_clicks():
    truth = np.zeros((40, 40), bool)
    truth[10:30, 10:30] = True
    samples = [(np.zeros((40, 40, 3), np.uint8), truth)]
    assert click_curve(FixesAfterOneClick(truth), samples, clicks=3, kind=PromptKind.EXTREME) == [0.0, 1.0, 1.0, 1.0]
