"""Shapes and parameter budget of the two stages; the stem extension keeps pretrained behaviour."""

import pytest
import torch

from backend.networks.coarse import IN_CHANNELS as COARSE_IN, CoarseNet
from backend.networks.refine import COARSE_CHANNEL, IN_CHANNELS as REFINE_IN, LOGIT_SCALE, RefineNet
from backend.networks.weights import ModelConfig, parameter_count

torch.set_num_threads(1)
STAGE_BYTES_LIMIT = 40 * 1024 * 1024


def test_coarse_output_is_logits_over_the_crop():
    net = CoarseNet(crop_size=64, decoder_channels=ModelConfig.decoder_channels, pretrained=False).eval()
    with torch.no_grad():
        out = net(torch.randn(2, COARSE_IN, 64, 64))
    assert out.shape == (2, 1, 64, 64)


def test_coarse_rejects_crop_not_multiple_of_32():
    with pytest.raises(ValueError, match="multiple of 32"):
        CoarseNet(crop_size=100, decoder_channels=ModelConfig.decoder_channels, pretrained=False)


def test_refine_starts_as_identity_on_coarse_logits():
    net = RefineNet(ModelConfig.refine_width).eval()
    x = torch.randn(2, REFINE_IN, 48, 48)
    with torch.no_grad():
        out = net(x)
    assert out.shape == (2, 1, 48, 48)
    torch.testing.assert_close(out, x[:, COARSE_CHANNEL : COARSE_CHANNEL + 1] * LOGIT_SCALE)


def test_parameter_budget_per_stage_and_total():
    coarse, refine = ModelConfig().build(pretrained=False)
    counts = [parameter_count(coarse), parameter_count(refine)]
    assert sum(counts) <= 9_000_000
    for count in counts:
        assert count * 2 <= STAGE_BYTES_LIMIT  # shipped as fp16


def test_extended_stem_copies_rgb_kernels_and_zeroes_new_channels():
    from efficientnet_lite_pytorch import EfficientNet

    from backend.networks.coarse import _pretrained_lite0_path

    net = CoarseNet(crop_size=64, decoder_channels=ModelConfig.decoder_channels, pretrained=True)
    reference = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=_pretrained_lite0_path(), image_size=64)
    stem = net.stem[0].weight
    assert stem.shape[1] == COARSE_IN
    torch.testing.assert_close(stem[:, :3], reference._conv_stem.weight)
    assert torch.count_nonzero(stem[:, 3:]) == 0
