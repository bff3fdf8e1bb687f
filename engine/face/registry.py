"""Backends chosen by name: a table of ``"module:factory"`` strings, imported on first use.

Importing a backend's module only when it is chosen keeps dlib and onnxruntime out of
processes that never use them.
"""
from __future__ import annotations

import importlib
from typing import Any

from engine.errors import UsageError


def resolve(table: dict[str, str], name: str, what: str) -> Any:
    """The factory registered as ``name`` in ``table`` (``what`` names the stage in errors)."""
    target = table.get(name)
    if target is None:
        raise UsageError(f"unknown {what} '{name}': choose one of {', '.join(sorted(table))}")
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)
