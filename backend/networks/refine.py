"""Refinement stage: a small U-Net at twice the coarse crop resolution that sharpens the coarse mask.

Input  (B, 8, R, R) float: RGB scaled to [-1, 1] (as the coarse stage), the coarse mask logits
       (upsampled to R, divided by `LOGIT_SCALE`), the point heatmap, the box channel and the
       positive and negative correction clicks, all in refinement-crop pixels (the same crop as the
       coarse stage, R = 2 S).
Output (B, 1, R, R) refined mask logits = coarse logits + a learned residual.
Fully convolutional: training may use windows of the crop; R must be a multiple of 8.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from backend.networks.blocks import ConvBnRelu

IN_CHANNELS = 8
COARSE_CHANNEL = 3
LOGIT_SCALE = 8.0  # keeps the coarse-logit input channel in a range similar to the others


class RefineNet(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        w1, w2, w3 = width, 2 * width, 4 * width
        self.enc1 = nn.Sequential(ConvBnRelu(IN_CHANNELS, w1, stride=2), ConvBnRelu(w1, w1))  # stride 2
        self.enc2 = nn.Sequential(ConvBnRelu(w1, w2, stride=2), ConvBnRelu(w2, w2))  # stride 4
        self.enc3 = nn.Sequential(  # stride 8, dilations widen the context around the boundary
            ConvBnRelu(w2, w3, stride=2), ConvBnRelu(w3, w3, dilation=2), ConvBnRelu(w3, w3, dilation=4)
        )
        self.reduce3 = nn.Conv2d(w3, w2, 1)
        self.dec2 = ConvBnRelu(w2, w2)
        self.reduce2 = nn.Conv2d(w2, w1, 1)
        self.dec1 = ConvBnRelu(w1, w1)
        self.residual = nn.Conv2d(w1, 1, 1)
        nn.init.zeros_(self.residual.weight)  # starts as the identity on the coarse logits
        nn.init.zeros_(self.residual.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        coarse_logits = x[:, COARSE_CHANNEL : COARSE_CHANNEL + 1] * LOGIT_SCALE
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        d2 = self.dec2(_up_to(self.reduce3(e3), e2) + e2)
        d1 = self.dec1(_up_to(self.reduce2(d2), e1) + e1)
        residual = F.interpolate(self.residual(d1), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return coarse_logits + residual


def _up_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)
