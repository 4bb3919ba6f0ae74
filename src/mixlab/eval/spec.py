"""The task file's schema: what a task YAML may say, as pydantic models (no loading, no engines).

Kept apart from :mod:`mixlab.eval.tasks` (which finds, reads and checks task files against the
engine table) so the engines, the generator and the judge can use these types without importing
the module that imports them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PrivateAttr, model_validator

from mixlab.config import StrictModel, config_hash

# FastChat llm_judge/common.py: generation temperature per MT-Bench category.
FASTCHAT_TEMPERATURES: dict[str, float] = {
    "writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0,
    "reasoning": 0.0, "stem": 0.1, "humanities": 0.1, "arena-hard-200": 0.0,
}
# Categories whose judge prompts include a reference answer (FastChat's NEED_REF_CATS).
REFERENCE_CATEGORIES = ("math", "reasoning", "coding", "arena-hard-200")


class DataSpec(StrictModel):
    """Where items come from: a dataset adapter (``source``), a file (``path``; relative paths are
    under the data dir), or a function returning records (``generator: "module:function"`` called
    with ``args``, e.g. toyworld's item makers); filtered by ``split`` and ``where`` (field -> value
    or list of values)."""

    source: str | None = None
    path: str | None = None
    generator: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    split: str | None = None
    where: dict[str, Any] = Field(default_factory=dict)


class FewshotSpec(StrictModel):
    """``n`` examples before each item, drawn with ``seed`` from ``split`` (else the other items);
    ``match`` lists fields a shot must share with the item (MMLU: the subject); ``where`` filters the
    pool like ``data.where``. ``sampler: first_n`` takes the pool's first ``n`` in file order instead
    of a seeded draw, and ``samples`` gives the examples inline (lm-eval's ``fewshot_config.samples``,
    e.g. Minerva MATH's four worked solutions), used in order."""

    n: int = Field(0, ge=0)
    split: str | None = None
    match: list[str] = Field(default_factory=list)
    where: dict[str, Any] = Field(default_factory=dict)
    sampler: Literal["random", "first_n"] = "random"
    samples: list[dict[str, Any]] = Field(default_factory=list)
    seed: int = 1234
    delimiter: str = "\n\n"


class GenerationSpec(StrictModel):
    """Decoding settings for ``generate``/``code``/``judge`` kinds (``mixlab.eval.generation``):
    greedy when ``temperature`` is 0, else sampled with ``top_p``; ``n`` answers per prompt;
    ``stop`` sequences end an answer (it is cut before them); ``chat_template`` renders the prompt
    as a user turn with the tokenizer's chat template when it has one."""

    max_new_tokens: int = Field(256, ge=1)
    stop: list[str] = Field(default_factory=list)
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1)
    seed: int = 1234
    chat_template: bool = False


class JudgeSpec(StrictModel):
    """The ``judge:`` block of a judge task: where turns, category and reference answers come
    from (expressions over an item's fields), the judge prompt file (under the data dir unless
    absolute), generation temperatures per category, and how often to re-ask for a rating."""

    turns: str = "turns"
    category: str = "category"
    reference: str = "gpt4_reference or reference"
    prompts: str = "mt_bench/judge_prompts.jsonl"
    temperatures: dict[str, float] = Field(default_factory=lambda: dict(FASTCHAT_TEMPERATURES))
    default_temperature: float = Field(0.7, ge=0.0)
    reference_categories: list[str] = Field(default_factory=lambda: list(REFERENCE_CATEGORIES))
    max_retries: int = Field(2, ge=0, le=10)


class TaskSpec(StrictModel):
    """One task file. ``kind`` names its engine (:data:`mixlab.eval.engines.ENGINES`), which
    :func:`mixlab.eval.tasks.load_task` checks together with the kind's own rules."""

    name: str
    kind: str = Field(description="the engine that scores it: a name in `mixlab.eval.engines.ENGINES` (bpb, mc, generate, code, judge)")
    data: DataSpec
    prompt: str
    description: str = ""
    target_delimiter: str = " "
    choices: str | list[str] | None = None
    gold: str = "label"
    target: str | None = None
    scoring: Literal["full", "partial"] = "full"
    metrics: list[str]
    primary: str | None = None
    fewshot: FewshotSpec = Field(default_factory=FewshotSpec)
    generation: GenerationSpec | None = None
    verifier: str | None = None
    judge: JudgeSpec | None = None
    version: int = 1
    # The ``judge:`` block as written: results are keyed by the task's fingerprint, which hashed the
    # block as a plain mapping before it was typed, so it still does (finished results stay reusable).
    _judge_written: dict[str, Any] | None = PrivateAttr(default=None)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_judge_block(cls, data: Any, handler):
        spec = handler(data)
        if isinstance(data, dict) and isinstance(data.get("judge"), dict):
            spec._judge_written = dict(data["judge"])
        return spec

    @property
    def primary_metric(self) -> str:
        return self.primary or self.metrics[0]

    @property
    def decoding(self) -> GenerationSpec:
        """The generation settings (defaults when the file has no ``generation:`` block)."""
        return self.generation or GenerationSpec()

    @property
    def judging(self) -> JudgeSpec:
        """The judge settings (defaults when the file has no ``judge:`` block)."""
        return self.judge or JudgeSpec()

    @property
    def reference(self) -> str:
        """Expression giving a generated answer's reference: ``gold`` when the file sets it."""
        return self.gold if "gold" in self.model_fields_set else "reference_answer"

    def fingerprint(self) -> str:
        data = self.model_dump(mode="json")
        if self.judge is not None:
            data["judge"] = (self._judge_written if self._judge_written is not None
                             else self.judge.model_dump(mode="json", exclude_unset=True))
        return config_hash(data)
