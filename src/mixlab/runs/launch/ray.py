"""The Ray backend: every job is a Ray task with its resource request (CPUs, GPUs, memory).

``address`` joins an existing cluster (its nodes need mixlab installed and the experiment's files
on a shared filesystem); without one a local cluster starts and stops with the run. A task whose
worker dies or raises is retried up to ``max_retries`` times: jobs resume from their own files, so
a retry never recomputes finished work. Stages are chained the Ray way: each task of stage k+1
takes the stage-k results as arguments, so Ray starts it only when they all succeeded. Ray's
dashboard works as usual on the cluster (``dashboard: false`` skips it for a local one).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

from mixlab.errors import MixlabError
from mixlab.runs.launch.jobs import Job, JobResult, OnDone, RayOptions

_ENV_PREFIXES = ("MIXLAB_", "HF_", "TRANSFORMERS_", "TOKENIZERS_")


def _call(job: Job, *_after: Any) -> Any:
    """The task body; ``_after`` are the previous stage's results (only there to order the stages)."""
    import torch

    torch.set_num_threads(max(1, job.resources.cpus))
    return job()


def check_reachable(address: str, timeout_s: float = 3.0) -> None:
    """Fail fast (before Ray's own minute of retries) when ``host:port`` does not answer."""
    if address in ("auto", "local"):
        return
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    if not parsed.hostname or not parsed.port:
        raise MixlabError(f"--ray-address {address!r}: expected HOST:PORT (the head's GCS port, 6379 by default), "
                          "ray://HOST:10001 or auto")
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=timeout_s):
            pass
    except OSError as e:
        raise MixlabError(f"cannot reach the Ray cluster at {address} ({e.strerror or e}); start it with "
                          "`ray start --head` on the head node, fix --ray-address, or drop --ray-address to "
                          "start a local cluster") from None


def largest_node(nodes: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Per resource, the most any one live node offers (a task runs on one node)."""
    best: dict[str, float] = {}
    for n in nodes:
        if n.get("Alive", True):
            for k, v in n.get("Resources", {}).items():
                best[k] = max(best.get(k, 0.0), float(v))
    return best


def unmeetable(jobs: Sequence[Job], node: dict[str, float]) -> list[str]:
    """What some job asks for beyond the largest node (empty when every job fits)."""
    out = []
    for j in jobs:
        r = j.resources
        asks = {"CPU": r.cpus, "GPU": r.gpus, "memory": (r.mem_gb or 0) * 1e9}
        for key, want in asks.items():
            if want and want > node.get(key, 0.0) + 1e-9:
                unit = (lambda v: f"{v / 1e9:.3g} GB") if key == "memory" else (lambda v: f"{v:g}")
                out.append(f"job {j.name} asks {unit(want)} {key} but the largest node has {unit(node.get(key, 0.0))}")
    return out


class RayLauncher:
    def __init__(self, opts: RayOptions, workers: int = 1):
        self.opts, self.workers = opts, workers
        self._started = False

    # ------------------------------------------------------------ connection

    def connect(self) -> None:
        try:
            import ray
        except ImportError as e:
            raise MixlabError(f"the ray backend needs Ray ({e}); install it with `pip install 'mixlab[dist]'`") from None

        if ray.is_initialized():
            return
        if self.opts.address:
            check_reachable(self.opts.address)
            env = {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)}
            try:
                ray.init(address=self.opts.address, log_to_driver=False, runtime_env={"env_vars": env})
            except ConnectionError as e:
                raise MixlabError(f"cannot join the Ray cluster at {self.opts.address}: {e}; start one with "
                                  "`ray start --head` or drop --ray-address") from None
        else:
            ray.init(address="local", num_cpus=self.opts.num_cpus or self.workers, log_to_driver=False,
                     include_dashboard=self.opts.dashboard, object_store_memory=200 * 1024**2)
        self._started = True

    def shutdown(self) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = False

    def check(self, jobs: Sequence[Job]) -> None:
        """Connect (or start the local cluster) and refuse jobs no node can run."""
        import ray

        self.connect()
        bad = unmeetable(jobs, largest_node(ray.nodes()))
        if bad:
            self.shutdown()
            raise MixlabError("the Ray cluster cannot meet these resource requests: " + "; ".join(bad[:5])
                              + ". Lower --cpus/--gpus/--mem-gb or add larger nodes.")

    # ------------------------------------------------------------ running

    def run_stages(self, stages: Sequence[Sequence[Job]], on_done: OnDone | None = None) -> list[list[JobResult]]:
        import ray

        self.check([j for s in stages for j in s])
        try:
            task = ray.remote(_call)
            refs: list[list[Any]] = []
            for stage in stages:
                after = refs[-1] if refs else []
                refs.append([task.options(
                    name=job.name, num_cpus=job.resources.cpus, num_gpus=job.resources.gpus,
                    memory=int(job.resources.mem_gb * 1e9) if job.resources.mem_gb else None,
                    max_retries=self.opts.max_retries, retry_exceptions=True,
                ).remote(job, *after) for job in stage])
            return self._collect(stages, refs, on_done)
        finally:
            self.shutdown()

    def _collect(self, stages: Sequence[Sequence[Job]], refs: list[list[Any]],
                 on_done: OnDone | None) -> list[list[JobResult]]:
        import ray

        names = {ref: job.name for stage, rs in zip(stages, refs) for job, ref in zip(stage, rs)}
        results: dict[Any, JobResult] = {}
        pending = [r for rs in refs for r in rs]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            ref = ready[0]
            try:
                res = JobResult(names[ref], True, ray.get(ref))
            except ray.exceptions.RayError as e:
                res = JobResult(names[ref], False, error=_reason(e))
            results[ref] = res
            if on_done is not None:
                on_done(res)
        return [[results[r] for r in rs] for rs in refs]


def _reason(e: Exception) -> str:
    import ray

    cause = getattr(e, "cause", None)
    if isinstance(e, ray.exceptions.RayTaskError) and cause is not None:
        return f"{type(cause).__name__}: {cause}"
    return str(e)
