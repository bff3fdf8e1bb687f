"""A stand-in of GFPGAN v1.4's size, for timing where the ``gfpgan`` package will not import.

Same contract ((1,3,512,512) in and out) and the same convolutions at the same resolutions and
widths as ``GFPGANv1Clean`` with v1.4's settings: a U-Net of resampling residual blocks
(512 -> 4 -> 512), a pair of SFT condition branches per decoder level, and a StyleGAN2-shaped
decoder (two 3x3 convolutions per resolution from 8 to 512) modulated by the conditions on
half of its channels, its convolution weights modulated and demodulated on every call by a
style vector drawn from the U-Net's bottom, as the real decoder's are. Left out, as they cost
little: the style MLP, per-layer styles, the noise inputs and the intermediate RGB outputs.
Random weights. On the 2-core development machine its ONNX export runs within 10% of the real
GFPGANv1Clean's (random weights, exported by ``installer/export_gfpgan.py``).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

# Channels per resolution of GFPGAN v1.4 (channel multiplier 2): the U-Net is half as wide
# as the StyleGAN2 decoder, whose conditioned half it feeds.
UNET = {4: 256, 8: 256, 16: 256, 32: 256, 64: 256, 128: 128, 256: 64, 512: 32}
DECODER = {r: 2 * c for r, c in UNET.items()}
LEVELS = [8, 16, 32, 64, 128, 256, 512]
STYLE = 512


def _conv(cin: int, cout: int, k: int = 3) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2)


class _Resample(nn.Module):
    """conv, resample, conv, plus a resampled 1x1 shortcut."""

    def __init__(self, cin: int, cout: int, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.conv1, self.conv2 = _conv(cin, cin), _conv(cin, cout)
        self.skip = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def resize(t: torch.Tensor) -> torch.Tensor:
            return F.interpolate(t, scale_factor=self.scale, mode="bilinear",
                                 align_corners=False)

        out = F.leaky_relu(self.conv2(resize(F.leaky_relu(self.conv1(x), 0.2))), 0.2)
        return out + self.skip(resize(x))


class _Modulated(nn.Module):
    """A StyleGAN2 3x3 convolution: weights scaled per input channel by the style, then
    normalised per output channel."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3) / math.sqrt(cin * 9))
        self.style = nn.Linear(STYLE, cin)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        weight = self.weight * self.style(style).view(1, -1, 1, 1)
        weight = weight * torch.rsqrt(weight.pow(2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        return F.leaky_relu(F.conv2d(x, weight, padding=1), 0.2)


class GFPGANSized(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Conv2d(3, UNET[512], 1)
        self.down = nn.ModuleList(_Resample(UNET[r], UNET[r // 2], 0.5) for r in LEVELS[::-1])
        self.bottom = _conv(UNET[4], UNET[4])
        self.latent = nn.Linear(UNET[4] * 16, STYLE)
        self.up = nn.ModuleList(_Resample(UNET[r // 2], UNET[r], 2.0) for r in LEVELS)
        self.scale = nn.ModuleList(self._condition(UNET[r]) for r in LEVELS)
        self.shift = nn.ModuleList(self._condition(UNET[r]) for r in LEVELS)
        self.const = nn.Parameter(torch.randn(1, DECODER[4], 4, 4))
        self.start = _Modulated(DECODER[4], DECODER[4])
        self.convs = nn.ModuleList(nn.ModuleList([_Modulated(DECODER[r // 2], DECODER[r]),
                                                  _Modulated(DECODER[r], DECODER[r])])
                                   for r in LEVELS)
        self.rgb = nn.Conv2d(DECODER[512], 3, 1)

    @staticmethod
    def _condition(c: int) -> nn.Sequential:
        return nn.Sequential(_conv(c, c), nn.LeakyReLU(0.2), _conv(c, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = F.leaky_relu(self.first(x), 0.2)
        for block in self.down:
            feat = block(feat)
        feat = F.leaky_relu(self.bottom(feat), 0.2)
        style = self.latent(feat.flatten(1))
        out = self.start(self.const, style)
        for block, scale, shift, (conv1, conv2) in zip(self.up, self.scale, self.shift,
                                                       self.convs):
            feat = block(feat)
            out = conv1(F.interpolate(out, scale_factor=2.0, mode="bilinear",
                                      align_corners=False), style)
            kept, conditioned = out.chunk(2, dim=1)
            out = torch.cat([kept, conditioned * scale(feat) + shift(feat)], dim=1)
            out = conv2(out, style)
        return self.rgb(out)


# CodeFormer (sczhou/CodeFormer, 512x512, ~94M parameters): GFPGAN's stand-in above is about
# half its size and has no ``weight`` input, so CodeFormer gets one of its own, of the same
# widths and resolutions: a VQGAN encoder (64 to 512 channels, two residual blocks per
# resolution from 512 to 16, attention at 16), nine transformer layers over the 256 tokens
# predicting codebook entries, and the decoder, fused with the encoder at 32 to 256 by
# fidelity-weighted SFT blocks. Left out, as they cost little: the extra attention layers at 16.
CODEFORMER = {512: 64, 256: 128, 128: 128, 64: 256, 32: 256, 16: 512}
FUSED = (32, 64, 128, 256)


class _Res(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(32, cin), _conv(cin, cout)
        self.norm2, self.conv2 = nn.GroupNorm(32, cout), _conv(cout, cout)
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class _Attention(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm, self.qkv = nn.GroupNorm(32, c), nn.Conv2d(c, 3 * c, 1)
        self.out = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).flatten(2).transpose(1, 2).chunk(3, dim=2)
        out = F.softmax(q @ k.transpose(1, 2) / math.sqrt(c), -1) @ v
        return x + self.out(out.transpose(1, 2).reshape(b, c, h, w))


class CodeFormerSized(nn.Module):
    def __init__(self, codes: int = 1024, emb: int = 256, dim: int = 512, layers: int = 9) -> None:
        super().__init__()
        res = list(CODEFORMER)
        self.enc_in = _conv(3, CODEFORMER[512])
        self.enc = nn.ModuleList(nn.Sequential(
            _Res(CODEFORMER[res[i - 1]] if i else CODEFORMER[512], CODEFORMER[r]),
            _Res(CODEFORMER[r], CODEFORMER[r])) for i, r in enumerate(res))
        self.down = nn.ModuleList(nn.Conv2d(CODEFORMER[r], CODEFORMER[r], 3, 2, 1)
                                  for r in res[:-1])
        self.enc_mid = nn.Sequential(_Attention(512), _Res(512, 512), _Attention(512),
                                     _Res(512, 512), nn.GroupNorm(32, 512), nn.SiLU(),
                                     _conv(512, emb))
        self.position = nn.Parameter(torch.zeros(256, 1, dim))
        self.embed = nn.Linear(emb, dim)
        # One layer each, not nn.TransformerEncoder's copies of one: identical random weights
        # would be stored once in the ONNX file.
        self.transformer = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, 8, 2 * dim, dropout=0.0, norm_first=True)
            for _ in range(layers))
        self.predict = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, codes, bias=False))
        self.codebook = nn.Parameter(torch.randn(codes, emb))
        self.dec_mid = nn.Sequential(_conv(emb, 512), _Res(512, 512), _Attention(512),
                                     _Res(512, 512))
        self.dec = nn.ModuleList(nn.Sequential(
            _Res(CODEFORMER[res[i + 1]] if i < len(res) - 1 else 512, CODEFORMER[r]),
            _Res(CODEFORMER[r], CODEFORMER[r])) for i, r in reversed(list(enumerate(res))))
        self.up = nn.ModuleList(_conv(CODEFORMER[r], CODEFORMER[r]) for r in res[:0:-1])
        self.fuse = nn.ModuleDict({str(r): nn.ModuleList([
            _Res(2 * CODEFORMER[r], CODEFORMER[r]), GFPGANSized._condition(CODEFORMER[r]),
            GFPGANSized._condition(CODEFORMER[r])]) for r in FUSED})
        self.dec_out = nn.Sequential(nn.GroupNorm(32, 64), nn.SiLU(), _conv(64, 3))

    def forward(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        w = weight.float()
        feat, skips = self.enc_in(x), {}
        for r, block, down in zip(CODEFORMER, self.enc, [*self.down, None]):
            feat = block(feat)
            skips[r] = feat
            if down is not None:
                feat = down(feat)
        tokens = self.enc_mid(feat).flatten(2).permute(2, 0, 1)  # (256, B, emb)
        tokens = self.embed(tokens) + self.position
        for layer in self.transformer:
            tokens = layer(tokens)
        logits = self.predict(tokens)
        quant = self.codebook[logits.argmax(-1)].permute(1, 2, 0).reshape(x.shape[0], -1, 16, 16)
        out, ups = self.dec_mid(quant), iter(self.up)
        for r, block in zip(reversed(CODEFORMER), self.dec):
            if r > 16:
                out = next(ups)(F.interpolate(out, scale_factor=2.0, mode="nearest"))
            out = block(out)
            if r in FUSED:
                mix, scale, shift = self.fuse[str(r)]
                enc = mix(torch.cat([skips[r], out], 1))
                out = out + w * (out * scale(enc) + shift(enc))
        return self.dec_out(out)
