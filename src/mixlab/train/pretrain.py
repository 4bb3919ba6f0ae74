"""The pretraining recipe: text sources -> tokenizer -> mixture sampler -> proxy model -> the loop.

``prepare(cfg)`` resolves everything a run needs (data read and tokenized, model shape, budget,
steps, realized mixture) and fails on bad input before any training; ``pretrain(cfg, out)`` runs
the plan in a run directory and resumes it when the directory holds a checkpoint. The run
directory holds ``config.yaml``, ``meta.json``, ``mixture.json`` (priors, requested and realized
proportions), ``metrics.jsonl``, ``tensorboard/``, ``tokenizer/`` and ``checkpoints/step-N/``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from mixlab import atomic
from mixlab.config import StrictModel, load_config
from mixlab.data.text import TextSourceConfig, TokenizedSource, head_bytes, load_source, priors, tokenize_source
from mixlab.errors import ConfigError
from mixlab.eval.metrics import bits_per_byte
from mixlab.models import tokenizer as toklib
from mixlab.models.registry import (
    ModelConfig,
    build_model,
    chinchilla_tokens,
    hf_config,
    non_embedding_params,
    total_params,
    train_flops_per_token,
)
from mixlab.runs.rundir import CheckpointSection, RunDir
from mixlab.train import checkpoint, distributed
from mixlab.train.loop import Hooks, LoopConfig, StepInfo, train
from mixlab.train.sampler import Allocation, MixtureSampler
from mixlab.train.schedule import ScheduleConfig

# ---------------------------------------------------------------- config


class DataSection(StrictModel):
    """Named text sources and the mixture over them (weights are normalized; ``natural`` = priors)."""

    sources: dict[str, TextSourceConfig]
    mixture: dict[str, float] | Literal["natural"] = "natural"
    max_epochs: float = 4.0

    @model_validator(mode="before")
    @classmethod
    def _nested_mixture(cls, data: Any) -> Any:
        """A mixture may name groups (olmix's nested mix): ``code: {weight: 0.4, python_stdlib: 1, toyworld: 1}``
        is the sources ``code/python_stdlib`` and ``code/toyworld`` at 0.2 each (mixlab.mixopt.hierarchy)."""
        if isinstance(data, dict) and isinstance(data.get("mixture"), dict) and any(
                isinstance(v, dict) for v in data["mixture"].values()):
            from mixlab.mixopt.hierarchy import flatten_nested

            data = {**data, "mixture": flatten_nested(data["mixture"], "data.mixture")}
        return data

    @model_validator(mode="after")
    def _check(self) -> "DataSection":
        if not self.sources:
            raise ValueError("define at least one source under data.sources")
        if isinstance(self.mixture, dict):
            missing = [k for k in self.mixture if k not in self.sources]
            if missing:
                raise ValueError(f"mixture names source(s) {', '.join(missing)} not defined under data.sources "
                                 f"(defined: {', '.join(self.sources)})")
            if any(w < 0 for w in self.mixture.values()) or sum(self.mixture.values()) <= 0:
                raise ValueError("mixture weights must be non-negative and not all zero")
        if self.max_epochs <= 0:
            raise ValueError("max_epochs must be positive")
        return self


class DurationSection(StrictModel):
    """Exactly one of ``chinchilla`` (multiple of 20 tokens per non-embedding parameter) or ``tokens``."""

    chinchilla: float | None = None
    tokens: int | None = None

    @model_validator(mode="after")
    def _one(self) -> "DurationSection":
        if (self.chinchilla is None) == (self.tokens is None):
            raise ValueError("give exactly one of duration.chinchilla (e.g. 1.0) or duration.tokens")
        if (self.chinchilla or 1) <= 0 or (self.tokens or 1) <= 0:
            raise ValueError("the duration must be positive")
        return self


class TrainSection(StrictModel):
    seq_len: int = Field(256, gt=1)
    batch_size: int = Field(32, gt=0, description="sequences per optimizer step")
    micro_batch_size: int | None = Field(None, gt=0, description="sequences per forward; accumulation fills the batch")
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float | None = 1.0
    schedule: ScheduleConfig = ScheduleConfig()
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    device: str = "auto"
    threads: int | None = Field(None, gt=0, description="torch CPU threads (default: leave as is)")
    log_every: int = Field(10, gt=0)

    @model_validator(mode="after")
    def _check(self) -> "TrainSection":
        mb = self.micro_batch_size or self.batch_size
        if self.batch_size % mb:
            raise ValueError(f"batch_size={self.batch_size} must be a multiple of micro_batch_size={mb}")
        return self


class EvalSection(StrictModel):
    """In-loop bits-per-byte on each source's held-out text every ``every`` steps (0: only at the end),
    plus any bits-per-byte or multiple-choice tasks of the evaluation engine (``suite`` / ``tasks``)."""

    every: int = Field(0, ge=0)
    max_tokens: int | None = Field(None, gt=0, description="cap on held-out tokens per source")
    batch_size: int = Field(16, gt=0)
    suite: str | None = Field(None, description="eval suite scored in-loop, e.g. toyworld or bpb (bpb/mc tasks only)")
    tasks: list[str] = Field(default_factory=list, description="eval task names or YAML paths scored in-loop (bpb/mc)")
    limit: int | None = Field(None, gt=0, description="first N items of each in-loop task")

    @model_validator(mode="after")
    def _tasks_are_scored(self) -> "EvalSection":
        bad = [f"{s.name} ({s.kind})" for s in self.specs() if s.kind not in ("bpb", "mc")]
        if bad:
            raise ValueError(f"in-loop tasks must be bpb or mc tasks; {', '.join(bad)} generate text: "
                             "evaluate checkpoints with `mixlab eval` or a sweep instead")
        return self

    def specs(self) -> list:
        """The in-loop task specs (validated task files); empty when none are named."""
        from mixlab.eval.tasks import resolve_tasks

        return resolve_tasks(self.suite, self.tasks) if (self.suite or self.tasks) else []


class PretrainConfig(StrictModel):
    """A proxy pretraining run."""

    kind: Literal["pretrain"] = "pretrain"
    seed: int = 0
    model: ModelConfig = ModelConfig()
    tokenizer: toklib.TokenizerConfig = toklib.TokenizerConfig()
    data: DataSection
    duration: DurationSection
    train: TrainSection = TrainSection()
    eval: EvalSection = EvalSection()
    checkpoint: CheckpointSection = CheckpointSection()


def load_pretrain_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> PretrainConfig:
    """Read and validate a pretraining config (errors name file, line and field)."""
    return load_config(path, PretrainConfig, overrides)


# ---------------------------------------------------------------- plan


@dataclass
class PretrainPlan:
    """Everything resolved before training: printed by ``--dry-run``, recorded in ``meta.json``."""

    config: PretrainConfig
    model_label: str
    hf_config: Any
    non_embedding_params: int
    total_params: int
    token_budget: int
    steps: int
    tokens_per_step: int
    tokens_trained: int
    source_tokens: dict[str, int]
    priors: dict[str, float]
    allocation: Allocation
    flops_per_token: float
    device: str

    def summary(self) -> dict[str, Any]:
        c = self.config
        return {
            "model": self.model_label, "non_embedding_params": self.non_embedding_params,
            "total_params": self.total_params, "vocab_size": self.hf_config.vocab_size,
            "token_budget": self.token_budget, "tokens_trained": self.tokens_trained, "steps": self.steps,
            "tokens_per_step": self.tokens_per_step, "seq_len": c.train.seq_len,
            "max_position_embeddings": self.hf_config.max_position_embeddings, "batch_size": c.train.batch_size,
            "micro_batch_size": c.train.micro_batch_size or c.train.batch_size, "device": self.device,
            "source_tokens": self.source_tokens, "priors": self.priors, "mixture": self.allocation.as_dict(),
            "train_flops": self.flops_per_token * self.tokens_trained,
        }


@dataclass
class Prepared:
    plan: PretrainPlan
    tokenizer: Any
    sources: list[TokenizedSource]
    sampler: MixtureSampler


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _tokenizer_for(cfg: PretrainConfig, texts: Mapping[str, list[str]], saved: Path | None) -> Any:
    if saved is not None and (saved / "tokenizer.json").is_file():
        return toklib.load(saved)
    if cfg.tokenizer.kind == "byte":
        return toklib.byte_tokenizer()
    per_source = cfg.tokenizer.train_bytes // max(len(texts), 1)
    sample = [d for docs in texts.values() for d in head_bytes(docs, per_source)]
    return toklib.train_bpe(sample, cfg.tokenizer.vocab_size, cfg.tokenizer.min_frequency)


def prepare(cfg: PretrainConfig, tokenizer_dir: Path | None = None,
            status: Callable[[str], None] | None = None) -> Prepared:
    """Read and tokenize the sources, size the model and the budget, build the sampler.

    Every user error (missing source, budget below one step, source shorter than a sequence,
    not enough text under the repetition cap) is raised here, before a model exists.
    """
    say = status or (lambda _m: None)
    texts = {}
    for name, scfg in cfg.data.sources.items():
        say(f"reading source {name}")
        texts[name] = load_source(name, scfg, cfg.seed)
    say("tokenizer")
    tok = _tokenizer_for(cfg, {k: v.train for k, v in texts.items()}, tokenizer_dir)
    sources = []
    for name, st in texts.items():
        say(f"tokenizing {name}")
        sources.append(tokenize_source(st, tok))
    t = cfg.train
    hf = hf_config(cfg.model, len(tok), t.seq_len, tok.eos_token_id, tok.eos_token_id, tok.pad_token_id)
    tok.model_max_length = hf.max_position_embeddings  # the saved tokenizer declares the same window
    budget = cfg.duration.tokens or chinchilla_tokens(hf, cfg.duration.chinchilla or 0.0)
    tokens_per_step = t.batch_size * t.seq_len
    steps = budget // tokens_per_step
    if steps < 1:
        raise ConfigError(f"duration gives {budget} tokens, less than one optimizer step "
                          f"({t.batch_size} x {t.seq_len} = {tokens_per_step} tokens); raise the duration or "
                          "lower train.batch_size / train.seq_len")
    weights = priors(sources) if cfg.data.mixture == "natural" else dict(cfg.data.mixture)
    sampler = MixtureSampler(sources, weights, t.seq_len, steps * t.batch_size, cfg.data.max_epochs, cfg.seed)
    plan = PretrainPlan(
        config=cfg, model_label=cfg.model.label, hf_config=hf, non_embedding_params=non_embedding_params(hf),
        total_params=total_params(hf), token_budget=budget, steps=steps, tokens_per_step=tokens_per_step,
        tokens_trained=steps * tokens_per_step, source_tokens={s.name: s.n_tokens for s in sources},
        priors=priors(sources), allocation=sampler.allocation,
        flops_per_token=train_flops_per_token(hf, t.seq_len), device=str(resolve_device(t.device)),
    )
    return Prepared(plan, tok, sources, sampler)


def matmul_peak_flops(seconds: float = 0.3, n: int = 512) -> float:
    """Measured fp32 matmul FLOP/s on this process's threads (the MFU denominator)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def estimate_seconds(plan: PretrainPlan, mfu: float = 0.5) -> float:
    """Rough wall time: the plan's FLOPs at ``mfu`` of a matmul peak measured now (CPU only)."""
    if plan.device.startswith("cuda"):
        return float("nan")
    return plan.flops_per_token * plan.tokens_trained / (matmul_peak_flops() * mfu)


# ---------------------------------------------------------------- data and objective for the loop


class PretrainBatches:
    """The loop's BatchSource: step ``s`` is rows ``[s*B, (s+1)*B)`` of the sampler, in micro-batches.

    With ``world`` ranks, rank ``r`` takes the ``r``-th contiguous ``B / world`` of those rows.
    """

    def __init__(self, sampler: MixtureSampler, batch_size: int, micro_batch_size: int, device: torch.device,
                 rank: int = 0, world: int = 1):
        self.sampler, self.batch_size, self.micro, self.device = sampler, batch_size, micro_batch_size, device
        self.rank, self.world = rank, world

    def batch(self, step: int) -> list[dict[str, torch.Tensor]]:
        rows = self.sampler.sequences(step * self.batch_size, self.batch_size)
        local = self.batch_size // self.world
        rows = rows[self.rank * local:(self.rank + 1) * local].to(self.device, non_blocking=True)
        return [{"tokens": rows[i:i + self.micro]} for i in range(0, local, self.micro)]

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.sampler.load_state_dict(state)


class NextTokenLoss:
    """Summed next-token cross-entropy over ``tokens[:, 1:]`` given ``tokens[:, :-1]``."""

    def count(self, batch: Mapping[str, torch.Tensor]) -> int:
        t = batch["tokens"]
        return t.shape[0] * (t.shape[1] - 1)

    def __call__(self, model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        t = batch["tokens"]
        logits = model(input_ids=t[:, :-1]).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), t[:, 1:].flatten(), reduction="sum")
        return loss, {}


def heldout_windows(ids: np.ndarray, seq_len: int, max_tokens: int | None) -> list[np.ndarray]:
    """Consecutive windows of ``seq_len + 1`` tokens overlapping by one, covering every target once."""
    if max_tokens is not None:
        ids = ids[: max_tokens + 1]
    return [ids[s:s + seq_len + 1] for s in range(0, max(len(ids) - 1, 0), seq_len)]


@torch.no_grad()
def heldout_bpb(model: torch.nn.Module, ids: np.ndarray, token_bytes: np.ndarray, seq_len: int,
                batch_size: int, max_tokens: int | None = None) -> float:
    """Bits per byte of a packed held-out text: summed NLL of byte-bearing targets / their bytes."""
    device = next(model.parameters()).device
    tb = torch.as_tensor(token_bytes, device=device)
    windows = heldout_windows(ids, seq_len, max_tokens)
    nll, n_bytes = torch.zeros((), dtype=torch.float64, device=device), 0
    by_len: dict[int, list[np.ndarray]] = {}
    for w in windows:
        by_len.setdefault(len(w), []).append(w)
    for group in by_len.values():
        for i in range(0, len(group), batch_size):
            t = torch.as_tensor(np.stack(group[i:i + batch_size]), dtype=torch.long, device=device)
            logits = model(input_ids=t[:, :-1]).logits.float()
            target = t[:, 1:]
            per_tok = F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none")
            weight = tb[target.flatten()]
            nll += (per_tok * (weight > 0)).sum().double()
            n_bytes += int(weight.sum())
    return bits_per_byte(float(nll), n_bytes)


def task_scores(model: torch.nn.Module, tokenizer: Any, specs: list, out: Path, step: int,
                e: EvalSection) -> dict[str, float]:
    """Score the in-loop eval tasks through the evaluation engine; per-item results land in
    ``OUT/evals/step-N/`` (so a resumed run reuses them) and the metrics come back as ``task/metric``."""
    from mixlab.eval.runner import evaluate
    from mixlab.models.pretrained import LoadedModel

    loaded = LoadedModel(model, tokenizer, f"{out.name}@step-{step}", str(checkpoint.step_dir(out, step)))
    results = evaluate(loaded, specs, out / "evals" / f"step-{step}", limit=e.limit, batch_size=e.batch_size)
    return {f"{task}/{k}": float(v) for task, metrics in results.items() for k, v in metrics.items()
            if k != "n" and isinstance(v, (int, float)) and not isinstance(v, bool)}


# ---------------------------------------------------------------- the run


@dataclass
class PretrainResult:
    run_dir: Path
    final_checkpoint: Path
    steps: int
    tokens: int
    metrics: dict[str, float]
    timings: dict[str, float]
    skipped: bool = False


def is_complete(cfg: PretrainConfig, out: str | Path) -> bool:
    """True when ``out`` holds a finished run of this config (``pretrain`` would skip it)."""
    return RunDir.open(out, cfg, "pretrain").complete


def _threads(cfg: PretrainConfig) -> None:
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)


def pretrain(cfg: PretrainConfig, out: str | Path, on_step: Callable[[StepInfo], None] | None = None,
             status: Callable[[str], None] | None = None) -> PretrainResult:
    """Run (or resume, or skip when finished) the pretraining described by ``cfg`` in ``out``.

    In a process group (``mixlab.train.distributed.launch(pretrain, cfg, out, nproc=N)``) every rank
    calls this; rank 0 trains the tokenizer and writes the run directory.
    """
    out = Path(out)
    say = status or (lambda _m: None)
    run = RunDir.open(out, cfg, "pretrain")
    if run.complete:
        meta = run.meta
        final = Path(meta["final_checkpoint"])
        return PretrainResult(out, out / final, meta["steps"], meta["tokens"]["trained"],
                              meta.get("final_metrics", {}), meta["timings"], skipped=True)
    _threads(cfg)
    t_start = time.perf_counter()
    t = cfg.train
    main = distributed.is_main()
    _, micro = distributed.split_batch(t.batch_size, t.micro_batch_size)  # ConfigError before any work
    with distributed.main_first():  # rank 0 trains and saves the tokenizer; the other ranks load it
        prep = prepare(cfg, out / "tokenizer" if run.exists or not main else None, status=say)
        plan = prep.plan
        if main:
            out.mkdir(parents=True, exist_ok=True)
            prep.tokenizer.save_pretrained(str(out / "tokenizer"))
            atomic.write_json(out / "mixture.json", {"priors": plan.priors, **plan.allocation.as_dict(),
                                                     "source_tokens": plan.source_tokens})
            run.start(cfg.seed, plan=plan.summary())
    device = resolve_device(cfg.train.device)
    setup_s = time.perf_counter() - t_start

    say("building model")
    model = distributed.wrap(build_model(plan.hf_config, cfg.seed).to(device))
    data = PretrainBatches(prep.sampler, t.batch_size, micro, device, distributed.rank(), distributed.world_size())
    token_bytes = toklib.token_byte_lengths(prep.tokenizer)

    specs = cfg.eval.specs()

    def evaluate(m: torch.nn.Module, step: int) -> dict[str, float]:
        scores = {f"bpb/{s.name}": heldout_bpb(m, s.heldout, token_bytes, t.seq_len, cfg.eval.batch_size,
                                                cfg.eval.max_tokens) for s in prep.sources}
        scores["bpb/mean"] = float(np.mean(list(scores.values())))
        if specs:
            scores.update(task_scores(m, prep.tokenizer, specs, out, step, cfg.eval))
        return scores

    loop_cfg = LoopConfig(
        total_steps=plan.steps, lr=t.lr, weight_decay=t.weight_decay, betas=t.betas, eps=t.eps,
        grad_clip=t.grad_clip, schedule=t.schedule, precision=t.precision, log_every=t.log_every,
        eval_every=cfg.eval.every, checkpoint_every=cfg.checkpoint.every,
        keep_optimizer_states=cfg.checkpoint.keep_optimizer_states, seed=cfg.seed,
    )
    say("training")
    result = train(model, data, NextTokenLoss(), loop_cfg, out,
                   Hooks(evaluate=evaluate, on_step=on_step, tokenizer=prep.tokenizer))
    final = checkpoint.step_dir(out, plan.steps)
    if not main:
        return PretrainResult(out, final, plan.steps, result.tokens, result.last_metrics, result.timings)
    timings = {k: round(v, 3) for k, v in result.timings.items()}
    timings["setup"] = round(setup_s, 3)
    timings["total_this_process"] = round(time.perf_counter() - t_start, 3)
    realized_tokens = prep.sampler.realized_tokens(plan.steps * t.batch_size)
    run.finish(
        steps=plan.steps, final_checkpoint=str(final.relative_to(out)),
        resumed_from=result.resumed_from, timings=timings, final_metrics=result.last_metrics,
        tokens={"trained": result.tokens, "budget": plan.token_budget, "per_source": realized_tokens,
                "available_per_source": plan.source_tokens},
        mixture={"requested": plan.allocation.requested, "realized": plan.allocation.realized,
                 "priors": plan.priors, "capped": plan.allocation.capped},
        threads=torch.get_num_threads(), device=str(device), pid=os.getpid(), **distributed.describe(),
    )
    return PretrainResult(out, final, plan.steps, result.tokens, result.last_metrics, timings)


def format_plan(plan: PretrainPlan, est_seconds: float | None = None) -> str:
    """Human-readable plan for ``--dry-run``."""
    c = plan.config
    lines = [
        f"model        {plan.model_label}: d={plan.hf_config.hidden_size} L={plan.hf_config.num_hidden_layers} "
        f"heads={plan.hf_config.num_attention_heads} vocab={plan.hf_config.vocab_size}",
        f"parameters   {plan.non_embedding_params:,} non-embedding, {plan.total_params:,} total",
        f"duration     {'%.2fx Chinchilla' % c.duration.chinchilla if c.duration.chinchilla else 'token budget'}: "
        f"{plan.token_budget:,} tokens -> {plan.steps:,} steps x {plan.tokens_per_step:,} tokens "
        f"= {plan.tokens_trained:,} trained",
        f"batch        {c.train.batch_size} x {c.train.seq_len} "
        f"(micro-batch {c.train.micro_batch_size or c.train.batch_size}), lr {c.train.lr:g}, {c.train.schedule.kind}",
        f"device       {plan.device}, compute {plan.flops_per_token * plan.tokens_trained:.3g} FLOPs",
        "mixture      source            tokens   prior  requested  realized  epochs",
    ]
    a = plan.allocation
    for name in a.requested:
        cap = "  (capped)" if name in a.capped else ""
        lines.append(f"             {name:<14}{plan.source_tokens[name]:>11,}  {plan.priors[name]:6.1%}  "
                     f"{a.requested[name]:9.1%}  {a.realized[name]:8.1%}  {a.epochs[name]:6.2f}{cap}")
    if est_seconds is not None and math.isfinite(est_seconds):
        lines.append(f"estimate     ~{_duration(est_seconds)} on {torch.get_num_threads()} thread(s) "
                     "(50% of a matmul peak measured now)")
    return "\n".join(lines)


def _duration(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"
