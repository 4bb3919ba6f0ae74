"""Multi-process training through ``torch.distributed``: launch, rank queries, DDP, batch sharding.

:func:`launch` starts ``nproc`` workers on this machine through torch's elastic launcher, the
engine behind ``torchrun --standalone`` (a local c10d rendezvous; ``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT`` in each worker's environment), initializes the
process group there (``nccl`` on GPUs, ``gloo`` on CPU) and runs ``fn(*args)`` in every rank; it
returns rank 0's result. The recipes (:func:`mixlab.train.pretrain.pretrain`,
:func:`mixlab.train.finetune.finetune`) run unchanged in one process or in every rank of a group: each rank
trains its contiguous share of every optimizer step's global batch (:func:`split_batch`), gradients
are averaged by DDP, and rank 0 alone writes the run directory, so checkpoints, resume and
``metrics.jsonl`` are those of a single process. A script started by ``torchrun`` directly works too:
call :func:`init` first.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, Literal, TypeVar

import torch
import torch.distributed as dist

from mixlab.errors import ConfigError, MixlabError

Backend = Literal["auto", "nccl", "gloo"]
T = TypeVar("T")
_USER_ERROR = "MixlabWorkerError"
# How long a rank waits in a collective. Generous because rank 0 evaluates (and trains the tokenizer)
# alone while the others wait; a rank that dies is caught sooner by the launcher, which watches them all.
COLLECTIVE_TIMEOUT = timedelta(hours=2)


class MixlabWorkerError(Exception):
    """A user error (:class:`MixlabError`) raised in a worker; the launcher turns it back into one."""


# ---------------------------------------------------------------- checks before any process starts


def cpu_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _wants_cuda(device: str) -> bool:
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def check_launch(nproc: int, device: str = "auto", backend: Backend = "auto") -> str:
    """The process-group backend for ``nproc`` workers on ``device`` (``train.device``); a ConfigError
    that says what to change when the request cannot run here."""
    if nproc < 1:
        raise ConfigError(f"--nproc {nproc}: give at least 1 process")
    if backend not in ("auto", "nccl", "gloo"):
        raise ConfigError(f"--dist-backend {backend!r}: choose auto, nccl or gloo")
    cuda = _wants_cuda(device)
    if backend == "nccl" and not torch.cuda.is_available():
        raise ConfigError("--dist-backend nccl needs CUDA GPUs, but torch sees none (torch.cuda.is_available() is "
                          "False); use --dist-backend gloo (or auto) to train on CPU")
    if backend == "nccl" and not cuda:
        raise ConfigError(f"--dist-backend nccl needs train.device on a GPU, but train.device={device}; "
                          "use --dist-backend gloo for CPU training or --set train.device=cuda")
    if cuda:
        if nproc > 1 and ":" in device:
            raise ConfigError(f"train.device={device} would put all {nproc} processes on one GPU; use "
                              "--set train.device=cuda (each process takes its own GPU) and choose the GPUs with "
                              "CUDA_VISIBLE_DEVICES")
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device={device} but torch sees no CUDA GPU; use --set train.device=cpu")
        gpus = torch.cuda.device_count()
        if nproc > gpus:
            raise ConfigError(f"--nproc {nproc} exceeds the {gpus} visible GPU(s): each process trains on its own "
                              f"GPU; lower --nproc to at most {gpus} (or expose more GPUs with CUDA_VISIBLE_DEVICES)")
    else:
        cores = cpu_cores()
        if nproc > cores:
            raise ConfigError(f"--nproc {nproc} exceeds the {cores} CPU core(s) available: each process needs a "
                              f"core of its own; lower --nproc to at most {cores}")
    return ("nccl" if cuda else "gloo") if backend == "auto" else backend


def split_batch(batch_size: int, micro_batch_size: int | None, world: int | None = None) -> tuple[int, int]:
    """``(examples per rank, micro-batch per rank)`` for a global batch split over ``world`` ranks.

    The global batch stays what the config says: each rank takes ``batch_size / world`` examples and
    accumulates them in micro-batches of at most ``micro_batch_size``.
    """
    world = world_size() if world is None else world
    if batch_size % world:
        raise ConfigError(f"train.batch_size={batch_size} cannot be split evenly over {world} processes; "
                          f"choose a batch size divisible by {world} (or another --nproc)")
    local = batch_size // world
    micro = min(micro_batch_size or batch_size, local)
    if local % micro:
        raise ConfigError(f"each of the {world} processes trains {local} examples per step, which "
                          f"train.micro_batch_size={micro_batch_size} does not divide; choose a micro-batch size "
                          f"that divides {local}")
    return local, micro


# ---------------------------------------------------------------- inside a rank


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    """True in a single process and in rank 0: the one process that writes the run directory."""
    return rank() == 0


def describe() -> dict[str, Any]:
    """What ``meta.json`` records about the process group."""
    if not is_initialized():
        return {"world_size": 1}
    return {"world_size": world_size(), "dist_backend": dist.get_backend()}


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (writes files); the other ranks run it once rank 0 is done."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """``value`` summed over ranks, in place (unchanged in a single process)."""
    if world_size() > 1:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def broadcast(obj: T) -> T:
    """Rank 0's ``obj`` on every rank (picklable objects)."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in DistributedDataParallel when there are several ranks (gradients averaged over ranks)."""
    if world_size() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    device = next(model.parameters()).device
    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)


def init(backend: str | None = None) -> None:
    """Join the process group described by the launcher's environment (``torchrun`` or :func:`launch`)."""
    if is_initialized():
        return
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        local = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(local)  # "cuda" means this rank's GPU from here on
        dist.init_process_group(backend, device_id=local, timeout=COLLECTIVE_TIMEOUT)
    else:
        dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)


# ---------------------------------------------------------------- launch


def launch(fn: Callable[..., T], *args: Any, nproc: int, backend: Backend = "auto", device: str = "auto",
           threads: int | None = None) -> T:
    """Run ``fn(*args)`` in ``nproc`` processes of one process group; return rank 0's result.

    ``fn`` must be importable by name (a module-level function) since workers are spawned fresh.
    ``threads`` sets torch's CPU threads per worker (default: the cores divided among the workers on
    CPU, as ``torchrun`` does with ``OMP_NUM_THREADS``). A :class:`MixlabError` in any rank comes back
    as a MixlabError naming the rank; other failures raise torch's ``ChildFailedError`` with each
    rank's traceback.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    backend = check_launch(nproc, device, backend)
    if threads is None and backend == "gloo" and "OMP_NUM_THREADS" not in os.environ:
        threads = max(1, cpu_cores() // nproc)
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0",  # torchrun --standalone
                          max_restarts=0, monitor_interval=0.1, start_method="spawn")
    try:
        results = elastic_launch(config, _worker)(fn, args, backend, threads)
    except ChildFailedError as e:
        failed_rank, failure = e.get_first_failure()
        message = failure.message.get("message", "") if isinstance(failure.message, dict) else str(failure.message)
        if message.startswith(_USER_ERROR + ": "):
            raise MixlabError(f"rank {failed_rank}: {message[len(_USER_ERROR) + 2:]}") from None
        raise
    return results[0]


def _worker(fn: Callable[..., T], args: tuple, backend: str, threads: int | None) -> T:
    """One rank: join the group, run ``fn``, leave; user errors keep their message for the launcher."""
    if threads:
        torch.set_num_threads(threads)
    init(backend)
    try:
        return fn(*args)
    except MixlabError as e:
        raise MixlabWorkerError(str(e)) from None
    finally:
        dist.destroy_process_group()


def run(fn: Callable[[Any, Any], T], cfg: Any, out: Any, *, nproc: int = 1, backend: Backend = "auto") -> T:
    """The recipe ``fn(cfg, out)`` (``pretrain``, ``finetune``) on ``nproc`` processes, checked first.

    ``cfg`` is a pretraining or fine-tuning config: its ``train.device``, ``train.batch_size`` and
    ``train.micro_batch_size`` decide the backend and each rank's share. With one process (and no
    backend asked for) ``fn`` runs here, in this process.
    """
    if nproc == 1 and backend == "auto":
        return fn(cfg, out)
    backend = check_run(cfg, nproc, backend)
    if nproc == 1:
        return fn(cfg, out)
    return launch(fn, cfg, out, nproc=nproc, backend=backend, device=cfg.train.device)


def check_run(cfg: Any, nproc: int, backend: Backend = "auto") -> str:
    """Every launch check for a training config on ``nproc`` processes; returns the backend."""
    t = cfg.train
    backend = check_launch(nproc, t.device, backend)
    split_batch(t.batch_size, t.micro_batch_size, nproc)
    return backend
