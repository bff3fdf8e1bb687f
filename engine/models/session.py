"""Open ONNX models in onnxruntime with errors that name the file and the problem."""
from __future__ import annotations

import os

from engine.errors import RedubError


def load_session(model: str | os.PathLike, what: str, providers: list[str] | None = None):
    """An ``onnxruntime.InferenceSession`` for ``model``; ``what`` names it in errors."""
    import onnxruntime as ort  # imported on use: processes without ONNX stages never load it

    path = os.fspath(model)
    if not os.path.isfile(path):
        raise RedubError(f"{what} file not found", path)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(path, options,
                                    providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
        raise RedubError(f"cannot load {what} ({exc.__class__.__name__})", path) from exc
