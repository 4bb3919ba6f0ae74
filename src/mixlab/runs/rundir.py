"""The run directory contract shared by every stage.

``config.yaml`` (resolved config), ``meta.json`` (git commit, config hash, seed, host, versions,
timings), ``checkpoints/step-N/`` and ``metrics.jsonl``. All writes go through :mod:`mixlab.atomic`.

:class:`RunDir` is the one life cycle every stage follows (pretrain, each fine-tuning method,
distill; the data build records the same provenance)::

    run = RunDir.open(out, cfg, "finetune")      # an error if out holds another config's run
    if run.complete:
        return result_from(run.meta)             # same config hash, finished: skip
    run.start(cfg.seed, plan=...)                # config.yaml + meta.json {"status": "running", ...}
    ...                                          # train; a killed run resumes from its checkpoints
    run.finish(steps=..., timings=...)           # meta.json {"status": "complete", ...}
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
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from mixlab import atomic
from mixlab.config import StrictModel, config_hash, dump_yaml

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


@dataclass
class RunDir:
    """A stage's run directory for one config: the resume check, then meta "running" -> "complete".

    ``meta`` is the ``meta.json`` read by :meth:`open` (a run of the same config) or written by
    :meth:`start`; None for a directory that holds no run yet.
    """

    path: Path
    cfg: BaseModel
    stage: str
    meta: dict[str, Any] | None = None

    @classmethod
    def open(cls, path: str | Path, cfg: BaseModel, stage: str) -> "RunDir":
        """The run directory ``path`` for ``cfg``: an error if it holds another config's run."""
        path = Path(path)
        return cls(path, cfg, stage, check_run_dir(path, cfg))

    @property
    def complete(self) -> bool:
        """True when ``path`` holds a finished run of this config (the stage skips it)."""
        return bool(self.meta and self.meta.get("status") == "complete")

    @property
    def exists(self) -> bool:
        """True when ``path`` holds a (finished or interrupted) run of this config."""
        return self.meta is not None

    def provenance(self, seed: int | None, **fields: Any) -> dict[str, Any]:
        """The provenance every run records (:func:`base_meta`), then ``fields``; what a stage that
        writes its directory in one atomic step (the data build) puts in its ``meta.json``."""
        return {**base_meta(self.cfg, seed), **fields}

    def start(self, seed: int | None, **fields: Any) -> dict[str, Any]:
        """Write ``config.yaml`` and ``meta.json`` with status "running" (plus ``fields``)."""
        self.path.mkdir(parents=True, exist_ok=True)
        write_config(self.path, self.cfg)
        self.meta = self.provenance(seed, stage=self.stage, status="running", **fields)
        atomic.write_json(self.path / "meta.json", self.meta)
        return self.meta

    def finish(self, **fields: Any) -> dict[str, Any]:
        """Mark the run complete in ``meta.json``, adding ``fields``; returns the meta written."""
        assert self.meta is not None, "RunDir.finish before start"
        self.meta.update({"status": "complete", **fields})
        atomic.write_json(self.path / "meta.json", self.meta)
        return self.meta


class CheckpointSection(StrictModel):
    """``checkpoint:`` of a training config: how often the run directory gets a ``checkpoints/step-N/``."""

    every: int = Field(0, ge=0, description="steps between checkpoints (0: only the final one)")
    keep_optimizer_states: int = Field(1, ge=1)


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
