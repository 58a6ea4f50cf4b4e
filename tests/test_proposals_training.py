"""The proposal step of training jobs (project option "proposals") with a fake proposal trainer: cold
start, the first proposal model as a new version carrying the extreme-point weights, the publish
decision on held-out figures, bad data recorded without failing the job, the pre-annotation
follow-up; and how annotations become proposal examples (masks, boxes, extreme points, negatives)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from active_learning_fakes import FakeReader, FakeTrainer, write_fake_weights
from segmentation_fakes import CONFIG, extreme_points, rectangle

from backend.active_learning.proposal_data import ProposalData, ProposalTask, annotation_objects, latest_annotation
from backend.active_learning.proposal_training import decide, split_heldout
from backend.active_learning.training_job import run_training_job
from backend.active_learning.versions import PROPOSALS_DIR, VersionRegistry
from backend.jobs.layout import JobLayout
from backend.jobs.store import FINISHED, JobStore
from backend.jobs.types import PREANNOTATE
from backend.labeling import LabelingConfig
from backend.model import SegmentationModel
from backend.project_store import ProjectStore
from backend.protocol import region_from_mask
from backend.segmenter_set import SegmenterSet
from backend.settings import Settings

W, H = 200, 100


def figures(recall, precision, objects=4):
    f1 = 2 * recall * precision / (recall + precision) if recall + precision else 0.0
    return {"recall": recall, "precision": precision, "f1": f1, "threshold": 0.4, "objects": objects,
            "correct": round(recall * objects)}


class FakeProposalTrainer:
    """Writes a "model" holding its held-out figures; evaluate reads them back."""

    def __init__(self, heldout=None, error=None):
        self.heldout, self.error, self.calls = heldout or figures(0.8, 0.9), error, []

    def train(self, examples, heldout, labels, out_dir, init_dir, progress, masks_from):
        self.calls.append({"train": len(examples), "heldout": len(heldout), "labels": list(labels), "init": init_dir,
                           "masks_from": masks_from})
        if self.error:
            raise self.error
        progress(1, 1, {"loss": 0.5})
        Path(out_dir).mkdir(parents=True)
        (Path(out_dir) / "manifest.json").write_text(json.dumps({"heldout": self.heldout}))
        return {"threshold": 0.4, "heldout": self.heldout, "training": {"steps": 1}}

    def evaluate(self, weights_dir, heldout, masks_from):
        return json.loads((Path(weights_dir) / "manifest.json").read_text())["heldout"]


class FakeProposalReader:
    def __init__(self, count=10, negatives=0):
        image = np.zeros((H, W, 3), np.uint8)
        self.tasks = [ProposalTask(i, image, [] if i <= negatives else [("Car", np.array([10.0, 10, 50, 40]))])
                      for i in range(1, count + 1)]

    def read(self, project, progress=lambda done, total: None):
        progress(len(self.tasks), len(self.tasks))
        return ProposalData(self.tasks, ["Car", "Dog"], ["task 99: image not found"])


@pytest.fixture
def settings(tmp_path):
    settings = Settings(model_dir=tmp_path / "model_dir", extreme_weights=write_fake_weights(tmp_path / "default", 0.5))
    ProjectStore.in_model_dir(settings.model_dir)  # where /setup writes
    return settings


def set_up(settings, params):
    model = SegmentationModel(settings, SegmenterSet(), None, ProjectStore.in_model_dir(settings.model_dir))
    model.setup("7", CONFIG, params)


def train(settings, proposal_trainer=None, reader=None, gain=-0.1, count=10):
    jobs = JobStore(JobLayout(settings.model_dir))
    job = jobs.create("7", "test")
    run_training_job(settings, job.id, trainer=FakeTrainer(gain=gain), reader=FakeReader(),
                     proposal_trainer=proposal_trainer or FakeProposalTrainer(),
                     proposal_reader=reader or FakeProposalReader(count))
    return jobs.get(job.id)


def test_below_the_minimum_no_proposal_model_is_trained_and_the_job_says_how_many_more(settings):
    set_up(settings, {"proposals": True})
    trainer = FakeProposalTrainer()
    job = train(settings, trainer, FakeProposalReader(count=3))
    proposals = job.result["proposals"]
    assert job.state == FINISHED and trainer.calls == []
    assert proposals["published"] is False and proposals["needed"] == 5 and proposals["annotated_tasks"] == 3
    assert "5 more needed" in proposals["reason"] and "PROPOSALS_MIN_TASKS=8" in proposals["reason"]
    registry = VersionRegistry.from_settings(settings)
    assert registry.with_proposals("7") is None
    model = SegmentationModel(settings, SegmenterSet(), None, ProjectStore.in_model_dir(settings.model_dir),
                              project_models=_project_models(settings))
    assert "5 more needed" in model.proposals_status("7")


def test_both_models_of_a_job_read_through_one_image_loader(settings, monkeypatch):
    """The extreme-point and the proposal readers share the job's image cache: each image is
    downloaded once, not once per model."""
    from backend.active_learning import training_job

    loaders = []

    class Recording:
        def __init__(self, fake):
            self.fake = fake

        def __call__(self, settings, image_loader=None):
            loaders.append(image_loader)
            return self.fake

    monkeypatch.setattr(training_job, "LabelStudioProjectReader", Recording(FakeReader()))
    monkeypatch.setattr(training_job, "ProposalDataReader", Recording(FakeProposalReader()))
    set_up(settings, {"proposals": True})
    jobs = JobStore(JobLayout(settings.model_dir))
    job = jobs.create("7", "test")
    run_training_job(settings, job.id, trainer=FakeTrainer(), proposal_trainer=FakeProposalTrainer())
    assert jobs.get(job.id).state == FINISHED and jobs.get(job.id).result["proposals"]["published"]
    assert len(loaders) == 2 and loaders[0] is loaders[1] is not None


def test_the_first_proposal_model_is_a_new_version_with_the_extreme_weights_carried_over(settings):
    set_up(settings, {"proposals": True})
    job = train(settings)  # the extreme-point model gets worse: not published
    assert job.result["published"] is False
    proposals = job.result["proposals"]
    assert proposals["published"] and proposals["version"] == "p7-v1", proposals
    assert proposals["heldout"]["recall"] == 0.8 and proposals["threshold"] == 0.4
    assert proposals["negative_tasks"] == 0 and proposals["train_tasks"] + proposals["heldout_tasks"] == 10
    registry = VersionRegistry.from_settings(settings)
    version = registry.serving("7")
    assert version.name == "p7-v1" and registry.with_proposals("7") == version
    assert version.parent == registry.default.name
    assert (version.path / "weights.json").read_text() == (settings.extreme_weights / "weights.json").read_text()
    assert f"{PROPOSALS_DIR}/manifest.json" in version.files
    registry.verify(version)


def test_a_job_improving_both_models_publishes_the_extreme_then_the_proposal_version(settings):
    set_up(settings, {"proposals": True})
    job = train(settings, gain=0.1)
    assert job.result["version"] == "p7-v1" and job.result["proposals"]["version"] == "p7-v2"
    registry = VersionRegistry.from_settings(settings)
    assert registry.get("7", "p7-v2").parent == "p7-v1"
    # The proposal version carries p7-v1's fine-tuned extreme-point weights.
    assert json.loads((registry.get("7", "p7-v2").path / "weights.json").read_text())["quality"] == pytest.approx(0.6)


def test_a_worse_proposal_model_is_not_published_and_a_later_extreme_version_inherits_the_served_one(settings):
    set_up(settings, {"proposals": True})
    train(settings)
    worse = train(settings, FakeProposalTrainer(figures(0.5, 0.9)))
    proposals = worse.result["proposals"]
    assert proposals["published"] is False and "F1 would fall" in proposals["reason"]
    assert proposals["serving_heldout"]["recall"] == 0.8
    registry = VersionRegistry.from_settings(settings)
    assert registry.serving("7").name == "p7-v1"
    trainer = FakeProposalTrainer(figures(0.8, 0.9))
    better_extreme = train(settings, trainer, gain=0.1)  # extreme publishes p7-v2; proposals tie: p7-v3
    assert trainer.calls[0]["init"] == registry.get("7", "p7-v1").path / PROPOSALS_DIR
    assert better_extreme.result["version"] == "p7-v2" and better_extreme.result["proposals"]["version"] == "p7-v3"


def test_a_first_model_that_finds_none_of_the_heldout_objects_is_not_published(settings):
    set_up(settings, {"proposals": True})
    job = train(settings, FakeProposalTrainer(figures(0.0, 0.0)))
    assert job.result["proposals"]["published"] is False
    assert "finds none of the 4 held-out objects" in job.result["proposals"]["reason"]
    assert VersionRegistry.from_settings(settings).with_proposals("7") is None


def test_bad_data_for_the_proposal_model_is_recorded_and_the_job_still_finishes(settings):
    from backend.proposals import ProposalError

    set_up(settings, {"proposals": True})
    error = ProposalError("no object to learn from: 10 images, 12 objects of other labels")
    job = train(settings, FakeProposalTrainer(error=error), gain=0.1)
    assert job.state == FINISHED and job.result["published"] and job.result["version"] == "p7-v1"
    assert job.result["proposals"] == {"trained": False, "published": False, "version": None,
                                       "error": str(error)}
    assert VersionRegistry.from_settings(settings).with_proposals("7") is None


def test_with_the_option_off_a_job_trains_no_proposal_model(settings):
    set_up(settings, {})
    trainer = FakeProposalTrainer()
    job = train(settings, trainer)
    assert "proposals" not in job.result and trainer.calls == []


def test_a_published_proposal_version_queues_pre_annotation_of_unlabeled_tasks_without_preannotate_on_import(
        settings):
    set_up(settings, {"proposals": True})
    job = train(settings)
    jobs = JobStore(JobLayout(settings.model_dir))
    (queued,) = [j for j in jobs.list("7") if j.type == PREANNOTATE]
    assert job.result["preannotation_job"] == queued.id
    assert queued.params == {"tasks": [], "scope": "unlabeled"} and queued.trigger == "new model version p7-v1"


def test_decide_compares_f1_at_each_models_threshold():
    assert decide(figures(0.8, 0.8), figures(0.8, 0.8)).publish  # not worse
    assert not decide(figures(0.7, 0.8), figures(0.8, 0.8)).publish
    assert decide(figures(0.9, 0.7), figures(0.8, 0.7)).publish
    assert decide(figures(1.0, 1.0, objects=0), None).publish  # held-out tasks all negative


def test_split_holds_out_at_least_one_task_and_trains_on_at_least_one():
    tasks = [ProposalTask(i, np.zeros((4, 4, 3), np.uint8)) for i in (1, 2)]
    train_tasks, heldout = split_heldout(tasks)
    assert len(train_tasks) == 1 and len(heldout) == 1
    many = [ProposalTask(i, np.zeros((4, 4, 3), np.uint8)) for i in range(1, 41)]
    train_tasks, heldout = split_heldout(many)
    assert 4 <= len(heldout) <= 16 and {t.task_id for t in train_tasks}.isdisjoint(t.task_id for t in heldout)
    assert split_heldout(many[:20])[1] == [t for t in heldout if t.task_id <= 20]  # a task keeps its side


CONFIG_PARSED = LabelingConfig.parse(CONFIG)


def brush(x0, y0, x1, y1, label="Car"):
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = True
    return region_from_mask(mask, label=label, from_name="mask", to_name="image", score=1.0), mask


def test_a_mask_and_the_prompt_that_made_it_are_one_object_other_prompts_are_objects_of_their_own():
    region, mask = brush(10, 10, 50, 40)
    result = [region, rectangle(10, 10, 50, 40), *extreme_points(100, 20, 150, 80, label="Dog"),
              rectangle(160, 5, 190, 30, label="Dog")]
    objects = annotation_objects(result, CONFIG_PARSED, W, H)
    assert [label for label, _ in objects] == ["Car", "Dog", "Dog"]
    assert np.array_equal(objects[0][1], mask)
    geometries = sorted((np.asarray(g) for _, g in objects[1:]), key=lambda g: g.ndim)
    np.testing.assert_allclose(geometries[0], [160, 5, 190, 30])
    np.testing.assert_allclose(np.ptp(geometries[1], axis=0), [50, 60])  # the extreme points' extent


def test_the_latest_annotation_that_is_not_cancelled_decides_and_an_empty_one_is_a_negative():
    task = {"annotations": [
        {"id": 1, "updated_at": "2026-01-01", "result": [rectangle(10, 10, 50, 40)]},
        {"id": 2, "updated_at": "2026-01-02", "result": []},
        {"id": 3, "updated_at": "2026-01-03", "result": [rectangle(10, 10, 50, 40)], "was_cancelled": True},
    ]}
    chosen = latest_annotation(task)
    assert chosen["id"] == 2 and annotation_objects(chosen["result"], CONFIG_PARSED, W, H) == []
    assert latest_annotation({"annotations": []}) is None


def _project_models(settings):
    from backend.active_learning.serving import ProjectModels

    return ProjectModels.for_settings(replace(settings, device="cpu"), default=None)


class FakeClient:
    configured = True

    def __init__(self, tasks):
        self.tasks = tasks

    def label_config(self, project):
        return CONFIG

    def export(self, project):
        return self.tasks


class SizedImages:
    """Images by URL: "w x h" makes a black image of that size; anything else is gone."""

    def load(self, url, task_id=None):
        from backend.images import ImageNotFound
        from backend.prompts import LoadedImage

        if "x" not in url:
            raise ImageNotFound(f"no image at {url}")
        width, height = (int(v) for v in url.split("x"))
        return LoadedImage(np.zeros((height, width, 3), np.uint8), key=url)


def test_the_reader_keeps_every_annotated_task_scales_large_images_and_skips_unreadable_ones_whole(settings):
    from backend.active_learning.proposal_data import ProposalDataReader

    big, _ = brush(10, 10, 50, 40)
    big.update(original_width=W, original_height=H)
    tasks = [
        {"id": 1, "data": {"image": "2048x1024"}, "annotations": [{"id": 11, "result": [big]}]},
        {"id": 2, "data": {"image": "200x100"}, "annotations": [{"id": 12, "result": []}]},
        {"id": 3, "data": {"image": "gone"}, "annotations": [{"id": 13, "result": [rectangle(1, 1, 20, 20)]}]},
        {"id": 4, "data": {"image": "200x100"}, "annotations": [{"id": 14, "result": [rectangle(5, 5, 60, 60,
                                                                                                label="Horse")]}]},
        {"id": 5, "data": {"image": "200x100"}, "annotations": [{"id": 15, "result": [], "was_cancelled": True}]},
    ]
    data = ProposalDataReader(settings, client=FakeClient(tasks), image_loader=SizedImages()).read("7")
    assert [t.task_id for t in data.tasks] == [1, 2, 4] and data.labels == ["Car", "Dog"]
    assert data.tasks[0].image.shape == (512, 1024, 3)
    (label, mask), = data.tasks[0].objects
    assert label == "Car" and mask.shape == (512, 1024) and mask.any()
    assert data.tasks[1].objects == []  # a true negative
    assert data.tasks[2].objects[0][0] == "Horse"  # the trainer counts and leaves out labels it does not learn
    assert data.skipped == ["task 3: no image at gone"]
