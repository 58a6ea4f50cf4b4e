"""Labeling policies learned from a project's annotations: adopted per label on a clear paired gain,
dropped the same way, published with the parent's weights when fine-tuning gains nothing, carried to
later versions, and served between the server default and the project's extra params."""

from __future__ import annotations

import numpy as np
import pytest
from active_learning_fakes import FakeReader, FakeTrainer, write_fake_weights
from test_proposals_serving import FakeProjectModels

from backend.active_learning.layout import Layout
from backend.active_learning.learned_policies import describe, learn_policies, policy_ious
from backend.active_learning.model_card import outcome_status
from backend.active_learning.training_job import run_training_job
from backend.active_learning.versions import VersionRegistry
from backend.jobs.store import FINISHED, JobStore
from backend.model import SegmentationModel
from backend.project_options import ProjectOptions
from backend.project_store import ProjectSetup, ProjectStore
from backend.segmenter_set import SegmenterSet
from backend.settings import Settings
from segmentation_fakes import CONFIG, BoxSegmenter, FakeImages


def ring(size: int = 24, hole: int = 6) -> np.ndarray:
    """A filled square with a square hole in its middle."""
    mask = np.zeros((size, size), bool)
    mask[2:-2, 2:-2] = True
    middle = size // 2
    mask[middle - hole // 2:middle + hole // 2, middle - hole // 2:middle + hole // 2] = False
    return mask


def solid(size: int = 24) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[2:-2, 2:-2] = True
    return mask


def test_annotators_who_fill_the_models_holes_teach_fill_holes_for_their_label_only():
    masks = [ring()] * 16
    targets = [solid()] * 8 + [ring()] * 8  # Cat annotators fill holes; Donut annotators keep them
    labels = ["Cat"] * 8 + ["Donut"] * 8
    learned = learn_policies({}, masks, targets, labels)
    assert learned.policies == {"Cat": {"fill_holes": True}}
    [change] = learned.changes
    assert (change.label, change.key, change.adopted) == ("Cat", "fill_holes", True)
    assert change.decision.ci95[0] > 0 and change.decision.miou_after == 1.0
    assert learned.miou_before < learned.miou_after == pytest.approx(1.0)
    assert "fill_holes adopted for Cat" in learned.summary() and describe(learned.policies) == "Cat: fill_holes"
    assert policy_ious(learned.policies, masks, targets, labels) == [1.0] * 16


def test_masks_the_annotators_accept_as_they_are_teach_nothing():
    masks = [ring()] * 10
    learned = learn_policies({}, masks, masks, ["Cat"] * 10)
    assert learned.policies == {} and learned.changes == [] and describe(learned.policies) == "none"
    assert learned.miou_before == learned.miou_after == 1.0


def test_a_label_with_few_instances_keeps_its_policies_however_clear_they_look():
    learned = learn_policies({"Dog": {"keep_largest": True}}, [ring()] * 5 + [ring()] * 5,
                             [solid()] * 5 + [ring()] * 5, ["Cat"] * 5 + ["Dog"] * 5)
    assert learned.policies == {"Dog": {"keep_largest": True}} and learned.changes == []


def test_a_few_instances_that_happen_to_gain_decide_nothing():
    masks = [ring()] * 12
    targets = [solid()] * 2 + [ring()] * 10  # two filled, ten kept: filling loses on most
    learned = learn_policies({}, masks, targets, ["Cat"] * 12)
    assert learned.policies == {}


def test_a_learned_policy_the_annotators_no_longer_follow_is_dropped_and_other_labels_keep_theirs():
    current = {"Cat": {"fill_holes": True}, "Dog": {"keep_largest": True}}
    learned = learn_policies(current, [ring()] * 8, [ring()] * 8, ["Cat"] * 8)
    assert learned.policies == {"Dog": {"keep_largest": True}}
    [change] = learned.changes
    assert (change.label, change.key, change.adopted) == ("Cat", "fill_holes", False)


def test_stray_parts_the_annotators_remove_teach_keep_largest():
    stray = solid()
    stray[0, 0] = True  # a one-pixel part apart from the object (8-connected: not touching it)
    learned = learn_policies({}, [stray] * 8, [solid()] * 8, ["Car"] * 8)
    assert learned.policies == {"Car": {"keep_largest": True}}


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="one mask, target and label per instance"):
        learn_policies({}, [ring()], [ring(), ring()], ["Cat"])


class HoleyModel(FakeTrainer):
    """The model leaves a hole in every object the annotators fill; fine-tuning makes it worse."""

    def masks(self, weights_dir, samples) -> list:
        holey = []
        for _, mask in samples:
            mask = mask.copy()
            mask[3:5, 3:5] = False  # inside fake_task's 4x4 square: a closed hole
            holey.append(mask)
        return holey


@pytest.fixture
def settings(tmp_path) -> Settings:
    weights = write_fake_weights(tmp_path / "default", 0.5, version="base-v0")
    return Settings(model_dir=tmp_path / "model_dir", extreme_weights=weights, train_steps=3)


def run_job(settings, trainer):
    jobs = JobStore(Layout(settings.model_dir))
    job = jobs.create("3", "test")
    run_training_job(settings, job.id, trainer=trainer, reader=FakeReader())
    return jobs.get(job.id)


def test_a_learned_policy_is_published_with_the_parents_weights_and_carried_to_later_versions(settings):
    trainer = HoleyModel(gain=-0.01)
    done = run_job(settings, trainer)
    assert done.state == FINISHED and done.result["published"] and done.result["version"] == "p3-v1"
    assert done.result["policies"] == {"Cat": {"fill_holes": True}}
    assert done.result["policy_changes"][0]["policy"] == "fill_holes" and done.result["steps"] == 0
    assert done.result["miou_before"] == 0.75 and done.result["miou_after"] == 1.0
    assert done.result["reason"].startswith("learned: fill_holes adopted for Cat")
    assert "the fine-tuned model is not taken: held-out mIoU fell from 0.5000" in done.result["reason"]
    assert outcome_status(done) == "published p3-v1 (mIoU with the learned policies 0.75 → 1.0)"
    assert [call["version"] for call in trainer.calls] == ["p3-v1-fold1", "p3-v1-fold2"]  # no final fine-tune
    registry = VersionRegistry.from_settings(settings)
    version = registry.serving("3")
    assert version.name == "p3-v1" and version.policies == {"Cat": {"fill_holes": True}}
    assert (version.path / "weights.json").read_text() == (settings.extreme_weights / "weights.json").read_text()

    later = run_job(settings, FakeTrainer(gain=0.1))  # a better model: the policy goes along
    assert later.result["published"] and registry.serving("3").policies == {"Cat": {"fill_holes": True}}


def test_learned_policies_serve_under_the_projects_own(tmp_path):
    learned = {"Car": {"fill_holes": True, "keep_largest": True}}
    segmenters = SegmenterSet(extreme=BoxSegmenter("extreme-fake"), extreme_version="v1")
    store = ProjectStore(tmp_path / "projects")
    store.save(ProjectSetup("7", CONFIG, {"policies": {"Car": {"keep_largest": False}}}, "v"))
    model = SegmentationModel(Settings(model_dir=tmp_path), segmenters, FakeImages(), store,
                              project_models=FakeProjectModels(segmenters.extreme, policies=learned))
    policy = model.project_context("7").options.policies.for_label("Car")
    assert policy.fill_holes is True and policy.keep_largest is False  # the extra params win
    assert ProjectOptions.for_project(None, None, learned).policies.for_label("Car").keep_largest is True
