"""The proposal model (backend/proposals): interface, suppression, thresholds, calibration, weights,
caps and bad input on tiny images; one short real training on a trivially separable toy set."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from backend.prompts import LoadedImage
from backend.proposals import (
    MAX_OBJECTS, Proposal, ProposalError, ProposalModel, ProposalWeightsError, choose_threshold, evaluate_proposals,
    train_proposal_model,
)
from backend.proposals.annotations import prepare
from backend.proposals.augment import augment
from backend.proposals.calibration import Calibration, fit_calibration
from backend.proposals.evaluate import PRIOR_OBJECTS, PRIOR_THRESHOLD, ImageResult, best_threshold, heldout_threshold
from backend.proposals.network import DetectorConfig, build_detector

TINY = DetectorConfig(long_side=192, fpn_channels=32, head_convs=1)


class FixedDetector(torch.nn.Module):
    """Stands in for FCOS: the same detections (natural px, labels 1-based) for every image."""

    def __init__(self, boxes, scores, labels):
        super().__init__()
        self.output = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                       "scores": torch.tensor(scores, dtype=torch.float32), "labels": torch.tensor(labels, dtype=torch.int64)}

    def forward(self, images):
        return [dict(self.output) for _ in images]


def fixed_model(boxes, scores, labels, names=("cat", "dog"), threshold=0.3) -> ProposalModel:
    return ProposalModel(FixedDetector(boxes, scores, labels), names, TINY, threshold=threshold)


def image(h=60, w=80):
    return LoadedImage(array=np.zeros((h, w, 3), np.uint8), key="k")


def toy_example(rng, size=96):
    """Grey image with a red square ("red") and/or a blue square ("blue") at random places."""
    array = np.full((size, size, 3), 128, np.uint8)
    objects = []
    for label, colour in (("red", (230, 20, 20)), ("blue", (20, 20, 230))):
        if rng.random() < 0.8:
            side = int(rng.integers(16, 32))
            x, y = (int(v) for v in rng.integers(0, size - side, 2))
            mask = np.zeros((size, size), bool)
            mask[y : y + side, x : x + side] = True
            if any((m & mask).any() for _, m in objects):
                continue
            array[mask] = colour
            objects.append((label, mask))
    return array, objects


def test_propose_gives_one_proposal_per_object_across_labels_most_confident_first():
    model = fixed_model(
        boxes=[[10, 10, 40, 40], [11, 10, 41, 40], [12, 11, 40, 41], [50, 5, 70, 30], [0, 0, 5, 5]],
        scores=[0.9, 0.8, 0.7, 0.6, 0.2], labels=[1, 1, 2, 2, 1],
    )
    proposals = model.propose(image())
    assert [p.label for p in proposals] == ["cat", "dog"]  # the dog on the cat is the same object; 0.2 < 0.3
    assert all(isinstance(p, Proposal) and p.extreme_points is None for p in proposals)
    assert proposals[0].box == (10.0, 10.0, 40.0, 40.0)
    assert proposals[0].score > proposals[1].score
    assert len(model.propose(image(), threshold=0.0)) == 3
    assert len(model.propose(image(), threshold=0.0, max_objects=1)) == 1


def test_a_box_mostly_inside_a_more_confident_box_of_its_label_is_a_part_not_an_object():
    model = fixed_model(
        boxes=[[10, 10, 50, 50], [12, 12, 30, 30], [40, 40, 70, 58], [20, 20, 35, 35], [0, 0, 60, 60]],
        scores=[0.9, 0.8, 0.7, 0.6, 0.5], labels=[1, 1, 1, 2, 1],
    )
    boxes = [p.box for p in model.propose(image(), threshold=0.0)]
    # the part (12..30) goes; a box half outside stays, as do one of another label and the larger,
    # less confident box around the first (it is no part of it)
    assert boxes == [(10.0, 10.0, 50.0, 50.0), (40.0, 40.0, 70.0, 58.0), (20.0, 20.0, 35.0, 35.0), (0.0, 0.0, 60.0, 60.0)]


def test_propose_clips_boxes_to_the_image_and_rejects_non_rgb_arrays():
    model = fixed_model(boxes=[[-5, -5, 100, 100]], scores=[0.9], labels=[1])
    assert model.propose(image(60, 80))[0].box == (0.0, 0.0, 80.0, 60.0)
    with pytest.raises(ProposalError):
        model.propose(LoadedImage(array=np.zeros((60, 80), np.uint8), key="grey"))


def test_calibration_keeps_the_ranking_and_follows_the_outcomes():
    assert Calibration().apply(np.array([0.3]))[0] == pytest.approx(0.3)
    raw = np.linspace(0.1, 0.9, 40)
    correct = raw > 0.7  # the detector is right only when quite sure: its 0.5 is worth less than 0.5
    calibration = fit_calibration(raw, correct)
    mapped = calibration.apply(raw)
    assert np.all(np.diff(mapped) > 0)
    assert calibration.apply(np.array([0.5]))[0] < 0.3
    assert fit_calibration(raw, np.ones(40, bool)) == Calibration()  # nothing to fit


def result(scores, correct, objects):
    n = len(scores)
    return ImageResult(np.zeros((n, 4)), np.array(scores, float), np.zeros(n, np.int64), np.zeros((objects, 4)),
                       np.zeros(objects, np.int64), np.array(correct, bool), np.zeros(n))


def test_threshold_maximises_f1_and_sits_between_scores():
    results = [result([0.9, 0.8, 0.6, 0.4], [True, True, False, True], 3), result([0.7, 0.3], [True, False], 1)]
    # ranked: .9 T, .8 T, .7 T, .6 F, .4 T, .3 F with 4 objects: F1 best keeping the top 5 (4 found of 5)
    assert best_threshold(results) == pytest.approx((0.4 + 0.3) / 2)
    assert best_threshold([result([0.9], [False], 0)]) == 0.5  # nothing to find: the default


def test_a_held_out_threshold_from_few_objects_leans_on_the_prior():
    lucky = [result([0.9, 0.5, 0.45], [True, False, False], 2)]  # one task: its best F1 keeps only the top one
    best = best_threshold(lucky)
    assert best == pytest.approx(0.7)
    chosen = heldout_threshold(lucky)
    assert chosen == pytest.approx((2 * best + PRIOR_OBJECTS * PRIOR_THRESHOLD) / (2 + PRIOR_OBJECTS))
    many = [result([0.9, 0.5, 0.45], [True, False, False], 2)] * 1000
    assert abs(heldout_threshold(many) - best_threshold(many)) < 0.01  # many objects: their own choice
    assert heldout_threshold([result([0.9], [False], 0)]) == PRIOR_THRESHOLD  # nothing to find


def test_evaluate_and_choose_threshold_match_boxes_of_the_same_label():
    model = fixed_model(boxes=[[10, 10, 40, 40], [50, 5, 70, 30]], scores=[0.9, 0.6], labels=[1, 2])
    truth_mask = np.zeros((60, 80), bool)
    truth_mask[10:40, 10:40] = True
    examples = [(np.zeros((60, 80, 3), np.uint8), [("cat", truth_mask), ("dog", (50, 5, 70, 30)), ("cow", (0, 0, 9, 9))])]
    figures = evaluate_proposals(model, examples, threshold=0.0)
    assert figures["recall"] == 1.0 and figures["precision"] == 1.0 and figures["objects"] == 2  # cow: not a label
    assert figures["mean_box_iou"] == pytest.approx(1.0)
    wrong_label = [(examples[0][0], [("dog", truth_mask)])]
    assert evaluate_proposals(model, wrong_label, threshold=0.0)["recall"] == 0.0
    assert choose_threshold(model, examples) < 0.6
    negative = evaluate_proposals(fixed_model([], [], []), [(examples[0][0], [])], threshold=0.5)
    assert negative["recall"] == 1.0 and negative["precision"] == 1.0  # nothing there, nothing proposed


def test_prepare_counts_what_it_leaves_out_and_resizes_every_image_to_one_long_side():
    big = np.zeros((300, 600, 3), np.uint8)
    small = np.zeros((40, 20, 3), np.uint8)
    empty = np.zeros((300, 600), bool)
    objects = [("cat", (0, 0, 300, 150)), ("cow", (0, 0, 10, 10)), ("cat", empty), ("dog", (5, 5, 6, 6)),
               ("dog", np.array([[10, 10], [100, 40], [50, 80], [30, 20]]))]
    prepared, counts = prepare([(big, objects), (small, [])], ["cat", "dog"], long_side=128)
    assert [p.image.shape for p in prepared] == [(64, 128, 3), (128, 64, 3)]
    assert counts.unknown_label == 1 and counts.empty_or_degenerate == 1 and counts.too_small == 1
    assert counts.objects == 2 and counts.negatives == 1 and counts.per_label == {"cat": 1, "dog": 1}
    np.testing.assert_allclose(prepared[0].targets[0].box, [0, 0, 64, 32])
    many = [("cat", (i, 0, i + 3, 3 + (i % 7))) for i in range(0, 3 * (MAX_OBJECTS + 50), 3)]
    prepared, counts = prepare([(np.zeros((20, 3 * (MAX_OBJECTS + 50), 3), np.uint8), many)], ["cat"], long_side=3 * (MAX_OBJECTS + 50))
    assert len(prepared[0].targets) == MAX_OBJECTS and counts.over_cap == 50
    with pytest.raises(ProposalError):
        prepare([(big, [("cat", np.zeros((10, 10), bool))])], ["cat"], 128)  # a mask of another size


def test_augmentation_keeps_boxes_on_their_objects():
    rng = np.random.default_rng(0)
    prepared, _ = prepare([toy_example(rng) for _ in range(6)], ["red", "blue"], long_side=96)
    for _ in range(30):
        array, targets = augment(prepared[0], prepared, rng)
        assert array.shape == prepared[0].image.shape and array.dtype == np.uint8
        for target in targets:
            x0, y0, x1, y1 = target.box
            assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 96
            if target.mask is not None:
                ys, xs = np.nonzero(target.mask)
                assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)


def test_training_needs_labels_and_objects(tmp_path):
    negative = (np.zeros((32, 32, 3), np.uint8), [])
    with pytest.raises(ProposalError, match="at least one label"):
        train_proposal_model([negative], [], tmp_path)
    with pytest.raises(ProposalError, match="no object"):
        train_proposal_model([negative, (negative[0], [("other", (0, 0, 9, 9))])], ["cat"], tmp_path, config=TINY)
    assert not (tmp_path / "manifest.json").exists()


def test_save_load_round_trip_and_sha256_check(tmp_path):
    model = ProposalModel(build_detector(TINY, 2, pretrained=False), ("cat", "dog"), TINY, threshold=0.42,
                          calibration=Calibration(1.5, -0.2))
    model.save(tmp_path, {"training": {"images": 3}})
    loaded = ProposalModel.load(tmp_path)
    assert loaded.labels == ("cat", "dog") and loaded.threshold == 0.42 and loaded.calibration == Calibration(1.5, -0.2)
    assert loaded.manifest["training"] == {"images": 3}
    saved, restored = model.detector.state_dict(), loaded.detector.state_dict()
    assert saved.keys() == restored.keys()
    for key in saved:
        torch.testing.assert_close(restored[key], saved[key].half().to(saved[key].dtype))  # fp16 on disk
    (tmp_path / "proposals.pt").write_bytes((tmp_path / "proposals.pt").read_bytes() + b"x")
    with pytest.raises(ProposalWeightsError, match="sha256"):
        ProposalModel.load(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    del manifest["labels"]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ProposalWeightsError, match="incomplete"):
        ProposalModel.load(tmp_path)
    with pytest.raises(ProposalWeightsError, match="no manifest"):
        ProposalModel.load(tmp_path / "nowhere")


@pytest.mark.slow
def test_training_on_a_separable_toy_set_finds_the_objects(tmp_path):
    torch.set_num_threads(1)
    rng = np.random.default_rng(1)
    examples = [toy_example(rng) for _ in range(10)]
    heldout = [toy_example(rng) for _ in range(4)]
    progress = []
    config = DetectorConfig(long_side=192, fpn_channels=32, head_convs=1)
    metrics = train_proposal_model(examples, ["red", "blue"], tmp_path / "v1", heldout=heldout, steps=120, seed=0,
                                   config=config, progress_cb=lambda step, steps, values: progress.append(values["loss"]))
    assert len(progress) == 120 and np.mean(progress[-10:]) < np.mean(progress[:10])
    assert metrics["training"]["images"] == 10 and metrics["heldout"]["objects"] > 0
    model = ProposalModel.load(tmp_path / "v1")
    tests = [toy_example(rng) for _ in range(6)]
    figures = evaluate_proposals(model, tests)
    assert figures["recall"] >= 0.8 and figures["precision"] >= 0.8, figures
    # A next version starts from this one, with a label added: the known labels keep their classifier rows.
    metrics = train_proposal_model(examples, ["blue", "green", "red"], tmp_path / "v2", init_dir=tmp_path / "v1",
                                   steps=2, config=config)
    assert ProposalModel.load(tmp_path / "v2").labels == ("blue", "green", "red")
