"""The run directory contract shared by every stage.

``config.yaml`` (resolved config), ``meta.json`` (git commit, config hash, seed, host, versions,
timings), ``checkpoints/step-N/`` and ``metrics.jsonl``. All writes go through :mod:`mixlab.atomic`.
"""

from __future__ import annotations

import functools
import platform
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mixlab import atomic
from mixlab.config import config_hash, dump_yaml

_VERSIONED = ("mixlab", "torch", "transformers", "tokenizers", "peft", "trl", "lm_eval", "datasets", "numpy")


@functools.cache
def git_commit() -> str | None:
    """The mixlab checkout's commit (with ``-dirty`` when it has local changes), or None."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            continue
    return out


def base_meta(cfg: BaseModel, seed: int | None = None) -> dict[str, Any]:
    """The metadata every run records: provenance of code, config and machine."""
    return {
        "git_commit": git_commit(),
        "config_hash": config_hash(cfg),
        "seed": seed,
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_config(run_dir: Path, cfg: BaseModel) -> Path:
    return atomic.write_text(Path(run_dir) / "config.yaml", dump_yaml(cfg))


def check_run_dir(out: Path, cfg: BaseModel) -> dict[str, Any] | None:
    """The existing ``meta.json`` of run directory ``out`` if it belongs to the same config (so the run
    resumes), None for a new directory, and an error if ``out`` holds another config's run."""
    import json

    from mixlab.errors import MixlabError
    from mixlab.train import checkpoint

    meta_path = Path(out) / "meta.json"
    if not meta_path.is_file():
        if checkpoint.latest(out) is not None:
            raise MixlabError(f"{out} holds checkpoints but no meta.json; use a new --out directory")
        return None
    meta = json.loads(meta_path.read_text())
    if meta.get("config_hash") != config_hash(cfg):
        raise MixlabError(f"{out} holds a run of a different config (hash {meta.get('config_hash')} != "
                          f"{config_hash(cfg)}); use a new --out directory or the original config")
    return meta


class Timer:
    """Accumulates wall time per named stage (training, evaluation, checkpoint_io, ...)."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}

    def section(self, name: str):
        timer = self

        class _Section:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                timer.totals[name] = timer.totals.get(name, 0.0) + time.perf_counter() - self.t0

        return _Section()
