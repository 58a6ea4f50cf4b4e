"""The correction-click protocol on fake segmenters whose answers are known, and through the harness."""

import argparse
import csv
from dataclasses import replace

import numpy as np
import pytest

from backend.coco import EvalImage, EvalObject
from backend.evaluation import evaluate as evaluate_command
from backend.evaluation.clicks import ClickProtocol, correct, first_prompt_clicks, with_click
from backend.evaluation.harness import METHODS_BY_NAME, evaluate
from backend.evaluation.report import markdown, summarize
from backend.prompts import LoadedImage, Prompt, PromptError, PromptKind, Segmentation

SIZE = 64


def disc(col, row, radius):
    """Pixels whose centre lies within ``radius`` of pixel (col, row)'s centre."""
    rows, cols = np.mgrid[:SIZE, :SIZE]
    return (rows - row) ** 2 + (cols - col) ** 2 <= radius**2


def union(discs):
    return np.any([disc(*d) for d in discs], axis=0)


# Three discs of different sizes: the largest missed one is clicked first.
DISCS = [(14, 14, 8), (46, 16, 6), (30, 48, 4)]
TRUTH = union(DISCS)


class DiscPainter:
    """Answers any prompt with ``spill`` (what its first mask gets wrong), plus the true disc of
    ``discs`` centred on each positive correction click, minus a disc of radius 5 around each
    negative one."""

    model_name = "disc-painter"

    def __init__(self, discs=DISCS, spill=None):
        self.radius_at = {(col, row): radius for col, row, radius in discs}
        self.spill = np.zeros((SIZE, SIZE), bool) if spill is None else spill

    def segment(self, image, prompt):
        first = 4 if prompt.kind == PromptKind.EXTREME else 0
        mask = self.spill.copy()
        for (x, y), label in zip(prompt.points[first:], prompt.point_labels[first:]):
            col, row = int(x), int(y)
            if label:
                mask |= disc(col, row, self.radius_at.get((col, row), 2))
            else:
                mask &= ~disc(col, row, 5)
        return Segmentation(mask=mask, score=0.5, label=prompt.label, model=self.model_name)


class NoCorrections(DiscPainter):
    def segment(self, image, prompt):
        if len(prompt.points) > (4 if prompt.kind == PromptKind.EXTREME else 0):
            raise PromptError("an extreme-point prompt needs 4 finite points, got 5")
        return super().segment(image, prompt)


EXTREME = Prompt(PromptKind.EXTREME, "thing", points=np.array([[6, 14], [52, 16], [30, 6], [30, 52]], np.float32),
                 point_labels=np.ones(4, np.int64))
BOX = Prompt(PromptKind.BOX, "thing", box=(6.0, 6.0, 53.0, 53.0))
EXACT = ClickProtocol(corrections=3, max_clicks=20, jitter_px=0.0)


def run(segmenter, prompt, protocol=EXACT, truth=TRUTH):
    first = segmenter.segment(None, prompt).mask
    return correct(lambda p: segmenter.segment(None, p).mask, prompt, first, truth, protocol, np.random.default_rng(0))


def test_each_positive_click_adds_the_largest_missed_disc_and_noc_counts_the_first_prompt():
    outcome = run(DiscPainter(), BOX)
    areas = [disc(*d).sum() for d in DISCS]
    expected = [0.0, areas[0] / TRUTH.sum(), (areas[0] + areas[1]) / TRUTH.sum(), 1.0]
    assert outcome.ious == pytest.approx(expected)
    assert outcome.reached and outcome.noc == 2 + 3  # a box counts 2 clicks, then 3 corrections
    assert len(outcome.click_ms) == 3 and not outcome.refused
    assert run(DiscPainter(), EXTREME).noc == 4 + 3  # extreme points count 4


def test_an_object_not_at_the_target_within_the_cap_counts_the_cap():
    outcome = run(DiscPainter(), EXTREME, ClickProtocol(corrections=3, max_clicks=6, jitter_px=0.0))
    assert outcome.ious[-1] == 1.0  # the reported corrections all ran ...
    assert not outcome.reached and outcome.noc == 6  # ... but 0.90 came at click 7, past the cap


def test_clicks_go_on_past_the_reported_ones_until_the_target():
    many = [(8 + 12 * i, 8 + 12 * j, 3) for i in range(4) for j in range(4)]  # 16 equal discs: 15 clicks to 0.90
    outcome = run(DiscPainter(many), BOX, truth=union(many))
    assert outcome.reached and outcome.noc == 2 + 15 and len(outcome.ious) == 16
    assert list(outcome.ious) == sorted(outcome.ious)


def test_a_spill_gets_a_negative_click_then_the_miss_a_positive_one():
    spill = disc(50, 50, 4)  # larger than the one true disc, so clicked first
    outcome = run(DiscPainter([(14, 14, 3)], spill), BOX, truth=disc(14, 14, 3))
    assert outcome.ious[:3] == pytest.approx([0.0, 0.0, 1.0])  # spill removed, then the miss added
    assert outcome.noc == 4


class Forgetful(DiscPainter):
    """The two larger discs without clicks; corrected, only the disc at the latest positive click:
    a model that loses the object when corrected."""

    def segment(self, image, prompt):
        first = 4 if prompt.kind == PromptKind.EXTREME else 0
        if len(prompt.points) == first:
            return Segmentation(mask=union(DISCS[:2]), score=0.5, label=prompt.label, model=self.model_name)
        return super().segment(image, replace(prompt, points=prompt.points[-1:], point_labels=prompt.point_labels[-1:]))


def test_merged_as_served_a_correction_keeps_the_mask_the_model_forgot():
    forgetful = Forgetful()
    first = forgetful.segment(None, BOX).mask
    answers = {merge: correct(lambda p: forgetful.segment(None, p).mask, BOX, first, TRUTH, EXACT,
                              np.random.default_rng(0), merge=merge) for merge in (False, True)}
    assert answers[True].ious[:2] == pytest.approx([first.sum() / TRUTH.sum(), 1.0])
    assert answers[False].ious[1] == pytest.approx(disc(*DISCS[2]).sum() / TRUTH.sum())  # the smallest disc alone


def test_an_exact_first_mask_needs_no_click():
    outcome = run(DiscPainter(spill=TRUTH), EXTREME)
    assert outcome.ious == (1.0,) and outcome.noc == 4 and outcome.reached
    assert outcome.iou_after(3) == 1.0


def test_a_segmenter_that_refuses_corrections_is_reported_not_crashed_on():
    outcome = run(NoCorrections(), EXTREME)
    assert outcome.refused.startswith("takes no corrections: an extreme-point prompt needs 4")
    assert outcome.ious == (0.0,) and not outcome.reached


def test_with_click_appends_after_the_extreme_points():
    prompt = with_click(with_click(EXTREME, 10.5, 11.5, True), 3.5, 4.5, False)
    assert prompt.points.shape == (6, 2) and prompt.points[4].tolist() == [10.5, 11.5]
    assert prompt.point_labels.tolist() == [1, 1, 1, 1, 1, 0]
    assert first_prompt_clicks(prompt) == 4 and first_prompt_clicks(BOX) == 2


class Images(list):
    """A dataset as ``evaluate`` reads one: iterable of EvalImage, len = objects, n_images."""

    n_images = 1


def harness_images():
    image = LoadedImage(np.zeros((SIZE, SIZE, 3), np.uint8), key="blank")
    return Images([EvalImage(1, image, [EvalObject(7, "discs", TRUTH, name="blank/discs")])])


def test_the_harness_reports_clicks_per_method_and_leaves_refusals_out():
    methods = [METHODS_BY_NAME["custom-extreme"], METHODS_BY_NAME["grabcut"]]
    segmenters = {"extreme": NoCorrections(), "grabcut": DiscPainter()}
    results = evaluate(harness_images(), methods, segmenters, clicks=ClickProtocol(jitter_px=0.0))
    summary = summarize(results, [method.name for method in methods], 2.0, corrections=3)
    assert summary.clicks["grabcut"].miou_after[-1] == 1.0 and summary.clicks["grabcut"].noc == 5
    assert summary.clicks["custom-extreme"].refused == 1
    table = markdown(summary)
    assert "| grabcut | 2 | 1 | 0.000 | 0.549 | 0.864 | 1.000 | 5.00 | 0 |" in table
    assert "| custom-extreme | 4 | 1 | 0.000 | refused | refused | refused | - | - | - |" in table
    assert "custom-extreme: corrections refused or failed on 1 of 1 objects" in table
    assert "| blank/discs | 0.000 | 0.000 → " in table
    assert "reads no clicks" not in table


class IgnoresClicks(DiscPainter):
    def segment(self, image, prompt):
        return super().segment(image, replace(prompt, points=prompt.points[:0], point_labels=prompt.point_labels[:0]))


def test_a_segmenter_that_ignores_clicks_is_named_in_the_notes():
    methods = [METHODS_BY_NAME["custom-box"]]
    results = evaluate(harness_images(), methods, {"extreme": IgnoresClicks()}, clicks=ClickProtocol(jitter_px=0.0))
    summary = summarize(results, ["custom-box"], 2.0, corrections=3)
    assert summary.clicks["custom-box"].noc == 20 and summary.clicks["custom-box"].not_reached == 1
    assert "custom-box: no correction click changed any mask's IoU (its segmenter reads no clicks)" in markdown(summary)


def cli(tmp_path, *options):
    parser = argparse.ArgumentParser()
    evaluate_command.add_arguments(parser)
    return parser.parse_args(["--real-photos", "heldout", "--methods", "grabcut", "--out", str(tmp_path), *options])


def test_the_command_runs_the_protocol_and_writes_its_table(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(evaluate_command, "evaluation_images", lambda split: harness_images())
    monkeypatch.setattr(evaluate_command, "load_segmenters", lambda args, needed, device: ({"grabcut": DiscPainter()}, []))
    assert evaluate_command.run(cli(tmp_path, "--clicks", "2", "--click-jitter", "0")) == 0
    printed = capsys.readouterr().out
    assert "| correction clicks: method | first prompt (clicks) | objects | IoU after 0 | IoU after 1 | IoU after 2 |" in printed
    assert "NoC@90 capped at 20 clicks" in printed
    rows = list(csv.DictReader((tmp_path / "clicks.csv").open()))
    assert rows[0]["method"] == "grabcut" and rows[0]["noc90"] == "5.000"
    per_object = list(csv.DictReader((tmp_path / "per_object.csv").open()))
    assert per_object[0]["noc90"] == "5" and per_object[0]["click_ious"].startswith("[0.0, ")


def test_clicks_0_turns_the_protocol_off(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(evaluate_command, "evaluation_images", lambda split: harness_images())
    monkeypatch.setattr(evaluate_command, "load_segmenters", lambda args, needed, device: ({"grabcut": DiscPainter()}, []))
    assert evaluate_command.run(cli(tmp_path, "--clicks", "0")) == 0
    assert "correction clicks" not in capsys.readouterr().out and not (tmp_path / "clicks.csv").exists()


@pytest.mark.parametrize("option", [["--max-clicks", "3"], ["--clicks", "-1"], ["--click-jitter", "-2"]])
def test_bad_click_options_are_refused(tmp_path, option):
    with pytest.raises(SystemExit):
        cli(tmp_path, *option)
