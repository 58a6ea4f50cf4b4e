"""Every policy on hand-made masks, the config merge rules, and config errors."""

import numpy as np
import pytest

from backend.policies import LabelPolicy, PolicyError, PolicySet, dilate, fill_holes, keep_largest, \
    overlap_groups, remove_islands
from backend.prompts import Segmentation


def ring(size=20, hole=(8, 12)) -> np.ndarray:
    """A filled square with a square hole of (hole[1] - hole[0])^2 px."""
    mask = np.zeros((size + 4, size + 4), bool)
    mask[2:size + 2, 2:size + 2] = True
    mask[hole[0]:hole[1], hole[0]:hole[1]] = False
    return mask


def test_fill_all_holes():
    filled = fill_holes(ring())
    assert filled[8:12, 8:12].all() and filled.sum() == 400


def test_fill_only_small_holes():
    two_holes = ring(hole=(4, 6))  # a 2x2 hole
    two_holes[10:16, 10:16] = False  # and a 6x6 one
    filled = fill_holes(two_holes, max_hole_px=4)
    assert filled[4:6, 4:6].all() and not filled[10:16, 10:16].any()
    assert fill_holes(two_holes, max_hole_px=36)[10:16, 10:16].all()


def test_open_background_is_not_a_hole():
    mask = np.zeros((10, 10), bool)
    mask[:, 3] = True  # a line splits the background, but both sides reach the border
    assert np.array_equal(fill_holes(mask), mask)


def blobs() -> np.ndarray:
    mask = np.zeros((30, 30), bool)
    mask[0:10, 0:10] = True  # 100 px
    mask[20:25, 20:25] = True  # 25 px
    mask[28, 28] = True  # 1 px
    return mask


def test_remove_islands_under_n_px():
    cleaned = remove_islands(blobs(), min_px=20)
    assert cleaned.sum() == 125 and not cleaned[28, 28]


def test_remove_islands_keeps_the_largest_part_even_when_small():
    tiny = np.zeros((10, 10), bool)
    tiny[2, 2] = tiny[7, 7] = tiny[7, 8] = True
    assert remove_islands(tiny, min_px=50).sum() == 2


def test_diagonal_pixels_are_one_part():
    diagonal = np.eye(6, dtype=bool)
    assert np.array_equal(keep_largest(diagonal), diagonal)


def test_keep_largest():
    assert keep_largest(blobs()).sum() == 100


def test_dilate_grows_by_n_px():
    dot = np.zeros((21, 21), bool)
    dot[10, 10] = True
    grown = dilate(dot, 3)
    assert grown[10, 7] and grown[10, 13] and grown[7, 10] and not grown[10, 6] and not grown[7, 7]


def test_overlap_groups_are_transitive():
    a, b, c, d = (np.zeros((10, 10), bool) for _ in range(4))
    a[0:3, 0:3] = True
    b[2:5, 2:5] = True  # overlaps a
    c[4:6, 4:6] = True  # overlaps b only
    d[8:, 8:] = True
    assert overlap_groups([a, d, b, c]) == [[0, 2, 3], [1]]


def test_label_policy_runs_every_step():
    mask = ring()
    mask[0, 0] = True  # an island
    cleaned = LabelPolicy(fill_holes=True, min_island_px=5, dilate_px=1).clean(mask)
    assert cleaned[8:12, 8:12].all() and not cleaned[0, 0] and cleaned[1, 5]


def seg(mask, label="Car", score=0.9, model="m"):
    return Segmentation(mask=mask, score=score, label=label, model=model)


def square(y0, x0, size=10, shape=(40, 40)):
    mask = np.zeros(shape, bool)
    mask[y0:y0 + size, x0:x0 + size] = True
    return mask


def test_merge_overlapping_instances_of_a_label_only():
    policies = PolicySet.parse({"Car": {"merge_overlapping": True}})
    result = [a.segmentation for a in policies.apply([seg(square(0, 0), score=0.9), seg(square(5, 5), score=0.6),
                                                      seg(square(30, 30)), seg(square(0, 0), "Dog"),
                                                      seg(square(5, 5), "Dog")])]
    assert [(s.label, int(s.mask.sum())) for s in result] == [("Car", 175), ("Car", 100), ("Dog", 100), ("Dog", 100)]
    assert result[0].score == 0.6


def test_merge_with_existing_masks_returns_the_union_and_names_what_it_absorbed():
    policies = PolicySet.parse({"*": {"merge_overlapping": True}})
    existing = {"Car": [square(30, 30), square(5, 5), square(8, 8)]}
    [merged] = policies.apply([seg(square(0, 0))], existing)
    assert merged.segmentation.mask.sum() == np.logical_or.reduce([square(0, 0), square(5, 5), square(8, 8)]).sum()
    assert merged.absorbed == (1, 2)  # the square at (30, 30) touches nothing and stays as it is
    [alone] = policies.apply([seg(square(20, 0))], existing)
    assert alone.absorbed == ()


def test_empty_masks_are_dropped():
    policies = PolicySet()
    assert policies.apply([seg(np.zeros((5, 5), bool)), seg(np.ones((5, 5), bool))])[0].segmentation.mask.all()


def test_label_entry_overrides_the_wildcard_and_project_overrides_default_key_by_key():
    default = PolicySet.parse({"*": {"fill_holes": True, "min_island_px": 50}, "Car": {"dilate_px": 2}})
    project = PolicySet.parse({"*": {"min_island_px": 10}, "Car": {"fill_holes": 100}})
    policies = default.updated(project)
    assert policies.for_label("Car") == LabelPolicy(fill_holes=100, min_island_px=10, dilate_px=2)
    assert policies.for_label("Dog") == LabelPolicy(fill_holes=True, min_island_px=10)


@pytest.mark.parametrize("extra, message", [
    ([], '"policies" must be an object'),
    ({"*": True}, 'policies["*"] must be an object'),
    ({"*": {"fill_hole": True}}, 'unknown policy "fill_hole"'),
    ({"Car": {"fill_holes": 0}}, "fill_holes must be true, false or a maximum hole area"),
    ({"Car": {"fill_holes": "yes"}}, "fill_holes"),
    ({"Car": {"min_island_px": -1}}, "min_island_px must be a whole number"),
    ({"Car": {"dilate_px": 1.5}}, "dilate_px must be a whole number of pixels from 0 to 100"),
    ({"Car": {"keep_largest": 1}}, "keep_largest must be true or false"),
    ({"Car": {"merge_overlapping": "true"}}, "merge_overlapping must be true or false"),
])
def test_config_errors_name_the_key(extra, message):
    with pytest.raises(PolicyError) as raised:
        PolicySet.parse(extra)
    assert message in str(raised.value)


@pytest.mark.parametrize("key, value", [("dilate_px", 101), ("dilate_px", 100000), ("min_island_px", 10**12),
                                        ("fill_holes", 10**12), ("dilate_px", -1), ("min_island_px", "50")])
def test_values_out_of_range_are_refused_naming_the_key(key, value):
    with pytest.raises(PolicyError, match=f'policies\\["Car"\\].{key} must be'):
        PolicySet.parse({"Car": {key: value}})


def test_dilation_is_a_euclidean_disk_whatever_its_size():
    dot = np.zeros((301, 301), bool)
    dot[150, 150] = True
    grown = dilate(dot, 100)
    yy, xx = np.mgrid[:301, :301]
    assert np.array_equal(grown, (yy - 150) ** 2 + (xx - 150) ** 2 <= 100 ** 2)


def test_policies_on_the_bounding_box_equal_policies_on_the_whole_image():
    """The crop window gives the same mask as the whole image would: a hole stays a hole, a bay open
    to the outside stays open, dilation reaches beyond the box, a border object keeps its edge."""
    from scipy import ndimage

    mask = np.zeros((120, 160), bool)
    mask[30:70, 40:90] = True
    mask[40:50, 50:60] = False  # a hole
    mask[55:70, 70:75] = False  # a bay open at the bottom edge of the box
    mask[0:10, 150:160] = True  # a part at the image border
    mask[100, 10] = True  # an island
    policy = LabelPolicy(fill_holes=True, min_island_px=5, dilate_px=3)
    whole = ndimage.binary_fill_holes(mask)
    whole = remove_islands(whole, 5)
    disk = np.hypot(*np.mgrid[-3:4, -3:4]) <= 3
    whole = ndimage.binary_dilation(whole, structure=disk)
    assert np.array_equal(policy.clean(mask), whole)
    assert not LabelPolicy(dilate_px=3).clean(np.zeros((5, 5), bool)).any()
