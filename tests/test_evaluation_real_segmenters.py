"""The evaluate command with the real segmenter classes: a tiny random-weight SAM of the real
architecture and the custom model with random weights, on the model engineer's synthetic COCO set.
Random weights give meaningless IoUs; this checks the plumbing (loading, prompts, mask sizes, tables)."""

import argparse
import csv
import json

import pytest
import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from backend.evaluation import evaluate as evaluate_command
from backend.evaluation.harness import METHODS
from backend.networks.weights import ModelConfig
from backend.embeddings.cache import EmbeddingCache
from backend.segmenters.extreme import ExtremeSegmenter
from backend.segmenters.sam import SamSegmenter, SegmentAnything, adapter_for
from backend.training.synthetic import write_coco


def tiny_sam(image_size: int = 64, channels: int = 16) -> Sam:
    """SAM's architecture at toy scale: 64 px input, one ViT block, 4x4 embedding."""
    torch.manual_seed(0)
    grid = image_size // 16
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=image_size,
            patch_size=16,
            embed_dim=channels,
            depth=1,
            num_heads=1,
            mlp_ratio=2.0,
            out_chans=channels,
            global_attn_indexes=(),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=channels,
            image_embedding_size=(grid, grid),
            input_image_size=(image_size, image_size),
            mask_in_chans=4,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=1, embedding_dim=channels, mlp_dim=32, num_heads=1),
            transformer_dim=channels,
            iou_head_depth=1,
            iou_head_hidden_dim=16,
        ),
    )


@pytest.fixture
def real_segmenters(monkeypatch, tmp_path):
    """Make the loaders build random-weight models instead of reading files, recording their arguments."""
    torch.set_num_threads(1)
    calls = {}

    def sam_from_checkpoint(model_type, checkpoint_path, device, cache, precision):
        calls.setdefault("sams", []).append((model_type, checkpoint_path, device))
        name = adapter_for(model_type).model_name(model_type)
        return SamSegmenter(SegmentAnything(tiny_sam()), name, EmbeddingCache(capacity=1))

    def extreme_load(weights_dir, device="cpu", native_refine=False):
        calls["extreme"] = (weights_dir, device, native_refine)
        config = ModelConfig()
        return ExtremeSegmenter(*config.build(pretrained=False), config, "random", device)

    monkeypatch.setattr(SamSegmenter, "from_checkpoint", staticmethod(sam_from_checkpoint))
    monkeypatch.setattr(ExtremeSegmenter, "load", staticmethod(extreme_load))
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "manifest.json").write_text("{}")
    (tmp_path / "sam.pth").write_bytes(b"")
    return calls


@pytest.mark.slow
def test_all_five_methods_run_through_the_real_segmenters(tmp_path, real_segmenters, capsys):
    annotations = write_coco(tmp_path / "synthetic", count=1, seed=0, split="heldout")
    parser = argparse.ArgumentParser()
    evaluate_command.add_arguments(parser)
    args = parser.parse_args(
        [
            str(annotations),
            str(tmp_path / "synthetic" / "images"),
            "--out",
            str(tmp_path / "out"),
            "--sam-checkpoint",
            str(tmp_path / "sam.pth"),
            "--sam-model-type",
            "vit_b",
            "--extreme-weights",
            str(tmp_path / "weights"),
            "--device",
            "cpu",
            "--jitter",
            "0.02",
            "--max-clicks",
            "4",  # the 3 reported corrections: enough to see every segmenter take (or refuse) them
        ]
    )
    assert evaluate_command.run(args) == 0
    assert real_segmenters == {
        "sams": [("vit_b", tmp_path / "sam.pth", "cpu")],
        "extreme": (tmp_path / "weights", "cpu", False),
    }
    with (tmp_path / "out" / "per_object.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    n_objects = len(rows) // len(METHODS)
    assert n_objects >= 2 and len(rows) == n_objects * len(METHODS)
    assert {row["method"] for row in rows} == {method.name for method in METHODS}
    assert all(row["error"] == "" and 0.0 <= float(row["iou"]) <= 1.0 for row in rows)
    # SAM and GrabCut take the box's correction clicks; the refusals are the extreme model's own to report.
    assert all(row["clicks_refused"] == "" and len(json.loads(row["click_ious"])) >= 2
               for row in rows if row["method"] in ("sam-box", "sam-loose-box", "grabcut"))
    printed = capsys.readouterr().out
    assert f"| **all** | {n_objects} |" in printed and "| grabcut |" in printed


def test_several_sam_models_are_compared_in_one_run(tmp_path, real_segmenters, capsys):
    annotations = write_coco(tmp_path / "synthetic", count=1, seed=0, split="heldout")
    (tmp_path / "sam2.1.pt").write_bytes(b"")
    parser = argparse.ArgumentParser()
    evaluate_command.add_arguments(parser)
    common = [str(annotations), str(tmp_path / "synthetic" / "images"), "--out", str(tmp_path / "out"),
              "--methods", "sam-box,sam-loose-box,grabcut", "--clicks", "0", "--sam-checkpoint", str(tmp_path / "sam.pth"),
              "--sam-model-type", "vit_b", "--sam-checkpoint", str(tmp_path / "sam2.1.pt")]
    assert evaluate_command.run(parser.parse_args(common)) == 2  # one type for two checkpoints
    assert "2 --sam-checkpoint but 1 --sam-model-type" in capsys.readouterr().err

    assert evaluate_command.run(parser.parse_args(common + ["--sam-model-type", "sam2.1_hiera_tiny"])) == 0
    assert real_segmenters["sams"] == [("vit_b", tmp_path / "sam.pth", "cpu"),
                                       ("sam2.1_hiera_tiny", tmp_path / "sam2.1.pt", "cpu")]
    with (tmp_path / "out" / "per_object.csv").open() as handle:
        methods = {row["method"] for row in csv.DictReader(handle)}
    assert methods == {"sam-box@sam-vit_b", "sam-loose-box@sam-vit_b", "sam-box@sam2.1-hiera_tiny",
                       "sam-loose-box@sam2.1-hiera_tiny", "grabcut"}
    printed = capsys.readouterr().out
    assert "shared by sam-box@sam2.1-hiera_tiny and sam-loose-box@sam2.1-hiera_tiny" in printed


def test_the_extreme_model_is_evaluated_as_the_server_runs_it(real_segmenters, tmp_path, monkeypatch):
    monkeypatch.setenv("EXTREME_NATIVE_REFINE", "on")
    parser = argparse.ArgumentParser()
    evaluate_command.add_arguments(parser)
    args = parser.parse_args(["a.json", "images", "--extreme-weights", str(tmp_path / "weights")])
    segmenters, _ = evaluate_command.load_segmenters(args, {"extreme"}, "cpu")
    assert set(segmenters) == {"extreme"}
    assert real_segmenters["extreme"] == (tmp_path / "weights", "cpu", True)
