"""GPEN's ParseNet (Chen et al., PSFR-GAN; yangxy/GPEN's face_parse) in torch, for exporting.

Video ReTalking takes its mouth region from this network (``ParseNet-latest.pth``, a plain state
dict, 19 CelebAMask-HQ classes). Written from the network's description so that ``state_dict``
names and shapes match that checkpoint (``load_state_dict(..., strict=True)``):

- ``encoder``: a 3x3 unit, then residual blocks each halving the resolution and doubling the
  channels (clipped to ``ch_range``) down to ``min_feat_size``;
- ``body``: ``res_depth`` residual blocks at that size, added back to the encoder's output;
- ``decoder``: residual blocks each doubling the resolution (nearest neighbour) and halving the
  channels;
- ``out_mask_conv``: the class logits. ``out_img_conv`` (a restored image, a training target)
  is kept only so the checkpoint loads strictly; the export leaves it out of the graph.

Every convolution is preceded by a one-pixel reflection pad (nearest upsampling before it,
stride 2 on it to go down); inside residual blocks it is followed by batch norm, the first of
the two by a leaky ReLU (slope 0.2). Only the export tools import this (torch is the
``export`` extra); the application runs the exported ONNX file.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

N_CLASSES = 19


class NormLayer(nn.Module):
    """Batch norm, or nothing; a wrapper only so parameter names read ``norm.norm.*``."""

    def __init__(self, channels: int, batch_norm: bool) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels) if batch_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class ConvLayer(nn.Module):
    """Reflection pad and convolution (bias only without batch norm), optionally resampled
    (``scale``: "up" nearest x2 before, "down" stride 2), then norm and activation."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, scale: str = "none",
                 batch_norm: bool = False, leaky: bool = False) -> None:
        super().__init__()
        self.up = scale == "up"
        self.reflection_pad = nn.ReflectionPad2d(math.ceil((kernel - 1) / 2))
        self.conv2d = nn.Conv2d(cin, cout, kernel, 2 if scale == "down" else 1,
                                bias=not batch_norm)
        self.norm = NormLayer(cout, batch_norm)
        self.leaky = leaky

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = self.norm(self.conv2d(self.reflection_pad(x)))
        return F.leaky_relu(x, 0.2) if self.leaky else x


class ResidualBlock(nn.Module):
    """Two 3x3 units (batch norm; leaky ReLU after the first), the first upsampling or the
    second downsampling; a plain 3x3 convolution on the shortcut where the shape changes."""

    def __init__(self, cin: int, cout: int, scale: str = "none") -> None:
        super().__init__()
        self.shortcut_func = (nn.Identity() if scale == "none" and cin == cout
                              else ConvLayer(cin, cout, 3, scale))
        self.conv1 = ConvLayer(cin, cout, 3, "up" if scale == "up" else "none",
                               batch_norm=True, leaky=True)
        self.conv2 = ConvLayer(cout, cout, 3, "down" if scale == "down" else "none",
                               batch_norm=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut_func(x) + self.conv2(self.conv1(x))


class ParseNet(nn.Module):
    """image (B, 3, H, W) RGB in [-1, 1] -> logits (B, parsing_ch, H, W) at ``out_size``.

    Defaults are the released model's (``ParseNet(512, 512, 32, 64, 19, norm_type='bn',
    relu_type='LeakyReLU', ch_range=[32, 256])``, 10 body blocks); smaller values build a
    tiny network of the same code path for tests.
    """

    def __init__(self, in_size: int = 512, out_size: int = 512, min_feat_size: int = 32,
                 base_ch: int = 64, parsing_ch: int = N_CLASSES, res_depth: int = 10,
                 ch_range: tuple[int, int] = (32, 256)) -> None:
        super().__init__()
        lo, hi = ch_range

        def clip(c: int) -> int:
            return max(lo, min(c, hi))

        min_feat_size = min(in_size, min_feat_size)
        down = int(math.log2(in_size // min_feat_size))
        up = int(math.log2(out_size // min_feat_size))
        encoder: list[nn.Module] = [ConvLayer(3, base_ch, 3)]
        ch = base_ch
        for _ in range(down):
            encoder.append(ResidualBlock(clip(ch), clip(ch * 2), "down"))
            ch *= 2
        self.encoder = nn.Sequential(*encoder)
        self.body = nn.Sequential(*[ResidualBlock(clip(ch), clip(ch)) for _ in range(res_depth)])
        decoder = []
        for _ in range(up):
            decoder.append(ResidualBlock(clip(ch), clip(ch // 2), "up"))
            ch //= 2
        self.decoder = nn.Sequential(*decoder)
        self.out_img_conv = ConvLayer(clip(ch), 3)  # unused: see the module's docstring
        self.out_mask_conv = ConvLayer(clip(ch), parsing_ch)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        feat = self.encoder(image)
        return self.out_mask_conv(self.decoder(feat + self.body(feat)))
