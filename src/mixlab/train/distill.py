"""Distillation data: sample k answers per question from a teacher, keep those a verifier accepts.

The teacher is any model mixlab loads (a pretraining or fine-tuning run, a Hugging Face folder, an
alias, a cached hub id): the same family, another family, or the model itself (self-distillation).
Questions come from the same ``data:`` section as fine-tuning and are prompted exactly as SFT
prompts them (chat template when the teacher has one, else ``data.prompt_template``); answers are
verified by :mod:`mixlab.train.rewards` (``auto``: by answer type, as evaluation does).

``OUT`` holds ``samples.jsonl`` (every question's k answers, scores and verdicts), ``train.jsonl``
(the accepted answers as records whose ``solution`` is the answer: ``method: sft`` with
``data.records: OUT/train.jsonl`` gives teacher-SFT or self-SFT), ``info.json`` (kept / sampled
per dataset, and the provenance: teacher, sampling settings, verifier), ``config.yaml`` and
``meta.json``.

Resumable: questions are sampled in fixed chunks, each seeded from (seed, chunk index), and a
chunk's rows are appended and fsynced as soon as it is verified; a run killed at any point (even
``kill -9``) restarts after its last finished chunk and keeps every finished sample.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import Field, model_validator

from mixlab import atomic
from mixlab.config import StrictModel, load_config
from mixlab.data.records import Record, make_id
from mixlab.errors import ConfigError, MixlabError
from mixlab.runs.rundir import RunDir
from mixlab.train import rewards
from mixlab.train.finetune.config import DataSection

SAMPLES = "samples.jsonl"
TRAIN = "train.jsonl"


class TeacherSection(StrictModel):
    """The model that writes the answers."""

    model: str = Field(description="a run directory, a Hugging Face folder, an alias (smollm2-135m) or a cached hub id")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = "auto"


class SamplingSection(StrictModel):
    k: int = Field(4, ge=1, description="answers sampled per question")
    temperature: float = Field(0.8, ge=0, description="0: greedy (then k must be 1)")
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(256, gt=0)
    stop: list[str] = Field(default_factory=list)
    batch_size: int = Field(16, gt=0, description="questions per generation call (one resumable chunk)")

    @model_validator(mode="after")
    def _greedy(self) -> "SamplingSection":
        if self.temperature == 0 and self.k > 1:
            raise ValueError("greedy decoding (temperature 0) gives one answer; set sampling.k to 1 or temperature > 0")
        return self


class DistillConfig(StrictModel):
    """A distillation-data run (``mixlab distill``)."""

    kind: Literal["distill"] = "distill"
    seed: int = 0
    teacher: TeacherSection
    data: DataSection
    sampling: SamplingSection = SamplingSection()
    verifier: str | dict[str, str] = Field("auto", description="auto, a verifier name, or {dataset: verifier}")
    keep_per_question: int | None = Field(None, gt=0, description="keep at most this many accepted answers per question")
    guide: str | None = Field(None, description="the teacher's prompt instead of the bare question: a template with "
                              "{question} and {solution} (the record's reference solution, else its answer), e.g. "
                              "self-distillation fine-tuning (Yang et al. 2024), where the model rewrites the reference "
                              "in its own words; kept answers are trained on after the original question")
    threads: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _check(self) -> "DistillConfig":
        from mixlab.eval.verifiers import VERIFIERS

        names = list(self.verifier.values()) if isinstance(self.verifier, dict) else [self.verifier]
        unknown = [n for n in names if n != "auto" and n not in VERIFIERS]
        if unknown:
            raise ValueError(f"unknown verifier {', '.join(map(repr, unknown))}; known: auto, {', '.join(sorted(VERIFIERS))}")
        if self.data.replay is not None:
            raise ValueError("data.replay does not apply to distillation (it samples answers to questions); remove it")
        if self.guide is not None and "{question}" not in self.guide:
            raise ValueError("guide must contain {question} (and usually {solution}): it is the teacher's prompt")
        return self


def load_distill_config(path: str | Path, overrides: Sequence[str] = ()) -> DistillConfig:
    return load_config(path, DistillConfig, list(overrides))


# ---------------------------------------------------------------- plan


@dataclass
class DistillPrepared:
    config: DistillConfig
    model: Any
    tokenizer: Any
    teacher_path: str
    records: list[Record]
    checks: list[rewards.Check]
    prompts: list[str]
    chat: bool

    @property
    def chunks(self) -> list[range]:
        b = self.config.sampling.batch_size
        return [range(s, min(s + b, len(self.records))) for s in range(0, len(self.records), b)]


def load_teacher(section: TeacherSection) -> tuple[Any, Any, str]:
    """The teacher in eval mode; an unloadable one is an error naming ``teacher.model``."""
    from mixlab.train.pretrain import resolve_device
    from mixlab.train.finetune.base import load_base
    from mixlab.train.finetune.config import ModelSection

    try:
        model, tok, where = load_base(ModelSection(base=section.model, dtype=section.dtype), resolve_device(section.device))
    except MixlabError as e:
        raise ConfigError(f"teacher.model: cannot load {section.model!r} ({e}); give a run directory, a Hugging Face "
                          "model folder, an alias such as smollm2-135m, or a hub id already in the local cache") from None
    return model.eval(), tok, where


def prepare(cfg: DistillConfig, status: Callable[[str], None] | None = None) -> DistillPrepared:
    """Read the questions, plan their verification and load the teacher: every user error surfaces here."""
    from mixlab.train.sft_data import Formatter, select_targets

    say = status or (lambda _m: None)
    say("reading data")
    found, _ = select_targets(cfg.data, cfg.seed)
    checks = rewards.plan_checks(found, cfg.verifier, field="verifier")
    if any(c.verifier == "code" for c in checks):
        from mixlab.eval.sandbox import check_sandbox

        check_sandbox()
    say("loading teacher")
    model, tok, where = load_teacher(cfg.teacher)
    fmt = Formatter(tok, cfg.data)
    asked = [teacher_prompt(cfg.guide, r) for _, r in found]
    prompts = [q if fmt.chat else fmt.prompt(q) for q in asked]
    return DistillPrepared(cfg, model, tok, where, [r for _, r in found], checks, prompts, fmt.chat)


def teacher_prompt(guide: str | None, record: Record) -> str:
    """What the teacher is asked: the question, or ``guide`` filled with the question and its reference."""
    if guide is None:
        return record.question
    solution = record.solution or str(record.reference_answer or "")
    return guide.replace("{question}", record.question).replace("{solution}", solution)


# ---------------------------------------------------------------- resumable samples


def read_done(path: Path) -> dict[str, dict[str, Any]]:
    """Finished rows of ``samples.jsonl`` by record id; a torn last line (a killed write) is cut off."""
    if not path.is_file():
        return {}
    raw = path.read_bytes()
    done, good = {}, 0
    for line in raw.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            break
        done[row["id"]] = row
        good += len(line)
    if good < len(raw):
        with open(path, "r+b") as f:
            f.truncate(good)
    return done


def _append(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "ab") as f:
        f.write(b"".join(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in rows))
        f.flush()
        os.fsync(f.fileno())


def sample_chunk(prep: DistillPrepared, index: int) -> list[dict[str, Any]]:
    """The rows of chunk ``index``: k answers per question, their scores and verdicts (seeded per chunk)."""
    from mixlab.eval.generation import Generator
    from mixlab.eval.tasks import GenerationSpec

    s, cfg = prep.config.sampling, prep.config
    chunk = prep.chunks[index]
    spec = GenerationSpec(max_new_tokens=s.max_new_tokens, stop=s.stop, temperature=s.temperature, top_p=s.top_p,
                          n=s.k, seed=cfg.seed * 1_000_003 + index, chat_template=prep.chat)
    gen = Generator(prep.model, prep.tokenizer, batch_size=len(chunk))
    outs = gen.generate([prep.prompts[i] for i in chunk], spec)
    rows = []
    for i, comps in zip(chunk, outs, strict=True):
        texts = [c.text for c in comps]
        scores = rewards.score_many(texts, [prep.checks[i]] * len(texts))
        r = prep.records[i]
        rows.append({"id": r.id, "dataset": r.dataset, "chunk": index, "completions": texts, "scores": scores,
                     "accepted": [sc >= 1.0 for sc in scores], "finish": [c.finish for c in comps]})
    return rows


# ---------------------------------------------------------------- outputs


def kept_records(prep: DistillPrepared, done: dict[str, dict[str, Any]]) -> list[Record]:
    """The accepted answers as SFT records (``solution`` = the answer), with their provenance."""
    limit = prep.config.keep_per_question
    out = []
    for r, check in zip(prep.records, prep.checks, strict=True):
        row = done[r.id]
        kept = [j for j, ok in enumerate(row["accepted"]) if ok][:limit]
        for j in kept:
            original = r.metadata.get("original_id", r.id.split("/", 1)[-1])
            out.append(Record(
                id=make_id(r.dataset, f"{original}~distill{j}"), dataset=r.dataset, domain=r.domain, question=r.question,
                reference_answer=r.reference_answer, answer_type=r.answer_type, choices=r.choices, label=r.label,
                solution=row["completions"][j],
                metadata={**r.metadata, "distilled_from": r.id, "sample": j, "teacher": prep.config.teacher.model,
                          "verifier": check.verifier},
            ))
    return out


def pass_rates(prep: DistillPrepared, done: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per dataset: questions, answers sampled and kept, kept fraction, questions with a kept answer."""
    per: dict[str, dict[str, Any]] = {}
    limit = prep.config.keep_per_question
    for r in prep.records:
        row = done[r.id]
        d = per.setdefault(r.dataset, {"questions": 0, "sampled": 0, "accepted": 0, "kept": 0, "questions_kept": 0})
        acc = sum(row["accepted"])
        kept = min(acc, limit) if limit else acc
        d["questions"] += 1
        d["sampled"] += len(row["accepted"])
        d["accepted"] += acc
        d["kept"] += kept
        d["questions_kept"] += kept > 0
    for d in per.values():
        d["pass_rate"] = d["accepted"] / d["sampled"] if d["sampled"] else 0.0
    return per


def describe_rates(per: dict[str, dict[str, Any]]) -> list[str]:
    """``gsm8k: 3,151 of 7,397 accepted, 43% (...)`` lines."""
    return [f"{name}: {d['accepted']:,} of {d['sampled']:,} accepted, {100 * d['pass_rate']:.0f}%; {d['kept']:,} kept "
            f"({d['questions_kept']:,} of {d['questions']:,} questions have one)" for name, d in per.items()]


@dataclass
class DistillResult:
    out: Path
    train_file: Path
    per_dataset: dict[str, dict[str, Any]]
    kept: int
    sampled: int
    skipped: bool = False


def distill(cfg: DistillConfig, out: str | Path, status: Callable[[str], None] | None = None,
            on_chunk: Callable[[int, int], None] | None = None) -> DistillResult:
    """Sample, verify and write (or resume, or skip when finished) the distillation data of ``cfg`` in ``out``.

    ``on_chunk(done_questions, total_questions)`` is called after every finished chunk.
    """
    out = Path(out)
    say = status or (lambda _m: None)
    run = RunDir.open(out, cfg, "distill")
    if run.complete:
        info = orjson.loads((out / "info.json").read_bytes())
        return DistillResult(out, out / TRAIN, info["per_dataset"], info["kept"], info["sampled"], skipped=True)
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    prep = prepare(cfg, say)
    run.start(cfg.seed, teacher=prep.teacher_path)
    done = read_done(out / SAMPLES)
    resumed = len(done)
    say("sampling")
    for index, chunk in enumerate(prep.chunks):
        missing = [i for i in chunk if prep.records[i].id not in done]
        if missing:
            rows = [r for r in sample_chunk(prep, index) if r["id"] not in done]
            _append(out / SAMPLES, rows)
            done.update({r["id"]: r for r in rows})
        if on_chunk is not None:
            on_chunk(chunk.stop, len(prep.records))
    kept = kept_records(prep, done)
    atomic.write_jsonl(out / TRAIN, [r.to_dict() for r in kept])
    per = pass_rates(prep, done)
    s = cfg.sampling
    info = {
        "per_dataset": per, "kept": len(kept), "sampled": sum(d["sampled"] for d in per.values()),
        "accepted": sum(d["accepted"] for d in per.values()), "questions": len(prep.records),
        "teacher": {"model": cfg.teacher.model, "resolved": prep.teacher_path, "dtype": cfg.teacher.dtype},
        "sampling": s.model_dump(), "seed": cfg.seed, "chat_template": prep.chat,
        "verifier": cfg.verifier, "guide": cfg.guide, "verifiers_used": sorted({c.verifier for c in prep.checks}),
        "train_file": TRAIN,
    }
    atomic.write_json(out / "info.json", info)
    run.finish(resumed_questions=resumed, seconds=round(time.perf_counter() - t0, 3))
    return DistillResult(out, out / TRAIN, per, len(kept), info["sampled"])
