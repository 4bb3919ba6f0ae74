"""Byte and BPE tokenizers: HF format, AutoTokenizer loading, exact byte accounting."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import AutoTokenizer

from mixlab.errors import ConfigError
from mixlab.models import tokenizer as T

TEXT = "def f(x):\n    return x ** 2  # héllo, wörld ✓ 🙂\n\tTabs and  spaces.\n"


def test_byte_tokenizer_ids_are_utf8_bytes(tmp_path):
    tok = T.byte_tokenizer()
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    assert ids == list(TEXT.encode("utf-8"))
    assert T.encode(tok, [TEXT])[0].tolist() == ids  # numpy fast path == the Rust tokenizer
    assert tok.decode(ids) == TEXT
    assert len(tok) == 258 and tok.eos_token == T.EOS and tok.eos_token_id == 256 and tok.pad_token_id == 257
    T.save(tok, tmp_path)
    loaded = AutoTokenizer.from_pretrained(str(tmp_path))
    assert loaded(TEXT, add_special_tokens=False)["input_ids"] == ids
    assert loaded.decode(ids) == TEXT
    assert T.is_byte_tokenizer(loaded)


def test_token_byte_lengths_are_exact():
    tok = T.byte_tokenizer()
    lengths = T.token_byte_lengths(tok)
    assert lengths[:256].tolist() == [1] * 256 and lengths[256] == 0 and lengths[257] == 0


def test_bpe_trains_to_vocab_size_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    syllables = ["ka", "lo", "mi", "tru", "sen", "vé", "do", "rix", "pa", "nu", "gel", "sha"]
    corpus = [" ".join("".join(rng.choice(syllables, size=rng.integers(1, 4))) for _ in range(30)) + ".\n"
              for _ in range(300)]
    tok = T.build_tokenizer(T.TokenizerConfig(kind="bpe", vocab_size=400), corpus)
    assert len(tok) == 400
    assert not T.is_byte_tokenizer(tok)
    ids = T.encode(tok, [TEXT])[0]
    assert tok.decode(ids.tolist()) == TEXT  # byte-level BPE never loses text
    assert len(T.encode(tok, [corpus[0]])[0]) < len(corpus[0].encode()) / 2  # merges learned
    lengths = T.token_byte_lengths(tok)
    assert int(lengths[ids].sum()) == len(TEXT.encode("utf-8"))  # exact bytes per token
    T.save(tok, tmp_path)
    loaded = AutoTokenizer.from_pretrained(str(tmp_path))
    assert loaded(TEXT, add_special_tokens=False)["input_ids"] == ids.tolist()
    assert loaded.eos_token == T.EOS


def test_bpe_vocab_too_small():
    with pytest.raises(ConfigError, match="too small"):
        T.train_bpe(["abc"], 200)


def test_encode_many_documents_matches_tokenizer():
    tok = T.byte_tokenizer()
    docs = ["", "a", "ünï", "x" * 1000]
    assert [a.tolist() for a in T.encode(tok, docs)] == [tok(d, add_special_tokens=False)["input_ids"] for d in docs]
    assert all(a.dtype == np.int32 for a in T.encode(tok, docs))
