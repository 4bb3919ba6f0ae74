"""The ``--backend`` options shared by every multi-run command (``sweep``, ``swarm run``)."""

from __future__ import annotations

from typing import Any

import typer

from mixlab.config import validate

BackendOpt = typer.Option(None, "--backend", help="local (process pool, default) | ray | slurm")
WorkersOpt = typer.Option(None, "--workers", help="Jobs at once (local) and evaluation workers (every backend).")
RayAddressOpt = typer.Option(None, "--ray-address", help="Join this Ray cluster (HOST:PORT, ray://HOST:10001, auto); "
                                                         "default: start a local one.")
CpusOpt = typer.Option(None, "--cpus", help="CPUs per job (Ray / Slurm request; torch threads).")
GpusOpt = typer.Option(None, "--gpus", help="GPUs per job.")
MemOpt = typer.Option(None, "--mem-gb", help="Memory per job in GB.")
RetriesOpt = typer.Option(None, "--max-retries", help="Ray: retries of a failed task; Slurm: re-submissions.")
PartitionOpt = typer.Option(None, "--partition", help="Slurm partition.")
TimeOpt = typer.Option(None, "--time", help="Slurm time limit per job, minutes (a job that hits it is re-submitted).")
ArrayOpt = typer.Option(None, "--array-parallelism", help="Slurm array tasks running at once.")
SlurmLocalOpt = typer.Option(False, "--slurm-local", help="Run the Slurm jobs with submitit's local executor.")


def launch_config(base: Any = None, backend: str | None = None, workers: int | None = None,
                  ray_address: str | None = None, cpus: int | None = None, gpus: float | None = None,
                  mem_gb: float | None = None, max_retries: int | None = None, partition: str | None = None,
                  time_min: int | None = None, array_parallelism: int | None = None,
                  slurm_local: bool = False):
    """``base`` (a LaunchConfig, e.g. a swarm config's ``launch:``) with the command-line flags applied."""
    from mixlab.runs.launch import LaunchConfig

    data = (base or LaunchConfig()).model_dump(mode="json")
    top = {"backend": backend, "workers": workers, "cpus": cpus, "gpus": gpus, "mem_gb": mem_gb}
    data |= {k: v for k, v in top.items() if v is not None}
    if ray_address is not None:
        data["ray"]["address"] = ray_address
    if max_retries is not None:
        data["ray"]["max_retries"] = data["slurm"]["max_requeue"] = max_retries
    slurm = {"partition": partition, "time_min": time_min, "array_parallelism": array_parallelism}
    data["slurm"] |= {k: v for k, v in slurm.items() if v is not None}
    if slurm_local:
        data["slurm"]["cluster"] = "local"
    return validate(LaunchConfig, data, "command line")
