"""Corpus readers and text sources: documents, held-out splits, token counts, clear errors."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from mixlab.data.sources import corpus
from mixlab.data.text import TextSourceConfig, load_source, priors, split_heldout, tokenize_source
from mixlab.errors import ConfigError, DataError
from mixlab.models.tokenizer import EOS, byte_tokenizer


def test_txt_splits(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text(" = Alpha = \n\n one .\n\n = = Sec = = \n\n two .\n = Beta = \n\n three .\n")
    assert corpus.read_txt(p) == [p.read_text().strip("\n")]
    assert corpus.read_txt(p, "paragraph") == [" = Alpha = ", " one .", " = = Sec = = ", " two .\n = Beta = ", " three ."]
    wiki = corpus.read_txt(p, "wikitext")
    assert len(wiki) == 2 and wiki[0].startswith(" = Alpha") and "two" in wiki[0] and wiki[1].startswith(" = Beta")


def test_invalid_utf8_names_file_and_line(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_bytes(b"fine\nalso fine\nbad \xff byte\n")
    with pytest.raises(DataError, match=r"bad\.txt:3: not valid UTF-8"):
        corpus.read_txt(p)


def test_jsonl_reader_and_errors(tmp_path):
    p = tmp_path / "c.jsonl.gz"
    with gzip.open(p, "wt") as f:
        f.write(json.dumps({"text": "doc one"}) + "\n\n" + json.dumps({"text": "  "}) + "\n" + json.dumps({"text": "doc two"}) + "\n")
    assert corpus.read_jsonl(p) == ["doc one", "doc two"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "ok"}) + "\n" + json.dumps({"body": "x"}) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:2: missing text field 'text' \(fields: body\)"):
        corpus.read_jsonl(bad)
    bad.write_text(json.dumps({"body": "x"}) + "\n")
    assert corpus.read_jsonl(bad, "body") == ["x"]
    bad.write_text(json.dumps({"text": 3}) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:1: field 'text' must be a string"):
        corpus.read_jsonl(bad)
    bad.write_text('{"text": "a"}\n{not json\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: malformed JSON"):
        corpus.read_jsonl(bad)


def test_read_path_folder(tmp_path):
    (tmp_path / "b.txt").write_text("bee")
    (tmp_path / "a.jsonl").write_text('{"text": "ay"}\n')
    (tmp_path / "SOURCE.txt").write_text("provenance, not text")
    assert corpus.read_path(tmp_path) == ["ay", "bee"]
    with pytest.raises(DataError, match="unsupported corpus file"):
        corpus.read_path(tmp_path / "SOURCE.txt")
    with pytest.raises(DataError, match="file not found"):
        corpus.read_path(tmp_path / "nope.txt")


def test_shared_corpora(data_dir):
    wiki = corpus.load_corpus("wikitext2")
    code = corpus.load_corpus("python_stdlib")
    assert len(code) == 571  # 573 rows in stdlib_py.jsonl (SOURCE.txt), 2 of them empty files
    assert all(d.lstrip().startswith("= ") for d in wiki)  # one article per top-level heading
    assert sum(len(d) for d in wiki) > 2_000_000
    with pytest.raises(DataError, match="unknown corpus 'wikitext'.*Did you mean 'wikitext2'"):
        corpus.load_corpus("wikitext")


def test_heldout_split_is_stable_disjoint_and_bounded():
    docs = [f"document number {i} " * 10 for i in range(200)]
    train, held = split_heldout("s", docs, 0.1, 10_000, seed=0)
    assert len(held) == 20 and len(train) == 180
    assert not set(train) & set(held)
    assert split_heldout("s", docs, 0.1, 10_000, seed=0) == (train, held)
    assert split_heldout("s", docs, 0.1, 10_000, seed=1)[1] != held
    _, small = split_heldout("s", docs, 0.1, 1_000, seed=0)
    assert sum(len(d) for d in small) <= 1_000 and len(small) >= 1
    with pytest.raises(DataError, match="at least 2"):
        split_heldout("s", ["only one"], 0.1, 10_000, 0)


def test_source_config_shorthand_and_errors():
    assert TextSourceConfig.model_validate("corpus:wikitext2").uri == ["corpus:wikitext2"]
    assert TextSourceConfig.model_validate(["records:gsm8k", "file:x.txt"]).uri == ["records:gsm8k", "file:x.txt"]
    with pytest.raises(ValueError, match="not a source uri"):
        TextSourceConfig.model_validate("wikipedia")


def test_file_source_tokens_and_priors(tmp_path):
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": f"alpha {i} é"}) + "\n" for i in range(40)))
    (tmp_path / "b.txt").write_text("\n\n".join(f"beta {i}" for i in range(10)))
    tok = byte_tokenizer()
    a = tokenize_source(load_source("a", TextSourceConfig(uri=[f"file:{tmp_path / 'a.jsonl'}"], heldout_fraction=0.1)), tok)
    b_cfg = TextSourceConfig(uri=[f"file:{tmp_path / 'b.txt'}"], split="paragraph", heldout_fraction=0.2)
    b_text = load_source("b", b_cfg)
    b = tokenize_source(b_text, tok)
    assert a.n_documents == 36 and b.n_documents == 8
    eos = tok.convert_tokens_to_ids(EOS)
    assert int((b.train == eos).sum()) == 8  # one EOS after each document
    assert b.n_tokens == sum(len(d.encode()) + 1 for d in b_text.train)
    first = b_text.train[0].encode()
    assert b.train[: len(first) + 1].tolist() == list(first) + [eos]  # byte ids are the bytes
    p = priors([a, b])
    assert p["a"] == pytest.approx(a.n_tokens / (a.n_tokens + b.n_tokens))
    assert sum(p.values()) == pytest.approx(1.0)


def test_toyworld_source_uses_its_heldout_split():
    toyworld = pytest.importorskip("mixlab.data.toyworld")
    domain = toyworld.DOMAINS[0]
    src = load_source("tw", TextSourceConfig(uri=[f"toyworld:{domain}"], toyworld_documents=30, toyworld_heldout_documents=5))
    assert len(src.train) == 30 and len(src.heldout) == 5
    assert src.train == toyworld.documents(domain, 30, seed=0, split="train")
    assert src.heldout == toyworld.documents(domain, 5, seed=0, split="heldout")
    with pytest.raises(ConfigError, match="unknown toyworld domain"):
        load_source("tw", TextSourceConfig(uri=["toyworld:no_such_domain"]))


def test_records_source_uses_train_split_only(data_dir):
    from mixlab.data.sources import load_records

    src = load_source("gsm", TextSourceConfig(uri=["records:gsm8k"]))
    train_q = {r.question for r in load_records("gsm8k") if r.metadata.get("split") == "train"}
    texts = src.train + src.heldout
    assert len(texts) == len(train_q)
    assert all(t.split("\n", 1)[0] in train_q for t in texts[:50])
    assert np.mean([("####" in t) for t in texts]) == 1.0  # completion (worked solution) included
