"""The synthetic generator: deterministic, exact non-overlapping masks, split photos, COCO export."""

import json

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from backend.training.synthetic import (
    MIN_VISIBLE_PIXELS,
    PHOTOS,
    SHAPE_FAMILIES,
    _parts,
    draw_family,
    generate_scene,
    soft_alpha,
    write_coco,
)


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
    assert sorted(names.values()) == sorted(SHAPE_FAMILIES["heldout"])
    for image_id in range(1, 7):
        scene = generate_scene(3, image_id - 1, "heldout")
        families = [names[a["category_id"]] for a in coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))]
        assert families == scene.families


def test_heldout_has_shape_families_training_never_draws():
    unseen = set(SHAPE_FAMILIES["heldout"]) - set(SHAPE_FAMILIES["train"])
    assert unseen == {"horse", "plant"}
    assert "tree" in SHAPE_FAMILIES["train"]  # training's own thin, branching family
    drawn = {family for index in range(30) for family in generate_scene(0, index, "train").families}
    assert drawn == set(SHAPE_FAMILIES["train"])


@pytest.mark.parametrize("family", ["tree", "plant"])
def test_thin_families_are_one_connected_piece_of_thin_parts(family):
    rng = np.random.default_rng(4)
    for _ in range(5):
        shape = draw_family(rng, family, 240, 200)
        assert shape.dtype == np.uint8 and set(np.unique(shape)) == {0, 1}
        assert cv2.connectedComponents(shape)[0] == 2  # the background and one object
        assert shape[0].any() and shape[-1].any() and shape[:, 0].any() and shape[:, -1].any()  # cut to its box
        assert shape.mean() < 0.35  # mostly background between the stems
        # thin: most of the object lies within 3 px of its outline
        depth = cv2.distanceTransform(shape, cv2.DIST_L2, 3)[shape > 0]
        assert np.median(depth) <= 3.5


def test_a_text_object_is_its_strokes_alone_and_training_only():
    rng = np.random.default_rng(2)
    for _ in range(5):
        word = draw_family(rng, "text", 60, 240)
        assert word.dtype == np.uint8 and set(np.unique(word)) == {0, 1}
        assert abs(word.shape[1] - 240) <= 0.35 * 240 and word.shape[0] < word.shape[1]  # a word about that wide
        assert cv2.connectedComponents(word)[0] >= 3  # letters apart: the paper between them is not the object
        assert word.mean() < 0.7
    assert "text" in SHAPE_FAMILIES["train"] and "text" not in SHAPE_FAMILIES["heldout"]


def test_soft_alpha_is_a_matte_whose_half_level_is_the_shape():
    disc = np.zeros((80, 80), np.uint8)
    cv2.circle(disc, (40, 40), 30, 1, -1)
    alpha = soft_alpha(disc, 2.0)
    pad = (alpha.shape[0] - 80) // 2
    assert pad == 6 and alpha.dtype == np.float32 and 0 <= alpha.min() and alpha.max() <= 1
    mask = alpha[pad:-pad, pad:-pad] >= 0.5
    assert (mask != disc.astype(bool)).sum() < 0.01 * disc.sum()
    assert ((alpha > 0.05) & (alpha < 0.95)).sum() > 2 * np.pi * 30 * 3  # a soft band a few px wide
    wire = np.zeros((20, 60), np.uint8)
    wire[10, 5:55] = 1
    assert not (soft_alpha(wire, 2.5) >= 0.5).any()  # a 1 px wisp fades below half, as in a matte


def test_some_objects_are_cut_by_every_side_of_the_frame():
    touched = set()
    for index in range(40):
        for mask in generate_scene(2, index, "train").masks:
            touched |= {side for side, edge in enumerate((mask[0], mask[-1], mask[:, 0], mask[:, -1])) if edge.any()}
    assert touched == {0, 1, 2, 3}
