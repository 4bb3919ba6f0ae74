"""Text sources for pretraining: a domain name plus its documents, split into train and held-out.

A source is named by a URI (or a list of them, concatenated):
- ``corpus:<name>``     a shared ``corpus_<name>`` folder (:func:`mixlab.data.sources.corpus.load_corpus`);
- ``file:<path>``       a ``.txt`` / ``.jsonl`` file or a folder of them;
- ``toyworld:<domain>`` documents from the embedded synthetic world (``mixlab.data.toyworld``);
- ``records:<dataset>`` the question + completion text of a record dataset (official train split only,
  so benchmark test items never leak into pretraining).

Held-out text (for in-loop bits-per-byte) is chosen by a hash of (seed, source, document index), so
it is stable across runs and never overlaps training text. Token counts give the natural
distribution (priors) that mixtures are compared against.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import field_validator, model_validator

from mixlab.config import StrictModel
from mixlab.data.sources.corpus import Split, load_corpus, read_path
from mixlab.errors import ConfigError, DataError

KINDS = ("corpus", "file", "toyworld", "records")


class TextSourceConfig(StrictModel):
    """One text source. A bare string in YAML is shorthand for ``{uri: <string>}``."""

    uri: list[str]
    text_field: str = "text"
    split: Split = "file"
    toyworld_documents: int = 2000
    toyworld_heldout_documents: int = 100
    heldout_fraction: float = 0.05
    heldout_max_bytes: int = 100_000
    max_train_bytes: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, (str, list)):
            data = {"uri": data}
        if isinstance(data, dict) and isinstance(data.get("uri"), str):
            data = {**data, "uri": [data["uri"]]}
        return data

    @field_validator("uri")
    @classmethod
    def _check_uri(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("a source needs at least one uri")
        for u in v:
            kind, _, arg = u.partition(":")
            if kind not in KINDS or not arg:
                raise ValueError(f"{u!r} is not a source uri; write one of "
                                 + ", ".join(f"'{k}:<name>'" for k in KINDS))
        return v

    @field_validator("heldout_fraction")
    @classmethod
    def _check_fraction(cls, v: float) -> float:
        if not 0 < v < 1:
            raise ValueError("heldout_fraction must be between 0 and 1")
        return v


@dataclass
class SourceText:
    """A source's documents: ``train`` feeds the sampler, ``heldout`` the in-loop evaluation."""

    name: str
    train: list[str]
    heldout: list[str]

    @property
    def train_bytes(self) -> int:
        return sum(len(d.encode("utf-8")) for d in self.train)


@dataclass
class TokenizedSource:
    """Token ids of one source: training documents packed with EOS separators, held-out likewise."""

    name: str
    train: np.ndarray  # int32, documents joined by EOS
    heldout: np.ndarray  # int32, documents joined by EOS
    n_documents: int

    @property
    def n_tokens(self) -> int:
        return int(self.train.size)


def _hash_unit(*parts: object) -> float:
    """A deterministic number in [0, 1) from ``parts`` (stable across processes, unlike hash())."""
    h = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


def _toyworld_documents(domain: str, n: int, seed: int, split: str) -> list[str]:
    try:
        from mixlab.data import toyworld
    except ModuleNotFoundError as e:
        if e.name == "mixlab.data.toyworld":
            raise DataError("toyworld sources need mixlab.data.toyworld, which is not installed in this checkout") from None
        raise
    if domain not in toyworld.DOMAINS:
        raise ConfigError(f"unknown toyworld domain {domain!r}; known: {', '.join(toyworld.DOMAINS)}")
    return list(toyworld.documents(domain, n, seed=seed, split=split))


def _record_documents(dataset: str) -> list[str]:
    from mixlab.data.sources import load_records

    records = load_records(dataset)
    train = [r for r in records if r.metadata.get("split") == "train"] or records
    return [f"{r.question}\n{r.completion}" for r in train]


def _documents(uri: str, cfg: TextSourceConfig, seed: int) -> list[str]:
    kind, _, arg = uri.partition(":")
    if kind == "corpus":
        return load_corpus(arg)
    if kind == "file":
        return read_path(Path(arg).expanduser(), cfg.text_field, cfg.split)
    if kind == "records":
        return _record_documents(arg)
    return _toyworld_documents(arg, cfg.toyworld_documents, seed, "train")


def split_heldout(name: str, docs: Sequence[str], fraction: float, max_bytes: int, seed: int) -> tuple[list[str], list[str]]:
    """Split documents into (train, heldout) by hash rank; at least one document on each side.

    Documents are ranked by a hash of (seed, source name, index); the lowest-ranked ``fraction`` are
    held out, up to ``max_bytes`` of text. Training documents keep their original order.
    """
    if len(docs) < 2:
        raise DataError(f"source {name!r} has {len(docs)} document(s); it needs at least 2 "
                        "(one for training, one held out for evaluation)")
    order = sorted(range(len(docs)), key=lambda i: _hash_unit(seed, name, i))
    want = max(1, int(round(fraction * len(docs))))
    held: set[int] = set()
    used = 0
    for i in order[: min(want, len(docs) - 1)]:
        size = len(docs[i].encode("utf-8"))
        if held and used + size > max_bytes:
            break
        held.add(i)
        used += size
    train = [d for i, d in enumerate(docs) if i not in held]
    heldout = [docs[i] for i in sorted(held)]
    return train, heldout


def load_source(name: str, cfg: TextSourceConfig, seed: int = 0) -> SourceText:
    """Read a source's documents and split off its held-out part."""
    docs: list[str] = []
    heldout_extra: list[str] = []
    for uri in cfg.uri:
        docs.extend(_documents(uri, cfg, seed))
        kind, _, arg = uri.partition(":")
        if kind == "toyworld":  # the toy world has its own held-out split
            heldout_extra.extend(_toyworld_documents(arg, cfg.toyworld_heldout_documents, seed, "heldout"))
    if all(u.startswith("toyworld:") for u in cfg.uri):
        train, heldout = docs, heldout_extra
    else:
        train, heldout = split_heldout(name, docs, cfg.heldout_fraction, cfg.heldout_max_bytes, seed)
        heldout += heldout_extra
    if cfg.max_train_bytes is not None:
        train = head_bytes(train, cfg.max_train_bytes)
    if not train or not heldout:
        raise DataError(f"source {name!r} ({', '.join(cfg.uri)}) has no text for training or held-out evaluation")
    return SourceText(name, train, heldout)


def head_bytes(docs: list[str], max_bytes: int) -> list[str]:
    """The leading documents up to about ``max_bytes`` of UTF-8 (the one that crosses it included)."""
    out, used = [], 0
    for d in docs:
        if used >= max_bytes:
            break
        out.append(d)
        used += len(d.encode("utf-8"))
    return out


def tokenize_source(src: SourceText, tok: Any) -> TokenizedSource:
    """Encode and pack a source: ``doc1 EOS doc2 EOS ...`` as one int32 array per split."""
    from mixlab.models.tokenizer import encode

    eos = np.asarray([tok.eos_token_id], dtype=np.int32)

    def pack(docs: list[str]) -> np.ndarray:
        parts = encode(tok, docs)
        return np.concatenate([x for p in parts for x in (p, eos)]) if parts else np.zeros(0, np.int32)

    return TokenizedSource(src.name, pack(src.train), pack(src.heldout), len(src.train))


def priors(sources: Sequence[TokenizedSource]) -> dict[str, float]:
    """The natural distribution: each source's share of all training tokens."""
    total = sum(s.n_tokens for s in sources)
    return {s.name: s.n_tokens / total for s in sources}
