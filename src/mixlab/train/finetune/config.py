"""The fine-tuning config (``mixlab finetune``): every section of every method, validated without torch.

``mixlab validate``, a study and the quickstart read fine-tuning configs through this module alone:
it imports neither torch nor a recipe, so checking a config is fast and a config error surfaces before
any model loads. Which options a method takes (``anchor``, ``lora``, ``data.replay``, its own section
such as ``grpo:``) is read from the method table, :data:`mixlab.train.finetune.methods.METHODS`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from mixlab.config import StrictModel, load_config
from mixlab.runs.rundir import CheckpointSection
from mixlab.train.finetune.methods import METHODS
from mixlab.train.schedule import ScheduleConfig

__all__ = ["AnchorConfig", "CheckpointSection", "DataSection", "EarlyStopSection", "FinetuneConfig", "GRPOSection",
           "LoraSection", "ModelSection", "ReplaySection", "SPINSection", "TrainSection", "load_finetune_config"]

# ---------------------------------------------------------------- data (also read by distill)


TEXT_KINDS = ("toyworld", "corpus", "file", "records")


class ReplaySection(StrictModel):
    """General data mixed into training: ``ratio`` of the examples (0.2 = one in five) come from ``source``.

    ``source`` is a records dataset name (``toyworld_prose``, ``gsm8k``), a records JSONL file, or
    one or more text URIs (``toyworld:prose``, ``corpus:wikitext2``, ``file:path``, ``records:<dataset>``).
    """

    source: str | list[str]
    ratio: float = Field(0.2, gt=0, lt=1)

    text_kinds: ClassVar[tuple[str, ...]] = TEXT_KINDS

    def text_uris(self) -> list[str] | None:
        """The source as text URIs (replay is then language modelling on every token); None for records."""
        if isinstance(self.source, list):
            return self.source
        return [self.source] if _is_text_uri(self.source) else None

    @model_validator(mode="after")
    def _sources(self) -> "ReplaySection":
        if isinstance(self.source, list) and not (self.source and all(_is_text_uri(s) for s in self.source)):
            raise ValueError("a list of replay sources must be text URIs "
                             f"({', '.join(k + ':...' for k in TEXT_KINDS)}); give one dataset or file as a string")
        return self


class DataSection(StrictModel):
    """Where the fine-tuning targets come from and how they become token sequences."""

    build: str | None = Field(None, description="a data-build directory (reads mixed/train.jsonl)")
    records: str | None = Field(None, description="a records JSONL file")
    datasets: list[str] | None = Field(None, description="registered dataset names")
    split: str | None = Field("train", description="with `datasets`: keep records of this official split")
    where: dict[str, list[Any]] | None = Field(None, description="keep records whose metadata[key] is one of the "
                                               "values, e.g. {tier: [1]} or {level: [Level 1, Level 2]}")
    max_records: int | None = Field(None, gt=0)
    sample_ratio: float = Field(1.0, gt=0, le=1, description="train on this seeded fraction of the targets")
    prompt_template: str = Field("Q: {question}\nA: ", description="used when there is no chat template")
    chat_template: bool | Literal["auto"] = "auto"
    max_seq_len: int = Field(256, gt=8)
    packing: bool = False
    replay: ReplaySection | None = None

    @model_validator(mode="after")
    def _one_input(self) -> "DataSection":
        given = [k for k in ("build", "records", "datasets") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of data.build (a data-build directory), data.records "
                             f"(a JSONL file) or data.datasets (dataset names); got {given or 'none'}")
        if "{question}" not in self.prompt_template:
            raise ValueError("data.prompt_template must contain {question}")
        return self


def _is_text_uri(source: str) -> bool:
    kind, sep, arg = source.partition(":")
    return bool(sep) and kind in TEXT_KINDS and bool(arg)


# ---------------------------------------------------------------- model, training, options


class ModelSection(StrictModel):
    """The base model: a pretraining run directory, a Hugging Face directory, an alias or a hub id."""

    base: str
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


class LoraSection(StrictModel):
    r: int = Field(8, gt=0)
    alpha: float = Field(16, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj"]
    save_merged: bool = Field(True, description="also write merged/ (adapter merged into the base weights)")


class TrainSection(StrictModel):
    steps: int | None = Field(None, gt=0)
    epochs: float | None = Field(None, gt=0, description="passes over the examples (default 1 when steps is unset)")
    batch_size: int = Field(16, gt=0, description="examples per optimizer step")
    micro_batch_size: int | None = Field(None, gt=0)
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float | None = 1.0
    schedule: ScheduleConfig = ScheduleConfig(kind="cosine", warmup=0.05, min_lr_ratio=0.0)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    device: str = "auto"
    threads: int | None = Field(None, gt=0)
    log_every: int = Field(10, gt=0)

    @model_validator(mode="after")
    def _check(self) -> "TrainSection":
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give train.steps or train.epochs, not both")
        mb = self.micro_batch_size or self.batch_size
        if self.batch_size % mb:
            raise ValueError(f"batch_size={self.batch_size} must be a multiple of micro_batch_size={mb}")
        return self


class EarlyStopSection(StrictModel):
    """Evaluate ``suite``/``tasks`` every ``every`` steps; stop after ``patience`` evaluations without
    improvement of ``metric`` (``patience: null`` evaluates and keeps the best without stopping).

    ``metric`` is a metric name averaged over the tasks that report it (``acc``, ``bpb``) or one
    task's metric (``toyworld_prose_mc/acc``); ``mode: auto`` minimizes bpb and maximizes the rest.
    ``baseline`` evaluates the base model once (cached across runs) as step 0.
    """

    suite: str | None = None
    tasks: list[str] = []
    metric: str = "acc"
    mode: Literal["auto", "max", "min"] = "auto"
    every: int = Field(50, gt=0)
    patience: int | None = Field(3, gt=0)
    min_delta: float = Field(0.0, ge=0)
    limit: int | None = Field(None, gt=0, description="items per task")
    batch_size: int = Field(32, gt=0)
    baseline: bool = True

    @model_validator(mode="after")
    def _tasks(self) -> "EarlyStopSection":
        if not self.suite and not self.tasks:
            raise ValueError("early_stop needs a suite or tasks to evaluate")
        return self

    @property
    def maximize(self) -> bool:
        return self.mode == "max" or (self.mode == "auto" and not self.metric.split("/")[-1].startswith("bpb"))


class AnchorConfig(StrictModel):
    """``anchor:`` of a fine-tuning config: a divergence to the base model's next-token distribution.

    The weight is 0 before ``start_step``; from there it grows linearly to ``coef`` over
    ``warmup_steps`` steps (step ``start_step + k`` gets ``coef * min(1, (k + 1) / warmup_steps)``;
    ``warmup_steps: 0`` gives ``coef`` at once). ``last_n_tokens`` restricts the anchor to the last
    N completion tokens of each example (e.g. the final answer), otherwise every completion token counts.
    """

    type: Literal["kl", "kl_rev", "js"] = "kl"
    coef: float = Field(0.1, ge=0)
    start_step: int = Field(0, ge=0)
    warmup_steps: int = Field(0, ge=0)
    last_n_tokens: int | None = Field(None, gt=0)

    def weight(self, step: int) -> float:
        """The anchor's coefficient at optimizer step ``step`` (0-based)."""
        if self.coef == 0 or step < self.start_step:
            return 0.0
        if self.warmup_steps == 0:
            return self.coef
        return self.coef * min(1.0, (step - self.start_step + 1) / self.warmup_steps)


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


# ---------------------------------------------------------------- the config


class FinetuneConfig(StrictModel):
    """A fine-tuning run (``mixlab finetune``)."""

    kind: Literal["finetune"] = "finetune"
    seed: int = 0
    method: str = "sft"
    model: ModelSection
    data: DataSection
    train: TrainSection = TrainSection()
    lora: LoraSection | None = None
    anchor: AnchorConfig | None = None
    early_stop: EarlyStopSection | None = None
    checkpoint: CheckpointSection = CheckpointSection()
    grpo: GRPOSection | None = None
    spin: SPINSection | None = None

    @field_validator("method")
    @classmethod
    def _known_method(cls, method: str) -> str:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
        return method

    @field_validator("anchor")
    @classmethod
    def _anchor_allowed(cls, anchor: AnchorConfig | None, info: ValidationInfo) -> AnchorConfig | None:
        method = METHODS.get(info.data.get("method", ""))
        if anchor is not None and method is not None and not method.anchor:
            raise ValueError(f"method {info.data['method']!r} cannot take an anchor (it has its own "
                             "regularizer); remove the `anchor:` section")
        return anchor

    @field_validator("lora")
    @classmethod
    def _lora_allowed(cls, lora: LoraSection | None, info: ValidationInfo) -> LoraSection | None:
        method = METHODS.get(info.data.get("method", ""))
        if lora is not None and method is not None and method.lora == "never":
            raise ValueError(f"method {info.data['method']!r} cannot train a LoRA adapter; remove the `lora:` section")
        return lora

    @model_validator(mode="after")
    def _default_lora(self) -> "FinetuneConfig":
        if METHODS[self.method].lora == "required" and self.lora is None:
            self.lora = LoraSection()
        return self

    @model_validator(mode="before")
    @classmethod
    def _default_options(cls, data: Any) -> Any:
        """A method with an options section of its own (``grpo:``) gets its defaults when it has none."""
        if isinstance(data, dict):
            name = data.get("method", "sft")
            method = METHODS.get(name) if isinstance(name, str) else None
            if method is not None and method.options and data.get(name) is None:
                data = {**data, name: {}}
        return data

    @model_validator(mode="after")
    def _method_sections(self) -> "FinetuneConfig":
        for name, method in METHODS.items():
            if method.options and getattr(self, name) is not None and self.method != name:
                raise ValueError(f"a `{name}:` section needs `method: {name}` (the method is {self.method!r})")
        if not METHODS[self.method].replay:
            if self.data.replay is not None:
                raise ValueError(f"method {self.method!r} learns from the model's own answers, not from a fixed "
                                 "token stream, so data.replay does not apply; remove it (mix general data into "
                                 "the prompts with a data build instead)")
            if self.data.packing:
                raise ValueError(f"method {self.method!r} does not pack examples; remove data.packing")
        return self

    @property
    def uses_lora(self) -> bool:
        return self.lora is not None


def load_finetune_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> FinetuneConfig:
    """Read and validate a fine-tuning config (errors name file, line and field)."""
    return load_config(path, FinetuneConfig, overrides)
