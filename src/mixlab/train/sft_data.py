"""Fine-tuning data: records -> prompt/completion token sequences (+ replay) -> the loop's batches.

Targets come from a data-build directory (``mixed/train.jsonl``), a records JSONL file, or named
datasets (their ``train`` split). Each record becomes ``prompt + completion + EOS`` where the prompt
is the tokenizer's chat template applied to the question when it has one (and ``chat_template`` is
not off), else ``prompt_template``; labels mask the prompt so only completion tokens are trained.
Without a chat template the text is tokenized exactly as the evaluation engine scores it (the
prompt's trailing whitespace moves to the completion, the pair is encoded as one string and split
at the prompt's length), so fine-tuning trains the very tokens evaluation measures.

Replay mixes a general-data source into the stream at a ratio: a records dataset or file (trained
like the targets) or a text source URI (``toyworld:prose``, ``corpus:wikitext2``, ``file:...``:
language modelling on every token). Every example's first token is never a target, so packed
examples never predict across their boundary and each completion is its own run of targets.

:class:`SFTBatches` gives optimizer step ``s`` the examples ``[s*B, (s+1)*B)`` of an endless stream
of seeded per-epoch permutations: a pure function of the step, so resuming needs no state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mixlab.data.records import Record, iter_json_lines, record_from_dict
from mixlab.errors import ConfigError, DataError
from mixlab.train.objectives import IGNORE

if TYPE_CHECKING:
    from mixlab.train.finetune.config import DataSection, ReplaySection


@dataclass
class Example:
    """One training sequence; ``labels`` is ``IGNORE`` where no loss is taken."""

    ids: np.ndarray
    labels: np.ndarray
    replay: bool = False


@dataclass
class SFTData:
    examples: list[Example]
    n_target: int
    n_replay: int
    n_records: int
    truncated: int
    chat_template: bool
    origin: str
    replay_origin: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def completion_tokens(self) -> int:
        return int(sum((e.labels != IGNORE).sum() for e in self.examples))


# ---------------------------------------------------------------- records


def _read_lines(path: Path) -> list[tuple[str, Record]]:
    return [(f"{path}:{n}", record_from_dict(obj, path, n)) for n, obj in iter_json_lines(path)]


def _dataset_records(names: Sequence[str], split: str | None) -> list[tuple[str, Record]]:
    from mixlab.data.sources import load_records

    out = []
    for name in names:
        recs = load_records(name)
        if split is not None:
            recs = [r for r in recs if r.metadata.get("split", split) == split]
            if not recs:
                raise DataError(f"dataset {name!r} has no records of split {split!r}; set data.split "
                                "to one it has (or null for all)")
        out += [(f"dataset {name}, record {r.id}", r) for r in recs]
    return out


def load_targets(section: DataSection) -> tuple[list[tuple[str, Record]], str]:
    """(where, record) pairs of the fine-tuning targets and a description of their origin."""
    if section.build:
        path = Path(section.build).expanduser() / "mixed" / "train.jsonl"
        if not path.is_file():
            raise DataError("not a data-build directory (no mixed/train.jsonl); run `mixlab data build` "
                            "first or point data.build at its --out directory", Path(section.build))
        found, origin = _read_lines(path), f"build {section.build}"
    elif section.records:
        found, origin = _read_lines(Path(section.records).expanduser()), f"records {section.records}"
    else:
        found, origin = _dataset_records(section.datasets or [], section.split), f"datasets {', '.join(section.datasets or [])}"
    if not found:
        raise DataError(f"no fine-tuning records in {origin}")
    if section.where:
        found = [(w, r) for w, r in found if all(r.metadata.get(k) in v for k, v in section.where.items())]
        if not found:
            raise DataError(f"data.where {section.where} keeps none of the records in {origin}; check the "
                            "metadata keys and values (a record's metadata is in its JSON line)")
        origin += f" where {section.where}"
    check_completions(found)
    return found, origin


def select_targets(section: DataSection, seed: int) -> tuple[list[tuple[str, Record]], str]:
    """The records a run uses: :func:`load_targets`, cut to ``max_records``, sampled to ``sample_ratio``."""
    found, origin = load_targets(section)
    if section.max_records is not None:
        found = found[: section.max_records]
    return sample(found, section.sample_ratio, seed), origin


def check_completions(found: Sequence[tuple[str, Record]]) -> None:
    """Every record needs a non-empty completion (``solution`` or ``reference_answer``) to train on."""
    bad = [where for where, r in found if not r.completion.strip()]
    if bad:
        raise DataError(f"{len(bad)} record(s) have no completion (empty `solution` and `reference_answer`), "
                        f"e.g. {bad[0]}; fill one of them or drop those records")


def sample(items: list[Any], ratio: float, seed: int, stream: int = 3) -> list[Any]:
    """A seeded fraction of ``items`` (at least one), keeping their order."""
    if ratio >= 1:
        return items
    k = max(1, int(round(ratio * len(items))))
    rng = np.random.default_rng([seed, stream])
    keep = np.sort(rng.choice(len(items), size=k, replace=False))
    return [items[i] for i in keep]


# ---------------------------------------------------------------- formatting


class Formatter:
    """Question -> prompt text, and (question, completion) -> token ids with prompt labels masked."""

    def __init__(self, tokenizer: Any, section: DataSection):
        self.tok = tokenizer
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if section.chat_template is True and not has_template:
            raise ConfigError("data.chat_template is true but the model's tokenizer has no chat template; "
                              "set it to auto or false")
        self.chat = has_template and section.chat_template is not False
        self.template = section.prompt_template
        self.max_len = section.max_seq_len
        self.eos = tokenizer.eos_token_id

    def prompt(self, question: str) -> str:
        if self.chat:
            return self.tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                                add_generation_prompt=True)
        return self.template.format(question=question)

    def encode(self, question: str, completion: str) -> tuple[Example, bool]:
        """The example and whether it was cut at ``max_seq_len``."""
        prompt = self.prompt(question)
        if self.chat:  # the template already holds any special tokens
            p = self.tok(prompt, add_special_tokens=False)["input_ids"]
            ids = p + self.tok(completion, add_special_tokens=False)["input_ids"]
        else:  # exactly the evaluation engine's tokenization of (context, continuation)
            n = len(prompt) - len(prompt.rstrip())
            ctx, cont = (prompt[:-n], prompt[-n:] + completion) if n else (prompt, completion)
            p = self.tok(ctx)["input_ids"]
            ids = self.tok(ctx + cont)["input_ids"]
        if self.eos is not None:
            ids = ids + [self.eos]
        return _example(ids, len(p), self.max_len)


def _example(ids: list[int], n_prompt: int, max_len: int, replay: bool = False) -> tuple[Example, bool]:
    arr = np.asarray(ids[:max_len], dtype=np.int64)
    labels = arr.copy()
    labels[: max(n_prompt, 1)] = IGNORE  # the first token is context, never a target
    return Example(arr, labels, replay), len(ids) > max_len


def text_examples(tokenizer: Any, docs: Sequence[str], max_len: int) -> list[Example]:
    """Documents as language-modelling examples: windows of ``max_len`` tokens, loss on every token."""
    from mixlab.models.tokenizer import encode

    out = []
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for ids in encode(tokenizer, list(docs)):
        seq = eos + ids.tolist() + eos  # EOS first: documents start as they did in pretraining
        for s in range(0, max(len(seq) - 1, 1), max_len):
            window = seq[s:s + max_len]
            if len(window) > 1:
                out.append(_example(window, 1, max_len, replay=True)[0])
    return out


# ---------------------------------------------------------------- replay


def load_replay(section: ReplaySection, formatter: Formatter, seed: int) -> tuple[list[Example], str]:
    """The replay pool: every example the replay source offers (sampled to the ratio by the caller)."""
    src = section.source
    if (uris := section.text_uris()) is not None:
        from mixlab.data.text import TextSourceConfig, load_source

        text = load_source("replay", TextSourceConfig(uri=uris), seed)
        return text_examples(formatter.tok, text.train, formatter.max_len), f"text {', '.join(uris)}"
    path = Path(src).expanduser()
    if path.suffix in (".jsonl", ".gz") or path.exists():
        if not path.is_file():
            raise DataError("replay source file not found", path)
        found = _read_lines(path)
    else:
        from mixlab.data.sources import get_source

        try:
            get_source(src)
        except DataError as e:
            raise DataError(f"data.replay.source: {e}. Give a dataset name, a records .jsonl file, or a "
                            f"text URI ({', '.join(k + ':...' for k in section.text_kinds)})") from None
        found = _dataset_records([src], "train")
    found = [(w, r) for w, r in found if r.completion.strip()]
    return [formatter.encode(r.question, r.completion)[0] for _, r in found], f"records {src}"


def replay_count(n_target: int, ratio: float) -> int:
    """Replay examples so that they make ``ratio`` of the final stream."""
    return int(round(n_target * ratio / (1 - ratio)))


def pick_replay(pool: list[Example], n: int, seed: int) -> list[Example]:
    """``n`` replay examples, without replacement while the pool lasts, then cycling through it."""
    if not pool:
        raise DataError("the replay source gave no examples")
    rng = np.random.default_rng([seed, 7])
    order = np.concatenate([rng.permutation(len(pool)) for _ in range(n // len(pool) + 1)])[:n]
    return [pool[i] for i in order]


# ---------------------------------------------------------------- packing


def pack(examples: Sequence[Example], max_len: int, seed: int) -> list[Example]:
    """Concatenate shuffled examples into rows of at most ``max_len`` tokens (next fit, in order).

    Plain packing: an example attends to the earlier examples of its row (no block-diagonal mask),
    as in most SFT packers; it trades exact per-example conditioning for less padding. Losses stay
    per example, because no example's first token is a target.
    """
    order = np.random.default_rng([seed, 11]).permutation(len(examples))
    rows: list[Example] = []
    ids: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    used = 0
    for i in order:
        e = examples[i]
        if used and used + len(e.ids) > max_len:
            rows.append(Example(np.concatenate(ids), np.concatenate(labels)))
            ids, labels, used = [], [], 0
        ids.append(e.ids)
        labels.append(e.labels)
        used += len(e.ids)
    if ids:
        rows.append(Example(np.concatenate(ids), np.concatenate(labels)))
    return rows


def build_sft_data(section: DataSection, tokenizer: Any, seed: int) -> SFTData:
    """Read, check, sample, format and (optionally) pack the targets and replay of a run."""
    found, origin = select_targets(section, seed)
    fmt = Formatter(tokenizer, section)
    encoded = [fmt.encode(r.question, r.completion) for _, r in found]
    examples = [e for e, _ in encoded]
    truncated = sum(cut for _, cut in encoded)
    empty = [w for (w, _), e in zip(found, examples) if not (e.labels != IGNORE).any()]
    if empty:
        raise DataError(f"{len(empty)} record(s) keep no completion token within data.max_seq_len="
                        f"{section.max_seq_len} (e.g. {empty[0]}); raise max_seq_len")
    n_target, replay, replay_origin = len(examples), [], None
    if section.replay is not None:
        pool, replay_origin = load_replay(section.replay, fmt, seed)
        replay = pick_replay(pool, replay_count(n_target, section.replay.ratio), seed)
    stream = examples + replay
    if section.packing:
        stream = pack(stream, section.max_seq_len, seed)
    return SFTData(stream, n_target, len(replay), len(found), truncated, fmt.chat, origin, replay_origin)


# ---------------------------------------------------------------- batches for the loop


class SFTBatches:
    """The loop's BatchSource over fixed examples; adds ``step`` to each micro-batch for the anchor.

    With ``world`` ranks, rank ``r`` takes the ``r``-th contiguous ``batch_size / world`` of each step's examples.
    """

    def __init__(self, examples: Sequence[Example], batch_size: int, micro_batch_size: int, pad_id: int,
                 seed: int, device: torch.device, rank: int = 0, world: int = 1):
        self.examples, self.batch_size, self.micro = list(examples), batch_size, micro_batch_size
        self.pad_id, self.seed, self.device = pad_id, seed, device
        self.rank, self.world = rank, world

    @lru_cache(maxsize=4)
    def _perm(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.examples))

    def indices(self, step: int) -> list[int]:
        n = len(self.examples)
        return [int(self._perm(i // n)[i % n]) for i in range(step * self.batch_size, (step + 1) * self.batch_size)]

    def collate(self, items: Sequence[Example], step: int) -> dict[str, torch.Tensor]:
        width = max(len(e.ids) for e in items)
        ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, e in enumerate(items):
            ids[row, : len(e.ids)] = torch.from_numpy(e.ids)
            labels[row, : len(e.ids)] = torch.from_numpy(e.labels)
            mask[row, : len(e.ids)] = 1
        batch = {"input_ids": ids, "labels": labels, "attention_mask": mask}
        return {**{k: v.to(self.device) for k, v in batch.items()}, "step": torch.tensor(step)}

    def batch(self, step: int) -> list[dict[str, torch.Tensor]]:
        local = self.batch_size // self.world
        # Length-grouped micro-batches: the step's examples are sorted by length (stable) before they are
        # cut into ranks and micro-batches, so each micro-batch pads to similar lengths and the ranks of a
        # DDP step together still hold exactly the single-process micro-batches. The gradient is unchanged
        # (the loop divides the summed loss by the step's total token count); on GSM8K chat examples with
        # micro-batches of 2 out of 8 this removes most of the padding (about a third of the compute).
        step_items = sorted((self.examples[i] for i in self.indices(step)), key=lambda e: len(e.ids))
        items = step_items[self.rank * local:(self.rank + 1) * local]
        return [self.collate(items[i:i + self.micro], step) for i in range(0, len(items), self.micro)]

    def state_dict(self) -> dict[str, Any]:
        return {"n_examples": len(self.examples), "seed": self.seed}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("n_examples") != len(self.examples):
            raise DataError(f"the run's checkpoint was trained on {state.get('n_examples')} examples but the data "
                            f"now gives {len(self.examples)}; the data changed under the run — use a new --out")
