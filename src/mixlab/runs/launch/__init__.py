"""Launchers: where mixlab's many-run work (training variants, evaluation workers) executes.

One experiment config, three backends, chosen with ``--backend``:

* ``local`` (default): a process pool on this machine, one torch thread per worker
  (:mod:`mixlab.runs.launch.local`);
* ``ray``: one Ray task per job with its resource request and a retry limit; joins a cluster with
  ``--ray-address`` or starts a local one (:mod:`mixlab.runs.launch.ray`);
* ``slurm``: job arrays through ``submitit``, dependent stages (train, then evaluate) and automatic
  re-submission when a job hits its time limit (:mod:`mixlab.runs.launch.slurm`).

The shared types (config, :class:`Job`, results, the :class:`Launcher` interface) are in
:mod:`mixlab.runs.launch.jobs`; this module picks the launcher. A :class:`Job` is a module-level function plus its arguments, so every backend can ship it to
another process or machine. Jobs are *resumable by construction*: a training job resumes from its
last checkpoint and skips a finished run; a sweep worker only evaluates what the results store
lacks. That is what makes Ray retries and Slurm re-submissions safe: running a job twice never
computes anything twice. Every launcher checks its backend (cluster reachable, ``sbatch``
present, resources a node can meet) in :meth:`Launcher.check` before any job starts.
"""

from __future__ import annotations

from mixlab.errors import MixlabError
from mixlab.runs.launch.jobs import (
    Job,
    JobResult,
    LaunchConfig,
    LaunchError,
    Launcher,
    OnDone,
    RayOptions,
    Resources,
    SlurmOptions,
    last_error_line,
    raise_failures,
    resources,
    run_jobs,
)

__all__ = ["Job", "JobResult", "LaunchConfig", "LaunchError", "Launcher", "OnDone", "RayOptions", "Resources",
           "SlurmOptions", "last_error_line", "launcher_for", "raise_failures", "resources", "run_jobs"]


def launcher_for(cfg: LaunchConfig, folder: str | None = None) -> Launcher:
    """The launcher of ``cfg.backend``; ``folder`` is where Slurm logs go unless the config says."""
    if cfg.backend == "local":
        from mixlab.runs.launch.local import LocalLauncher

        return LocalLauncher(cfg.workers, threads=cfg.cpus)
    if cfg.backend == "ray":
        from mixlab.runs.launch.ray import RayLauncher

        return RayLauncher(cfg.ray, cfg.workers)
    try:
        from mixlab.runs.launch.slurm import SlurmLauncher
    except ImportError as e:
        raise MixlabError(f"the slurm backend needs submitit ({e}); install it with `pip install 'mixlab[dist]'`") from None
    return SlurmLauncher(cfg.slurm, cfg.slurm.folder or folder or "slurm")
