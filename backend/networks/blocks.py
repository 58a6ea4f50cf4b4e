"""Small building blocks shared by the coarse and refinement networks."""

from __future__ import annotations

from torch import nn


class ConvBnRelu(nn.Sequential):
    """3x3 (or k x k) convolution, batch norm, ReLU; keeps the spatial size unless stride > 1."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, dilation: int = 1):
        padding = dilation * (kernel_size // 2)
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )
