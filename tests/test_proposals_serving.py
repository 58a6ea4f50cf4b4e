"""Proposals in serving (project option "proposals"): the objects a (fake) proposal model finds
become prompts routed to the loaded segmenters, one region per object (never a duplicate of a
prompt's mask), label and honest score from the proposal, policies and polygon output applied;
the option and its threshold override parsed; the reasons given when there is no proposal model."""

from __future__ import annotations

from dataclasses import dataclass, replace
from types import SimpleNamespace

import numpy as np
import pytest

from backend.model import SegmentationModel
from backend.project_options import OptionError, ProjectOptions
from backend.project_store import ProjectSetup, ProjectStore
from backend.prompts import PromptKind
from backend.segmenter_set import SegmenterSet
from backend.settings import Settings
from segmentation_fakes import CONFIG, PROJECT, BoxSegmenter, FakeImages, rectangle, task

POLYGON_CONFIG = CONFIG.replace('<BrushLabels name="mask"', '<PolygonLabels name="mask"').replace(
    "</BrushLabels>", "</PolygonLabels>")


@dataclass
class FakeProposal:
    label: str
    box: tuple
    score: float
    extreme_points: np.ndarray | None = None


class FakeProposer:
    """A ProposalModel stand-in: the same proposals for every image; records the threshold asked."""

    def __init__(self, proposals, threshold=0.5, labeller=None):
        self.proposals, self.threshold, self.asked, self.labeller = proposals, threshold, [], labeller

    def propose(self, image, threshold=None, max_objects=100):
        self.asked.append((threshold, max_objects))
        limit = self.threshold if threshold is None else threshold
        return [p for p in self.proposals if p.score >= limit][:max_objects]

    def relabelled(self, proposal, array, mask):
        """``labeller(mask)``: the label a labeller would give the object's mask."""
        return proposal if self.labeller is None else replace(proposal, label=self.labeller(mask))


class FakeProjectModels:
    def __init__(self, extreme, proposer=None, status=None, policies=None):
        self.extreme, self.proposer, self.status, self.policies = extreme, proposer, status or {}, policies or {}

    def segmenter_for(self, project):
        return self.extreme, SimpleNamespace(name="p7-v2" if self.proposer else "v1", policies=self.policies)

    def proposer_for(self, project):
        return (self.proposer, SimpleNamespace(name="p7-v2")) if self.proposer else (None, None)

    def proposals_status(self, project):
        if self.proposer is not None:
            return {**self.status, "serving": "p7-v2", "threshold": self.proposer.threshold}
        return self.status


def model_for(tmp_path, proposer, params=None, sam=True, extreme=True, config=CONFIG, status=None, **settings):
    segmenters = SegmenterSet(sam=BoxSegmenter("sam-fake", score=0.9) if sam else None,
                              extreme=BoxSegmenter("extreme-fake", score=0.7) if extreme else None,
                              sam_name="sam-fake" if sam else "", extreme_version="v1" if extreme else "")
    store = ProjectStore(tmp_path / "projects")
    store.save(ProjectSetup("7", config, {"proposals": True} if params is None else params, "v"))
    model = SegmentationModel(replace(Settings(), model_dir=tmp_path, **settings), segmenters, FakeImages(), store,
                              project_models=FakeProjectModels(segmenters.extreme, proposer, status))
    return model, segmenters


CAR = FakeProposal("Car", (10, 10, 50, 40), 0.9)
DOG = FakeProposal("Dog", (100, 20, 150, 80), 0.6)


def regions(prediction):
    return [r for r in prediction.entry["result"]]


def test_a_task_without_prompts_gets_one_region_per_object_with_the_proposals_label_and_score(tmp_path):
    model, segmenters = model_for(tmp_path, FakeProposer([CAR, DOG]))
    prediction = model.batch_prediction(task(), model.project_context(PROJECT))
    found = regions(prediction)
    assert [r["value"]["brushlabels"] for r in found] == [["Car"], ["Dog"]]
    assert [r["score"] for r in found] == [pytest.approx(0.9 * 0.9), pytest.approx(0.6 * 0.9)]
    assert [p.kind for p in segmenters.sam.prompts] == [PromptKind.BOX, PromptKind.BOX]
    assert segmenters.sam.prompts[0].box == CAR.box
    assert prediction.entry["model_version"].startswith("segassist-p7-v2+")


def test_without_sam_predicted_extreme_points_go_to_the_extreme_model_else_its_box_mode(tmp_path):
    points = np.array([[30, 10], [30, 40], [10, 25], [50, 25]], np.float32)
    with_points = replace(CAR, extreme_points=points)
    model, segmenters = model_for(tmp_path, FakeProposer([with_points, DOG]), sam=False)
    prediction = model.batch_prediction(task(), model.project_context(PROJECT))
    assert len(regions(prediction)) == 2
    kinds = [p.kind for p in segmenters.extreme.prompts]
    assert kinds == [PromptKind.EXTREME, PromptKind.BOX]
    np.testing.assert_array_equal(segmenters.extreme.prompts[0].points, points)


def test_a_proposal_on_a_prompts_object_is_left_out_and_other_objects_are_filled_in(tmp_path):
    model, _ = model_for(tmp_path, FakeProposer([FakeProposal("Car", (12, 11, 49, 40), 0.95), DOG]))
    prompted = task(predictions=[{"result": [rectangle(10, 10, 50, 40)]}])
    found = regions(model.batch_prediction(prompted, model.project_context(PROJECT)))
    assert [r["value"]["brushlabels"] for r in found] == [["Car"], ["Dog"]]
    assert found[0]["score"] == pytest.approx(0.9)  # the prompt's mask, not the proposal's


def test_two_proposals_of_one_object_give_one_region_the_more_confident(tmp_path):
    again = FakeProposal("Dog", (11, 11, 50, 41), 0.7)
    labelled = []
    model, _ = model_for(tmp_path, FakeProposer([again, CAR], labeller=lambda mask: labelled.append(mask) or "Car"))
    found = regions(model.batch_prediction(task(), model.project_context(PROJECT)))
    assert [r["value"]["brushlabels"] for r in found] == [["Car"]]
    assert len(labelled) == 1  # the duplicate is left out before it is labelled


def test_the_labeller_labels_each_object_from_its_mask_and_a_label_the_config_lacks_is_left_out(tmp_path):
    seen = []

    def labeller(mask):
        seen.append(mask.sum())
        return "Dog" if len(seen) == 1 else "Horse"

    model, _ = model_for(tmp_path, FakeProposer([CAR, DOG], labeller=labeller))
    prediction = model.batch_prediction(task(), model.project_context(PROJECT))
    assert [r["value"]["brushlabels"] for r in regions(prediction)] == [["Dog"]]
    assert seen == [40 * 30, 50 * 60]  # each proposal's own mask (the fake segmenter fills its box)
    assert any('"Horse"' in note for note in prediction.skipped)


def test_polygon_output_gives_one_region_per_object(tmp_path):
    class TwoParts(BoxSegmenter):
        def segment(self, image, prompt):
            segmentation = super().segment(image, prompt)
            segmentation.mask[90:95, 190:195] = True  # a far speck: a second part
            return segmentation

    model, segmenters = model_for(tmp_path, FakeProposer([CAR]), config=POLYGON_CONFIG)
    model.segmenters = replace(segmenters, sam=TwoParts("sam-fake", score=0.9))
    found = regions(model.batch_prediction(task(), model.project_context(PROJECT)))
    assert len(found) == 1 and found[0]["type"] == "polygonlabels"


def test_the_projects_threshold_override_and_the_cap_reach_the_proposal_model(tmp_path):
    proposer = FakeProposer([CAR, DOG])
    model, _ = model_for(tmp_path, proposer, params={"proposals": True, "proposal_threshold": 0.8},
                         proposals_max_objects=3)
    found = regions(model.batch_prediction(task(), model.project_context(PROJECT)))
    assert proposer.asked == [(0.8, 3)]
    assert [r["value"]["brushlabels"] for r in found] == [["Car"]]


def test_nothing_found_is_an_answer_not_a_failure(tmp_path):
    model, _ = model_for(tmp_path, FakeProposer([]))
    prediction = model.batch_prediction(task(), model.project_context(PROJECT))
    assert prediction.entry is None and prediction.nothing_found
    assert "found no object" in prediction.empty_because


def test_a_proposal_of_a_label_the_config_lacks_is_skipped_and_said_so(tmp_path):
    model, _ = model_for(tmp_path, FakeProposer([FakeProposal("Horse", (10, 10, 50, 40), 0.9), DOG]))
    prediction = model.batch_prediction(task(), model.project_context(PROJECT))
    assert [r["value"]["brushlabels"] for r in regions(prediction)] == [["Dog"]]
    assert any('"Horse"' in note for note in prediction.skipped)


def test_with_the_option_off_a_trained_proposal_model_is_not_used(tmp_path):
    proposer = FakeProposer([CAR])
    model, _ = model_for(tmp_path, proposer, params={})
    prediction = model.batch_prediction(task(), model.project_context(PROJECT))
    assert prediction.entry is None and not prediction.nothing_found and proposer.asked == []
    assert "proposals" not in prediction.empty_because


def test_cold_start_says_how_many_more_annotated_tasks_are_needed(tmp_path):
    status = {"message": "cold start: 3 annotated tasks, 5 more needed (PROPOSALS_MIN_TASKS=8)"}
    model, _ = model_for(tmp_path, None, status=status)
    prediction = model.batch_prediction(task(), model.project_context(PROJECT))
    assert prediction.entry is None and "5 more needed" in prediction.empty_because
    assert model.proposals_status(PROJECT) == f"no proposal model yet: {status['message']}"
    model, _ = model_for(tmp_path / "fresh", None)
    assert "at least 8 annotated tasks" in model.proposals_status(PROJECT)


def test_the_serving_proposal_model_is_named_with_its_threshold(tmp_path):
    model, _ = model_for(tmp_path, FakeProposer([CAR], threshold=0.42))
    assert model.proposals_status(PROJECT) == "from p7-v2, threshold 0.42"


@pytest.mark.parametrize("params, error", [
    ({"proposals": "yes"}, '"proposals" must be true or false'),
    ({"proposal_threshold": 1.5}, '"proposal_threshold" must be a number from 0 to 1'),
    ({"proposal": True}, 'did you mean "proposals"'),
])
def test_bad_proposal_options_are_refused_naming_the_key(params, error):
    with pytest.raises(OptionError, match=error):
        ProjectOptions.parse(params, "extra params")


def test_proposals_are_off_by_default_and_the_server_default_can_turn_them_on():
    assert not ProjectOptions().proposals and ProjectOptions().proposal_threshold is None
    default = Settings.from_env({"POLICIES": '{"proposals": true}'}).default_options
    assert ProjectOptions.for_project(default, None).proposals
    project = ProjectSetup("7", CONFIG, {"proposals": False, "proposal_threshold": 0.3}, "v")
    options = ProjectOptions.for_project(default, project)
    assert not options.proposals and options.proposal_threshold == 0.3


def test_pre_annotation_stores_proposals_for_tasks_without_prompts_and_counts_empty_ones_as_no_prompts(tmp_path):
    from preannotation_fakes import FakeLabelStudio

    from backend.preannotation.job import preannotate_task
    from backend.preannotation.owned_predictions import OwnedPredictions
    from backend.preannotation.progress import NO_PROMPTS, PREDICTED

    record = OwnedPredictions(tmp_path / "record")
    model, _ = model_for(tmp_path, FakeProposer([CAR]))
    context = model.project_context(PROJECT)
    ls = FakeLabelStudio([task(1)])
    assert preannotate_task(model, context, ls, "7", 1, record) == (PREDICTED, "")
    (stored,) = ls.predictions_of(1)
    assert stored["model_version"] == context.version and len(stored["result"]) == 1
    empty, _ = model_for(tmp_path / "empty", FakeProposer([]))
    outcome, message = preannotate_task(empty, empty.project_context(PROJECT), FakeLabelStudio([task(2)]), "7", 2,
                                        record)
    assert outcome == NO_PROMPTS and "found no object" in message
    off, _ = model_for(tmp_path / "off", None, status={"message": "cold start: 1 annotated tasks, 7 more needed"})
    outcome, message = preannotate_task(off, off.project_context(PROJECT), FakeLabelStudio([task(3)]), "7", 3, record)
    assert outcome == NO_PROMPTS and "7 more needed" in message
