"""The proposal model's labeller (backend/proposals/labeller.py): labels from object masks, saved
sha256-checked with the model, used by evaluation and training when masks can be made."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from backend.proposals import Proposal, ProposalModel, ProposalWeightsError, evaluate_proposals, train_proposal_model
from backend.proposals.evaluate import collect
from backend.proposals.labeller import Labeller
from backend.proposals.network import DetectorConfig, build_detector
from test_proposals import TINY, FixedDetector

SIZE = 96


def scene(rng, shape: str) -> tuple[np.ndarray, np.ndarray]:
    """A noisy image holding one object of a random colour: a disc or a thin diagonal bar."""
    image = rng.integers(0, 256, (SIZE, SIZE, 3)).astype(np.uint8)
    ys, xs = np.mgrid[:SIZE, :SIZE]
    cx, cy, r = (int(v) for v in rng.integers(35, 60, 3))
    r = r // 2
    if shape == "disc":
        mask = (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r
    else:
        mask = (np.abs((xs - cx) - (ys - cy)) <= 2) & (np.abs(xs - cx) <= r)
    image[mask] = rng.integers(0, 256, 3)
    return image, mask


def fitted(rng, per_shape=6) -> Labeller:
    objects = [(*scene(rng, shape), label) for _ in range(per_shape) for label, shape in enumerate(("disc", "bar"))]
    return Labeller.fit(objects, 3)  # label 2 has no object


def test_the_labeller_tells_objects_apart_by_their_masks_and_gives_an_absent_label_nothing():
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    labeller = fitted(rng)
    tests = [(*scene(rng, shape), label) for _ in range(5) for label, shape in enumerate(("disc", "bar"))]
    right = 0
    for image, mask, label in tests:
        probabilities = labeller.probabilities(image, [mask])[0]
        assert probabilities[2] < 1e-3 and probabilities.sum() == pytest.approx(1.0)
        right += int(probabilities.argmax() == label)
    assert right >= 9
    # An empty mask has no object to look at: equal odds, not an error.
    np.testing.assert_allclose(labeller.probabilities(tests[0][0], [np.zeros((SIZE, SIZE), bool)])[0], 1 / 3)


def test_no_labeller_below_two_labels_with_two_objects_each():
    rng = np.random.default_rng(1)
    discs = [(*scene(rng, "disc"), 0) for _ in range(4)]
    assert Labeller.fit(discs, 2) is None
    assert Labeller.fit(discs + [(*scene(rng, "bar"), 1)], 2) is None


def test_a_model_with_a_labeller_saves_it_checked_and_labels_proposals_by_their_masks(tmp_path):
    rng = np.random.default_rng(2)
    labeller = fitted(rng)
    model = ProposalModel(build_detector(TINY, 3, pretrained=False), ("round", "thin", "other"), TINY, labeller=labeller)
    model.save(tmp_path, {})
    loaded = ProposalModel.load(tmp_path)
    torch.testing.assert_close(loaded.labeller.weight, labeller.weight.half().float())
    image, bar = scene(rng, "bar")
    proposal = Proposal("round", (10.0, 10.0, 60.0, 60.0), 0.9)
    assert loaded.relabelled(proposal, image, bar).label == "thin"
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["files"]["labeller"]["file"] == "labeller.pt"
    (tmp_path / "labeller.pt").write_bytes((tmp_path / "labeller.pt").read_bytes() + b"x")
    with pytest.raises(ProposalWeightsError, match="sha256"):
        ProposalModel.load(tmp_path)
    del manifest["files"]["labeller"]["sha256"]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ProposalWeightsError, match="incomplete"):
        ProposalModel.load(tmp_path)


def test_evaluation_labels_each_proposal_from_the_mask_serving_would_make():
    rng = np.random.default_rng(3)
    image, bar = scene(rng, "bar")
    ys, xs = np.nonzero(bar)
    box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    # The detector calls it "round"; the labeller, from its mask, "thin" — the annotated label.
    model = ProposalModel(FixedDetector([box], [0.9], [1]), ("round", "thin"), TINY, labeller=fitted(rng))
    example = (image, [("thin", bar)])
    with pytest.raises(ValueError, match="mask_of"):
        collect(model, [example])
    asked = []

    def mask_of(array, proposal_box):
        asked.append(proposal_box)
        return bar

    figures = evaluate_proposals(model, [example], threshold=0.5, mask_of=mask_of)
    assert figures["correct"] == 1 and asked == [tuple(float(v) for v in box)]


@pytest.mark.slow
def test_training_with_masks_fits_a_labeller_and_says_where_labels_come_from(tmp_path):
    torch.set_num_threads(1)
    rng = np.random.default_rng(4)
    examples, boxes = [], []
    for _ in range(4):
        image, disc = scene(rng, "disc")
        other, bar = scene(rng, "bar")
        boxes.append((bar.nonzero()[1].min(), bar.nonzero()[0].min(), bar.nonzero()[1].max() + 1, bar.nonzero()[0].max() + 1))
        examples += [(image, [("round", disc)]), (other, [("thin", boxes[-1])])]
    made = []

    def mask_of(array, box):  # the boxes' objects (bars) get masks made, as the job's box mode makes them
        made.append((array.shape, box))
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        mask = np.zeros(array.shape[:2], bool)
        mask[y0:y1, x0:x1] = True
        return mask

    config = DetectorConfig(long_side=64, fpn_channels=32, head_convs=1)
    metrics = train_proposal_model(examples, ["round", "thin"], tmp_path / "v1", steps=2, config=config, mask_of=mask_of)
    assert metrics["training"]["labels_from"] == "labeller (object masks)"
    # at the images' own size (as serving shows the labeller objects), not the detector's 64 px
    assert made == [((SIZE, SIZE, 3), tuple(float(v) for v in box)) for box in boxes]
    assert ProposalModel.load(tmp_path / "v1").labeller is not None
    metrics = train_proposal_model(examples, ["round", "thin"], tmp_path / "v2", steps=2, config=config)
    assert metrics["training"]["labels_from"] == "detector" and ProposalModel.load(tmp_path / "v2").labeller is None


@pytest.mark.slow
def test_the_jobs_trainer_makes_masks_with_the_serving_versions_extreme_point_model(tmp_path):
    from backend.active_learning.proposal_training import BackendProposalTrainer
    from backend.settings import Settings

    rng = np.random.default_rng(5)
    examples = []
    for _ in range(3):
        image, disc = scene(rng, "disc")
        other, bar = scene(rng, "bar")
        ys, xs = np.nonzero(bar)
        examples += [(image, [("round", disc)]), (other, [("thin", np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]))])]
    trainer = BackendProposalTrainer("cpu", 1, steps=1, base_dir=Settings().proposals_base)
    weights = Settings().extreme_weights  # the committed default weights, as a first version serves them
    metrics = trainer.train(examples, examples[:1], ["round", "thin"], tmp_path / "p", None, lambda *a: None, weights)
    assert metrics["training"]["labels_from"] == "labeller (object masks)"
    assert trainer.evaluate(tmp_path / "p", examples[:1], weights)["objects"] == 1
