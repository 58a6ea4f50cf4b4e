"""Per-project versions: atomic publishing, checksum verification, rollback by pin, serving switch."""

from __future__ import annotations

import json

import pytest
from active_learning_fakes import WEIGHTS, fake_quality, write_fake_weights

from backend.files import sha256_of_files
from backend.active_learning.layout import Layout
from backend.active_learning.serving import ProjectModels
from backend.active_learning.versions import ChecksumError, VersionError, VersionRegistry


@pytest.fixture
def default_weights(tmp_path):
    return write_fake_weights(tmp_path / "default", 0.5, version="base-v0")


def registry_for(tmp_path, default_weights, pinned=None) -> VersionRegistry:
    return VersionRegistry(Layout(tmp_path / "model_dir"), default_weights, pinned)


def publish(registry, tmp_path, project, quality):
    staged = write_fake_weights(tmp_path / f"staged-{project}-{quality}", quality)
    name = registry.next_name(project)
    parent = registry.serving(project).name
    return registry.publish(project, name, staged, sha256_of_files(staged), parent, {"miou_after": quality}, job="j")


def test_a_new_project_serves_the_default_weights(tmp_path, default_weights):
    registry = registry_for(tmp_path, default_weights)
    assert registry.serving("3") is registry.default and registry.default.name == "base-v0"
    assert [v.name for v in registry.versions()] == ["base-v0"]


def test_publish_switches_the_project_and_records_the_lineage(tmp_path, default_weights):
    registry = registry_for(tmp_path, default_weights)
    first = publish(registry, tmp_path, "3", 0.6)
    second = publish(registry, tmp_path, "3", 0.7)
    publish(registry, tmp_path, "4", 0.8)
    assert (first.name, first.parent, second.name, second.parent) == ("p3-v1", "base-v0", "p3-v2", "p3-v1")
    assert registry.serving("3").name == "p3-v2" and fake_quality(registry.serving("3").path) == 0.7
    assert registry.serving("4").name == "p4-v1" and registry.serving("5") is registry.default
    assert [v.name for v in registry.versions("3")] == ["base-v0", "p3-v1", "p3-v2"]
    assert {v.name for v in registry.versions()} == {"base-v0", "p3-v1", "p3-v2", "p4-v1"}
    record = json.loads((second.path / "version.json").read_text())
    assert record["metrics"] == {"miou_after": 0.7} and record["parent"] == "p3-v1" and record["created_at"] > 0
    # A fresh registry (another worker, a restart) reads the same state from disk.
    assert registry_for(tmp_path, default_weights).serving("3").name == "p3-v2"
    assert not any(p.name.startswith(".tmp") for p in (tmp_path / "model_dir").rglob("*"))


def test_a_corrupt_checkpoint_is_not_published(tmp_path, default_weights):
    registry = registry_for(tmp_path, default_weights)
    publish(registry, tmp_path, "3", 0.6)
    staged = write_fake_weights(tmp_path / "torn", 0.9)
    files = sha256_of_files(staged)
    (staged / WEIGHTS).write_text('{"quality": 0.9')  # torn write after the trainer's checksum
    with pytest.raises(ChecksumError, match="weights.json does not match its sha256"):
        registry.publish("3", registry.next_name("3"), staged, files, "p3-v1", {})
    assert registry.serving("3").name == "p3-v1"
    assert [v.name for v in registry.versions("3")] == ["base-v0", "p3-v1"]
    assert list((tmp_path / "model_dir/active_learning/projects/3/versions").iterdir()) == [registry.serving("3").path]


def test_missing_staged_file_is_not_published(tmp_path, default_weights):
    registry = registry_for(tmp_path, default_weights)
    staged = write_fake_weights(tmp_path / "staged", 0.9)
    files = {**sha256_of_files(staged), "refine.pt": "0" * 64}
    with pytest.raises(ChecksumError, match="refine.pt is missing"):
        registry.publish("3", "p3-v1", staged, files, "base-v0", {})
    assert registry.serving("3") is registry.default


def test_a_published_version_corrupted_on_disk_is_not_served(tmp_path, default_weights, caplog):
    registry = registry_for(tmp_path, default_weights)
    publish(registry, tmp_path, "3", 0.6)
    damaged = publish(registry, tmp_path, "3", 0.7)
    (damaged.path / WEIGHTS).write_text("garbage")
    fresh = registry_for(tmp_path, default_weights)  # e.g. a worker that had not loaded it yet
    assert fresh.serving("3").name == "p3-v1"  # its verified parent
    assert "not serving p3-v2 for project 3" in caplog.text


def test_pinned_version_rolls_back_and_bad_pins_are_ignored(tmp_path, default_weights, caplog):
    registry = registry_for(tmp_path, default_weights)
    publish(registry, tmp_path, "3", 0.6)
    publish(registry, tmp_path, "3", 0.7)
    assert registry_for(tmp_path, default_weights, {"3": "p3-v1"}).serving("3").name == "p3-v1"
    assert registry_for(tmp_path, default_weights, {"3": "base-v0"}).serving("3").name == "base-v0"
    assert registry_for(tmp_path, default_weights, {"3": "p3-v9"}).serving("3").name == "p3-v2"
    assert "PINNED_VERSIONS for project 3 ignored" in caplog.text


def test_version_names_cannot_escape_the_project(tmp_path, default_weights):
    registry = registry_for(tmp_path, default_weights)
    with pytest.raises(VersionError):
        registry.get("3", "../../etc")
    staged = write_fake_weights(tmp_path / "staged", 0.9)
    with pytest.raises(VersionError):
        registry.publish("3", "../x", staged, sha256_of_files(staged), "base-v0", {})


def test_project_models_switch_when_a_version_is_published(tmp_path, default_weights):
    registry = registry_for(tmp_path, default_weights)
    loads = []

    def load(path):
        loads.append(path.name)
        return {"quality": fake_quality(path)}

    models = ProjectModels(registry, load, default={"quality": 0.5})
    assert models.segmenter_for("3") == ({"quality": 0.5}, registry.default)
    publish(registry_for(tmp_path, default_weights), tmp_path, "3", 0.6)  # published by another process
    segmenter, version = models.segmenter_for("3")
    assert segmenter == {"quality": 0.6} and version.name == "p3-v1"
    models.segmenter_for("3")
    assert loads == ["p3-v1"]  # loaded once, then cached


def test_project_models_fall_back_to_the_default_when_loading_fails(tmp_path, default_weights):
    registry = registry_for(tmp_path, default_weights)
    publish(registry, tmp_path, "3", 0.6)

    def broken(path):
        raise RuntimeError("cannot load")

    models = ProjectModels(registry, broken, default="default-segmenter")
    assert models.segmenter_for("3") == ("default-segmenter", registry.default)
