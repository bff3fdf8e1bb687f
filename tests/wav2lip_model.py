"""A full-size Wav2Lip with random weights, saved like the official checkpoints and exported.

Used through the session fixture ``wav2lip_model`` (tests/conftest.py): the export takes
a quarter of a minute, so one serves the whole run.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class ExportedWav2Lip:
    checkpoint: Path  # official layout: {"state_dict": {"module.<name>": tensor}, ...}
    onnx: Path  # written by ``python -m installer.export_wav2lip``
    log: str  # what the exporter printed


def write_checkpoint(path: Path, seed: int = 0) -> Path:
    """Random weights and batch-norm statistics in the layout of ``wav2lip_gan.pth``."""
    torch = pytest.importorskip("torch")
    from installer.wav2lip_arch import Wav2Lip

    torch.manual_seed(seed)
    model = Wav2Lip()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                # Non-trivial statistics, so folding them into the convolutions is exercised.
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
    state = {f"module.{name}": value for name, value in model.state_dict().items()}
    torch.save({"state_dict": state, "global_step": 0, "global_epoch": 0}, path)
    return path


def export_random_wav2lip(folder: Path) -> ExportedWav2Lip:
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    import contextlib
    import io

    from installer.export_wav2lip import main

    checkpoint = write_checkpoint(folder / "wav2lip_random.pth")
    onnx_path = folder / "wav2lip_random_96.onnx"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(checkpoint), "-o", str(onnx_path)])
    assert code == 0, err.getvalue()
    return ExportedWav2Lip(checkpoint, onnx_path, out.getvalue())
