"""The local backend: a pool of worker processes on this machine, one torch thread each.

Processes rather than threads: PyTorch's CPU kernels at proxy scale scale better across processes
than within one, and a crashed job cannot take the others down. ``workers=1`` runs the jobs in this
process, one after another (no start-up cost, and tracebacks point at the real line).
"""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

from mixlab.runs.launch.jobs import Job, JobResult, OnDone, raise_failures


# Modules every worker needs: the fork server imports them once, and each worker forks from it
# already loaded (a spawned worker spends ~7 s importing torch and transformers before its first job).
PRELOAD = ["torch", "transformers", "mixlab.train.pretrain", "mixlab.train.sft", "mixlab.runs.sweep"]


def mp_context():
    """A ``forkserver`` context whose server has :data:`PRELOAD` imported (one per parent process,
    shared by every pool and stage). Workers fork from that clean single-threaded server, never from
    this process with its progress-bar threads; ``spawn`` where fork is unavailable."""
    import multiprocessing as mp

    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _call(job: Job) -> object:
    return job()


class LocalLauncher:
    def __init__(self, workers: int = 1, threads: int = 1):
        self.workers, self.threads = workers, threads

    def check(self, jobs: Sequence[Job]) -> None:
        """Nothing can be missing on this machine."""

    def run_stages(self, stages: Sequence[Sequence[Job]], on_done: OnDone | None = None) -> list[list[JobResult]]:
        out: list[list[JobResult]] = []
        for i, stage in enumerate(stages):
            if i:
                raise_failures(out[-1], f"jobs of stage {i}")
            out.append(self._run(stage, on_done))
        return out

    def _run(self, jobs: Sequence[Job], on_done: OnDone | None) -> list[JobResult]:
        results: dict[str, JobResult] = {}

        def done(r: JobResult) -> None:
            results[r.name] = r
            if on_done is not None:
                on_done(r)

        if self.workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                try:
                    done(JobResult(job.name, True, job()))
                except Exception:
                    done(JobResult(job.name, False, error=traceback.format_exc()))
            return [results[j.name] for j in jobs]
        with ProcessPoolExecutor(min(self.workers, len(jobs)), mp_context=mp_context(),
                                 initializer=_init_worker, initargs=(self.threads,)) as pool:
            futures = {pool.submit(_call, job): job for job in jobs}
            for fut in as_completed(futures):
                job = futures[fut]
                try:
                    done(JobResult(job.name, True, fut.result()))
                except BrokenProcessPool:
                    done(JobResult(job.name, False, error="a worker process died (killed or out of memory)"))
                except Exception as e:
                    done(JobResult(job.name, False, error="".join(traceback.format_exception(e))))
        return [results[j.name] for j in jobs]
