"""Deep3DFaceRecon's coefficient regressor (Deng et al., 2019) in torch, for exporting.

Video ReTalking fits a 3D face model to every frame with ``face3d_pretrain_epoch_20.pth``
(key ``net_recon``): a ResNet-50 trunk without its classifier, global average pooled, and seven
1x1 convolutions (``final_layers.0..6``) giving identity 80, expression 64, texture 80, angles
3, lighting 27, translation 2 + 1 coefficients, concatenated to 257. Written from that
description so ``state_dict`` names and shapes match the checkpoint
(``load_state_dict(..., strict=True)``): ``backbone.conv1`` / ``backbone.bn1``, then
``backbone.layer1..4`` of torchvision-style bottlenecks (stride on the 3x3 convolution, a 1x1
projection ``downsample.0`` / ``.1`` on each layer's first block).

:func:`load_lm3d_std` reads the five standard 3D landmarks the alignment fits faces to from the
Basel Face Model's ``similarity_Lm3D_all.mat``. Only the export tools import this (torch is the
``export`` extra); the application runs the exported ONNX file.
"""
from __future__ import annotations

import os
from typing import BinaryIO, Sequence

import numpy as np
import torch
from torch import nn

from engine.face.face3d import deep3d_points

# Output widths of final_layers, in the order the engine reads the coefficients.
HEADS = (80, 64, 80, 3, 27, 2, 1)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand by 4; a projection when needed."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(y + shortcut)


class Backbone(nn.Module):
    """The ResNet trunk up to global average pooling: (B, 3, H, W) -> (B, 32 * width, 1, 1)."""

    def __init__(self, blocks: Sequence[int], width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = width
        for i, count in enumerate(blocks):
            planes = width << i
            layer = []
            for j in range(count):
                layer.append(Bottleneck(cin, planes, 2 if i > 0 and j == 0 else 1))
                cin = planes * Bottleneck.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
        self.out_channels = cin
        self.avgpool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x)


class ReconNet(nn.Module):
    """``image`` (B, 3, 224, 224) RGB in [0, 1], the face aligned by ``align_img`` ->
    ``coeffs`` (B, 257). ``blocks`` and ``width`` default to ResNet-50's; tests build a tiny
    network of the same code path with smaller ones."""

    def __init__(self, blocks: Sequence[int] = (3, 4, 6, 3), width: int = 64) -> None:
        super().__init__()
        if len(blocks) != 4:
            raise ValueError("the trunk has four layers")
        self.backbone = Backbone(blocks, width)
        self.final_layers = nn.ModuleList(
            nn.Conv2d(self.backbone.out_channels, n, 1) for n in HEADS)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.backbone(image)
        return torch.cat([head(x) for head in self.final_layers], 1).flatten(1)


def load_lm3d_std(source: str | os.PathLike | BinaryIO) -> np.ndarray:
    """The five standard 3D landmarks (5, 3) float64 from ``similarity_Lm3D_all.mat`` (a path
    or an open binary file, e.g. a member of BFM.zip): its 68 points ``lm`` reduced as
    Deep3DFaceRecon's ``load_lm3d`` does."""
    from scipy.io import loadmat

    lm = np.asarray(loadmat(source)["lm"], dtype=np.float64)
    if lm.shape != (68, 3):
        raise ValueError(f"similarity_Lm3D_all.mat holds {lm.shape} landmarks, not (68, 3)")
    return deep3d_points(lm)
