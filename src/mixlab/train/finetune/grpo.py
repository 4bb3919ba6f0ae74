"""``method: grpo``: GRPO through trl's ``GRPOTrainer`` with mixlab's verifiers as rewards.

The prompts are the fine-tuning records' questions (formatted as SFT formats them: the chat
template when the model has one, else ``data.prompt_template``); each record's answer is checked
by a verifier (:mod:`mixlab.train.rewards`: numeric match, math-verify, exact match, or the
record's tests run in the sandbox). Every optimizer step samples ``grpo.num_generations``
answers for each of ``train.batch_size`` prompts. ``metrics.jsonl`` logs trl's row plus
``reward_mean``, ``reward_std`` and ``frac_zero_variance_groups`` (groups whose answers all scored
the same, which carry no signal); ``checkpoints/step-N/`` and ``best/`` follow the SFT layout.

Options of part 1: ``lora`` works (peft; the reference is the adapter disabled); ``early_stop``
works (the suite is evaluated every ``every`` steps); ``data.sample_ratio`` and ``max_records``
work. ``anchor`` does not apply (``grpo.beta`` is the KL to the reference), nor do ``data.replay``
and ``data.packing`` (GRPO trains on its own samples, not on a token stream): the config refuses them.

Resuming: trl's latest checkpoint (optimizer, scheduler, RNG) is kept in ``trainer/``; a killed run
continues from it, and a finished run is not redone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mixlab.train import rewards
from mixlab.train.finetune.base import apply_lora
from mixlab.train.finetune.run import FinetuneResult, Say, quiet
from mixlab.train.finetune.trl_bridge import (
    Run,
    finish,
    last_trainer_checkpoint,
    load_inputs,
    plan_tail,
    quiet_trainer,
    run_method,
    trainer_kwargs,
)
from mixlab.train.loop import StepInfo


@dataclass
class GRPOPrepared:
    """Everything a GRPO run needs, checked before training (the fields early stopping reads match SFT's)."""

    config: Any
    model: torch.nn.Module
    tokenizer: Any
    base_path: str
    prompts: list[Any]
    checks: list[list[rewards.Check]]  # per reward function, one check per prompt
    datasets: list[str]
    steps: int
    device: torch.device
    eval_specs: list[Any]
    load_seconds: float
    origin: str
    chat: bool

    def summary(self) -> dict[str, Any]:
        c, g = self.config, self.config.grpo
        return {
            "method": "grpo", "base": self.base_path, "device": str(self.device), "steps": self.steps,
            "prompts_per_step": c.train.batch_size, "num_generations": g.num_generations, "prompts": len(self.prompts),
            "data": self.origin, "chat_template": self.chat,
            "verifiers": sorted({ch.verifier for per in self.checks for ch in per}), "rewards": g.rewards, "beta": g.beta,
            "loss_type": g.loss_type, "total_params": sum(p.numel() for p in self.model.parameters()),
            "lora": c.lora.model_dump() if c.lora else None, "early_stop_tasks": [s.name for s in self.eval_specs],
        }


def reward_checks(cfg: Any, found: list[tuple[str, Any]]) -> list[list[rewards.Check]]:
    """One list of checks per reward function (``auto`` picks each record's verifier by answer type)."""
    return [rewards.plan_checks(found, name, field=f"grpo.rewards ({name})") for name in cfg.grpo.rewards]


def prepare(cfg: Any, say: Say = quiet) -> GRPOPrepared:
    """Load the base and the prompts and plan every record's verification: user errors surface here."""
    x = load_inputs(cfg, say)
    checks = reward_checks(cfg, x.found)
    if any(ch.verifier == "code" for per in checks for ch in per):
        from mixlab.eval.sandbox import check_sandbox

        check_sandbox()
    model = x.model
    if cfg.lora is not None:  # the reference is then the model with its adapter disabled
        model = apply_lora(model, cfg.lora, cfg.seed)
    t = cfg.train
    steps = t.steps or max(1, math.ceil((t.epochs or 1.0) * len(x.prompts) / t.batch_size))
    return GRPOPrepared(cfg, model, x.tokenizer, x.base_path, x.prompts, checks, [r.dataset for _, r in x.found],
                        steps, x.device, x.eval_specs, x.load_seconds, x.origin, x.chat)


def format_plan(prep: GRPOPrepared, method: Any = None) -> str:
    s, c = prep.summary(), prep.config
    g = c.grpo
    lines = [
        f"method       grpo: trl GRPOTrainer, rewards {', '.join(g.rewards)} (verifiers {', '.join(s['verifiers'])})",
        f"base         {s['base']} ({s['total_params']:,} params) on {s['device']}",
        f"data         {s['data']}: {s['prompts']:,} prompts, chat template {'on' if s['chat_template'] else 'off'}",
        f"training     {s['steps']:,} steps x {c.train.batch_size} prompts x {g.num_generations} answers "
        f"(<= {g.max_completion_length} tokens, T={g.temperature:g}), lr {c.train.lr:g}",
        f"objective    loss {g.loss_type}, beta {g.beta:g}, epsilon {g.epsilon:g}, scale_rewards {g.scale_rewards}"
        + (f", stop at {g.stop!r}" if g.stop else ""),
    ]
    return "\n".join(lines + plan_tail(c, s["early_stop_tasks"]))


def reward_function(name: str, checks: list[rewards.Check], stop: list[str]) -> Callable[..., list[float]]:
    """A trl reward function: the verifier score of each completion of the records in the batch."""

    def reward(prompts: list[Any], completions: list[Any], item: list[int], **_kw: Any) -> list[float]:
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        return rewards.score_many(texts, [checks[i] for i in item], stop)

    reward.__name__ = name
    return reward


def _dataset(prompts: list[Any]):
    from datasets import Dataset

    return Dataset.from_dict({"prompt": prompts, "item": list(range(len(prompts)))})


def build_trainer(prep: GRPOPrepared, out: Path, callbacks: list[Any]):
    """trl's GRPOTrainer for a prepared run (the model, rewards and settings of the config)."""
    from trl import GRPOConfig, GRPOTrainer

    cfg, g, t = prep.config, prep.config.grpo, prep.config.train
    micro = t.micro_batch_size or t.batch_size
    args = GRPOConfig(
        **trainer_kwargs(cfg, out, prep.steps, prep.device),
        per_device_train_batch_size=micro * g.num_generations, gradient_accumulation_steps=t.batch_size // micro,
        num_generations=g.num_generations, max_completion_length=g.max_completion_length,
        temperature=g.temperature, top_p=g.top_p, top_k=0, beta=g.beta, loss_type=g.loss_type,
        scale_rewards=g.scale_rewards, epsilon=g.epsilon, num_iterations=g.num_iterations,
        mask_truncated_completions=g.mask_truncated_completions, reward_weights=g.reward_weights,
        log_completions=False, shuffle_dataset=True, activation_checkpointing=False,
    )
    funcs = [reward_function(name, checks, g.stop) for name, checks in zip(g.rewards, prep.checks, strict=True)]
    trainer = GRPOTrainer(model=prep.model, reward_funcs=funcs, args=args, train_dataset=_dataset(prep.prompts),
                          processing_class=prep.tokenizer, callbacks=callbacks)
    return quiet_trainer(trainer)


def run(cfg: Any, out: Path, on_step: Callable[[StepInfo], None] | None = None, status: Say | None = None,
        evaluate_fn: Any = None) -> FinetuneResult:
    """Run (or resume, or skip when finished) a GRPO run in ``out``."""
    return run_method(cfg, out, prepare, train, on_step, status, evaluate_fn)


def train(run: Run, say: Say) -> FinetuneResult:
    """Train a started GRPO run, resuming from trl's last checkpoint when there is one."""
    trainer = build_trainer(run.prep, run.out, [run.callback(run.prep.steps)])
    resume = last_trainer_checkpoint(run.out)
    if resume:
        run.early.restore(run.out)
    say("training")
    result = trainer.train(resume_from_checkpoint=resume)
    return finish(run, trainer.state.global_step, result, resume)
