"""The synthetic generator: deterministic, exact non-overlapping masks, split photos, COCO export."""

import json

import numpy as np
from pycocotools.coco import COCO

from backend.training.synthetic import MIN_VISIBLE_PIXELS, PHOTOS, _parts, generate_scene, write_coco


def test_same_seed_same_scene_and_different_seed_differs():
    a, b, c = generate_scene(3, 7), generate_scene(3, 7), generate_scene(4, 7)
    np.testing.assert_array_equal(a.image, b.image)
    assert len(a.masks) == len(b.masks) and all((m == n).all() for m, n in zip(a.masks, b.masks))
    assert a.image.shape != c.image.shape or not np.array_equal(a.image, c.image)


def test_masks_are_exact_visible_instances():
    for index in range(4):
        scene = generate_scene(0, index, "heldout")
        assert scene.image.dtype == np.uint8 and scene.image.ndim == 3
        assert scene.masks
        total = np.zeros(scene.image.shape[:2], int)
        for mask in scene.masks:
            assert mask.shape == scene.image.shape[:2] and mask.dtype == bool
            assert mask.sum() >= MIN_VISIBLE_PIXELS
            total += mask
        assert total.max() == 1  # occlusion leaves each pixel to at most one instance


def test_multi_part_objects_are_split_into_disjoint_parts_covering_the_object():
    mask = np.zeros((60, 80), bool)
    mask[10:50, 5:75] = True
    for seed in range(5):
        parts = _parts(np.random.default_rng(seed), mask)
        assert 2 <= len(parts) <= 3
        assert all(part.any() for part in parts)
        np.testing.assert_array_equal(np.sum(parts, axis=0), mask.astype(int))  # disjoint, and nothing lost


def test_heldout_split_uses_unseen_photos():
    assert not set(PHOTOS["train"]) & set(PHOTOS["heldout"])
    train = generate_scene(0, 0, "train")
    heldout = generate_scene(0, 0, "heldout")
    assert train.image.shape != heldout.image.shape or not np.array_equal(train.image, heldout.image)


def test_write_coco_roundtrips_masks(tmp_path):
    annotation_file = write_coco(tmp_path, count=2, seed=5, split="heldout")
    coco = COCO(str(annotation_file))
    scenes = [generate_scene(5, i, "heldout") for i in range(2)]
    assert len(coco.getAnnIds()) == sum(len(s.masks) for s in scenes)
    first = coco.loadAnns(coco.getAnnIds(imgIds=[1]))[0]
    np.testing.assert_array_equal(coco.annToMask(first).astype(bool), scenes[0].masks[0])
    assert (tmp_path / "images" / json.loads(annotation_file.read_text())["images"][0]["file_name"]).is_file()


def test_write_coco_categories_are_shape_families(tmp_path):
    coco = COCO(str(write_coco(tmp_path, count=6, seed=3, split="heldout")))
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    assert sorted(names.values()) == sorted(("blob", "polygon", "limbs", "ring", "horse"))
    for image_id in range(1, 7):
        scene = generate_scene(3, image_id - 1, "heldout")
        families = [names[a["category_id"]] for a in coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))]
        assert families == scene.families
