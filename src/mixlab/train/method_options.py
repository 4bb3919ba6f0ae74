"""The ``grpo:`` and ``spin:`` sections of a fine-tuning config.

Kept apart from the recipes (:mod:`mixlab.train.grpo`, :mod:`mixlab.train.spin`) so that
:class:`mixlab.train.sft.FinetuneConfig` can validate them without importing ``trl``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from mixlab.config import StrictModel


def _check_verifier_names(names: list[str], field: str) -> None:
    from mixlab.eval.verifiers import VERIFIERS

    unknown = [n for n in names if n != "auto" and n not in VERIFIERS]
    if unknown:
        raise ValueError(f"unknown {field} {', '.join(map(repr, unknown))}; known: auto, {', '.join(sorted(VERIFIERS))}")


class GRPOSection(StrictModel):
    """Group-relative policy optimization (trl's GRPOTrainer) with mixlab's verifiers as rewards.

    Each optimizer step samples ``num_generations`` answers for each of ``train.batch_size``
    prompts; an answer's reward is its verifier score (cut at the first ``stop`` sequence), and its
    advantage the reward minus its group's mean (scaled per ``scale_rewards``). ``beta`` weighs the
    KL to the reference (the base; with LoRA the adapter disabled).
    """

    rewards: list[str] = Field(["auto"], description="verifier names (auto: by each record's answer type)")
    reward_weights: list[float] | None = None
    num_generations: int = Field(8, ge=2, description="group size: answers sampled per prompt")
    max_completion_length: int = Field(64, gt=0)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: list[str] = Field(default_factory=list, description="an answer is cut here before it is verified")
    beta: float = Field(0.04, ge=0, description="KL coefficient to the reference model")
    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo"] = "dapo"
    scale_rewards: Literal["group", "batch", "none"] = "group"
    epsilon: float = Field(0.2, gt=0, description="clipping range of the policy ratio")
    num_iterations: int = Field(1, ge=1, description="optimizer passes over each generated batch")
    mask_truncated_completions: bool = False

    @field_validator("rewards")
    @classmethod
    def _known(cls, rewards: list[str]) -> list[str]:
        if not rewards:
            raise ValueError("give at least one reward (a verifier name, or auto)")
        _check_verifier_names(rewards, "reward")
        return rewards

    @model_validator(mode="after")
    def _weights(self) -> "GRPOSection":
        if self.reward_weights is not None and len(self.reward_weights) != len(self.rewards):
            raise ValueError(f"grpo.reward_weights has {len(self.reward_weights)} values for "
                             f"{len(self.rewards)} rewards; give one weight per reward")
        return self


class SPINSection(StrictModel):
    """Self-play fine-tuning: ``iterations`` rounds of DPO (trl's DPOTrainer) where the chosen answer
    is the ground truth and the rejected one the model's own sample; each round's reference model is
    the previous round's result. ``train.steps`` (or ``epochs``) is per iteration."""

    iterations: int = Field(2, ge=1)
    beta: float = Field(0.1, gt=0)
    loss_type: Literal["sigmoid", "hinge", "ipo"] = "sigmoid"
    max_new_tokens: int = Field(64, gt=0, description="length of the model's own (rejected) answers")
    temperature: float = Field(1.0, ge=0, description="sampling temperature of the rejected answers (0: greedy)")
    top_p: float = Field(1.0, gt=0, le=1)
    stop: list[str] = Field(default_factory=list)
    generation_batch_size: int = Field(64, gt=0)
