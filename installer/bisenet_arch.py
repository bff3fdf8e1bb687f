"""BiSeNet face parsing (Yu et al., 2018; zllrunning's variant) in torch, for exporting.

MuseTalk blends its generated face with a mask from this network (``79999_iter.pth``, 19
CelebAMask-HQ classes). Written from the network's description so that ``state_dict`` names and
shapes match that checkpoint (``load_state_dict(..., strict=True)``):

- ``cp.resnet``: a ResNet-18 trunk without its classifier, giving features at 1/8, 1/16 and 1/32;
- ``cp.arm16`` / ``cp.arm32``: attention refinement (a 3x3 unit re-weighted per channel by a
  sigmoid of its global average), ``cp.conv_avg`` the 1x1 global context added at 1/32, and
  ``cp.conv_head32`` / ``cp.conv_head16`` the 3x3 units after each nearest-neighbour upsampling;
- ``ffm``: feature fusion of the 1/8 trunk feature (standing in for the spatial path, which this
  variant drops) with the context path's 1/8 feature, with a squeeze-excite style attention;
- ``conv_out`` / ``conv_out16`` / ``conv_out32``: heads giving class logits, upsampled bilinearly
  (corners aligned) to the input size. The first is the parsing; the other two only served as
  auxiliary losses in training.

Every "unit" is a bias-free convolution, batch norm and ReLU (``conv`` / ``bn``). Only the export
tools import this (torch is the ``export`` extra); the application runs the exported ONNX file.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

N_CLASSES = 19


class ConvUnit(nn.Module):
    """Bias-free convolution, batch norm, ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, 1, kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class ResidualBlock(nn.Module):
    """ResNet basic block: two 3x3 convolutions, a 1x1 projection when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if cin != cout or stride != 1:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(shortcut + y)


def _stage(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(ResidualBlock(cin, cout, stride), ResidualBlock(cout, cout, 1))


class Trunk(nn.Module):
    """ResNet-18 up to its last stage; returns the 1/8, 1/16 and 1/32 features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = _stage(64, 64, 1)
        self.layer2 = _stage(64, 128, 2)
        self.layer3 = _stage(128, 256, 2)
        self.layer4 = _stage(256, 512, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.layer1(self.maxpool(F.relu(self.bn1(self.conv1(x)))))
        f8 = self.layer2(x)
        f16 = self.layer3(f8)
        return f8, f16, self.layer4(f16)


def _global_average(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=(2, 3), keepdim=True)


class AttentionRefinement(nn.Module):
    """A 3x3 unit whose channels are scaled by a sigmoid of their global average."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = ConvUnit(cin, cout)
        self.conv_atten = nn.Conv2d(cout, cout, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        return feat * torch.sigmoid(self.bn_atten(self.conv_atten(_global_average(feat))))


class ContextPath(nn.Module):
    """Trunk features refined top-down: returns (trunk 1/8, context 1/8, context 1/16)."""

    def __init__(self) -> None:
        super().__init__()
        self.resnet = Trunk()
        self.arm16 = AttentionRefinement(256, 128)
        self.arm32 = AttentionRefinement(512, 128)
        self.conv_head32 = ConvUnit(128, 128)
        self.conv_head16 = ConvUnit(128, 128)
        self.conv_avg = ConvUnit(512, 128, kernel=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f8, f16, f32 = self.resnet(x)
        # The global context is a 1x1 map; adding it broadcasts it over the 1/32 grid.
        top = self.arm32(f32) + self.conv_avg(_global_average(f32))
        up16 = self.conv_head32(F.interpolate(top, size=f16.shape[2:], mode="nearest"))
        mid = self.arm16(f16) + up16
        up8 = self.conv_head16(F.interpolate(mid, size=f8.shape[2:], mode="nearest"))
        return f8, up8, up16


class FeatureFusion(nn.Module):
    """Concatenate, 1x1 unit, then add the feature re-weighted by a bottleneck attention."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.convblk = ConvUnit(cin, cout, kernel=1)
        self.conv1 = nn.Conv2d(cout, cout // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(cout // 4, cout, 1, bias=False)

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([spatial, context], dim=1))
        atten = torch.sigmoid(self.conv2(F.relu(self.conv1(_global_average(feat)))))
        return feat + feat * atten


class Head(nn.Module):
    """A 3x3 unit then a 1x1 convolution to class logits."""

    def __init__(self, cin: int, mid: int, n_classes: int) -> None:
        super().__init__()
        self.conv = ConvUnit(cin, mid)
        self.conv_out = nn.Conv2d(mid, n_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """Face parsing network; ``forward`` returns the main logits and the two auxiliary ones,
    each (B, n_classes, H, W) at the input's size."""

    def __init__(self, n_classes: int = N_CLASSES) -> None:
        super().__init__()
        self.cp = ContextPath()
        self.ffm = FeatureFusion(256, 256)
        self.conv_out = Head(256, 256, n_classes)
        self.conv_out16 = Head(128, 64, n_classes)
        self.conv_out32 = Head(128, 64, n_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        size = x.shape[2:]
        f8, context8, context16 = self.cp(x)
        heads = (self.conv_out(self.ffm(f8, context8)), self.conv_out16(context8),
                 self.conv_out32(context16))
        return tuple(F.interpolate(h, size=size, mode="bilinear", align_corners=True)
                     for h in heads)
