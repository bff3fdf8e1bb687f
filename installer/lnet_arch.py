"""Video ReTalking's lip-sync networks (Cheng et al., 2022) in torch, for exporting.

``LNet`` draws a 96x96 mouth from a (1, 80, 16) log-mel window and a 6-channel face (the crop
with its lower half blanked, then a reference), in [0, 1]: two encoders (the blanked crop and the
reference) of spectrally normalised convolutions with a 2-D layer norm, cross-attention from the
reference at the deepest level, and a decoder of fast-Fourier-convolution residual blocks
(LaMa's FFC, 3/4 of the channels global) whose norms (AdaIN) are driven by the audio embedding.
``RetalkingENet`` (the official ``ENet``) runs it inside a StyleGAN2-style upsampler: a style code
from the 384x384 reference modulates four convolutions that take the 96x96 mouth up to 384.

Written from that description so ``state_dict`` names and shapes match ``LNet.pth`` and
``ENet.pth`` (``load_official``). Written for export rather than training:

- Fourier units compute the ortho-normalised 2-D real DFT and its inverse as products with
  constant DFT matrices (planes of 12 to 48 pixels): the same sums as ``torch.fft`` to 1e-6,
  in MatMuls every execution provider runs, where ``torch.fft`` exports as ONNX's DFT, which
  not all of them implement.
- Modulated convolutions scale the input, convolve with the shared weight and demodulate the
  output (StyleGAN2's non-fused form), so the batch stays a free dimension; the official folds
  the batch into a grouped convolution's groups.
- The style convolutions' noise is a fixed map per layer (``NOISE_SEED``) instead of fresh
  noise per call: the output is repeatable, and a video does not shimmer from frame to frame.

Only the export tools import this (torch is the ``export`` extra); the application runs the
exported ONNX file.
"""
from __future__ import annotations

import functools
import math
import re
from typing import Mapping
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

from installer.dnet_arch import ADAIN, LayerNorm2d
from installer.onnx_export import state_mismatch

LNET_SIZE = 96  # ENet runs LNet on the face resized to this
STYLE_SIZE = 256  # and takes its style code from the reference resized to this
PAD = 2  # reflected around LNet's output, so the two 2x upsamplings leave 8 px to crop
NOISE_SEED = 0


class AudioConv(nn.Module):
    """Convolution + batch norm (+ the input, for residual units) + ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int | tuple[int, int],
                 padding: int, residual: bool = False) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding),
                                        nn.BatchNorm2d(cout))
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_block(x)
        return self.act(y + x if self.residual else y)


def audio_encoder(descriptor_nc: int) -> nn.Sequential:
    """(B, 1, 80, 16) log-mel -> (B, descriptor_nc, 1, 1), Wav2Lip's audio encoder."""
    def res(c: int) -> AudioConv:
        return AudioConv(c, c, 3, 1, 1, residual=True)
    return nn.Sequential(
        AudioConv(1, 32, 3, 1, 1), res(32), res(32),
        AudioConv(32, 64, 3, (3, 1), 1), res(64), res(64),  # 27x16
        AudioConv(64, 128, 3, 3, 1), res(128), res(128),  # 9x6
        AudioConv(128, 256, 3, (3, 2), 1), res(256),  # 3x3
        AudioConv(256, 512, 3, 1, 0),  # 1x1
        AudioConv(512, descriptor_nc, 1, 1, 0),
    )


class ConvBlock(nn.Module):
    """``model``: a spectrally normalised convolution, then layer norm and LeakyReLU(0.1) (the
    final block: a sigmoid), optionally 2x average pooling; optionally a 2x nearest upsampling
    before it. The official FirstBlock2d, DownBlock2d, UpBlock2d, Jump and FinalBlock2d."""

    def __init__(self, cin: int, cout: int, kernel: int, pool: bool = False,
                 upsample: bool = False, final: bool = False) -> None:
        super().__init__()
        conv = spectral_norm(nn.Conv2d(cin, cout, kernel, 1, kernel // 2))
        if final:
            layers = [conv, nn.Sigmoid()]
        else:
            layers = [conv, LayerNorm2d(cout), nn.LeakyReLU(0.1)]
            if pool:
                layers.append(nn.AvgPool2d(2))
        self.model = nn.Sequential(*layers)
        self.upsample = upsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.model(x)


# --- cross-attention from the reference (the encoder's deepest level) -------------------------

class Attention(nn.Module):
    """Queries and keys from the blanked crop's features, values from the reference's."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.scale = dim_head ** -0.5
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim))

    def _heads(self, t: torch.Tensor) -> torch.Tensor:  # (b, n, h*d) -> (b, h, n, d)
        return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(self.to_q(x)), self._heads(self.to_k(x)), self._heads(self.to_v(y))
        attn = torch.softmax(q @ k.transpose(-1, -2) * self.scale, dim=-1)
        return self.to_out((attn @ v).transpose(1, 2).flatten(2))


class DualPreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.normx = nn.LayerNorm(dim)
        self.normy = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.fn(self.normx(x), self.normy(y))


class PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x))


class TanhGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate="tanh")


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        # Index 2 was a dropout (an identity at inference): the second Linear stays net.3.
        self.net = nn.Sequential(nn.Linear(dim, hidden), TanhGELU(), nn.Identity(),
                                 nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Transformer(nn.Module):
    """Pre-norm cross-attention and feed-forward layers over the H*W positions."""

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([DualPreNorm(dim, Attention(dim, heads, dim_head)),
                           PreNorm(dim, FeedForward(dim, mlp_dim))]) for _ in range(depth))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        x, y = x.flatten(2).transpose(1, 2), y.flatten(2).transpose(1, 2)
        for attn, ff in self.layers:
            x = attn(x, y) + x
            x = ff(x) + x
        return x.transpose(1, 2).unflatten(2, (h, w))


# --- fast Fourier convolution (LaMa's FFC) with AdaIN --------------------------------------------

@functools.lru_cache(maxsize=None)
def _dft_matrices(h: int, w: int) -> tuple[np.ndarray, ...]:
    """float32 (cos, sin) pairs for the ortho 2-D real DFT of an (h, w) plane: along w to
    w//2+1 bins (forward (w, f), inverse (f, w) with the Hermitian weights), along h (h, h),
    each scaled by its 1/sqrt(n)."""
    f = w // 2 + 1
    vw = np.outer(np.arange(w), np.arange(f)) % w * (2 * np.pi / w)
    uh = np.outer(np.arange(h), np.arange(h)) % h * (2 * np.pi / h)
    # Bins 1..ceil(w/2)-1 stand for themselves and their mirror images; 0 and w/2 for one.
    weight = np.full(f, 2.0)
    weight[0] = 1.0
    if w % 2 == 0:
        weight[-1] = 1.0
    mats = (np.cos(vw) / math.sqrt(w), np.sin(vw) / math.sqrt(w),
            weight[:, None] * np.cos(vw.T) / math.sqrt(w),
            weight[:, None] * np.sin(vw.T) / math.sqrt(w),
            np.cos(uh) / math.sqrt(h), np.sin(uh) / math.sqrt(h))
    # numpy, not tensors: a tensor cached while torch.export traces would be a fake one.
    return tuple(m.astype(np.float32) for m in mats)


def _on(mats: tuple[np.ndarray, ...], like: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(m).to(like) for m in mats)


def rfft2_ortho(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.fft.rfftn(x, dim=(-2, -1), norm="ortho")`` as (real, imaginary) parts."""
    cw, sw, _, _, ch, sh = _on(_dft_matrices(*x.shape[-2:]), x)
    re, im = x @ cw, -(x @ sw)
    return ch @ re + sh @ im, ch @ im - sh @ re


def irfft2_ortho(re: torch.Tensor, im: torch.Tensor, w: int) -> torch.Tensor:
    """``torch.fft.irfftn(complex(re, im), s=(h, w), dim=(-2, -1), norm="ortho")``: the
    inverse along h, then the real inverse along w (imaginary parts of bins 0 and w/2 unused)."""
    _, _, cr, sr, ch, sh = _on(_dft_matrices(re.shape[-2], w), re)
    zr, zi = ch @ re - sh @ im, ch @ im + sh @ re
    return zr @ cr - zi @ sr


class FourierUnit(nn.Module):
    """A 1x1 convolution + batch norm + ReLU on the spectrum: the global receptive field."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_layer = nn.Conv2d(channels * 2, channels * 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        re, im = rfft2_ortho(x)
        # Channel 2c is the real part of channel c, 2c + 1 its imaginary part.
        y = torch.relu(self.bn(self.conv_layer(torch.stack((re, im), dim=2).flatten(1, 2))))
        y = y.unflatten(1, (-1, 2))
        return irfft2_ortho(y[:, :, 0], y[:, :, 1], x.shape[-1])


class SpectralTransform(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        half = cout // 2
        self.conv1 = nn.Sequential(nn.Conv2d(cin, half, 1, bias=False), nn.BatchNorm2d(half),
                                   nn.ReLU())
        self.fu = FourierUnit(half)
        self.conv2 = nn.Conv2d(half, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.conv2(x + self.fu(x))


class FFC(nn.Module):
    """Local and global channel groups: 3x3 reflect-padded convolutions within and across the
    groups, a spectral transform global to global."""

    def __init__(self, channels: int, global_ratio: float) -> None:
        super().__init__()
        cg = int(channels * global_ratio)
        cl = channels - cg
        self.global_in_num = cg

        def conv(cin: int, cout: int) -> nn.Conv2d:
            return nn.Conv2d(cin, cout, 3, 1, 1, bias=False, padding_mode="reflect")
        self.convl2l = conv(cl, cl)
        self.convl2g = conv(cl, cg)
        self.convg2l = conv(cg, cl)
        self.convg2g = SpectralTransform(cg, cg)

    def forward(self, x_l: torch.Tensor, x_g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (self.convl2l(x_l) + self.convg2l(x_g),
                self.convl2g(x_l) + self.convg2g(x_g))


class FFCAdain(nn.Module):
    """FFC, then AdaIN and LeakyReLU(0.01) per group (the official FineADAINLama)."""

    def __init__(self, channels: int, feature_nc: int, global_ratio: float = 0.75) -> None:
        super().__init__()
        self.ffc = FFC(channels, global_ratio)
        cg = self.ffc.global_in_num
        self.bn_l = ADAIN(channels - cg, feature_nc)
        self.bn_g = ADAIN(cg, feature_nc)

    def forward(self, x_l: torch.Tensor, x_g: torch.Tensor,
                z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_l, x_g = self.ffc(x_l, x_g)
        return (F.leaky_relu(self.bn_l(x_l, z), 0.01), F.leaky_relu(self.bn_g(x_g, z), 0.01))


class FFCResnetBlock(nn.Module):
    """Two FFC-AdaIN layers with a residual; the last ``global_in_num`` channels are global."""

    def __init__(self, channels: int, feature_nc: int) -> None:
        super().__init__()
        self.conv1 = FFCAdain(channels, feature_nc)
        self.conv2 = FFCAdain(channels, feature_nc)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        split = x.shape[1] - self.conv1.ffc.global_in_num
        x_l, x_g = x[:, :split], x[:, split:]
        y_l, y_g = self.conv2(*self.conv1(x_l, x_g, z), z)
        return torch.cat([x_l + y_l, x_g + y_g], dim=1)


class FFCResBlocks(nn.Module):
    def __init__(self, count: int, channels: int, feature_nc: int) -> None:
        super().__init__()
        self.count = count
        for i in range(count):
            setattr(self, f"res{i}", FFCResnetBlock(channels, feature_nc))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        for i in range(self.count):
            x = getattr(self, f"res{i}")(x, z)
        return x


# --- LNet ------------------------------------------------------------------------------------

class VisualEncoder(nn.Module):
    """Blanked crop and reference each down ``layers`` times; from the third level on the crop
    attends to the reference. Returns every level of the crop, the deepest one concatenated
    with the reference's."""

    def __init__(self, image_nc: int, ngf: int, max_nc: int, layers: int) -> None:
        super().__init__()
        self.layers = layers
        self.first_inp = ConvBlock(image_nc, ngf, 7)
        self.first_ref = ConvBlock(image_nc, ngf, 7)
        for i in range(layers):
            cin, cout = min(ngf * 2 ** i, max_nc), min(ngf * 2 ** (i + 1), max_nc)
            setattr(self, f"ref_down{i}", ConvBlock(cin, cout, 3, pool=True))
            setattr(self, f"inp_down{i}", ConvBlock(cin, cout, 3, pool=True))
            if i >= 2:
                setattr(self, f"ca{i}", Transformer(cout, 2, 4, ngf, ngf * 4))
        self.output_nc = cout * 2

    def forward(self, crop: torch.Tensor, ref: torch.Tensor) -> list[torch.Tensor]:
        x, r = self.first_inp(crop), self.first_ref(ref)
        out = [x]
        for i in range(self.layers):
            x, r = getattr(self, f"inp_down{i}")(x), getattr(self, f"ref_down{i}")(r)
            if i >= 2:
                x = getattr(self, f"ca{i}")(x, r)
            out.append(x)
        out[-1] = torch.cat([x, r], dim=1)
        return out


class Decoder(nn.Module):
    """Per level from the deepest: audio-driven FFC blocks, 2x up, plus the level's skip."""

    def __init__(self, image_nc: int, feature_nc: int, ngf: int, max_nc: int, layers: int,
                 num_block: int, deepest_nc: int) -> None:
        super().__init__()
        self.layers = layers
        for i in reversed(range(layers)):
            cin = deepest_nc if i == layers - 1 else min(ngf * 2 ** (i + 1), max_nc)
            cout = min(ngf * 2 ** i, max_nc)
            setattr(self, f"up{i}", ConvBlock(cin, cout, 3, upsample=True))
            setattr(self, f"res{i}", FFCResBlocks(num_block, cin, feature_nc))
            setattr(self, f"jump{i}", ConvBlock(cout, cout, 3))
        self.final = ConvBlock(cout, image_nc, 7, final=True)

    def forward(self, skips: list[torch.Tensor], z: torch.Tensor) -> torch.Tensor:
        out = skips[-1]
        for i in reversed(range(self.layers)):
            out = getattr(self, f"up{i}")(getattr(self, f"res{i}")(out, z))
            out = getattr(self, f"jump{i}")(skips[i]) + out
        return self.final(out)


class LNet(nn.Module):
    """audio (B, 1, 80, 16), face (B, 6, 96, 96) in [0, 1] -> mouth (B, 3, 96, 96) in [0, 1]
    (the face's channel order, BGR in Video ReTalking). Defaults are the official sizes."""

    def __init__(self, image_nc: int = 3, descriptor_nc: int = 512, layer: int = 3,
                 base_nc: int = 64, max_nc: int = 512, num_res_blocks: int = 9) -> None:
        super().__init__()
        self.encoder = VisualEncoder(image_nc, base_nc, max_nc, layer)
        self.decoder = Decoder(image_nc, descriptor_nc, base_nc, max_nc, layer, num_res_blocks,
                               self.encoder.output_nc)
        self.audio_encoder = audio_encoder(descriptor_nc)

    def forward(self, audio: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        crop, ref = face[:, :3], face[:, 3:]
        return self.decoder(self.encoder(crop, ref), self.audio_encoder(audio).flatten(1))


# --- ENet: the StyleGAN2-style upsampler -------------------------------------------------------

class ResBlock(nn.Module):
    """Two 3x3 convolutions with a 2x bilinear downsampling between, plus a 1x1 shortcut."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cin, 3, 1, 1)
        self.conv2 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.skip = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = _half(F.leaky_relu(self.conv1(x), 0.2))
        return F.leaky_relu(self.conv2(out), 0.2) + self.skip(_half(x))


def _half(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)


def _double(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class ModulatedConv2d(nn.Module):
    """StyleGAN2's modulated convolution: input channels scaled by the style, one shared
    convolution, each sample's output channels divided by its modulated weight's norm."""

    def __init__(self, cin: int, cout: int, kernel: int, num_style_feat: int,
                 demodulate: bool = True, upsample: bool = False, eps: float = 1e-8) -> None:
        super().__init__()
        self.modulation = nn.Linear(num_style_feat, cin)
        self.weight = nn.Parameter(torch.randn(1, cout, cin, kernel, kernel)
                                   / math.sqrt(cin * kernel ** 2))
        self.demodulate = demodulate
        self.upsample = upsample
        self.eps = eps

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        s = self.modulation(style)  # (B, cin)
        if self.upsample:
            x = _double(x)
        weight = self.weight[0]
        out = F.conv2d(x * s[:, :, None, None], weight, padding=weight.shape[-1] // 2)
        if self.demodulate:
            # sum over (cin, k, k) of (w * s)^2 = (s^2) . (sum over k of w^2)
            demod = torch.rsqrt(s.square() @ weight.square().sum((2, 3)).T + self.eps)
            out = out * demod[:, :, None, None]
        return out


class StyleConv(nn.Module):
    def __init__(self, cin: int, cout: int, num_style_feat: int, upsample: bool) -> None:
        super().__init__()
        self.modulated_conv = ModulatedConv2d(cin, cout, 3, num_style_feat, upsample=upsample)
        self.weight = nn.Parameter(torch.zeros(1))  # the noise's strength
        self.bias = nn.Parameter(torch.zeros(1, cout, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        out = self.modulated_conv(x, style) * 2 ** 0.5 + self.weight * noise + self.bias
        return F.leaky_relu(out, 0.2)


class ToRGB(nn.Module):
    def __init__(self, cin: int, num_style_feat: int) -> None:
        super().__init__()
        self.modulated_conv = ModulatedConv2d(cin, 3, 1, num_style_feat, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.modulated_conv(x, style) + self.bias + _double(skip)


class RetalkingENet(nn.Module):
    """The official ``ENet`` with its ``LNet`` (``low_res``), in the engine's contract:
    audio (B, 1, 80, 16) log-mel window, face (B, 6, 384, 384) BGR in [0, 1] (the crop with
    rows 192.. zeroed, then the reference) -> (B, 3, 384, 384) BGR, unclamped.

    ``narrow`` scales every width of the upsampler (1: the official sizes)."""

    def __init__(self, lnet: LNet | None = None, num_style_feat: int = 512,
                 narrow: float = 1.0) -> None:
        super().__init__()
        self.low_res = lnet if lnet is not None else LNet()
        channels = {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128}
        channels = {k: int(v * narrow) for k, v in channels.items()}
        self.conv_body_first = nn.Conv2d(3, channels[128], 1)
        # 256x256 -> 4x4, the widths of the official 128x128 .. 4x4 levels.
        widths = [channels[2 ** i] for i in range(7, 1, -1)]
        self.conv_body_down = nn.ModuleList(
            ResBlock(cin, cout) for cin, cout in zip([channels[128]] + widths, widths))
        self.final_conv = nn.Conv2d(channels[4], channels[4], 3, 1, 1)
        self.final_linear = nn.Linear(channels[4] * 4 * 4, num_style_feat)
        self.style_convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        cin = 3
        for size in (128, 256):
            cout = channels[size]
            self.style_convs.append(StyleConv(cin, cout, num_style_feat, upsample=True))
            self.style_convs.append(StyleConv(cout, cout, num_style_feat, upsample=False))
            self.to_rgbs.append(ToRGB(cout, num_style_feat))
            cin = cout
        # One fixed noise map per style convolution, at its output size (not saved).
        self.noises = nn.Module()
        generator = torch.Generator().manual_seed(NOISE_SEED)
        size = LNET_SIZE + 2 * PAD
        for i in range(len(self.style_convs)):
            if i % 2 == 0:
                size *= 2
            self.noises.register_buffer(f"noise{i}", torch.randn(1, 1, size, size,
                                                                 generator=generator),
                                        persistent=False)

    def forward(self, audio: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        ref = face[:, 3:]
        feat = F.leaky_relu(self.conv_body_first(_resize(ref, STYLE_SIZE)), 0.2)
        for block in self.conv_body_down:
            feat = block(feat)
        feat = F.leaky_relu(self.final_conv(feat), 0.2)
        style = self.final_linear(feat.flatten(1))
        out = F.pad(self.low_res(audio, _resize(face, LNET_SIZE)), (PAD,) * 4, mode="reflect")
        skip = out
        for i, to_rgb in enumerate(self.to_rgbs):
            for j in (2 * i, 2 * i + 1):
                out = self.style_convs[j](out, style, getattr(self.noises, f"noise{j}"))
            skip = to_rgb(out, style, skip)
        crop = 4 * PAD
        return skip[:, :, crop:-crop, crop:-crop]


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def fold_spectral_norms(model: nn.Module) -> None:
    """Replace each spectral norm by the plain weight it gives in eval mode (``weight_orig``
    over the sigma of the stored u and v), in place, before export: the graph then holds one
    constant per convolution instead of recomputing sigma on every run (and in fp16). The
    model no longer loads the official checkpoints afterwards."""
    for module in model.modules():
        if hasattr(module, "weight_orig"):
            torch.nn.utils.remove_spectral_norm(module)


# --- the official checkpoints ------------------------------------------------------------------

def checkpoint_state(checkpoint: object, name: str) -> dict[str, torch.Tensor]:
    """The state dict in an official checkpoint (``{"state_dict": {"module.…": …}}``), its
    ``module.`` prefixes stripped; ``name`` ("LNet.pth") for the error."""
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not state:
        raise ValueError(f"{name}: no state dict inside")
    return {key.removeprefix("module."): value for key, value in state.items()}


def config_from_state(lnet: Mapping[str, torch.Tensor],
                      enet: Mapping[str, torch.Tensor]) -> tuple[dict, dict]:
    """The constructor arguments of :class:`LNet` and :class:`RetalkingENet` for the state
    dicts of ``LNet.pth`` and ``ENet.pth`` (prefixes stripped), from tensor shapes and key
    counts (``KeyError`` / ``ValueError`` where they are not these networks)."""

    def count(state: Mapping[str, torch.Tensor], prefix: str) -> int:
        """How many numbered modules ``prefix<n>.`` the state holds."""
        pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
        found = {m.group(1) for key in state if (m := pattern.match(key))}
        if not found:
            raise KeyError(prefix)
        return len(found)

    base_nc, image_nc = lnet["encoder.first_inp.model.0.weight_orig"].shape[:2]
    layer = count(lnet, "encoder.inp_down")
    lnet_config = {
        "image_nc": int(image_nc), "base_nc": int(base_nc), "layer": layer,
        # Widths are capped by max_nc: the widest level is the cap (or any larger value).
        "max_nc": max(int(lnet[f"encoder.inp_down{i}.model.0.weight_orig"].shape[0])
                      for i in range(layer)),
        "descriptor_nc": int(lnet["audio_encoder.12.conv_block.0.weight"].shape[0]),
        "num_res_blocks": count(lnet, "decoder.res0.res"),
    }
    # The style encoder's first width is 256 at the official size.
    enet_config = {"num_style_feat": int(enet["final_linear.weight"].shape[0]),
                   "narrow": int(enet["conv_body_first.weight"].shape[0]) / 256}
    return lnet_config, enet_config


def load_official(model: RetalkingENet, lnet_checkpoint: object,
                  enet_checkpoint: object) -> list[str]:
    """Load ``LNet.pth`` into ``model.low_res`` and ``ENet.pth`` into the rest, both strictly;
    returns the ``ENet.pth`` names skipped: its own copy of LNet (``low_res.*``), which the
    official loader skips too. A ``ValueError`` names the file and its first wrong key."""
    lnet = checkpoint_state(lnet_checkpoint, "LNet.pth")
    enet = checkpoint_state(enet_checkpoint, "ENet.pth")
    skipped = [key for key in enet if "low_res" in key]
    own = {key: value for key, value in enet.items() if "low_res" not in key}
    expected = model.state_dict()
    for name, state, prefix in (("LNet.pth", lnet, "low_res."), ("ENet.pth", own, "")):
        want = {key.removeprefix(prefix): value for key, value in expected.items()
                if key.startswith("low_res.") == bool(prefix)}
        mismatch = state_mismatch(want, state)
        if mismatch:
            raise ValueError(f"{name}: not the Video ReTalking architecture: {mismatch}")
    model.load_state_dict({**{f"low_res.{k}": v for k, v in lnet.items()}, **own}, strict=True)
    return skipped
