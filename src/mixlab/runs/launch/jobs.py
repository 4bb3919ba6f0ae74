"""What every launcher shares: the launch config, jobs, their results and the launcher interface.

Kept apart from the package's ``__init__`` (which picks a launcher and imports the backends) so the
backend modules build on these types without importing the module that imports them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import Field

from mixlab.config import StrictModel
from mixlab.errors import MixlabError

# ---------------------------------------------------------------- config


class RayOptions(StrictModel):
    """``address``: an existing cluster (``host:port``, ``ray://host:10001`` or ``auto``); None
    starts a local one with ``num_cpus`` CPUs (default: the workers asked for)."""

    address: str | None = None
    num_cpus: int | None = Field(None, ge=1)
    max_retries: int = Field(2, ge=0, description="re-runs of a task whose worker died or raised")
    dashboard: bool = True


class SlurmOptions(StrictModel):
    """Slurm resources through submitit. ``cluster: local`` runs the same jobs with submitit's
    local executor (no Slurm needed: for tests and debugging)."""

    cluster: Literal["slurm", "local"] = "slurm"
    partition: str | None = None
    time_min: int = Field(60, ge=1, description="time limit of each job; a job that hits it is re-submitted")
    array_parallelism: int = Field(64, ge=1, description="array tasks running at once")
    max_requeue: int = Field(3, ge=0, description="re-submissions after time limits or preemptions")
    folder: str | None = Field(None, description="logs and pickles (default: <experiment>/slurm)")
    additional: dict[str, str] = Field(default_factory=dict, description="extra #SBATCH options")


class LaunchConfig(StrictModel):
    """Where jobs run and what each asks for (``cpus``/``gpus``/``mem_gb`` per job)."""

    backend: Literal["local", "ray", "slurm"] = "local"
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1,
                         description="jobs at once (local); evaluation workers (every backend); default: the cores")
    cpus: int = Field(1, ge=1)
    gpus: float = Field(0, ge=0)
    mem_gb: float | None = Field(None, gt=0)
    ray: RayOptions = Field(default_factory=RayOptions)
    slurm: SlurmOptions = Field(default_factory=SlurmOptions)


# ---------------------------------------------------------------- jobs


@dataclass(frozen=True)
class Resources:
    cpus: int = 1
    gpus: float = 0
    mem_gb: float | None = None


@dataclass(frozen=True)
class Job:
    """``fn(*args, **kwargs)``; ``fn`` must be a module-level function (it is pickled by name)."""

    name: str
    fn: Callable[..., Any]
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    resources: Resources = Resources()

    def __call__(self) -> Any:
        return self.fn(*self.args, **self.kwargs)


@dataclass
class JobResult:
    name: str
    ok: bool
    value: Any = None
    error: str | None = None


OnDone = Callable[[JobResult], None]


class LaunchError(MixlabError):
    """Some jobs failed; the message lists them. Re-running resumes (finished work is kept)."""


class Launcher(Protocol):
    def check(self, jobs: Sequence[Job]) -> None:
        """Raise :class:`MixlabError` (saying what to fix) when the jobs cannot run here; starts nothing."""

    def run_stages(self, stages: Sequence[Sequence[Job]], on_done: OnDone | None = None) -> list[list[JobResult]]:
        """Run stage after stage (a stage starts when every job of the previous one succeeded)."""


def run_jobs(launcher: Launcher, jobs: Sequence[Job], on_done: OnDone | None = None) -> list[JobResult]:
    return launcher.run_stages([jobs], on_done)[0]


def raise_failures(results: Sequence[JobResult], what: str) -> None:
    """A :class:`LaunchError` naming every failed job and the start of its error."""
    bad = [r for r in results if not r.ok]
    if bad:
        lines = [f"  {r.name}: {last_error_line(r.error)}" for r in bad]
        raise LaunchError(f"{len(bad)} of {len(results)} {what} failed:\n" + "\n".join(lines)
                          + "\nfix the cause and run the same command again: finished work is kept")


def last_error_line(error: str | None) -> str:
    """The ``SomeError: message`` line of a traceback (the last one), else its last line."""
    lines = [ln.strip() for ln in (error or "failed").strip().splitlines() if ln.strip()]
    hits = [ln for ln in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b", ln)]
    return (hits or lines or ["failed"])[-1][:300]


def resources(cfg: LaunchConfig) -> Resources:
    return Resources(cfg.cpus, cfg.gpus, cfg.mem_gb)
