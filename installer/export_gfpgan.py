"""Export the official GFPGAN v1.4 checkpoint to the ONNX contract of the ``gfpgan`` restorer.

    python -m installer.export_gfpgan GFPGANv1.4.pth -o gfpgan_1.4.onnx [--opset N]

The architecture is the ``gfpgan`` package's own ``GFPGANv1Clean`` (with the settings its
``GFPGANer`` uses for v1.3/v1.4), so the package must import: it needs ``basicsr`` and
``facexlib``, and basicsr 1.4.2 imports ``torchvision.transforms.functional_tensor``, which
torchvision removed in 0.17. Where it does not import the tool says why and what to install,
and exits with status 1 without touching anything.

The checkpoint is read with ``torch.load(weights_only=True)`` (tensors only, no pickled code)
and its ``params_ema`` weights loaded strictly. The StyleGAN2 decoder's noise is the fixed
noise stored in the checkpoint rather than fresh noise per call, so the model is a function of
its input. The ONNX file takes ``input`` (1, 3, 512, 512), an FFHQ-aligned RGB face in
[-1, 1], and gives ``output``, the restored face in the same form; it is written as one
self-contained file, then checked: torch and onnxruntime must agree to 1e-3 on random faces,
or the file is removed and the exit status is 1.
"""
from __future__ import annotations

import contextlib
import inspect
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
                                   read_checkpoint, save_single_file)

SIZE = 512
INPUT_NAME, OUTPUT_NAME = "input", "output"
DEFAULT_OPSET = 17
TOLERANCE = 1e-3
# A set of versions under which the gfpgan package imports (basicsr 1.4.2 needs torchvision
# before 0.17, which needs torch 2.1, which needs numpy 1).
INSTALL = ('pip install torch==2.1.2 torchvision==0.16.2 "numpy<2" gfpgan==1.3.8 '
           "basicsr==1.4.2 facexlib==0.3.0 onnx onnxruntime")


class CannotRun(Exception):
    """The gfpgan package (or torch) is not importable here; the message says why."""


def architecture():
    """The ``GFPGANv1Clean`` class of the gfpgan package; :class:`CannotRun` if it will not
    import."""
    try:
        with warnings.catch_warnings():  # the dependencies' deprecation notices, on import
            warnings.simplefilter("ignore")
            from gfpgan.archs.gfpganv1_clean_arch import GFPGANv1Clean
    except Exception as exc:  # ImportError, or whatever a half-compatible dependency raises
        first = (str(exc).splitlines() or [""])[0][:200]
        hint = ("; basicsr needs a torchvision older than 0.17"
                if "functional_tensor" in first else "")
        raise CannotRun(f"the gfpgan package does not import ({exc.__class__.__name__}: "
                        f"{first}){hint}. Install it in a separate environment: {INSTALL}") \
            from exc
    return GFPGANv1Clean


def load_checkpoint(path: str | os.PathLike):
    """GFPGAN v1.4 in eval mode with the checkpoint's ``params_ema`` weights (strict names),
    wrapped to take and give one tensor."""
    path = os.fspath(path)
    checkpoint = read_checkpoint(path)
    key = next((k for k in ("params_ema", "params") if isinstance(checkpoint, dict)
                and k in checkpoint), None)
    if key is None:
        keys = ", ".join(map(str, list(checkpoint)[:5])) if isinstance(checkpoint, dict) else ""
        raise RedubError(f"not a GFPGAN checkpoint: no 'params_ema' or 'params' (has {keys})",
                         path)
    net = new_network()
    try:
        net.load_state_dict(checkpoint[key], strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0][:200]
        raise RedubError(f"not the GFPGAN v1.4 architecture: {first}", path) from None
    return face_only(net).eval()


def new_network():
    """GFPGANv1Clean as ``GFPGANer`` builds it for v1.3 and v1.4 (random weights)."""
    return architecture()(out_size=SIZE, num_style_feat=512, channel_multiplier=2,
                          decoder_load_path=None, fix_decoder=False, num_mlp=8,
                          input_is_latent=True, different_w=True, narrow=1, sft_half=True)


def face_only(net):
    """``net`` as one tensor in, one out (the restored face), decoding with the checkpoint's
    fixed noise: ``GFPGANer`` draws fresh noise on every call, which no ONNX file can hold."""
    import torch

    class GFPGANFace(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x, return_rgb=False, randomize_noise=False)[0]

    return GFPGANFace()


def export(model, out: str | os.PathLike, opset: int = DEFAULT_OPSET) -> Path:
    """Write ``model`` to ``out`` as one ONNX file (weights inside), atomically."""
    import torch

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # The TorchScript exporter: it handles this network on every torch that basicsr runs on;
    # newer torch defaults to the dynamo exporter, so ask for it by name where that exists.
    options = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters \
        else {}
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".export-") as tmp:
        raw = Path(tmp) / "raw.onnx"
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (torch.zeros(1, 3, SIZE, SIZE),), raw,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              opset_version=opset, do_constant_folding=True, **options)
        save_single_file(raw, out)
    return out


def check_parity(model, onnx_path: str | os.PathLike, *, tolerance: float = TOLERANCE,
                 seed: int = 0) -> float:
    """Largest difference between torch and onnxruntime on a random face; raises above
    ``tolerance``."""
    import torch

    face = np.random.default_rng(seed).uniform(-1, 1, (1, 3, SIZE, SIZE)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(face)).numpy()
    return onnx_difference(onnx_path, {INPUT_NAME: face}, expected, tolerance)


def main(argv: Sequence[str] | None = None) -> int:
    args = exporter_parser("python -m installer.export_gfpgan", __doc__.split("\n\n")[0], "GFPGANv1.4.pth",
                           DEFAULT_OPSET).parse_args(argv)
    try:
        architecture()
        model = load_checkpoint(args.checkpoint)
        out = export(model, args.output, args.opset)
        diff = kept_if_faithful(out, lambda path: check_parity(model, path))
    except CannotRun as exc:
        print(f"export_gfpgan: cannot run: {exc}", file=sys.stderr)
        return 1
    except RedubError as exc:
        print(f"export_gfpgan: error: {exc}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:
        print(f"export_gfpgan: error: {exc.name} is missing: install onnx and onnxruntime",
              file=sys.stderr)
        return 1
    print(f"{out}: {out.stat().st_size / 1e6:.1f} MB, opset {args.opset}, "
          f"torch/onnxruntime max difference {diff:.2e}; install it with "
          f"`redub models import {out} --id gfpgan_1.4`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
