"""SamSegmenter plumbing on a tiny SAM 1 of the real architecture (random weights): prompt frames,
mask sizes and placement, proposal choice, embedding caching, validation, checkpoint loading.
SAM 2.1's adapter: tests/test_sam21.py."""

import threading

import numpy as np
import pytest
import torch
from segment_anything import sam_model_registry
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from backend.prompts import LoadedImage, Prompt, PromptKind
from backend.embeddings.cache import EmbeddingCache
from backend.segmenters import sam as sam_module
from backend.segmenters.sam import SamSegmenter, SegmentAnything

WIDTH, HEIGHT = 600, 400  # non-square: input frame 1024 x 683 (683 = round(400 * 1024 / 600))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_sam() -> Sam:
    """SAM's real modules and 1024 input frame (64x64 embedding, 256x256 low-res masks), tiny widths."""
    torch.manual_seed(0)
    dim = 32
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=1024,
            patch_size=16,
            embed_dim=16,
            depth=1,
            num_heads=1,
            mlp_ratio=1.0,
            out_chans=dim,
            window_size=8,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=dim, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=4
        ),
        mask_decoder=MaskDecoder(
            transformer_dim=dim,
            transformer=TwoWayTransformer(depth=1, embedding_dim=dim, num_heads=2, mlp_dim=32),
            num_multimask_outputs=3,
            iou_head_depth=1,
            iou_head_hidden_dim=16,
        ),
    ).eval()


def image(width=WIDTH, height=HEIGHT, key="img-1") -> LoadedImage:
    array = np.random.default_rng(0).integers(0, 255, (height, width, 3), np.uint8)
    return LoadedImage(array=array, key=key)


def segmenter(sam=None, cache=None) -> SamSegmenter:
    return SamSegmenter(SegmentAnything(sam or tiny_sam()), "sam-tiny", cache or EmbeddingCache(capacity=4))


def box(x0, y0, x1, y1, points=(), labels=()) -> Prompt:
    return Prompt(
        PromptKind.BOX,
        "Cat",
        box=(x0, y0, x1, y1),
        points=np.array(points, np.float32).reshape(-1, 2),
        point_labels=np.array(labels, np.int64),
    )


def clicks(points, labels, kind=PromptKind.POINTS) -> Prompt:
    return Prompt(kind, "Cat", points=np.array(points, np.float32), point_labels=np.array(labels, np.int64))


class PromptSpy:
    """Records what reaches SAM's prompt encoder."""

    def __init__(self, sam: Sam):
        self.calls = []
        sam.prompt_encoder.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs):
        self.calls.append(kwargs)


class RectangleDecoder(torch.nn.Module):
    """A mask decoder stub: proposal i is +10 inside ``rectangles[i]`` (rows r0:r1, cols c0:c1 of the
    padded 256x256 low-res frame) and -10 elsewhere, with predicted IoU ``ious[i]``."""

    def __init__(self, rectangles, ious):
        super().__init__()
        self.rectangles, self.ious = rectangles, ious
        self.multimask_requests = []

    def forward(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, multimask_output):
        self.multimask_requests.append(multimask_output)
        chosen = range(len(self.rectangles)) if multimask_output else [0]
        logits = torch.full((1, len(chosen), 256, 256), -10.0)
        for out, i in enumerate(chosen):
            r0, r1, c0, c1 = self.rectangles[i]
            logits[0, out, r0:r1, c0:c1] = 10.0
        return logits, torch.tensor([[self.ious[i] for i in chosen]])


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def rectangle_mask(height, width, top, bottom, left, right) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    mask[round(top) : round(bottom), round(left) : round(right)] = True
    return mask


# --- prompt coordinates ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "width, height, natural_box, input_box",
    [
        # 512x256 -> 1024x512: scale 2 on both axes; -0.5 undoes the encoder's pixel-centre shift.
        (512, 256, (10, 20, 110, 70), (19.5, 39.5, 219.5, 139.5)),
        # 600x400 -> 1024x683: x scale 1024/600, y scale 683/400 (rounded input height).
        (
            600,
            400,
            (60, 40, 300, 200),
            (60 * 1024 / 600 - 0.5, 40 * 683 / 400 - 0.5, 300 * 1024 / 600 - 0.5, 200 * 683 / 400 - 0.5),
        ),
        # portrait 300x500 -> 614x1024.
        (300, 500, (0, 0, 300, 500), (-0.5, -0.5, 300 * 614 / 300 - 0.5, 1023.5)),
    ],
)
def test_box_reaches_the_prompt_encoder_in_the_input_frame(width, height, natural_box, input_box):
    sam = tiny_sam()
    spy = PromptSpy(sam)
    segmenter(sam).segment(image(width, height), box(*natural_box))
    (call,) = spy.calls
    assert call["points"] is None and call["masks"] is None
    np.testing.assert_allclose(call["boxes"].numpy(), [input_box], atol=1e-3)


def test_clicks_reach_the_prompt_encoder_with_their_labels():
    sam = tiny_sam()
    spy = PromptSpy(sam)
    segmenter(sam).segment(image(), clicks([[300, 200], [600, 0]], [1, 0]))
    coords, labels = spy.calls[0]["points"]
    np.testing.assert_allclose(coords.numpy(), [[[512 - 0.5, 341.5 - 0.5], [1024 - 0.5, -0.5]]], atol=1e-3)
    assert labels.tolist() == [[1, 0]] and spy.calls[0]["boxes"] is None


def test_extreme_points_become_their_bounding_box_plus_four_positive_clicks():
    sam = tiny_sam()
    spy = PromptSpy(sam)
    extreme = [[300, 50], [320, 350], [100, 200], [500, 210]]  # top, bottom, left, right
    segmenter(sam).segment(image(512, 512), clicks(extreme, [1, 1, 1, 1], PromptKind.EXTREME))
    call = spy.calls[0]
    np.testing.assert_allclose(call["boxes"].numpy(), [[2 * 100 - 0.5, 2 * 50 - 0.5, 2 * 500 - 0.5, 2 * 350 - 0.5]])
    coords, labels = call["points"]
    np.testing.assert_allclose(coords.numpy()[0], np.array(extreme) * 2 - 0.5)
    assert labels.tolist() == [[1, 1, 1, 1]]


# --- masks -------------------------------------------------------------------------------------


@pytest.mark.parametrize("width, height", [(600, 400), (300, 500), (37, 23)])
def test_mask_has_the_natural_image_size(width, height):
    result = segmenter().segment(image(width, height), box(1, 1, width - 1, height - 1))
    assert result.mask.shape == (height, width) and result.mask.dtype == bool
    assert 0.0 <= result.score <= 1.0
    assert result.label == "Cat" and result.model == "sam-tiny"


@pytest.mark.parametrize(
    "low_res_rectangle, expected",
    [
        # low-res rows 64:128, cols 32:160 -> input rows 256:512, cols 128:640 (x4)
        # -> natural rows 256..512 * 400/683, cols 128..640 * 600/1024.
        ((64, 128, 32, 160), (256 * 400 / 683, 512 * 400 / 683, 75, 375)),
        # Rows 100:256 run into the padding below the image (input rows 683:1024), which is cut off.
        ((100, 256, 0, 256), (400 * 400 / 683, 400, 0, 600)),
    ],
)
def test_low_res_logits_map_back_to_the_right_place(low_res_rectangle, expected):
    sam = tiny_sam()
    sam.mask_decoder = RectangleDecoder([low_res_rectangle], [0.8])
    result = segmenter(sam).segment(image(), box(10, 10, 100, 100))
    assert result.mask.shape == (HEIGHT, WIDTH)
    assert iou(result.mask, rectangle_mask(HEIGHT, WIDTH, *expected)) > 0.98
    assert result.score == pytest.approx(0.8)


def test_single_click_picks_the_proposal_with_the_highest_predicted_iou():
    sam = tiny_sam()
    rectangles = [(0, 10, 0, 10), (0, 64, 0, 64), (0, 128, 0, 128), (0, 160, 0, 160)]
    sam.mask_decoder = RectangleDecoder(rectangles, [0.99, 0.2, 1.3, 0.5])  # [0] is the single-mask output
    result = segmenter(sam).segment(image(), clicks([[20, 20]], [1]))
    assert sam.mask_decoder.multimask_requests == [True]
    assert iou(result.mask, rectangle_mask(HEIGHT, WIDTH, 0, 128 * 4 * 400 / 683, 0, 128 * 4 * 600 / 1024)) > 0.98
    assert result.score == 1.0  # predicted IoU 1.3 clipped


def test_boxes_and_several_clicks_ask_for_one_mask():
    sam = tiny_sam()
    sam.mask_decoder = RectangleDecoder([(0, 10, 0, 10)] * 4, [0.5] * 4)
    seg = segmenter(sam)
    seg.segment(image(), box(10, 10, 100, 100))
    seg.segment(image(), clicks([[20, 20], [50, 50]], [1, 0]))
    seg.segment(image(), box(10, 10, 100, 100, points=[[50, 50]], labels=[1]))  # the box, then box + click
    assert sam.mask_decoder.multimask_requests == [False, False, False, False]


# --- corrections: one click more per decoder run, the previous logits as mask input --------------


def decoder_outputs(sam: Sam) -> list:
    """The low-res logits of each mask-decoder run, recorded."""
    outputs = []
    sam.mask_decoder.register_forward_hook(lambda module, args, output: outputs.append(output[0].detach().clone()))
    return outputs


@pytest.mark.parametrize(
    "prompt, first_points, first_labels",
    [
        (box(60, 40, 300, 200, points=[[100, 100], [150, 120]], labels=[0, 1]), 0, []),
        (clicks([[180, 40], [170, 200], [60, 120], [300, 110], [150, 100], [200, 150]], [1, 1, 1, 1, 0, 1],
                PromptKind.EXTREME), 4, [1, 1, 1, 1]),
    ],
    ids=["box + 2 clicks", "extreme points + 2 corrections"],
)
def test_each_correction_click_refines_the_previous_answer_through_the_mask_input(prompt, first_points, first_labels):
    sam = tiny_sam()
    spy, outputs = PromptSpy(sam), decoder_outputs(sam)
    segmenter(sam).segment(image(), prompt)
    assert len(spy.calls) == 3 and spy.calls[0]["masks"] is None
    if first_points:
        assert spy.calls[0]["points"][1].tolist() == [first_labels]
    else:
        assert spy.calls[0]["points"] is None
    for run in (1, 2):  # one click more each run, the previous run's logits as the mask input
        coords, labels = spy.calls[run]["points"]
        assert coords.shape == (1, first_points + run, 2)
        assert labels.tolist() == [prompt.point_labels[: first_points + run].tolist()]
        assert spy.calls[run]["masks"].shape == (1, 1, 256, 256)
        assert torch.equal(spy.calls[run]["masks"], outputs[run - 1][:, :1])
    assert all(torch.equal(call["boxes"], spy.calls[0]["boxes"]) for call in spy.calls)


def test_a_refined_mask_is_what_metas_predictor_gives_with_the_previous_logits_as_mask_input():
    from segment_anything import SamPredictor

    sam = tiny_sam()
    predictor = SamPredictor(sam)
    predictor.set_image(image().array)
    scale = np.array([1024 / WIDTH, 683 / HEIGHT])
    natural_box, point = np.array([60, 40, 300, 200], float), np.array([[150, 100]], float)
    # Meta's predictor takes pixel indices: ours are continuous coordinates, half an input pixel apart.
    meta_box = (natural_box.reshape(2, 2) - 0.5 / scale).reshape(4)
    _, _, first = predictor.predict(box=meta_box, multimask_output=False)
    masks, predicted_iou, _ = predictor.predict(point_coords=point - 0.5 / scale, point_labels=np.array([0]),
                                                box=meta_box, mask_input=first, multimask_output=False)
    result = segmenter(sam).segment(image(), box(*natural_box, points=point, labels=[0]))
    assert np.array_equal(result.mask, masks[0])
    assert result.score == pytest.approx(float(np.clip(predicted_iou[0], 0, 1)), abs=1e-6)


# --- embedding cache -----------------------------------------------------------------------------


def count_encoder_runs(sam: Sam) -> list:
    runs = []
    sam.image_encoder.register_forward_hook(lambda module, args, output: runs.append(output.shape))
    return runs


def test_embedding_is_computed_once_per_image():
    sam = tiny_sam()
    runs = count_encoder_runs(sam)
    seg = segmenter(sam)
    first = seg.segment(image(key="a"), box(10, 10, 200, 200))
    seg.segment(image(key="a"), clicks([[50, 60]], [1]))
    again = seg.segment(image(key="a"), box(10, 10, 200, 200))
    assert runs == [(1, 32, 64, 64)]
    assert np.array_equal(first.mask, again.mask) and first.score == again.score
    seg.segment(image(key="b"), box(10, 10, 200, 200))
    assert len(runs) == 2


def test_concurrent_prompts_on_one_image_encode_once():
    sam = tiny_sam()
    runs = count_encoder_runs(sam)
    seg = segmenter(sam)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(seg.segment(image(key="a"), box(10, 10, 300, 300))))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(runs) == 1 and len(results) == 4
    assert all(np.array_equal(r.mask, results[0].mask) for r in results)


# --- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt, message",
    [
        (clicks([[601, 10]], [1]), r"point \(601.0, 10.0\) lies outside the 600x400 image"),
        (clicks([[10, -3]], [1]), "outside"),
        (box(10, 10, 10, 50), "no area"),
        (box(50, 10, 20, 60), "no area"),
        (box(700, 10, 800, 60), "no area inside the 600x400 image"),
        (box(10, 10, 50, 50, points=[[500, 500]], labels=[1]), "outside"),
        (clicks([[10, 10]], [0]), "at least one positive click"),
        (clicks([[10, 10], [20, 20], [30, 30]], [1, 1, 1], PromptKind.EXTREME), "needs 4 points"),
        (clicks([[10, 10], [10, 20], [10, 30], [10, 40]], [1, 1, 1, 1], PromptKind.EXTREME), "no area"),
        (clicks([[10, 10]], [1, 1]), "1 points but 2 point labels"),
        (clicks([[10, np.nan]], [1]), "finite"),
        (Prompt(PromptKind.BOX, "Cat"), "needs a box"),
    ],
)
def test_bad_prompts_are_rejected_before_any_encoding(prompt, message):
    sam = tiny_sam()
    runs = count_encoder_runs(sam)
    with pytest.raises(ValueError, match=message):
        segmenter(sam).segment(image(), prompt)
    assert runs == []


def test_prompts_on_the_edge_are_accepted_and_boxes_are_clipped():
    sam = tiny_sam()
    spy = PromptSpy(sam)
    seg = segmenter(sam)
    seg.segment(image(), clicks([[600.3, 400.0]], [1]))  # percent rounding just past the edge
    np.testing.assert_allclose(spy.calls[0]["points"][0].numpy(), [[[1023.5, 682.5]]], atol=1e-3)
    seg.segment(image(), box(-20, 100, 700, 200))
    np.testing.assert_allclose(spy.calls[1]["boxes"].numpy()[0, [0, 2]], [-0.5, 1023.5], atol=1e-3)


# --- checkpoints ---------------------------------------------------------------------------------


def test_from_checkpoint_loads_weights_without_downloading(tmp_path, monkeypatch):
    monkeypatch.setitem(sam_model_registry, "vit_b", tiny_sam)
    trained = tiny_sam()
    with torch.no_grad():
        trained.mask_decoder.iou_token.weight.fill_(0.25)
    torch.save(trained.state_dict(), tmp_path / "sam.pth")

    seg = SamSegmenter.from_checkpoint("vit_b", tmp_path / "sam.pth", "cpu", EmbeddingCache(capacity=1))
    assert seg.model_name == "sam-vit_b"
    assert torch.all(seg.model.sam.mask_decoder.iou_token.weight == 0.25)
    assert not seg.model.sam.training


def test_from_checkpoint_errors(tmp_path, monkeypatch):
    cache = EmbeddingCache(capacity=1)
    with pytest.raises(FileNotFoundError, match="python -m backend download-sam vit_l"):
        SamSegmenter.from_checkpoint("vit_l", tmp_path / "missing.pth", "cpu", cache)
    with pytest.raises(ValueError, match="unknown SAM model type 'vit_x'"):
        SamSegmenter.from_checkpoint("vit_x", tmp_path / "missing.pth", "cpu", cache)
    monkeypatch.setitem(sam_model_registry, "vit_b", tiny_sam)
    torch.save({"something": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not a vit_b checkpoint .*the official file is sam_vit_b_01ec64.pth"):
        SamSegmenter.from_checkpoint("vit_b", tmp_path / "other.pth", "cpu", cache)
    torch.save({"model": tiny_sam().state_dict()}, tmp_path / "sam2.1_hiera_tiny.pt")  # SAM 2.1's file format
    with pytest.raises(ValueError, match="named like the sam2.1_hiera_tiny file: set SAM_MODEL_TYPE=sam2.1_hiera_tiny"):
        SamSegmenter.from_checkpoint("vit_b", tmp_path / "sam2.1_hiera_tiny.pt", "cpu", cache)
    (tmp_path / "page.pth").write_text("<html>Access denied</html>")
    with pytest.raises(ValueError, match="cannot be read as a PyTorch checkpoint"):
        SamSegmenter.from_checkpoint("vit_b", tmp_path / "page.pth", "cpu", cache)


# --- the encoder's precision (SAM_PRECISION) -------------------------------------------------------


@pytest.mark.parametrize(
    "model_type, precision, native, expected",
    [
        ("sam2.1_hiera_tiny", "auto", True, torch.bfloat16),  # Meta's own SAM 2 precision, where it is fast
        ("sam2.1_hiera_large", "auto", False, torch.float32),  # emulated bfloat16 would be slower
        ("vit_b", "auto", True, torch.float32),  # Meta runs SAM 1 in float32
        ("vit_b", "bfloat16", True, torch.bfloat16),
        ("sam2.1_hiera_tiny", "float32", True, torch.float32),
    ],
)
def test_encoder_precision(monkeypatch, model_type, precision, native, expected):
    monkeypatch.setattr(sam_module, "native_bfloat16", lambda device: native)
    assert sam_module.encoder_dtype(model_type, precision, "cpu") == expected


def test_encoder_precision_errors(monkeypatch, tmp_path):
    monkeypatch.setattr(sam_module, "native_bfloat16", lambda device: False)
    with pytest.raises(ValueError, match="no native bfloat16 arithmetic .*use auto or float32"):
        sam_module.encoder_dtype("sam2.1_hiera_tiny", "bfloat16", "cpu")
    with pytest.raises(ValueError, match="unknown SAM_PRECISION 'fp8'; expected one of auto, float32, bfloat16"):
        SamSegmenter.from_checkpoint("vit_b", tmp_path / "sam.pth", "cpu", EmbeddingCache(1), precision="fp8")


def test_a_bfloat16_encoder_hands_over_float32_features_under_their_own_key():
    sam = SegmentAnything(tiny_sam())
    full, reduced = (SamSegmenter(sam, "sam-tiny", EmbeddingCache(1), dtype) for dtype in (torch.float32, torch.bfloat16))
    photo = LoadedImage(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8), key="photo")
    features = reduced.embedding(photo)
    assert features.dtype == torch.float32
    torch.testing.assert_close(features, full.embedding(photo), atol=0.05, rtol=0.05)
    assert reduced.embedding_key(photo) != full.embedding_key(photo)  # a shared store keeps both apart
