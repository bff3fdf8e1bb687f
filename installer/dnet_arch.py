"""Video ReTalking's D-Net (Cheng et al., 2022) in torch, for exporting ``DNet.pt``.

D-Net is the expression stabiliser: it redraws a 256x256 face crop with the expression of a
given set of 3DMM coefficients (the engine gives it the neutral "template" expression), keeping
the pose. Written from the network's description (a PIRenderer-style generator) so that
``state_dict`` names and shapes match the ``net_G_ema`` weights of the official checkpoint
(``load_state_dict(..., strict=True)``; ``warpping_net`` is the publisher's spelling):

- ``mapping_net``: a 1-D convolution over the (73, 26) window of per-frame coefficients
  (expression 64, angles 3, translation 3, crop 3 over frames k-13..k+12), three dilated
  residual units and a mean over time: one descriptor per frame;
- ``warpping_net``: an hourglass whose every unit is modulated by the descriptor (AdaIN) predicts
  a flow field at a quarter of the size, which warps the input face;
- ``editing_net``: an encoder over the input and warped faces and a decoder with AdaIN residual
  blocks redraw the face (tanh: RGB in [-1, 1]).

Normalisation is a layer norm over channels and space with a per-channel affine (``LayerNorm2d``)
or parameter-free instance norm scaled and shifted per channel from the descriptor (``ADAIN``).
Every activation is a LeakyReLU of slope 0.1. Only the export tools import this (torch is the
``export`` extra); the application runs the exported ONNX file.
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

COEFF_NC = 73
WINDOW = 26  # frames k-13 .. k+12, as the publisher's obtain_seq_index
SLOPE = 0.1


def _act() -> nn.LeakyReLU:
    return nn.LeakyReLU(SLOPE)


def _width(base: int, level: int, most: int) -> int:
    """Channels at a pyramid level: doubling from ``base``, capped at ``most``."""
    return min(base * 2 ** level, most)


def _staged_mean(x: torch.Tensor) -> torch.Tensor:
    return x.mean(3, keepdim=True).mean(2, keepdim=True).mean(1, keepdim=True)


class LayerNorm2d(nn.Module):
    """Layer norm over (C, H, W) with a per-channel scale and shift, stored as (C, 1, 1).

    The statistics are means of means (over W, then H, then C), equal to ``F.layer_norm``'s:
    onnxruntime's CPU LayerNormalization (and one ReduceMean) over all C*H*W values (4M at
    256x256) loses float32 precision, which moved the exported D-Net's output by 3e-4; staged
    means keep it to 3e-5 (torch itself: 1e-5).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - _staged_mean(x)
        scale = torch.rsqrt(_staged_mean(centred * centred) + 1e-5)
        return centred * scale * self.weight + self.bias


class ADAIN(nn.Module):
    """Instance norm, then ``x * (1 + gamma) + beta`` with gamma and beta from the descriptor."""

    def __init__(self, channels: int, descriptor_nc: int, hidden: int = 128) -> None:
        super().__init__()
        self.mlp_shared = nn.Sequential(nn.Linear(descriptor_nc, hidden), nn.ReLU())
        self.mlp_gamma = nn.Linear(hidden, channels)
        self.mlp_beta = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        hidden = self.mlp_shared(z.flatten(1))
        gamma = self.mlp_gamma(hidden)[:, :, None, None]
        beta = self.mlp_beta(hidden)[:, :, None, None]
        return F.instance_norm(x) * (1 + gamma) + beta


class MappingNet(nn.Module):
    """(B, coeff_nc, T) coefficients -> (B, descriptor_nc, 1) descriptor."""

    def __init__(self, coeff_nc: int, descriptor_nc: int, layers: int) -> None:
        super().__init__()
        self.layers = layers
        self.first = nn.Sequential(nn.Conv1d(coeff_nc, descriptor_nc, kernel_size=7))
        for i in range(layers):
            setattr(self, f"encoder{i}", nn.Sequential(
                _act(), nn.Conv1d(descriptor_nc, descriptor_nc, kernel_size=3, dilation=3)))

    def forward(self, coeffs: torch.Tensor) -> torch.Tensor:
        out = self.first(coeffs)
        for i in range(self.layers):
            # Each unpadded dilated unit shortens the sequence by 6; the shortcut is cropped to it.
            out = getattr(self, f"encoder{i}")(out) + out[:, :, 3:-3]
        return out.mean(dim=2, keepdim=True)


class ADAINEncoderBlock(nn.Module):
    """Halves the size: modulated norm, act, 4x4 stride-2 conv; modulated norm, act, 3x3 conv."""

    def __init__(self, cin: int, cout: int, descriptor_nc: int, hidden: int) -> None:
        super().__init__()
        self.conv_0 = nn.Conv2d(cin, cout, 4, 2, 1)
        self.conv_1 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.norm_0 = ADAIN(cin, descriptor_nc, hidden)
        self.norm_1 = ADAIN(cout, descriptor_nc, hidden)
        self.actvn = _act()

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        x = self.conv_0(self.actvn(self.norm_0(x, z)))
        return self.conv_1(self.actvn(self.norm_1(x, z)))


class ADAINDecoderBlock(nn.Module):
    """Doubles the size (transposed convs) on a modulated residual unit with a learnt shortcut."""

    def __init__(self, cin: int, cout: int, descriptor_nc: int, hidden: int) -> None:
        super().__init__()
        up = {"kernel_size": 3, "stride": 2, "padding": 1, "output_padding": 1}
        self.conv_0 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.conv_1 = nn.ConvTranspose2d(cout, cout, **up)
        self.conv_s = nn.ConvTranspose2d(cin, cout, **up)
        self.norm_0 = ADAIN(cin, descriptor_nc, hidden)
        self.norm_1 = ADAIN(cout, descriptor_nc, hidden)
        self.norm_s = ADAIN(cin, descriptor_nc, hidden)
        self.actvn = _act()

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        shortcut = self.conv_s(self.actvn(self.norm_s(x, z)))
        dx = self.conv_0(self.actvn(self.norm_0(x, z)))
        return shortcut + self.conv_1(self.actvn(self.norm_1(dx, z)))


class ADAINEncoder(nn.Module):
    def __init__(self, image_nc: int, descriptor_nc: int, base_nc: int, max_nc: int,
                 layers: int, hidden: int) -> None:
        super().__init__()
        self.layers = layers
        self.input_layer = nn.Conv2d(image_nc, base_nc, 7, 1, 3)
        for i in range(layers):
            setattr(self, f"encoder{i}", ADAINEncoderBlock(
                _width(base_nc, i, max_nc), _width(base_nc, i + 1, max_nc), descriptor_nc, hidden))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> list[torch.Tensor]:
        outs = [self.input_layer(x)]
        for i in range(self.layers):
            outs.append(getattr(self, f"encoder{i}")(outs[-1], z))
        return outs


class ADAINDecoder(nn.Module):
    """Up through the deepest ``decoder_layers`` levels, concatenating the encoder's features."""

    def __init__(self, descriptor_nc: int, base_nc: int, max_nc: int, encoder_layers: int,
                 decoder_layers: int, hidden: int) -> None:
        super().__init__()
        self.levels = list(range(encoder_layers - decoder_layers, encoder_layers))[::-1]
        for i in self.levels:
            cin = _width(base_nc, i + 1, max_nc)
            if i != encoder_layers - 1:
                cin *= 2  # below the deepest level the input carries the skip connection
            setattr(self, f"decoder{i}", ADAINDecoderBlock(
                cin, _width(base_nc, i, max_nc), descriptor_nc, hidden))
        self.output_nc = 2 * _width(base_nc, self.levels[-1], max_nc)

    def forward(self, features: list[torch.Tensor], z: torch.Tensor) -> torch.Tensor:
        out = features[-1]
        for i in self.levels:
            out = torch.cat([getattr(self, f"decoder{i}")(out, z), features[i]], 1)
        return out


class ADAINHourglass(nn.Module):
    def __init__(self, image_nc: int, descriptor_nc: int, base_nc: int, max_nc: int,
                 encoder_layers: int, decoder_layers: int, hidden: int) -> None:
        super().__init__()
        self.encoder = ADAINEncoder(image_nc, descriptor_nc, base_nc, max_nc, encoder_layers,
                                    hidden)
        self.decoder = ADAINDecoder(descriptor_nc, base_nc, max_nc, encoder_layers,
                                    decoder_layers, hidden)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x, z), z)


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample ``image`` at each pixel's position plus ``flow`` (pixels of the flow's grid).

    As the publisher's code: positions normalised with corners at -1 and 1, the sampling grid
    resized bilinearly (half-pixel centres) to the image, then sampled bilinearly with zeros
    outside and ``align_corners=False``. The two conventions disagree, so a zero flow stretches
    the image by W / (W - 1) about its centre; the network was trained with that, so it stays.
    """
    h, w = flow.shape[2:]
    xs = 2 * (torch.arange(w, dtype=flow.dtype, device=flow.device) / (w - 1)) - 1
    ys = 2 * (torch.arange(h, dtype=flow.dtype, device=flow.device) / (h - 1)) - 1
    grid = torch.stack([xs[None, :].expand(h, w), ys[:, None].expand(h, w)])
    size = torch.tensor([w - 1, h - 1], dtype=flow.dtype, device=flow.device)
    grid = grid + 2 * (flow / size[:, None, None])
    if grid.shape[2:] != image.shape[2:]:
        grid = F.interpolate(grid, size=image.shape[2:], mode="bilinear", align_corners=False)
    return F.grid_sample(image, grid.permute(0, 2, 3, 1), mode="bilinear",
                         padding_mode="zeros", align_corners=False)


class WarpingNet(nn.Module):
    def __init__(self, image_nc: int, descriptor_nc: int, base_nc: int, max_nc: int,
                 encoder_layers: int, decoder_layers: int, hidden: int) -> None:
        super().__init__()
        self.hourglass = ADAINHourglass(image_nc, descriptor_nc, base_nc, max_nc,
                                        encoder_layers, decoder_layers, hidden)
        nc = self.hourglass.decoder.output_nc
        self.flow_out = nn.Sequential(LayerNorm2d(nc), _act(), nn.Conv2d(nc, 2, 7, 1, 3))

    def forward(self, image: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return warp(image, self.flow_out(self.hourglass(image, z)))


class NormedConv(nn.Module):
    """``model``: conv, layer norm, act (FirstBlock2d / DownBlock2d / UpBlock2d / Jump)."""

    def __init__(self, cin: int, cout: int, kernel: int, pool: bool = False) -> None:
        super().__init__()
        layers = [nn.Conv2d(cin, cout, kernel, 1, kernel // 2), LayerNorm2d(cout), _act()]
        self.model = nn.Sequential(*layers, *([nn.AvgPool2d(2)] if pool else []))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class UpBlock(NormedConv):
    """Nearest-neighbour doubling, then conv, norm, act."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(F.interpolate(x, scale_factor=2, mode="nearest"))


class FineADAINResBlock(nn.Module):
    """Residual unit ``x + norm2(conv2(x), z)``.

    The publisher's block also computes ``actvn(norm1(conv1(x), z))`` and then overwrites it, so
    ``conv1`` and ``norm1`` are trained weights with no effect on the output: they are kept for
    the checkpoint to load strictly but not run.
    """

    def __init__(self, channels: int, descriptor_nc: int, hidden: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.norm1 = ADAIN(channels, descriptor_nc, hidden)
        self.norm2 = ADAIN(channels, descriptor_nc, hidden)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return x + self.norm2(self.conv2(x), z)


class FineADAINResBlocks(nn.Module):
    def __init__(self, blocks: int, channels: int, descriptor_nc: int, hidden: int) -> None:
        super().__init__()
        self.blocks = blocks
        for j in range(blocks):
            setattr(self, f"res{j}", FineADAINResBlock(channels, descriptor_nc, hidden))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        for j in range(self.blocks):
            x = getattr(self, f"res{j}")(x, z)
        return x


class FineEncoder(nn.Module):
    def __init__(self, image_nc: int, base_nc: int, max_nc: int, layers: int) -> None:
        super().__init__()
        self.layers = layers
        self.first = NormedConv(image_nc, base_nc, 7)
        for i in range(layers):
            setattr(self, f"down{i}", NormedConv(
                _width(base_nc, i, max_nc), _width(base_nc, i + 1, max_nc), 3, pool=True))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [self.first(x)]
        for i in range(self.layers):
            outs.append(getattr(self, f"down{i}")(outs[-1]))
        return outs


class FinalBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Conv2d(cin, cout, 7, 1, 3), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class FineDecoder(nn.Module):
    def __init__(self, image_nc: int, descriptor_nc: int, base_nc: int, max_nc: int, layers: int,
                 res_blocks: int, hidden: int) -> None:
        super().__init__()
        self.layers = layers
        for i in reversed(range(layers)):
            cin, cout = _width(base_nc, i + 1, max_nc), _width(base_nc, i, max_nc)
            setattr(self, f"up{i}", UpBlock(cin, cout, 3))
            setattr(self, f"res{i}", FineADAINResBlocks(res_blocks, cin, descriptor_nc, hidden))
            setattr(self, f"jump{i}", NormedConv(cout, cout, 3))
        self.final = FinalBlock(_width(base_nc, 0, max_nc), image_nc)

    def forward(self, features: list[torch.Tensor], z: torch.Tensor) -> torch.Tensor:
        out = features[-1]
        for i in reversed(range(self.layers)):
            out = getattr(self, f"up{i}")(getattr(self, f"res{i}")(out, z))
            out = getattr(self, f"jump{i}")(features[i]) + out
        return self.final(out)


class EditingNet(nn.Module):
    def __init__(self, image_nc: int, descriptor_nc: int, base_nc: int, max_nc: int, layers: int,
                 res_blocks: int, hidden: int) -> None:
        super().__init__()
        self.encoder = FineEncoder(2 * image_nc, base_nc, max_nc, layers)
        self.decoder = FineDecoder(image_nc, descriptor_nc, base_nc, max_nc, layers, res_blocks,
                                   hidden)

    def forward(self, image: torch.Tensor, warped: torch.Tensor,
                z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(torch.cat([image, warped], 1)), z)


class DNet(nn.Module):
    """``forward(image, coeffs)``: (B, 3, S, S) RGB in [-1, 1] and (B, coeff_nc, T)
    coefficients -> the redrawn (B, 3, S, S) face (the publisher's ``fake_image``).

    The defaults are the published sizes (S = 256, T = 26); smaller ones build a network of the
    same code path for tests. S must be a multiple of ``2 ** warp_encoder_layers`` and
    T >= 7 + 6 * ``mapping_layers``.
    """

    def __init__(self, coeff_nc: int = COEFF_NC, descriptor_nc: int = 256, mapping_layers: int = 3,
                 warp_base_nc: int = 32, warp_max_nc: int = 256, warp_encoder_layers: int = 5,
                 warp_decoder_layers: int = 3, edit_base_nc: int = 64, edit_max_nc: int = 256,
                 edit_layers: int = 3, edit_res_blocks: int = 2, adain_hidden: int = 128) -> None:
        super().__init__()
        self.mapping_net = MappingNet(coeff_nc, descriptor_nc, mapping_layers)
        self.warpping_net = WarpingNet(3, descriptor_nc, warp_base_nc, warp_max_nc,
                                       warp_encoder_layers, warp_decoder_layers, adain_hidden)
        self.editing_net = EditingNet(3, descriptor_nc, edit_base_nc, edit_max_nc, edit_layers,
                                      edit_res_blocks, adain_hidden)

    def forward(self, image: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
        z = self.mapping_net(coeffs)
        return self.editing_net(image, self.warpping_net(image, z), z)


def config_from_state(state: dict) -> dict:
    """:class:`DNet`'s constructor arguments for a ``net_G_ema`` state dict, from its tensors'
    shapes and key counts (``KeyError`` / ``ValueError`` where it is not a D-Net)."""

    def count(prefix: str) -> int:
        """How many numbered modules ``prefix<n>.`` the state holds."""
        pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
        found = {m.group(1) for k in state if (m := pattern.match(k))}
        if not found:
            raise KeyError(prefix)
        return len(found)

    def out_nc(key: str) -> int:
        return int(state[key].shape[0])

    hourglass, edit = "warpping_net.hourglass.", "editing_net."
    descriptor_nc, coeff_nc, _ = state["mapping_net.first.0.weight"].shape
    warp_layers = count(hourglass + "encoder.encoder")
    edit_layers = count(edit + "encoder.down")
    return {
        "coeff_nc": int(coeff_nc), "descriptor_nc": int(descriptor_nc),
        "mapping_layers": count("mapping_net.encoder"),
        "warp_base_nc": out_nc(hourglass + "encoder.input_layer.weight"),
        # Widths are capped by max_nc: the widest layer is the cap (or any larger value).
        "warp_max_nc": max(out_nc(hourglass + f"encoder.encoder{i}.conv_0.weight")
                           for i in range(warp_layers)),
        "warp_encoder_layers": warp_layers,
        "warp_decoder_layers": count(hourglass + "decoder.decoder"),
        "edit_base_nc": out_nc(edit + "encoder.first.model.0.weight"),
        "edit_max_nc": max(out_nc(edit + f"encoder.down{i}.model.0.weight")
                           for i in range(edit_layers)),
        "edit_layers": edit_layers,
        "edit_res_blocks": count(edit + "decoder.res0.res"),
        "adain_hidden": out_nc(hourglass + "encoder.encoder0.norm_0.mlp_shared.0.weight"),
    }
