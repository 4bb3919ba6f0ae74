"""The one training loop, shared by pretraining and fine-tuning recipes.

It knows nothing about mixtures or tasks. A recipe hands it:
- a ``model`` (any ``torch.nn.Module``: a transformers model, a PEFT model, a DDP wrapper);
- a :class:`BatchSource` whose ``batch(step)`` returns the micro-batches of optimizer step
  ``step`` as a pure function of the step, so resuming needs no replay of the data stream;
- an :class:`Objective` that returns a summed loss and says how many target tokens a micro-batch
  holds, so gradient accumulation averages over every token of the step (right for SFT, where
  micro-batches carry different numbers of completion tokens) and extra terms (KL anchors) fit in;
- a :class:`LoopConfig` (optimizer, schedule, precision, intervals) and :class:`Hooks` (evaluation,
  progress, extra checkpoint info).

Read top to bottom, one optimizer step is: fetch micro-batches, forward/backward each under
autocast, clip, step, schedule; then log, evaluate and checkpoint when due.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import orjson
import torch

from mixlab import atomic
from mixlab.runs.rundir import Timer
from mixlab.train import checkpoint, distributed
from mixlab.train.schedule import ScheduleConfig, build_scheduler

MicroBatch = Mapping[str, torch.Tensor]


class BatchSource(Protocol):
    """Training data as a function of the optimizer step."""

    def batch(self, step: int) -> list[MicroBatch]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


class Objective(Protocol):
    """A loss: ``__call__`` returns ``(summed loss over target tokens, metrics)``."""

    def count(self, batch: MicroBatch) -> int: ...

    def __call__(self, model: torch.nn.Module, batch: MicroBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...


@dataclass
class LoopConfig:
    """Optimizer and bookkeeping settings; intervals of 0 mean "only at the end"."""

    total_steps: int
    lr: float
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float | None = 1.0
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    log_every: int = 10
    eval_every: int = 0
    checkpoint_every: int = 0
    keep_optimizer_states: int = 1
    seed: int = 0


@dataclass
class StepInfo:
    """What progress displays get after every optimizer step."""

    step: int
    total_steps: int
    tokens: int
    tokens_per_s: float
    loss: float | None = None


@dataclass
class Hooks:
    """Optional callbacks: ``evaluate(model, step) -> metrics``, ``on_step(info)``, extra checkpoint info."""

    evaluate: Callable[[torch.nn.Module, int], dict[str, float]] | None = None
    should_stop: Callable[[int, dict[str, float]], bool] | None = None  # after each evaluation (early stopping)
    on_step: Callable[[StepInfo], None] | None = None
    checkpoint_info: Callable[[], dict[str, Any]] | None = None
    tokenizer: Any | None = None


@dataclass
class LoopResult:
    step: int
    tokens: int
    timings: dict[str, float]
    last_metrics: dict[str, float]
    resumed_from: int | None
    stopped_early: bool = False


def build_optimizer(model: torch.nn.Module, cfg: LoopConfig) -> torch.optim.AdamW:
    """AdamW over trainable parameters; matrices decay, norms and biases do not (GPT-2 practice)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = next(iter(params)).is_cuda if params else False
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=fused or None)


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on GPU (or when asked), plain fp32 otherwise."""
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if not use_bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


class MetricsLog:
    """``metrics.jsonl`` (one JSON object per row) mirrored to TensorBoard event files."""

    def __init__(self, run_dir: Path, resume_step: int):
        from torch.utils.tensorboard import SummaryWriter

        self.path = run_dir / "metrics.jsonl"
        if self.path.exists():  # drop rows a killed run logged after its last checkpoint
            rows = [r for r in self.path.read_bytes().splitlines() if r.strip()]
            keep = [r for r in rows if _row_step(r) <= resume_step]
            atomic.write_bytes(self.path, b"".join(r + b"\n" for r in keep))
        self.tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step)
        self.file = open(self.path, "ab")

    def write(self, step: int, kind: str, values: Mapping[str, float]) -> None:
        row = {"step": step, "kind": kind, "time": round(time.time(), 3), **values}
        self.file.write(orjson.dumps(row, option=orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE))
        self.file.flush()
        for k, v in values.items():
            if isinstance(v, (int, float)):
                self.tb.add_scalar(f"{kind}/{k}", v, step)

    def close(self) -> None:
        self.file.close()
        self.tb.close()


def _row_step(raw: bytes) -> int:
    try:
        return int(orjson.loads(raw).get("step", 0))
    except (orjson.JSONDecodeError, TypeError, ValueError):
        return 1 << 62  # a torn last line from a killed run: drop it


def train(model: torch.nn.Module, data: BatchSource, objective: Objective, cfg: LoopConfig,
          run_dir: str | Path, hooks: Hooks | None = None) -> LoopResult:
    """Train ``model`` for ``cfg.total_steps`` optimizer steps, resuming from ``run_dir``'s latest checkpoint.

    Writes ``metrics.jsonl``, TensorBoard events and ``checkpoints/step-N/``; returns the final step,
    tokens trained and wall time per section (training / evaluation / checkpoint_io).

    In a process group (:mod:`mixlab.train.distributed`) every rank calls this with a DDP-wrapped
    ``model`` and its share of each step's batch. Each micro-batch's summed loss is divided by the
    step's token count over all ranks times the world size, so DDP's gradient average equals the
    single-process gradient even when ranks hold different numbers of target tokens (SFT). Rank 0
    alone evaluates (on the bare model), logs and checkpoints; evaluation scores are broadcast so
    every rank takes the same early-stopping decision.
    """
    hooks = hooks or Hooks()
    run_dir = Path(run_dir)
    device = next(model.parameters()).device
    main = distributed.is_main()
    world = distributed.world_size()
    torch.manual_seed(cfg.seed)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg.schedule, cfg.total_steps)
    timer = Timer()
    start, tokens, resumed_from = 0, 0, None
    last = checkpoint.latest(run_dir)
    if last is not None:
        with timer.section("checkpoint_io"):
            info = checkpoint.restore(last, model, optimizer, scheduler)
        start = resumed_from = int(info["step"])
        tokens = int(info["tokens"])
        data.load_state_dict(info["data"])
        for k, v in info.get("timings", {}).items():
            timer.totals[k] = timer.totals.get(k, 0.0) + float(v)
    log = MetricsLog(run_dir, start) if main else None
    params = [p for p in model.parameters() if p.requires_grad]
    amp = autocast_context(device, cfg.precision)
    last_metrics: dict[str, float] = {}
    loss_acc = torch.zeros((), device=device)
    n_acc = 0
    t_log = time.perf_counter()
    tokens_at_log = tokens

    def save(step: int) -> None:
        info = {"step": step, "tokens": tokens, "data": data.state_dict(), "timings": dict(timer.totals),
                **(hooks.checkpoint_info() if hooks.checkpoint_info else {})}
        checkpoint.save(checkpoint.step_dir(run_dir, step), model, optimizer, scheduler, info, hooks.tokenizer)
        checkpoint.prune_optimizer_states(run_dir, cfg.keep_optimizer_states)

    model.train()
    try:
        for step in range(start, cfg.total_steps):
            with timer.section("training"):
                micro = data.batch(step)
                counts = [objective.count(mb) for mb in micro]
                step_tokens = float(sum(counts))
                if world > 1:  # target tokens of the whole step, over every rank's share
                    total = torch.tensor(step_tokens, dtype=torch.float64, device=device)
                    step_tokens = float(distributed.all_reduce_sum(total))
                norm = step_tokens / world  # DDP averages over ranks: this makes it a mean over tokens
                for i, mb in enumerate(micro):
                    sync = contextlib.nullcontext() if i == len(micro) - 1 or not hasattr(model, "no_sync") else model.no_sync()
                    with sync:
                        with amp:
                            loss_sum, _ = objective(model, mb)
                        (loss_sum / norm).backward()
                    loss_acc += loss_sum.detach().float()
                grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip) if cfg.grad_clip else None
                lr = optimizer.param_groups[0]["lr"]
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                tokens += int(step_tokens)
                n_acc += int(step_tokens)
            done = step + 1
            final = done == cfg.total_steps
            loss_value = None
            if done % cfg.log_every == 0 or final:
                now = time.perf_counter()
                loss_value = float(distributed.all_reduce_sum(loss_acc)) / max(n_acc, 1)  # one host sync per interval
                rate = (tokens - tokens_at_log) / max(now - t_log, 1e-9)
                last_metrics = {"loss": loss_value, "lr": lr, "tokens": tokens, "tokens_per_s": rate}
                if grad_norm is not None:
                    last_metrics["grad_norm"] = float(grad_norm)
                if log:
                    log.write(done, "train", last_metrics)
                loss_acc.zero_()
                n_acc, t_log, tokens_at_log = 0, now, tokens
            if hooks.on_step:
                hooks.on_step(StepInfo(done, cfg.total_steps, tokens, last_metrics.get("tokens_per_s", 0.0), loss_value))
            if hooks.evaluate and ((cfg.eval_every and done % cfg.eval_every == 0) or final):
                with timer.section("evaluation"):
                    model.eval()
                    with torch.no_grad(), amp:
                        scores = hooks.evaluate(checkpoint.unwrap(model), done) if main else {}
                    model.train()
                    scores = distributed.broadcast(scores)
                last_metrics.update(scores)
                if log:
                    log.write(done, "eval", scores)
                stop = bool(hooks.should_stop and hooks.should_stop(done, scores))
            else:
                stop = False
            if main and ((cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or final or stop):
                with timer.section("checkpoint_io"):
                    save(done)
            if stop:
                return LoopResult(done, tokens, dict(timer.totals), last_metrics, resumed_from, stopped_early=True)
    finally:
        if log:
            log.close()
    return LoopResult(cfg.total_steps, tokens, dict(timer.totals), last_metrics, resumed_from)
