"""Process-wide settings read from the environment (one place, so nothing hard-codes a path)."""

from __future__ import annotations

import os
from pathlib import Path

from mixlab.errors import DataError

DATA_DIR_ENV = "MIXLAB_DATA_DIR"
CACHE_DIR_ENV = "MIXLAB_CACHE_DIR"


def data_dir(explicit: str | Path | None = None) -> Path:
    """Root folder of the local datasets: ``explicit``, else ``$MIXLAB_DATA_DIR``, else ``./data``."""
    if explicit is not None:
        return Path(explicit).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else Path("data")


def require_dir(path: Path, what: str, layout: str) -> Path:
    """Return ``path`` if it exists, else fail with the expected layout so the user can fix it."""
    if not path.exists():
        raise DataError(
            f"{what} not found. Expected layout:\n{layout}\n"
            f"Set {DATA_DIR_ENV} (or the source's `path:`) to the folder that holds it.",
            path,
        )
    return path


def cache_dir() -> Path:
    """Where converted models and other derived artefacts are cached (``$MIXLAB_CACHE_DIR``)."""
    env = os.environ.get(CACHE_DIR_ENV)
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mixlab"
    base.mkdir(parents=True, exist_ok=True)
    return base
