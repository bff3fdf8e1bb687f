"""What the model exporters share: their command line, and the acceptance test that keeps an
export only when onnxruntime gives what torch gave on the same inputs."""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from engine.errors import RedubError


def onnx_difference(onnx_path: str | os.PathLike, inputs: dict[str, np.ndarray],
                    expected: np.ndarray, tolerance: float) -> float:
    """Largest difference between the exported model's output on ``inputs`` and ``expected``
    (torch's); raises a ``RedubError`` naming the file above ``tolerance``, or when the
    export cannot run at all."""
    import onnxruntime as ort

    path = os.fspath(onnx_path)
    try:
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        got = session.run(None, inputs)[0]
    except Exception as exc:  # onnxruntime's errors are untyped
        raise RedubError(f"onnxruntime cannot run the export ({exc.__class__.__name__})",
                         path) from exc
    if got.shape != expected.shape:
        raise RedubError(f"output shape {got.shape}, torch gives {expected.shape}", path)
    diff = float(np.abs(got - expected).max())
    if not diff <= tolerance:  # also catches NaN
        raise RedubError(f"parity check failed: onnxruntime differs from torch by {diff:.3g} "
                         f"(tolerance {tolerance:g})", path)
    return diff


def exporter_parser(prog: str, description: str, checkpoint_help: str,
                    default_opset: int) -> argparse.ArgumentParser:
    """``prog CHECKPOINT -o OUT.onnx [--opset N]``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("checkpoint", help=checkpoint_help)
    parser.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=default_opset,
                        help=f"ONNX opset (default {default_opset})")
    return parser


def kept_if_faithful(onnx_path: Path, check: Callable[[Path], float]) -> float:
    """``check``'s difference for the written export; a failing export is removed."""
    try:
        return check(onnx_path)
    except RedubError:
        onnx_path.unlink(missing_ok=True)
        raise


def external_data_path(onnx_path: Path) -> Path:
    """Where a large export keeps its weights: ``<file>.onnx.data`` beside it."""
    return onnx_path.with_name(f"{onnx_path.name}.data")


def state_mismatch(expected: Mapping[str, Any], got: Mapping[str, Any]) -> str | None:
    """The first way a checkpoint's tensors ``got`` differ from an architecture's state dict
    ``expected`` (a missing, unexpected or mis-shaped key, and how many more), or None."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shaped = [k for k in expected if k in got and
              tuple(getattr(got[k], "shape", ())) != tuple(expected[k].shape)]
    for keys, what in ((missing, "missing"), (unexpected, "unexpected"), (shaped, "mis-shaped")):
        if keys:
            key = keys[0]
            detail = (f" {tuple(getattr(got[key], 'shape', ()))}, expected "
                      f"{tuple(expected[key].shape)}" if what == "mis-shaped" else "")
            more = len(missing) + len(unexpected) + len(shaped) - 1
            return (f"{what} key {key}{detail}"
                    + (f" (and {more} more differences)" if more else ""))
    return None


@contextlib.contextmanager
def quiet_logger(name: str) -> Iterator[None]:
    """Only errors from logger ``name`` (torch's exporter and diffusers chatter) meanwhile."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def read_checkpoint(path: str | os.PathLike):
    """A PyTorch checkpoint's contents, loaded with ``weights_only=True``: tensors and plain
    containers only, never code from the file."""
    import torch

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise RedubError("checkpoint not found", path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or non-tensor pickles
        first = (str(exc).splitlines() or [""])[0][:160]
        raise RedubError(f"cannot read the checkpoint ({exc.__class__.__name__}: {first})",
                         path) from exc


def save_single_file(raw: Path, out: Path, opset: int | None = None) -> None:
    """Re-save the exporter's output ``raw`` as one self-contained, checked ONNX file at
    ``out`` (atomically). Exporters write weights to a side ``.onnx.data`` file for large
    models; they are folded back in. With ``opset``, an export in another opset is refused
    (the new exporter keeps its own opset when it cannot convert)."""
    import onnx

    proto = onnx.load(raw, load_external_data=True)
    if opset is not None:
        written = max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
        if written != opset:
            raise RedubError(f"torch wrote opset {written} instead of {opset}: choose another "
                             "--opset", out)
    onnx.checker.check_model(proto)
    part = raw.with_name(f"{raw.stem}.single.onnx")
    onnx.save(proto, part, save_as_external_data=False)
    os.replace(part, out)
