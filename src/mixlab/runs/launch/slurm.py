"""The Slurm backend, through ``submitit``: job arrays, dependent stages, re-submission on timeout.

Each stage is one job array (``array_parallelism`` tasks at once) with the requested partition,
time limit, CPUs, GPUs and memory; stage k+1 is submitted at once with ``--dependency=afterok`` on
stage k, so a chain (train every variant, then evaluate) waits in Slurm's queue, not here. Every
job body is a :class:`ResumableJob` (submitit's ``Checkpointable``): when Slurm signals the time
limit or a preemption, submitit re-submits the same call, which resumes from the job's own files
(the last checkpoint of a training run, the finished results of a sweep), up to ``max_requeue``
times. ``cluster: local`` runs the very same jobs with submitit's local executor (processes on this
machine, same signals and re-submission; stages run one after the other).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import submitit

from mixlab.errors import MixlabError
from mixlab.runs.launch.jobs import Job, JobResult, OnDone, Resources, SlurmOptions, raise_failures


class ResumableJob(submitit.helpers.Checkpointable):
    """Runs one mixlab job; on a time limit or preemption submitit re-submits it unchanged (the
    job resumes from its files, so nothing finished is redone)."""

    def __call__(self, job: Job) -> Any:
        import torch

        torch.set_num_threads(max(1, job.resources.cpus))
        return job()


# ---------------------------------------------------------------- cluster checks


def parse_time_min(text: str) -> float | None:
    """Minutes of a Slurm time limit (``infinite``, ``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M[:S]``)."""
    text = text.strip()
    if text in ("infinite", "UNLIMITED", "NOT_SET", "") or not re.fullmatch(r"[\d:-]+", text):
        return None
    days, _, rest = text.rpartition("-") if "-" in text else ("0", "", text)
    parts = [int(p) for p in rest.split(":")]
    if "-" in text:
        h, m, s = (parts + [0, 0])[:3]
    elif len(parts) == 3:
        h, m, s = parts
    else:
        h, (m, s) = 0, (parts + [0])[:2]
    return int(days or 0) * 1440 + h * 60 + m + s / 60


def _gpus(gres: str) -> int:
    return sum(int(m.group(1)) for m in re.finditer(r"gpu(?::[\w.-]+)?:(\d+)", gres))


def partition_limits(sinfo_lines: Sequence[str], partition: str | None) -> dict[str, float | None]:
    """Largest node of ``partition`` (default partition when None) from ``sinfo -h -o '%P|%c|%m|%G|%l'``."""
    rows = [line.strip().split("|") for line in sinfo_lines if line.count("|") >= 4]
    known = sorted({r[0].rstrip("*") for r in rows})
    if partition is None:
        chosen = [r for r in rows if r[0].endswith("*")] or rows
    else:
        chosen = [r for r in rows if r[0].rstrip("*") == partition]
        if not chosen:
            raise MixlabError(f"Slurm has no partition {partition!r} (partitions: {', '.join(known) or 'none'}); "
                              "fix --partition")
    cpus = max(int(re.sub(r"\D", "", r[1]) or 0) for r in chosen)
    mem = max(int(re.sub(r"\D", "", r[2]) or 0) for r in chosen) / 1024
    times = [parse_time_min(r[4]) for r in chosen]
    return {"cpus": cpus, "mem_gb": mem, "gpus": max(_gpus(r[3]) for r in chosen),
            "time_min": None if any(t is None for t in times) else max(times)}


def unmeetable(res: Resources, time_min: float, limits: dict[str, float | None]) -> list[str]:
    out = []
    for key, want, flag in (("cpus", res.cpus, "--cpus"), ("gpus", res.gpus, "--gpus"), ("mem_gb", res.mem_gb, "--mem-gb"),
                            ("time_min", time_min, "--time")):
        have = limits.get(key)
        if want and have is not None and want > have:
            out.append(f"{flag} {want:g} > {have:g} {key.split('_')[-1] if key != 'cpus' else 'cpus'} on the largest node")
    return out


# ---------------------------------------------------------------- the launcher


class SlurmLauncher:
    def __init__(self, opts: SlurmOptions, folder: str | Path):
        self.opts, self.folder = opts, Path(folder)

    def check(self, jobs: Sequence[Job]) -> None:
        """``sbatch`` on PATH, the partition exists and its largest node meets every job's request."""
        if self.opts.cluster == "local":
            return
        if shutil.which("sbatch") is None:
            raise MixlabError("`sbatch` was not found on PATH: run from a Slurm login node (or load its module), "
                              "or use --backend local / --backend ray; `--slurm-local` runs the same jobs "
                              "with submitit's local executor")
        if shutil.which("sinfo") is None:
            return
        out = subprocess.run(["sinfo", "-h", "-o", "%P|%c|%m|%G|%l"], capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            raise MixlabError(f"`sinfo` failed ({out.stderr.strip()[:200]}); is the Slurm controller reachable?")
        limits = partition_limits(out.stdout.splitlines(), self.opts.partition)
        bad = sorted({m for j in jobs for m in unmeetable(j.resources, self.opts.time_min, limits)})
        if bad:
            part = self.opts.partition or "the default partition"
            raise MixlabError(f"{part} cannot meet the request: " + "; ".join(bad)
                              + ". Lower the request or pick another --partition.")

    def executor(self, name: str, res: Resources, after: Sequence[Any] = ()) -> submitit.AutoExecutor:
        n = self.opts.max_requeue
        ex = submitit.AutoExecutor(folder=self.folder, cluster=self.opts.cluster,
                                   slurm_max_num_timeout=n, local_max_num_timeout=n)
        extra = dict(self.opts.additional)
        if after:
            extra["dependency"] = "afterok:" + ":".join(sorted({str(j.job_id).split("_")[0] for j in after}))
        ex.update_parameters(name=name, timeout_min=self.opts.time_min, cpus_per_task=res.cpus,
                             gpus_per_node=int(res.gpus), mem_gb=res.mem_gb, slurm_partition=self.opts.partition,
                             slurm_array_parallelism=self.opts.array_parallelism,
                             slurm_additional_parameters=extra or None)
        return ex

    def submit(self, jobs: Sequence[Job], after: Sequence[Any] = ()) -> list[Any]:
        """Submit ``jobs`` as one array (grouped by resource request); returns submitit job handles."""
        handles: dict[str, Any] = {}
        groups: dict[Resources, list[Job]] = {}
        for j in jobs:
            groups.setdefault(j.resources, []).append(j)
        for res, group in groups.items():
            ex = self.executor(group[0].name.split("-")[0] or "mixlab", res, after)
            with ex.batch():
                subs = [(j, ex.submit(ResumableJob(), j)) for j in group]
            handles |= {j.name: h for j, h in subs}
        return [handles[j.name] for j in jobs]

    def run_stages(self, stages: Sequence[Sequence[Job]], on_done: OnDone | None = None) -> list[list[JobResult]]:
        self.check([j for s in stages for j in s])
        if self.opts.cluster == "local":  # no scheduler to hold dependent jobs: run stage after stage
            out: list[list[JobResult]] = []
            for i, stage in enumerate(stages):
                if i:
                    raise_failures(out[-1], f"jobs of stage {i}")
                out.append(self._local_stage(stage, on_done))
            return out
        handles: list[list[Any]] = []
        for stage in stages:
            handles.append(self.submit(stage, handles[-1] if handles else ()))
        return [wait(stage, hs, on_done) for stage, hs in zip(stages, handles)]

    def _local_stage(self, jobs: Sequence[Job], on_done: OnDone | None) -> list[JobResult]:
        """The local executor starts every job at once: submit ``array_parallelism`` at a time."""
        step = self.opts.array_parallelism
        results: list[JobResult] = []
        for i in range(0, len(jobs), step):
            chunk = jobs[i:i + step]
            results += wait(chunk, self.submit(chunk), on_done)
        return results


def wait(jobs: Sequence[Job], handles: Sequence[Any], on_done: OnDone | None, poll_s: float = 1.0) -> list[JobResult]:
    """Wait for every handle; a failed job's result carries the end of its traceback."""
    results: dict[str, JobResult] = {}
    pending = dict(zip((j.name for j in jobs), handles))
    while pending:
        for name, h in list(pending.items()):
            if not h.done():
                continue
            del pending[name]
            try:
                res = JobResult(name, True, h.result())
            except Exception as e:  # FailedJobError carries the job's traceback; UncompletedJobError: killed
                res = JobResult(name, False, error=f"(logs: {h.paths.stdout.parent}) {type(e).__name__}: {e}")
            results[name] = res
            if on_done is not None:
                on_done(res)
        if pending:
            time.sleep(poll_s)
    return [results[j.name] for j in jobs]
