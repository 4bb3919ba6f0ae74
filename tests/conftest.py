"""Test set-up: point MIXLAB_DATA_DIR at ../shared/data when it exists, one torch thread."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_SHARED = ROOT.parent / "shared" / "data"
if "MIXLAB_DATA_DIR" not in os.environ and _SHARED.is_dir():
    os.environ["MIXLAB_DATA_DIR"] = str(_SHARED)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _data_dir() -> Path | None:
    d = os.environ.get("MIXLAB_DATA_DIR")
    return Path(d) if d and Path(d).is_dir() else None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared real data; tests that need it skip (with the reason) when it is absent."""
    d = _data_dir()
    if d is None:
        pytest.skip("real data not available: set MIXLAB_DATA_DIR to the shared data folder")
    return d


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    yield
