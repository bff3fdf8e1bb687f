"""Where the engine keeps per-user files (caches, models, settings)."""
from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "redub-studio"


def cache_dir() -> Path:
    """Folder for derived data that can be recomputed (analysis, peaks, indexes).

    ``REDUB_CACHE_DIR`` overrides the platform default, so tests and batch jobs can isolate it.
    """
    override = os.environ.get("REDUB_CACHE_DIR")
    path = Path(override) if override else Path(platformdirs.user_cache_dir(APP_NAME))
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir() -> Path:
    """Folder for user data that cannot be recomputed cheaply (downloaded models)."""
    override = os.environ.get("REDUB_DATA_DIR")
    path = Path(override) if override else Path(platformdirs.user_data_dir(APP_NAME))
    path.mkdir(parents=True, exist_ok=True)
    return path
