"""Export an official Wav2Lip / Wav2Lip-GAN checkpoint to the engine's ONNX contract.

    python -m installer.export_wav2lip wav2lip_gan.pth -o wav2lip_gan_96.onnx [--opset N]

The checkpoint is read with ``torch.load(weights_only=True)`` (tensors only, no pickled code),
its ``module.`` prefixes stripped and loaded strictly into :mod:`installer.wav2lip_arch`. The
ONNX file follows the public ``wav2lip_96.onnx`` contract (facefusion-assets): inputs
``source`` (B, 1, 80, 16) mel windows and ``target`` (B, 6, 96, 96) faces (masked crop then
reference, BGR in [0, 1]), output (B, 3, 96, 96) in [0, 1], the batch dimension free. It is
written as one self-contained file, then checked: torch and onnxruntime must agree to 1e-4 on
random inputs, or the file is removed and the exit status is 1.
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from engine.errors import RedubError
from installer.onnx_export import (exporter_parser, kept_if_faithful, onnx_difference,
                                   quiet_logger, read_checkpoint, save_single_file,
                                   state_mismatch)

INPUT_NAMES = ("source", "target")
OUTPUT_NAME = "output"
DEFAULT_OPSET = 18
DYNAMO_OPSET = 18  # the torch.export-based exporter's oldest opset
TOLERANCE = 1e-4
PARITY_BATCH = 3  # differs from the export batch, so the free batch dimension is exercised


def load_checkpoint(path: str | os.PathLike):
    """A :class:`Wav2Lip` in eval mode holding the checkpoint's weights (strict names)."""
    from installer.wav2lip_arch import Wav2Lip, checkpoint_state

    path = os.fspath(path)
    checkpoint = read_checkpoint(path)
    try:
        state = checkpoint_state(checkpoint)
    except ValueError as exc:
        raise RedubError(str(exc), path) from None
    model = Wav2Lip()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError:
        raise RedubError("not the 96x96 Wav2Lip architecture: "
                         f"{state_mismatch(model.state_dict(), state)}", path) from None
    return model.eval()


def export(model, out: str | os.PathLike, opset: int = DEFAULT_OPSET) -> Path:
    """Write ``model`` to ``out`` as one ONNX file (weights inside), atomically."""
    import torch

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    example = (torch.zeros(2, 1, 80, 16), torch.zeros(2, 6, 96, 96))
    names = {"input_names": list(INPUT_NAMES), "output_names": [OUTPUT_NAME],
             "opset_version": opset}
    if opset >= DYNAMO_OPSET:
        batch = torch.export.Dim("B", min=1)
        how = {"dynamo": True, "external_data": False,
               "dynamic_shapes": {"mels": {0: batch}, "faces": {0: batch}}}
    else:  # the TorchScript exporter still writes the older opsets older runtimes load
        how = {"dynamo": False,
               "dynamic_axes": {name: {0: "B"} for name in (*INPUT_NAMES, OUTPUT_NAME)}}
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".export-") as tmp:
        raw = Path(tmp) / "raw.onnx"
        # The exporter narrates every step and warns about optional packages: keep it quiet.
        with contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings(), \
                quiet_logger("torch.onnx"):
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(model, example, raw, **names, **how)
            except Exception as exc:  # the exporters raise many types
                first = (str(exc).strip().splitlines() or [""])[0][:160]
                raise RedubError(f"torch cannot export at opset {opset} "
                                 f"({exc.__class__.__name__}: {first})", out) from exc
        save_single_file(raw, out, opset)
    return out


def check_parity(model, onnx_path: str | os.PathLike, *, tolerance: float = TOLERANCE,
                 batch: int = PARITY_BATCH, seed: int = 0) -> float:
    """Largest difference between torch and onnxruntime on random inputs; raises above
    ``tolerance``."""
    import torch

    rng = np.random.default_rng(seed)
    mels = rng.uniform(-4, 4, (batch, 1, 80, 16)).astype(np.float32)
    faces = rng.uniform(0, 1, (batch, 6, 96, 96)).astype(np.float32)
    faces[:, :3, 48:] = 0  # the lower half of the first three channels is masked in use
    with torch.no_grad():
        expected = model(torch.from_numpy(mels), torch.from_numpy(faces)).numpy()
    return onnx_difference(onnx_path, dict(zip(INPUT_NAMES, (mels, faces))), expected,
                           tolerance)


def main(argv: Sequence[str] | None = None) -> int:
    args = exporter_parser("python -m installer.export_wav2lip", __doc__.split("\n\n")[0], "wav2lip.pth or wav2lip_gan.pth",
                           DEFAULT_OPSET).parse_args(argv)
    try:
        model = load_checkpoint(args.checkpoint)
        out = export(model, args.output, args.opset)
        diff = kept_if_faithful(out, lambda path: check_parity(model, path))
    except RedubError as exc:
        print(f"export_wav2lip: error: {exc}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:
        print(f"export_wav2lip: error: {exc.name} is missing: install the export extra "
              "(pip install -e \".[export]\")", file=sys.stderr)
        return 1
    print(f"{out}: {out.stat().st_size / 1e6:.1f} MB, opset {args.opset}, "
          f"torch/onnxruntime max difference {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
