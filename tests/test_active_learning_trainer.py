"""The real extreme-point training code behind a job: tiny random weights, a few steps, then the
published version loads and serves the project."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from active_learning_fakes import FakeReader
from support.square_samples import squares

from backend.jobs.store import FINISHED, JobStore
from backend.active_learning.layout import Layout
from backend.active_learning.serving import ProjectModels
from backend.active_learning.trainer import FINE_TUNE_BATCH, FINE_TUNE_LR, ExtremeTrainer
from backend.active_learning.training_job import run_training_job
from backend.networks.weights import ModelConfig, load_weights, read_manifest, save_weights
from backend.segmenters.extreme import ExtremeSegmenter
from backend.settings import Settings


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    torch.manual_seed(0)
    config = ModelConfig(crop_size=64, refine_size=128, decoder_channels=16, refine_width=8)
    directory = tmp_path_factory.mktemp("tiny")
    save_weights(directory, *config.build(pretrained=False), config, "tiny-v0", {})
    return directory


class SquareReader(FakeReader):
    """Tasks whose one instance is a bright square on a dark background."""

    def read(self, project, progress=lambda done, total: None):
        data = super().read(project, progress)
        for task in data.tasks:
            image = np.full((48, 48, 3), 30, np.uint8)
            mask = np.zeros((48, 48), bool)
            side = 12 + task.task_id % 5
            mask[10:10 + side, 12:12 + side] = True
            image[mask] = 220
            task.samples = [(image, mask)]
        return data


class NeverWorse(ExtremeTrainer):
    """Scores the starting weights 0 on every instance so that the fine-tuned ones publish: two steps
    from random weights may go either way, and publishing is what this test is about."""

    def __init__(self, start_dir, **kwargs):
        super().__init__(**kwargs)
        self.start_dir = start_dir

    def scores(self, weights_dir, samples):
        scores = super().scores(weights_dir, samples)
        assert len(scores) == len(samples) and all(0.0 <= score <= 1.0 for score in scores)
        return [0.0] * len(scores) if weights_dir == self.start_dir else scores


@pytest.mark.slow
def test_a_job_fine_tunes_the_real_model_and_the_project_serves_the_result(tmp_path, tiny_weights):
    settings = Settings(model_dir=tmp_path, extreme_weights=tiny_weights, train_steps=2, device="cpu")
    job = JobStore(Layout(tmp_path)).create("3", "test")
    trainer = NeverWorse(tiny_weights, threads=1, batch_size=2)
    previous = torch.get_num_threads()
    torch.set_num_threads(3)  # not 1 to begin with, or the check below could not fail
    try:
        run_training_job(settings, job.id, trainer=trainer, reader=SquareReader(task_ids=range(1, 7)))
        assert torch.get_num_threads() == 1  # the trainer bounded its threads
    finally:
        torch.set_num_threads(previous)
    done = JobStore(Layout(tmp_path)).get(job.id)
    assert done.state == FINISHED, done.error
    assert done.result["version"] == "p3-v1" and done.result["parent"] == "tiny-v0"

    default = ExtremeSegmenter.load(tiny_weights)
    models = ProjectModels.for_settings(settings, default)
    segmenter, version = models.segmenter_for("3")
    assert version.name == "p3-v1" and segmenter.version == "p3-v1" and segmenter is not default
    assert models.segmenter_for("4") == (default, models.registry.default)


def no_progress(step, total, message):
    pass


def test_a_fine_tune_at_learning_rate_zero_serves_exactly_the_parent(tmp_path, tiny_weights):
    """The job's whole path (train mode, examples, saving, loading, scoring) changes nothing by
    itself: a fine-tune that cannot move the weights scores every instance as the parent does."""
    trainer = ExtremeTrainer(threads=1, batch_size=2, lr=0.0)
    trainer.fine_tune(squares(4), tiny_weights, tmp_path, 3, "zero", no_progress)
    parent, tuned = load_weights(tiny_weights), load_weights(tmp_path)
    for before, after in zip(parent[:2], tuned[:2]):
        assert before.state_dict().keys() == after.state_dict().keys()
        assert all(torch.equal(before.state_dict()[key], after.state_dict()[key]) for key in before.state_dict())
    samples = squares(6)
    assert trainer.scores(tmp_path, samples) == trainer.scores(tiny_weights, samples)


def test_the_fine_tuning_recipe_reaches_the_training_loop(tmp_path, tiny_weights):
    ExtremeTrainer(threads=1).fine_tune(squares(4), tiny_weights, tmp_path, 2, "recipe", no_progress)
    training = read_manifest(tmp_path)["training"]
    assert (training["lr"], training["batch_size"], training["steps"]) == (FINE_TUNE_LR, FINE_TUNE_BATCH, 2)
