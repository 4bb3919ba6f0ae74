"""``method: sft`` and ``method: lora``: a base model + prompt/completion records -> the one training loop.

``sft`` is full fine-tuning on the completion tokens, ``lora`` the same objective through a ``peft``
LoRA adapter (a ``lora:`` section adds an adapter to any method). Orthogonal options compose with every method that takes
them: ``anchor`` (KL / reverse KL / JS to the frozen base, :mod:`mixlab.train.objectives`),
``data.replay`` and ``data.sample_ratio`` (:mod:`mixlab.train.sft_data`), and ``early_stop``
(evaluation through :func:`mixlab.eval.runner.evaluate` every N steps, keeping the best checkpoint;
:mod:`mixlab.train.finetune.run`).

``prepare(cfg)`` reads and checks the data, loads the base model, applies LoRA (failing on a target
module the model lacks) and resolves the early-stopping tasks: every user error surfaces there,
before training. ``run(cfg, out, ...)`` runs it in a run directory and resumes from its latest
checkpoint (bit-identical on CPU: the data stream is a pure function of the step and the loop saves
every RNG). The run directory holds ``config.yaml``, ``meta.json`` (with runtime split into
training / evaluation / judging / model_io), ``metrics.jsonl``, ``checkpoints/step-N/`` (full HF
models, or PEFT adapters with LoRA), ``best/`` (the best early-stopping checkpoint), ``merged/``
(LoRA merged into the base) and ``eval/step-N/`` (evaluation results).
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mixlab.train import checkpoint, distributed
from mixlab.train.finetune.base import apply_lora, merge_lora
from mixlab.train.finetune.run import (
    EarlyStopper,
    EvaluateFn,
    FinetuneResult,
    Say,
    aggregate,
    evaluate_baseline,
    flat_scores,
    load_for_run,
    open_run,
    quiet,
    run_evaluation,
    set_threads,
)
from mixlab.train.loop import Hooks, LoopConfig, StepInfo, train
from mixlab.train.objectives import Reference, SFTLoss
from mixlab.train.sft_data import SFTBatches, SFTData, build_sft_data

if TYPE_CHECKING:
    from mixlab.train.finetune.config import FinetuneConfig
    from mixlab.train.finetune.methods import Method

# ---------------------------------------------------------------- plan


@dataclass
class FinetunePrepared:
    config: FinetuneConfig
    model: torch.nn.Module
    tokenizer: Any
    base_path: str
    data: SFTData
    steps: int
    device: torch.device
    eval_specs: list[Any]
    load_seconds: float

    def summary(self) -> dict[str, Any]:
        c, d = self.config, self.data
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        return {
            "method": c.method, "base": self.base_path, "device": str(self.device), "steps": self.steps,
            "batch_size": c.train.batch_size, "examples": len(d.examples), "target_examples": d.n_target,
            "replay_examples": d.n_replay, "records": d.n_records, "truncated": d.truncated,
            "completion_tokens": d.completion_tokens, "chat_template": d.chat_template, "data": d.origin,
            "replay": d.replay_origin, "packing": c.data.packing,
            "trainable_params": trainable, "total_params": sum(p.numel() for p in self.model.parameters()),
            "lora": c.lora.model_dump() if c.lora else None, "anchor": c.anchor.model_dump() if c.anchor else None,
            "early_stop_tasks": [s.name for s in self.eval_specs],
        }


def prepare(cfg: FinetuneConfig, say: Say = quiet) -> FinetunePrepared:
    """Load and check everything a run needs; every user error is raised here, before training."""
    specs, device, model, tok, base_path, load_s = load_for_run(cfg, say)
    say("reading data")
    data = build_sft_data(cfg.data, tok, cfg.seed)
    if cfg.lora is not None:
        model = apply_lora(model, cfg.lora, cfg.seed)
    t = cfg.train
    steps = t.steps or max(1, math.ceil((t.epochs or 1.0) * len(data.examples) / t.batch_size))
    return FinetunePrepared(cfg, model, tok, base_path, data, steps, device, specs, load_s)


def format_plan(prep: FinetunePrepared, method: Method) -> str:
    """Human-readable plan for ``--dry-run``."""
    s = prep.summary()
    c = prep.config
    lines = [
        f"method       {c.method}: {method.description}",
        f"base         {s['base']} ({s['total_params']:,} params, {s['trainable_params']:,} trainable) on {s['device']}",
        f"data         {s['data']}: {s['records']:,} records -> {s['target_examples']:,} examples"
        + (f" + {s['replay_examples']:,} replay from {s['replay']}" if s["replay"] else "")
        + f", {s['completion_tokens']:,} target tokens, chat template {'on' if s['chat_template'] else 'off'}"
        + (f", {s['truncated']} truncated" if s["truncated"] else ""),
        f"training     {s['steps']:,} steps x {c.train.batch_size} examples, lr {c.train.lr:g}, {c.train.schedule.kind}",
    ]
    if c.anchor:
        a = c.anchor
        lines.append(f"anchor       {a.type} coef {a.coef:g} from step {a.start_step} (warm-up {a.warmup_steps})"
                     + (f", last {a.last_n_tokens} tokens" if a.last_n_tokens else ""))
    if c.lora:
        lines.append(f"lora         r={c.lora.r} alpha={c.lora.alpha:g} dropout={c.lora.dropout:g} on {', '.join(c.lora.target_modules)}")
    if c.early_stop:
        e = c.early_stop
        lines.append(f"early stop   {e.metric} ({'max' if e.maximize else 'min'}) every {e.every} steps, patience "
                     f"{e.patience} on {', '.join(s['early_stop_tasks'])}")
    return "\n".join(lines)


# ---------------------------------------------------------------- the run


def run(cfg: FinetuneConfig, out: Path, on_step: Callable[[StepInfo], None] | None = None,
        status: Say | None = None, evaluate_fn: EvaluateFn | None = None) -> FinetuneResult:
    """Run (or resume, or skip when finished) the fine-tuning described by ``cfg`` in ``out``.

    ``evaluate_fn(model, step) -> {"score": ..., ...}`` replaces the early-stopping evaluation
    (custom metrics, tests); by default the ``early_stop`` tasks run through the evaluation engine.
    In a process group (``mixlab.train.distributed.launch(finetune, cfg, out, nproc=N)``) every rank
    calls this; rank 0 alone evaluates and writes the run directory.
    """
    say = status or quiet
    rundir, done = open_run(cfg, out)
    if done is not None:
        return done
    set_threads(cfg)
    t_start = time.perf_counter()
    main = distributed.is_main()
    _, micro = distributed.split_batch(cfg.train.batch_size, cfg.train.micro_batch_size)  # before any work
    prep = prepare(cfg, say)
    if main:
        rundir.start(cfg.seed, plan=prep.summary())
    model, tok = prep.model, prep.tokenizer
    io_s = prep.load_seconds
    reference = None
    if cfg.anchor is not None and cfg.anchor.coef > 0:
        # LoRA: the base is the model with its adapter disabled; full fine-tuning: a frozen copy
        reference = Reference(None) if cfg.uses_lora else Reference(copy.deepcopy(model))
    objective = SFTLoss(cfg.anchor, reference)

    eval_s, baseline = 0.0, None
    e = cfg.early_stop
    if e is not None and e.baseline and evaluate_fn is None and main:
        say("baseline evaluation")
        t0 = time.perf_counter()
        baseline = evaluate_baseline(prep, out, say)
        eval_s += time.perf_counter() - t0
    stopper = EarlyStopper(e.maximize, e.patience, e.min_delta) if e else EarlyStopper()
    last = checkpoint.latest(out)
    total_steps = prep.steps
    if last is not None and "early_stop" in checkpoint.read_info(last):
        stopper.load(checkpoint.read_info(last)["early_stop"])
        if stopper.patience is not None and stopper.bad_evals >= stopper.patience:
            total_steps = int(checkpoint.read_info(last)["step"])  # killed after stopping: nothing left to train
    best_io = [0.0]

    def evaluate(m: torch.nn.Module, step: int) -> dict[str, float]:
        if evaluate_fn is not None:
            scores = dict(evaluate_fn(m, step))
        else:
            res = run_evaluation(prep, m, f"{out}@step-{step}", str(checkpoint.step_dir(out, step)),
                                 out / "eval" / f"step-{step}", say)
            scores = {**flat_scores(res), "score": aggregate(res, e.metric)}  # type: ignore[union-attr]
        if stopper.improved(scores["score"]):
            t0 = time.perf_counter()
            checkpoint.save(out / "best", m, None, None, {"step": step, "score": scores["score"]}, tok)
            best_io[0] += time.perf_counter() - t0
        return scores

    def should_stop(step: int, scores: dict[str, float]) -> bool:
        return stopper.update(step, scores["score"])

    t = cfg.train
    data = SFTBatches(prep.data.examples, t.batch_size, micro, tok.pad_token_id, cfg.seed, prep.device,
                      distributed.rank(), distributed.world_size())
    loop_cfg = LoopConfig(
        total_steps=total_steps, lr=t.lr, weight_decay=t.weight_decay, betas=t.betas, eps=t.eps,
        grad_clip=t.grad_clip, schedule=t.schedule, precision=t.precision, log_every=t.log_every,
        eval_every=e.every if e else 0, checkpoint_every=cfg.checkpoint.every,
        keep_optimizer_states=cfg.checkpoint.keep_optimizer_states, seed=cfg.seed,
    )
    hooks = Hooks(evaluate=evaluate if e or evaluate_fn else None, should_stop=should_stop if e or evaluate_fn else None,
                  on_step=on_step, checkpoint_info=lambda: {"early_stop": stopper.state()}, tokenizer=tok)
    say("training")
    result = train(distributed.wrap(model), data, objective, loop_cfg, out, hooks)
    final = checkpoint.step_dir(out, result.step)
    if not main:
        return FinetuneResult(out, final, None, result.step, result.stopped_early, result.last_metrics, result.timings)
    merged = None
    if cfg.lora is not None and cfg.lora.save_merged:
        t0 = time.perf_counter()
        adapter = out / "best" if (out / "best").is_dir() else final
        merged = merge_lora(prep.base_path, adapter, out / "merged")
        io_s += time.perf_counter() - t0
    timings = _timings(result.timings, eval_s, io_s, best_io[0], time.perf_counter() - t_start)
    best = out / "best" if (out / "best").is_dir() else None
    meta = rundir.finish(
        steps=result.step, final_checkpoint=str(final.relative_to(out)), best_checkpoint="best" if best else None,
        best_step=stopper.best_step, best_score=stopper.best, stopped_early=result.stopped_early or total_steps < prep.steps,
        evaluations=[list(h) for h in stopper.history], merged="merged" if merged else None,
        resumed_from=result.resumed_from, timings=timings, final_metrics=result.last_metrics, baseline=baseline,
        tokens=result.tokens, threads=torch.get_num_threads(), device=str(prep.device), pid=os.getpid(),
        **distributed.describe(),
    )
    return FinetuneResult(out, final, best, result.step, meta["stopped_early"], result.last_metrics, timings, baseline)


def _timings(loop: dict[str, float], eval_s: float, io_s: float, best_io_s: float, total: float) -> dict[str, float]:
    """The runtime split the issue asks for: training / evaluation / judging / model_io.

    Saving the best checkpoint happens inside the loop's evaluation section; it counts as model I/O.
    Judging is 0 here: early stopping refuses judge tasks, so no judge runs during fine-tuning.
    """
    return {
        "training": round(loop.get("training", 0.0), 3),
        "evaluation": round(loop.get("evaluation", 0.0) + eval_s - best_io_s, 3),
        "judging": 0.0,
        "model_io": round(loop.get("checkpoint_io", 0.0) + io_s + best_io_s, 3),
        "total_this_process": round(total, 3),
    }
