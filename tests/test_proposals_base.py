"""The class-agnostic base of proposal models: loading (manifest, sha256, absent -> ImageNet start
with a log line), a project's detector initialised from it (each label from the objectness row),
training from it, and the resumable pretraining on synthetic scenes."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from backend.active_learning.proposal_training import BackendProposalTrainer
from backend.proposals import ProposalModel, ProposalWeightsError, train_proposal_model
from backend.proposals.base import BASE_LABEL, load_base, start_from
from backend.proposals.network import DetectorConfig, build_detector
from backend.proposals.pretrain import pretrain
from backend.settings import REPO_ROOT, Settings

TINY = DetectorConfig(long_side=192, fpn_channels=32, head_convs=1)
CLASS_WEIGHT, CLASS_BIAS = "head.classification_head.cls_logits.weight", "head.classification_head.cls_logits.bias"


def saved_base(directory, labels=(BASE_LABEL,), config=TINY) -> ProposalModel:
    torch.manual_seed(0)
    model = ProposalModel(build_detector(config, len(labels), pretrained=False), labels, config)
    model.save(directory, {"kind": "class-agnostic base"})
    return ProposalModel.load(directory)


def square_example(size=96, label="cat"):
    array = np.full((size, size, 3), 100, np.uint8)
    mask = np.zeros((size, size), bool)
    mask[20:60, 30:70] = True
    array[mask] = (220, 40, 40)
    return array, [(label, mask)]


def test_an_absent_base_means_the_imagenet_start_and_says_so_in_the_log(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="backend.proposals.base"):
        assert load_base(tmp_path / "nowhere") is None
    assert "ImageNet" in caplog.text and "nowhere" in caplog.text
    assert load_base(None) is None


def test_the_base_is_sha256_checked_and_must_be_class_agnostic(tmp_path):
    saved_base(tmp_path / "base")
    assert load_base(tmp_path / "base").labels == (BASE_LABEL,)
    weights = tmp_path / "base" / "proposals.pt"
    weights.write_bytes(weights.read_bytes() + b"x")
    with pytest.raises(ProposalWeightsError, match="sha256"):
        load_base(tmp_path / "base")
    saved_base(tmp_path / "project", labels=("cat", "dog"))
    with pytest.raises(ProposalWeightsError, match="no class-agnostic base"):
        load_base(tmp_path / "project")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{")
    with pytest.raises(ProposalWeightsError, match="not valid JSON"):
        load_base(tmp_path / "broken")


def test_every_project_label_starts_as_the_bases_objectness_row_and_the_rest_is_the_base(tmp_path):
    base = saved_base(tmp_path / "base")
    detector = build_detector(TINY, 3, pretrained=False)
    start_from(detector, base, ["cat", "dog", "bird"])
    own, source = detector.state_dict(), base.detector.state_dict()
    for key in (CLASS_WEIGHT, CLASS_BIAS):
        assert own[key].shape[0] == 4 and source[key].shape[0] == 2
        for row in (1, 2, 3):
            torch.testing.assert_close(own[key][row], source[key][1])
    for key in source:
        if key not in (CLASS_WEIGHT, CLASS_BIAS):
            torch.testing.assert_close(own[key], source[key])


def test_from_a_previous_version_known_labels_keep_their_rows_and_a_new_one_gets_the_fresh_prior(tmp_path):
    previous = saved_base(tmp_path / "v1", labels=("cat", "dog"))
    fresh = build_detector(TINY, 2, pretrained=False)
    prior = fresh.state_dict()[CLASS_BIAS].clone()
    start_from(fresh, previous, ["dog", "bird"])
    bias, source = fresh.state_dict()[CLASS_BIAS], previous.detector.state_dict()[CLASS_BIAS]
    assert bias[1] == source[2] and bias[2] == prior[2]


def test_training_starts_from_the_base_with_its_config_and_records_it(tmp_path):
    base = saved_base(tmp_path / "base")
    metrics = train_proposal_model([square_example()], ["cat", "dog"], tmp_path / "v1", base_dir=tmp_path / "base",
                                   steps=1, device="cpu", config=DetectorConfig())
    assert metrics["training"]["init"] == f"base {base.manifest['files']['model']['sha256'][:12]}"
    model = ProposalModel.load(tmp_path / "v1")
    assert model.config == TINY and model.labels == ("cat", "dog")


def test_without_base_weights_training_starts_from_imagenet(tmp_path):
    metrics = train_proposal_model([square_example()], ["cat"], tmp_path / "v1", base_dir=tmp_path / "nowhere",
                                   steps=1, device="cpu", config=TINY)
    assert metrics["training"]["init"] == "imagenet"


def test_the_base_folder_is_a_setting_defaulting_to_the_committed_weights_and_the_jobs_trainer_uses_it(tmp_path):
    assert Settings.from_env({}).proposals_base == REPO_ROOT / "model_weights" / "proposals"
    settings = Settings.from_env({"PROPOSALS_BASE_WEIGHTS": str(tmp_path)})
    assert settings.proposals_base == tmp_path
    assert BackendProposalTrainer.from_settings(settings).base_dir == tmp_path


def test_pretraining_resumes_from_its_checkpoint_and_writes_a_loadable_base(tmp_path):
    torch.set_num_threads(1)
    first = pretrain(tmp_path, 2, batch_size=1, validation=0, checkpoint_every=1, config=TINY,
                     provenance={"command": "test"})
    assert first["training"]["steps"] == 2 and first["command"] == "test"
    resumed = pretrain(tmp_path, 3, batch_size=1, validation=1, checkpoint_every=1, config=TINY)
    history = resumed["training"]["loss_history"]
    assert resumed["training"]["steps"] == 3 and [row[0] for row in history["rows"]] == [2, 3]
    assert resumed["heldout"]["images"] == 1 and resumed["kind"] == "class-agnostic base"
    assert json.loads((tmp_path / "manifest.json").read_text())["training"]["steps"] == 3
    assert load_base(tmp_path).config == TINY


def test_pretraining_can_continue_a_base_training_more_of_the_encoder_and_the_base_keeps_the_projects_share(tmp_path):
    torch.set_num_threads(1)
    pretrain(tmp_path / "first", 2, batch_size=1, validation=0, checkpoint_every=1, config=TINY)
    first = ProposalModel.load(tmp_path / "first").detector.state_dict()
    manifest = pretrain(tmp_path / "more", 3, batch_size=1, validation=0, checkpoint_every=1, trainable_from=5,
                        init_dir=tmp_path / "first")
    assert manifest["training"]["steps"] == 3 and manifest["training"]["trainable_from"] == 5
    assert [row[0] for row in manifest["training"]["loss_history"]["rows"]] == [2, 3]  # the base's history goes on
    more = load_base(tmp_path / "more")
    assert more.config == TINY  # the projects still train from block 11
    after = more.detector.state_dict()
    stage_16 = "backbone.blocks.6._project_conv.weight"  # below the projects' trainable share: pretrained here
    assert not torch.equal(first[stage_16], after[stage_16])
    assert torch.equal(first["backbone.stem.0.weight"], after["backbone.stem.0.weight"])


def test_continuing_a_base_that_is_not_there_is_an_error_not_a_fresh_start(tmp_path):
    with pytest.raises(ProposalWeightsError, match="no base to continue"):
        pretrain(tmp_path / "out", 1, validation=0, config=TINY, init_dir=tmp_path / "typo")
    assert not (tmp_path / "out" / "checkpoint.pt").exists()
