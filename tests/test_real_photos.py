"""The real-photo set: its polygons rasterise to the areas recorded beside them, the splits are
disjoint, occluders are cut out, and the harness reads it like a COCO set."""

import json

import numpy as np
import pytest

from backend.evaluation.real_photos import SET_FILE, SPLITS, evaluation_images, rasterize, real_photos, training_samples


@pytest.fixture(scope="module")
def spec():
    return json.loads(SET_FILE.read_text())


@pytest.fixture(scope="module")
def every_photo():
    return real_photos("all")


def test_a_ring_holds_the_pixels_whose_centres_lie_inside():
    mask = rasterize([[[10, 10], [20, 10], [20, 20], [10, 20]]], (30, 30))
    assert mask.sum() == 100 and mask[10:20, 10:20].all()
    # A ring through pixel centres on one side only: half-open, as the centre rule says.
    thin = rasterize([[[0, 0], [5.2, 0], [5.2, 1], [0, 1]]], (4, 8))
    assert thin.sum() == 5 and thin[0, :5].all()


def test_a_ring_of_two_vertices_is_refused():
    with pytest.raises(ValueError, match="at least 3"):
        rasterize([[[0, 0], [5, 5]]], (8, 8))


def test_every_object_rasterises_to_its_recorded_area(spec, every_photo):
    recorded = {
        f"{photo}/{obj['name']}": obj["area_px"] for photo, entry in spec["photos"].items() for obj in entry["objects"]
    }
    occluded = {f"{photo}/{obj['name']}" for photo, entry in spec["photos"].items() for obj in entry["objects"]
                if obj.get("in_front")}
    assert len(recorded) == sum(len(photo.objects) for photo in every_photo) >= 20
    for photo in every_photo:
        for obj in photo.objects:
            assert obj.mask.shape == (photo.image.height, photo.image.width)
            if obj.label in occluded:
                assert 0 < obj.mask.sum() < recorded[obj.label]
            else:
                assert obj.mask.sum() == recorded[obj.label], obj.label


def test_the_splits_are_disjoint_and_make_up_the_set(every_photo):
    photos = {split: real_photos(split) for split in SPLITS}
    names = {split: {photo.name for photo in photos[split]} for split in SPLITS}
    assert names["heldout"] and names["train"] and not names["heldout"] & names["train"]
    assert names["heldout"] | names["train"] == {photo.name for photo in every_photo}
    # Photos differ in content too, not only in name: no photo sits in both parts under two names.
    keys = {split: {photo.image.key for photo in photos[split]} for split in SPLITS}
    assert not keys["heldout"] & keys["train"]
    assert all(photo.split == split for split in SPLITS for photo in photos[split])


def test_the_held_out_part_has_several_kinds_and_the_coffee_cup():
    held_out = real_photos("heldout")
    kinds = {obj.kind for photo in held_out for obj in photo.objects}
    assert {"solid", "thin", "text"} <= kinds
    assert "coffee/cup" in {obj.label for photo in held_out for obj in photo.objects}


def test_occluders_are_cut_out_of_the_objects_behind_them():
    coffee = next(photo for photo in real_photos("heldout") if photo.name == "coffee")
    masks = {obj.name: obj.mask for obj in coffee.objects}
    assert not (masks["saucer"] & (masks["cup"] | masks["spoon"])).any()


def test_training_samples_come_from_the_train_photos_only():
    samples = training_samples()
    train_objects = sum(len(photo.objects) for photo in real_photos("train"))
    assert len(samples) == train_objects
    held_out_pixels = {photo.image.array.tobytes() for photo in real_photos("heldout")}
    assert all(image.tobytes() not in held_out_pixels for image, _ in samples)
    assert all(mask.dtype == bool and mask.shape == image.shape[:2] for image, mask in samples)


def test_the_harness_reads_a_split_with_names_kinds_and_unique_ids():
    dataset = evaluation_images("heldout")
    images = list(dataset)
    objects = [obj for image in images for obj in image.objects]
    assert len(objects) == len(dataset) and dataset.n_images == len(images)
    assert len({obj.annotation_id for obj in objects}) == len(objects)
    assert all(obj.name.count("/") == 1 and obj.category in {"solid", "thin", "text"} for obj in objects)
    assert all(image.image.array.dtype == np.uint8 and image.image.array.ndim == 3 for image in images)


def test_an_unknown_split_is_refused():
    with pytest.raises(ValueError, match="split must be one of"):
        real_photos("validation")
