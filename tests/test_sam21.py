"""SAM 2.1 through SamSegmenter, on the real hiera_tiny architecture with random weights saved in the
official checkpoint format: features and masks equal those of Meta's own SAM2ImagePredictor, prompt
frames, mask placement at the natural size, proposal choice, caching, checkpoint errors.

The image is encoded once for the module (seconds on a CPU); other image sizes reuse its features
(SAM 2.1's features do not depend on the image size: every image is stretched to 1024 x 1024)."""

import shutil
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from sam2.sam2_image_predictor import SAM2ImagePredictor

from backend.embeddings import codec
from backend.prompts import LoadedImage, PromptKind
from backend.segmenter_set import SegmenterSet
from backend.embeddings.cache import EmbeddingCache
from backend.segmenters.sam import SamSegmenter
from backend.segmenters.sam21 import Sam21
from backend.settings import Settings
from segmentation_fakes import IMAGE_URL, H, W, make_app, predict_body, rectangle, setup_body, task
from test_sam import RectangleDecoder, box, clicks, image, iou, rectangle_mask, tiny_sam

TYPE, NAME = "sam2.1_hiera_tiny", "sam2.1-hiera_tiny"
WIDTH, HEIGHT = 600, 400  # input frame 1024 x 1024: x scale 1024/600, y scale 1024/400
SCALE = np.array([1024 / WIDTH, 1024 / HEIGHT])
IMAGE = image(WIDTH, HEIGHT, key="photo")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sam21") / "sam2.1_hiera_tiny.pt"
    torch.save({"model": Sam21.build(TYPE).state_dict()}, path)  # the official files' layout
    return path


@pytest.fixture(scope="module")
def segmenter(checkpoint):
    """Loaded through from_checkpoint, with IMAGE's features computed (the module's one encoding)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seg = SamSegmenter.from_checkpoint(TYPE, checkpoint, "cpu", EmbeddingCache(capacity=4))
        seg.embedding(IMAGE)
        yield seg
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(segmenter):
    """Meta's image predictor on the same network, its image set to IMAGE (a second encoding)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():  # the predictor torch.jit.scripts its transforms, which torch deprecates
            warnings.simplefilter("ignore", FutureWarning)
            predictor = SAM2ImagePredictor(segmenter.model.model)
        predictor.set_image(IMAGE.array)
        yield predictor
    finally:
        torch.set_num_threads(threads)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def sharing_features(segmenter: SamSegmenter, *images: LoadedImage, features=None) -> SamSegmenter:
    """A segmenter on the same network whose cache already holds ``features`` (default: IMAGE's)
    for ``images``."""
    features = segmenter.embedding(IMAGE) if features is None else features
    cache = EmbeddingCache(capacity=len(images))
    for other in images:
        cache.get_or_compute(f"{NAME}:{other.key}", lambda: features)
    return SamSegmenter(segmenter.model, NAME, cache)


@pytest.fixture
def stub_decoder(segmenter):
    """``install(rectangles, ious)`` puts a Sam21RectangleDecoder into the network, for this test only."""
    network, real = segmenter.model.model, segmenter.model.model.sam_mask_decoder

    def install(rectangles, ious):
        network.sam_mask_decoder = Sam21RectangleDecoder(rectangles, ious)
        return network.sam_mask_decoder

    yield install
    network.sam_mask_decoder = real


class Sam21RectangleDecoder(RectangleDecoder):
    """RectangleDecoder with SAM 2.1's decoder signature; records the high-resolution features' shapes."""

    def __init__(self, rectangles, ious):
        super().__init__(rectangles, ious)
        self.high_res_shapes = []

    def forward(self, *, repeat_image, high_res_features, **inputs):
        self.high_res_shapes.append([tuple(feature.shape) for feature in high_res_features])
        logits, predicted_iou = super().forward(**inputs)
        return logits, predicted_iou, None, None


# --- loading and features ----------------------------------------------------------------------


def test_official_checkpoint_format_loads(segmenter, checkpoint):
    saved = torch.load(checkpoint, weights_only=True)["model"]
    loaded = segmenter.model.model.state_dict()
    assert segmenter.model_name == NAME and not segmenter.model.model.training
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[name], loaded[name]) for name in ("no_mem_embed", "sam_mask_decoder.iou_token.weight"))


def test_features_are_what_metas_predictor_computes_and_survive_serialisation(segmenter, reference):
    features = segmenter.embedding(IMAGE)
    assert {name: tuple(t.shape) for name, t in features.items()} == {
        "image_embed": (1, 256, 64, 64),
        "high_res_s0": (1, 32, 256, 256),
        "high_res_s1": (1, 64, 128, 128),
    }
    expected = reference._features
    torch.testing.assert_close(features["image_embed"], expected["image_embed"])
    torch.testing.assert_close(features["high_res_s0"], expected["high_res_feats"][0])
    torch.testing.assert_close(features["high_res_s1"], expected["high_res_feats"][1])
    restored = codec.decode(codec.encode(features, "k", half=False), "k")  # how the embedding store keeps them
    assert all(torch.equal(restored[name], features[name]) for name in features)


@pytest.mark.parametrize("prompt", [box(60, 40, 300, 200), clicks([[200, 150]], [1]), box(0, 0, 600, 400)],
                         ids=["box", "click", "whole image"])
def test_masks_from_float16_features_match_float32_ones(segmenter, prompt):
    """The embedding store keeps float32 as float16 by default."""
    full = segmenter.segment(IMAGE, prompt)
    halved = codec.decode(codec.encode(segmenter.embedding(IMAGE), "k", half=True), "k")
    half = sharing_features(segmenter, IMAGE, features=halved).segment(IMAGE, prompt)
    assert full.mask.sum() > 100
    assert iou(full.mask, half.mask) >= 0.99 and abs(full.score - half.score) < 0.01


@pytest.mark.parametrize("prompt", [box(60, 40, 300, 200), clicks([[200, 150]], [1]), box(0, 0, 600, 400)],
                         ids=["box", "click", "whole image"])
def test_masks_from_a_bfloat16_encoder_match_float32_ones(segmenter, bfloat16_features, prompt):
    """SAM_PRECISION=auto encodes SAM 2.1 images in bfloat16 where the device has it natively."""
    full = segmenter.segment(IMAGE, prompt)
    reduced = sharing_features(segmenter, IMAGE, features=bfloat16_features).segment(IMAGE, prompt)
    assert full.mask.sum() > 100
    assert iou(full.mask, reduced.mask) >= 0.99 and abs(full.score - reduced.score) < 0.01


@pytest.fixture(scope="module")
def bfloat16_features(segmenter):
    """IMAGE's features from the same network with its encoder under bfloat16 autocast."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return SamSegmenter(segmenter.model, NAME, EmbeddingCache(1), torch.bfloat16).embedding(IMAGE)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize(
    "prompt, reference_inputs",
    [
        (box(60, 40, 300, 200), {"box": [60, 40, 300, 200], "multimask_output": False}),
        (clicks([[200, 150]], [1]), {"point_coords": [[200, 150]], "point_labels": [1], "multimask_output": True}),
        (
            clicks([[200, 150], [400, 300]], [1, 0]),
            {"point_coords": [[200, 150], [400, 300]], "point_labels": [1, 0], "multimask_output": False},
        ),
        (  # corrections: the box first, then the click with the box's low-res logits as the mask input
            box(60, 40, 300, 200, points=[[150, 100]], labels=[0]),
            {"box": [60, 40, 300, 200], "point_coords": [[150, 100]], "point_labels": [0], "multimask_output": False,
             "refines": {"box": [60, 40, 300, 200], "multimask_output": False}},
        ),
        (
            clicks([[180, 40], [170, 200], [60, 120], [300, 110]], [1, 1, 1, 1], PromptKind.EXTREME),
            {
                "box": [60, 40, 300, 200],
                "point_coords": [[180, 40], [170, 200], [60, 120], [300, 110]],
                "point_labels": [1, 1, 1, 1],
                "multimask_output": False,
            },
        ),
        (
            clicks([[180, 40], [170, 200], [60, 120], [300, 110], [150, 100]], [1, 1, 1, 1, 0], PromptKind.EXTREME),
            {
                "box": [60, 40, 300, 200],
                "point_coords": [[180, 40], [170, 200], [60, 120], [300, 110], [150, 100]],
                "point_labels": [1, 1, 1, 1, 0],
                "multimask_output": False,
                "refines": {"box": [60, 40, 300, 200], "point_coords": [[180, 40], [170, 200], [60, 120], [300, 110]],
                            "point_labels": [1, 1, 1, 1], "multimask_output": False},
            },
        ),
    ],
    ids=["box", "one click", "two clicks", "box + negative click", "extreme points", "extreme points + correction"],
)
def test_masks_are_metas_predictor_masks(segmenter, reference, prompt, reference_inputs):
    # Meta's predictor takes pixel indices; ours are continuous coordinates, half a pixel of the
    # input frame apart (the module docstring of backend.segmenters.sam).
    def pixel_indices(inputs: dict) -> dict:
        inputs = dict(inputs)
        if "box" in inputs:
            inputs["box"] = (np.reshape(inputs["box"], (2, 2)) - 0.5 / SCALE).reshape(4)
        if "point_coords" in inputs:
            inputs["point_coords"] = np.array(inputs["point_coords"]) - 0.5 / SCALE
        return inputs

    inputs = pixel_indices(reference_inputs)
    if "refines" in inputs:  # the answer before the last click, its low-res logits fed back
        _, _, previous = reference.predict(**pixel_indices(inputs.pop("refines")))
        inputs["mask_input"] = previous
    masks, predicted_iou, _ = reference.predict(**inputs)
    best = int(np.argmax(predicted_iou))

    result = segmenter.segment(IMAGE, prompt)
    assert result.mask.shape == (HEIGHT, WIDTH) and result.mask.dtype == bool and result.model == NAME
    assert np.array_equal(result.mask, masks[best] > 0)
    assert result.score == pytest.approx(float(np.clip(predicted_iou[best], 0, 1)), abs=1e-6)


def test_a_cached_image_is_not_encoded_again(segmenter):
    runs = []
    hook = segmenter.model.model.image_encoder.register_forward_hook(lambda *args: runs.append(1))
    try:
        segmenter.segment(IMAGE, box(10, 10, 300, 300))
        segmenter.segment(IMAGE, clicks([[50, 60]], [1]))
    finally:
        hook.remove()
    assert runs == []


# --- prompt frames -----------------------------------------------------------------------------


@pytest.fixture
def prompt_spy(segmenter):
    """What reaches SAM 2.1's prompt encoder: (coords, labels) per call."""
    calls = []

    def record(module, args, kwargs):
        assert kwargs["boxes"] is None  # boxes travel as labelled points
        coords, labels = kwargs["points"]
        calls.append((coords.numpy()[0], labels.tolist()[0]))

    hook = segmenter.model.model.sam_prompt_encoder.register_forward_pre_hook(record, with_kwargs=True)
    yield calls
    hook.remove()


def input_frame(points) -> np.ndarray:
    return np.array(points, np.float64).reshape(-1, 2) * SCALE - 0.5


@pytest.mark.parametrize(
    "prompt, coords, labels",
    [
        (box(60, 40, 300, 200), [[60, 40], [300, 200]], [2, 3]),
        (box(-20, 100, 700, 200), [[0, 100], [600, 200]], [2, 3]),  # clipped to the image
        (clicks([[300, 200], [600, 0]], [1, 0]), [[300, 200], [600, 0]], [1, 0]),
        (box(60, 40, 300, 200, points=[[100, 100]], labels=[1]), [[60, 40], [300, 200], [100, 100]], [2, 3, 1]),
        (
            clicks([[180, 40], [170, 200], [60, 120], [300, 110]], [1, 1, 1, 1], PromptKind.EXTREME),
            [[60, 40], [300, 200], [180, 40], [170, 200], [60, 120], [300, 110]],
            [2, 3, 1, 1, 1, 1],
        ),
    ],
    ids=["box", "clipped box", "clicks", "box + click", "extreme points"],
)
def test_prompts_reach_the_prompt_encoder_in_the_stretched_input_frame(segmenter, prompt_spy, prompt, coords, labels):
    segmenter.segment(IMAGE, prompt)
    sent_coords, sent_labels = prompt_spy[-1]  # a box's click comes in a second run (a correction)
    np.testing.assert_allclose(sent_coords, input_frame(coords), atol=1e-3)
    assert sent_labels == labels


# --- masks -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "width, height, low_res_rectangle, expected",
    [
        # The 256 x 256 low-res frame covers the whole image: rows scale by H/256, columns by W/256.
        (600, 400, (64, 128, 32, 160), (100, 200, 75, 375)),
        (300, 500, (0, 256, 128, 256), (0, 500, 150, 300)),
        (37, 23, (0, 128, 0, 128), (0, 11.5, 0, 18.5)),
    ],
)
def test_low_res_logits_map_back_to_the_right_place(segmenter, stub_decoder, width, height, low_res_rectangle, expected):
    decoder = stub_decoder([low_res_rectangle], [0.8])
    other = image(width, height, key=f"other-{width}x{height}")
    result = sharing_features(segmenter, other).segment(other, box(1, 1, width - 1, height - 1))
    assert result.mask.shape == (height, width)
    assert iou(result.mask, rectangle_mask(height, width, *expected)) > 0.9
    assert result.score == pytest.approx(0.8)
    assert decoder.high_res_shapes == [[(1, 32, 256, 256), (1, 64, 128, 128)]]


def test_single_click_picks_the_proposal_with_the_highest_predicted_iou(segmenter, stub_decoder):
    rectangles = [(0, 10, 0, 10), (0, 64, 0, 64), (0, 128, 0, 128), (0, 160, 0, 160)]
    decoder = stub_decoder(rectangles, [0.99, 0.2, 1.3, 0.5])
    result = segmenter.segment(IMAGE, clicks([[20, 20]], [1]))
    assert iou(result.mask, rectangle_mask(HEIGHT, WIDTH, 0, 128 * HEIGHT / 256, 0, 128 * WIDTH / 256)) > 0.98
    assert result.score == 1.0  # predicted IoU 1.3 clipped
    segmenter.segment(IMAGE, box(10, 10, 100, 100))
    segmenter.segment(IMAGE, clicks([[20, 20], [50, 50]], [1, 0]))
    assert decoder.multimask_requests == [True, False, False]


# --- checkpoint errors -------------------------------------------------------------------------


def write_truncated(checkpoint, path):
    path.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])


def write_bare_state_dict(checkpoint, path):  # a state dict not under "model"
    torch.save(torch.load(checkpoint, weights_only=True)["model"], path)


def write_sam1(checkpoint, path):
    torch.save({"model": tiny_sam().state_dict()}, path)


@pytest.mark.parametrize(
    "write, model_type, message",
    [
        (lambda checkpoint, path: path.write_text("<html>Access denied</html>"), TYPE, "cannot be read as a PyTorch"),
        (write_truncated, TYPE, "cannot be read as a PyTorch checkpoint"),
        (write_bare_state_dict, TYPE, "not a sam2.1_hiera_tiny checkpoint .*the official file is sam2.1_hiera_tiny.pt"),
        (write_sam1, TYPE, "not a sam2.1_hiera_tiny checkpoint"),
        (lambda checkpoint, path: shutil.copy(checkpoint, path), "sam2.1_hiera_small", "not a sam2.1_hiera_small"),
    ],
    ids=["html page", "truncated", "state dict not under 'model'", "SAM 1 weights", "tiny weights for small"],
)
def test_wrong_checkpoints_get_clear_errors(checkpoint, tmp_path, write, model_type, message):
    path = tmp_path / "checkpoint.pt"
    write(checkpoint, path)
    with pytest.raises(ValueError, match=message):
        SamSegmenter.from_checkpoint(model_type, path, "cpu", EmbeddingCache(capacity=1))


def test_a_missing_checkpoint_says_how_to_download_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m backend download-sam sam2.1_hiera_base_plus"):
        SamSegmenter.from_checkpoint("sam2.1_hiera_base_plus", tmp_path / "nothing.pt", "cpu", EmbeddingCache(1))


# --- the server ----------------------------------------------------------------------------------


def test_the_server_names_sam21_in_health_setup_and_predictions(segmenter, checkpoint, tmp_path):
    settings = replace(Settings(), sam_model_type=TYPE, sam_checkpoint=checkpoint, extreme_weights=tmp_path,
                       model_dir=tmp_path, sam_precision="float32")
    loaded = SegmenterSet.load(settings)
    assert loaded.sam_name == NAME
    assert loaded.status["sam"] == f"loaded ({NAME} from {checkpoint.name} on cpu, float32 encoder)"

    fake_image = LoadedImage(np.zeros((H, W, 3), np.uint8), key=IMAGE_URL)  # what the app's FakeImages loads
    segmenters = SegmenterSet(sam=sharing_features(segmenter, fake_image), sam_name=NAME)
    client = make_app(tmp_path, segmenters=segmenters)[0].test_client()
    assert client.get("/health").get_json()["sam"] == f"loaded ({NAME})"
    version = client.post("/setup", json=setup_body()).get_json()["model_version"]
    assert version == f"segassist-noextreme+{NAME}"
    body = predict_body([task()], context=[rectangle(50, 20, 100, 60)])
    [entry] = client.post("/predict", json=body).get_json()["results"]
    [region] = entry["result"]
    assert entry["model_version"] == version and region["meta"] == {"text": [NAME]}
    assert (region["original_width"], region["original_height"]) == (W, H)


def test_the_encoder_returns_the_shapes_the_store_checks_for(segmenter):
    assert codec.shapes_of(segmenter.embedding(IMAGE)) == segmenter.model.feature_shapes() == {
        "image_embed": (1, 256, 64, 64), "high_res_s0": (1, 32, 256, 256), "high_res_s1": (1, 64, 128, 128)}
