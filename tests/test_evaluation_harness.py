"""The evaluation harness end to end on a tiny synthetic COCO set written here."""

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from backend.evaluation import evaluate as evaluate_command
from backend.coco import CocoObjects
from backend.segmenters.grabcut import GrabCutSegmenter
from backend.evaluation.harness import METHODS, evaluate
from backend.evaluation.real_photos import evaluation_images
from backend.evaluation.report import ALL, summarize
from backend.prompts import PromptKind, Segmentation

HEIGHT, WIDTH = 48, 64


def square(top, left, size):
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[top : top + size, left : left + size] = True
    return mask


def disc(cy, cx, radius):
    rows, cols = np.mgrid[:HEIGHT, :WIDTH]
    return (rows + 0.5 - cy) ** 2 + (cols + 0.5 - cx) ** 2 <= radius**2


def write_coco(root: Path, scenes: list[list[tuple[str, np.ndarray]]], crowd: np.ndarray | None = None) -> Path:
    """Images of bright objects on a dark noisy background; annotations as RLE. ``crowd`` adds an
    iscrowd annotation to the first image."""
    (root / "images").mkdir()
    categories = sorted({name for objects in scenes for name, _ in objects})
    coco = {
        "images": [],
        "annotations": [],
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(categories)],
    }
    rng = np.random.default_rng(0)
    annotated = [(index, name, mask, 0) for index, objects in enumerate(scenes) for name, mask in objects]
    if crowd is not None:
        annotated.append((0, categories[0], crowd, 1))
    for index in range(len(scenes)):
        pixels = rng.integers(20, 70, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
        for _, _, mask, _ in (item for item in annotated if item[0] == index):
            pixels[mask] = (230, 210, 60)
        Image.fromarray(pixels).save(root / "images" / f"{index}.png")
        coco["images"].append({"id": index + 10, "file_name": f"{index}.png", "width": WIDTH, "height": HEIGHT})
    for ann_id, (index, name, mask, iscrowd) in enumerate(annotated, start=100):
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        coco["annotations"].append(
            {
                "id": ann_id,
                "image_id": index + 10,
                "category_id": categories.index(name) + 1,
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
                "area": float(mask.sum()),
                "bbox": list(mask_utils.toBbox(rle)),
                "iscrowd": iscrowd,
            }
        )
    path = root / "instances.json"
    path.write_text(json.dumps(coco))
    return path


SCENES = [
    [("square", square(5, 5, 12)), ("disc", disc(30, 40, 9))],
    [("square", square(20, 30, 16))],
    [("disc", disc(24, 20, 11)), ("square", square(2, 44, 1))],  # a 1-pixel square too
]


class BoxFiller:
    """Fills the prompt's box, or the box spanned by extreme points' pixels: exact on squares."""

    model_name = "box-filler"

    def segment(self, image, prompt):
        if prompt.kind is PromptKind.EXTREME:
            x0, y0 = prompt.points.min(axis=0) - 0.5
            x1, y1 = prompt.points.max(axis=0) + 0.5
        else:
            x0, y0, x1, y1 = prompt.box
        mask = np.zeros(image.array.shape[:2], bool)
        mask[round(y0) : round(y1), round(x0) : round(x1)] = True
        return Segmentation(mask=mask, score=1.0, label=prompt.label, model=self.model_name)


class Failing:
    model_name = "failing"

    def segment(self, image, prompt):
        raise RuntimeError("no mask for you")


def test_coco_objects_skip_crowd_and_small_objects_and_load_images(tmp_path):
    path = write_coco(tmp_path, SCENES, crowd=square(30, 50, 10))
    everything = CocoObjects(path, tmp_path / "images")
    assert len(everything) == 5  # the crowd annotation is not evaluated
    large = CocoObjects(path, tmp_path / "images", min_area=2)
    items = list(large)
    assert len(large) == 4 and [item.image_id for item in items] == [10, 11, 12]
    first = items[0]
    assert first.image.array.shape == (HEIGHT, WIDTH, 3) and first.image.array.dtype == np.uint8
    assert [obj.category for obj in first.objects] == ["square", "disc"]
    np.testing.assert_array_equal(first.objects[0].mask, square(5, 5, 12))


def test_max_objects_is_a_seeded_sample(tmp_path):
    path = write_coco(tmp_path, SCENES)
    ids = [
        [
            obj.annotation_id
            for item in CocoObjects(path, tmp_path / "images", max_objects=2, seed=s)
            for obj in item.objects
        ]
        for s in (1, 1)
    ]
    assert ids[0] == ids[1] and len(ids[0]) == 2


def test_image_of_the_wrong_size_is_a_clear_error(tmp_path):
    path = write_coco(tmp_path, SCENES)
    Image.new("RGB", (10, 10)).save(tmp_path / "images" / "1.png")
    with pytest.raises(ValueError, match="1.png is 10x10 but the annotations say 64x48"):
        list(CocoObjects(path, tmp_path / "images"))


def test_a_perfect_segmenter_scores_one_and_the_loose_box_its_area_ratio(tmp_path):
    squares = [[("square", square(5, 5, 10))], [("square", square(20, 30, 15))]]
    path = write_coco(tmp_path, squares)
    fakes = {"extreme": BoxFiller(), "sam": BoxFiller(), "grabcut": BoxFiller()}
    results = evaluate(CocoObjects(path, tmp_path / "images"), list(METHODS), fakes, boundary_tolerance_px=0)
    summary = summarize(results, [method.name for method in METHODS], boundary_tolerance_px=0)
    for name in ("custom-extreme", "sam-box", "custom-box", "grabcut"):
        assert summary.miou[ALL][name] == summary.boundary_f[ALL][name] == 1.0
        assert summary.outside[ALL][name] == 0.0
    # 10 px -> 12 px and 15 px -> 18 px per side, none touching the border: IoU = 1 / 1.2**2
    assert summary.miou["square"]["sam-loose-box"] == pytest.approx(1 / 1.44)
    assert summary.outside["square"]["sam-loose-box"] == pytest.approx(1 - 1 / 1.44)
    assert summary.boundary_f["square"]["sam-loose-box"] == 0.0  # every outline pixel is a pixel off
    assert summary.counts == {"square": 2, ALL: 2}


def test_a_failing_segmenter_scores_zero_and_the_run_goes_on(tmp_path):
    path = write_coco(tmp_path, SCENES)
    sam_box = [method for method in METHODS if method.name == "sam-box"]
    results = evaluate(CocoObjects(path, tmp_path / "images"), sam_box, {"sam": Failing()})
    assert len(results) == 5
    assert all(result.iou == 0.0 and "no mask for you" in result.error for result in results)


def cli_args(tmp_path, path, *options):
    parser = argparse.ArgumentParser()
    evaluate_command.add_arguments(parser)
    return parser.parse_args([str(path), str(tmp_path / "images"), "--out", str(tmp_path / "out"), *options])


def read_csv(path):
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_command_runs_grabcut_and_notes_the_missing_models(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SAM_CHECKPOINT", raising=False)
    monkeypatch.setenv("EXTREME_WEIGHTS", str(tmp_path / "no-weights"))
    path = write_coco(tmp_path, SCENES)
    assert evaluate_command.run(cli_args(tmp_path, path, "--min-area", "2")) == 0
    printed = capsys.readouterr().out
    assert "SAM methods skipped" in printed and "custom-model methods skipped" in printed
    out = tmp_path / "out"
    table = {row["category"]: row for row in read_csv(out / "miou.csv")}
    assert list(table) == ["disc", "square", ALL]
    assert list(table[ALL]) == ["category", "objects", "grabcut"]
    assert table[ALL]["objects"] == "4" and float(table["square"]["grabcut"]) > 0.9
    assert "| **all** | 4 |" in (out / "report.md").read_text() and "| **all** | 4 |" in printed
    assert (out / "miou_by_category.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    latency = read_csv(out / "latency.csv")
    assert [row["method"] for row in latency] == ["grabcut"] and float(latency[0]["median_ms"]) > 0
    boundary = {row["category"]: row for row in read_csv(out / "boundary_f.csv")}
    assert list(boundary) == ["disc", "square", ALL] and 0 < float(boundary["square"]["grabcut"]) <= 1
    assert list(read_csv(out / "outside.csv")[0]) == ["category", "objects", "grabcut"]
    assert "boundary F-score (tolerance 2 px)" in printed and "outside the object" in printed


def test_command_tables_agree_with_the_per_object_results(tmp_path, monkeypatch, capsys):
    fakes = {"extreme": BoxFiller(), "sam": BoxFiller(), "grabcut": GrabCutSegmenter()}
    monkeypatch.setattr(evaluate_command, "load_segmenters", lambda args, needed, device: (fakes, []))
    path = write_coco(tmp_path, SCENES)
    assert evaluate_command.run(cli_args(tmp_path, path)) == 0
    out = tmp_path / "out"
    per_object = read_csv(out / "per_object.csv")
    assert len(per_object) == 5 * len(METHODS)
    for metric, table_file in (("iou", "miou.csv"), ("boundary_f", "boundary_f.csv"), ("outside", "outside.csv")):
        table = {row["category"]: row for row in read_csv(out / table_file)}
        for method in METHODS:
            for category in ("disc", "square", ALL):
                values = [
                    float(r[metric]) for r in per_object if r["method"] == method.name and category in (ALL, r["category"])
                ]
                assert float(table[category][method.name]) == pytest.approx(np.mean(values), abs=1e-4)
    assert "SAM computes one image embedding per image" in capsys.readouterr().out


def test_command_reports_a_missing_annotations_file(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    args = cli_args(tmp_path, tmp_path / "missing.json", "--methods", "grabcut")
    assert evaluate_command.run(args) == 2
    assert "COCO annotations file not found" in capsys.readouterr().err


def test_command_refuses_a_named_sam_checkpoint_that_does_not_exist(tmp_path, capsys):
    path = write_coco(tmp_path, SCENES)
    args = cli_args(tmp_path, path, "--sam-checkpoint", str(tmp_path / "sam.pth"), "--methods", "sam-box")
    assert evaluate_command.run(args) == 2
    assert "SAM checkpoint not found" in capsys.readouterr().err


class WrongSize:
    model_name = "wrong-size"

    def segment(self, image, prompt):
        return Segmentation(mask=np.zeros((4, 4), bool), score=0.0, label=prompt.label, model=self.model_name)


def test_a_mask_of_the_wrong_size_stops_the_run(tmp_path):
    path = write_coco(tmp_path, SCENES)
    grabcut = [method for method in METHODS if method.name == "grabcut"]
    with pytest.raises(ValueError, match=r"grabcut returned a \(4, 4\) mask for a \(48, 64\) image"):
        evaluate(CocoObjects(path, tmp_path / "images"), grabcut, {"grabcut": WrongSize()})


@pytest.mark.parametrize("tolerance", ["-1", "nan"])
def test_a_negative_boundary_tolerance_is_refused(tmp_path, capsys, tolerance):
    with pytest.raises(SystemExit):
        cli_args(tmp_path, tmp_path / "instances.json", "--boundary-tolerance", tolerance)
    assert "--boundary-tolerance: must be at least 0" in capsys.readouterr().err


def test_unknown_method_names_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli_args(tmp_path, tmp_path / "instances.json", "--methods", "grabcut,sam-tight")
    assert "unknown method(s) sam-tight" in capsys.readouterr().err


@pytest.mark.parametrize("content", ["{not json", "[1, 2]"])
def test_an_annotations_file_that_is_not_coco_is_a_clear_error(tmp_path, content):
    (tmp_path / "images").mkdir()
    (tmp_path / "instances.json").write_text(content)
    with pytest.raises(ValueError, match="instances.json is not a COCO instances JSON file"):
        CocoObjects(tmp_path / "instances.json", tmp_path / "images")


class Staged(BoxFiller):
    """A box filler that reports two stages, as the custom model does."""

    def segment(self, image, prompt):
        segmentation = super().segment(image, prompt)
        segmentation.stage_ms = {"coarse": 3.0, "refine": 5.0 if prompt.kind is PromptKind.BOX else 7.0}
        return segmentation


def test_stage_times_reach_the_latency_table_and_the_per_object_rows(tmp_path, monkeypatch):
    fakes = {"extreme": Staged(), "grabcut": GrabCutSegmenter()}
    monkeypatch.setattr(evaluate_command, "load_segmenters", lambda args, needed, device: (fakes, []))
    path = write_coco(tmp_path, SCENES)
    assert evaluate_command.run(cli_args(tmp_path, path, "--methods", "custom-extreme,custom-box,grabcut")) == 0
    out = tmp_path / "out"
    latency = {row["method"]: row for row in read_csv(out / "latency.csv")}
    assert float(latency["custom-extreme"]["refine_median_ms"]) == 7.0
    assert float(latency["custom-box"]["refine_median_ms"]) == 5.0 and latency["grabcut"]["coarse_median_ms"] == ""
    assert "| custom-extreme |" in (out / "report.md").read_text() and "coarse 3.0, refine 7.0" in (out / "report.md").read_text()
    rows = [row for row in read_csv(out / "per_object.csv") if row["method"] == "custom-box"]
    assert json.loads(rows[0]["stage_ms"]) == {"coarse": 3.0, "refine": 5.0}


def tiny_real_set(tmp_path):
    """A one-photo, two-object set in the real-photo format: two coins of scikit-image's coins photo."""
    ring = [[30, 35], [60, 35], [60, 72], [30, 72]]
    spec = {"photos": {"coins": {"package": "skimage", "path": "data/coins.png", "split": "heldout", "objects": [
        {"name": "left", "kind": "solid", "how": "test", "polygons": [ring]},
        {"name": "right", "kind": "thin", "how": "test", "polygons": [[[x + 55, y] for x, y in ring]]},
    ]}}}
    path = tmp_path / "set.json"
    path.write_text(json.dumps(spec))
    return path


def test_command_evaluates_the_real_photo_set_with_named_objects(tmp_path, monkeypatch, capsys):
    set_file = tiny_real_set(tmp_path)
    monkeypatch.setattr(evaluate_command, "evaluation_images", lambda split: evaluation_images(split, set_file))
    monkeypatch.setattr(evaluate_command, "load_segmenters", lambda args, needed, device: ({"extreme": BoxFiller()}, []))
    parser = argparse.ArgumentParser()
    evaluate_command.add_arguments(parser)
    args = parser.parse_args(["--real-photos", "heldout", "--methods", "custom-box", "--out", str(tmp_path / "out")])
    assert evaluate_command.run(args) == 0
    printed = capsys.readouterr().out
    assert "the real-photo set, heldout (2 objects in 1 photos" in printed
    assert "| coins/left | 1.000 → 1.000 |" in printed and "| coins/right | 1.000 → 1.000 |" in printed  # exact boxes
    assert {row["category"] for row in read_csv(tmp_path / "out" / "miou.csv")} == {"solid", "thin", ALL}
    assert {row["name"] for row in read_csv(tmp_path / "out" / "per_object.csv")} == {"coins/left", "coins/right"}


@pytest.mark.parametrize("datasets", [[], ["COCO"], ["COCO", "--real-photos", "heldout"]])
def test_command_needs_one_dataset(tmp_path, capsys, datasets):
    path = write_coco(tmp_path, SCENES)
    named = [str(path), str(tmp_path / "images"), *datasets[1:]] if datasets else []
    if datasets == ["COCO"]:
        named = [str(path)]  # annotations without their images directory
    parser = argparse.ArgumentParser()
    evaluate_command.add_arguments(parser)
    assert evaluate_command.run(parser.parse_args([*named, "--out", str(tmp_path / "out")])) == 2
    assert "give a COCO set (annotations and images) or --real-photos" in capsys.readouterr().err


def test_the_real_photo_set_is_evaluated_whole(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    evaluate_command.add_arguments(parser)
    args = parser.parse_args(["--real-photos", "heldout", "--max-objects", "3", "--methods", "grabcut"])
    assert evaluate_command.run(args) == 2
    assert "evaluated whole" in capsys.readouterr().err
