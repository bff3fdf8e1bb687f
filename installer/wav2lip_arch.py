"""The 96x96 Wav2Lip generator (Prajwal et al., 2020) in torch, for exporting checkpoints.

Written from the paper's description and the published layer list so that ``state_dict``
names and shapes match the official ``wav2lip.pth`` / ``wav2lip_gan.pth`` checkpoints:

- ``face_encoder_blocks``: seven stages taking the 6-channel 96x96 face (lower-half-masked
  crop and reference) down to 512x1x1, each stage's output kept for a skip connection;
- ``audio_encoder``: a (1, 80, 16) mel window down to a 512x1x1 embedding;
- ``face_decoder_blocks``: seven stages from the audio embedding back up to 96x96, each output
  concatenated with the matching encoder output;
- ``output_block``: a last unit, a 1x1 convolution to 3 channels and a sigmoid.

Every unit is a convolution with batch norm (``conv_block.0`` / ``conv_block.1``), an optional
identity shortcut and a ReLU. Only the export tools import this (torch is the ``export``
extra); the application runs the exported ONNX file.
"""
from __future__ import annotations

import torch
from torch import nn

FACE_SIZE = 96
MEL_SHAPE = (1, 80, 16)


class ConvUnit(nn.Module):
    """Convolution + batch norm (+ the input, for residual units) + ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int | tuple[int, int],
                 padding: int, residual: bool = False, transpose: bool = False,
                 output_padding: int = 0) -> None:
        super().__init__()
        conv = (nn.ConvTranspose2d(cin, cout, kernel, stride, padding, output_padding)
                if transpose else nn.Conv2d(cin, cout, kernel, stride, padding))
        self.conv_block = nn.Sequential(conv, nn.BatchNorm2d(cout))
        self.residual = residual
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_block(x)
        return self.act(y + x if self.residual else y)


def _down(cin: int, cout: int, stride: int | tuple[int, int], residuals: int) -> list[nn.Module]:
    """A strided 3x3 unit followed by ``residuals`` residual 3x3 units at ``cout`` channels."""
    return [ConvUnit(cin, cout, 3, stride, 1)] + _residuals(cout, residuals)


def _up(cin: int, cout: int, residuals: int) -> list[nn.Module]:
    """A transposed 3x3 unit doubling the size, then residual 3x3 units."""
    return ([ConvUnit(cin, cout, 3, 2, 1, transpose=True, output_padding=1)]
            + _residuals(cout, residuals))


def _residuals(channels: int, count: int) -> list[nn.Module]:
    return [ConvUnit(channels, channels, 3, 1, 1, residual=True) for _ in range(count)]


def _to_embedding(channels: int) -> list[nn.Module]:
    """3x3 valid convolution (3x3 -> 1x1) then a 1x1 unit: the 512-channel bottleneck."""
    return [ConvUnit(channels, 512, 3, 1, 0), ConvUnit(512, 512, 1, 1, 0)]


class Wav2Lip(nn.Module):
    """faces (B, 6, 96, 96) in [0, 1] and mels (B, 1, 80, 16) -> faces (B, 3, 96, 96) in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        seq = nn.Sequential
        self.face_encoder_blocks = nn.ModuleList([
            seq(ConvUnit(6, 16, 7, 1, 3)),  # 96x96
            seq(*_down(16, 32, 2, 2)),  # 48x48
            seq(*_down(32, 64, 2, 3)),  # 24x24
            seq(*_down(64, 128, 2, 2)),  # 12x12
            seq(*_down(128, 256, 2, 2)),  # 6x6
            seq(*_down(256, 512, 2, 1)),  # 3x3
            seq(*_to_embedding(512)),  # 1x1
        ])
        # 80x16 mel: strides (3,1), 3, (3,2) give 27x16, 9x6, 3x3, then 1x1.
        self.audio_encoder = seq(
            ConvUnit(1, 32, 3, 1, 1), *_residuals(32, 2),
            *_down(32, 64, (3, 1), 2),
            *_down(64, 128, 3, 2),
            *_down(128, 256, (3, 2), 1),
            *_to_embedding(256),
        )
        # Each stage's input is the previous output concatenated with an encoder skip.
        self.face_decoder_blocks = nn.ModuleList([
            seq(ConvUnit(512, 512, 1, 1, 0)),  # 1x1
            seq(ConvUnit(1024, 512, 3, 1, 0, transpose=True), *_residuals(512, 1)),  # 3x3
            seq(*_up(1024, 512, 2)),  # 6x6
            seq(*_up(768, 384, 2)),  # 12x12
            seq(*_up(512, 256, 2)),  # 24x24
            seq(*_up(320, 128, 2)),  # 48x48
            seq(*_up(160, 64, 2)),  # 96x96
        ])
        self.output_block = seq(ConvUnit(80, 32, 3, 1, 1), nn.Conv2d(32, 3, 1, 1, 0),
                                nn.Sigmoid())

    def forward(self, mels: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        skips = []
        x = faces
        for block in self.face_encoder_blocks:
            x = block(x)
            skips.append(x)
        x = self.audio_encoder(mels)
        for block in self.face_decoder_blocks:
            x = torch.cat([block(x), skips.pop()], dim=1)
        return self.output_block(x)


def checkpoint_state(checkpoint: object) -> dict[str, torch.Tensor]:
    """The model's state dict from an official checkpoint (``{"state_dict": {"module.…"}}``).

    Checkpoints saved from ``nn.DataParallel`` prefix every name with ``module.``; plain state
    dicts and ones without the wrapper are accepted too.
    """
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not state:
        raise ValueError("not a Wav2Lip checkpoint: no state dict inside")
    return {name.removeprefix("module."): value for name, value in state.items()}
