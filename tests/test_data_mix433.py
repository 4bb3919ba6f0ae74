"""The shipped 4:3:3 mixture on the real data: ratios, no leakage, byte-identical rebuild."""

from __future__ import annotations

from pathlib import Path

import pytest

from mixlab.data.api import build, load_config_file, read_info
from mixlab.data.normalize import normalize_text
from mixlab.data.records import read_records

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "data" / "mix_433.yaml"
pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def built(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("mix433")
    cfg = load_config_file(CONFIG)
    return build(cfg, root / "a"), build(cfg, root / "b")


def test_realized_ratios_within_half_a_percent(built):
    info = read_info(built[0])
    assert info["requested_ratios"] == pytest.approx({"math": 0.4, "qa": 0.3, "code": 0.3})
    for dom, req in info["requested_ratios"].items():
        assert abs(info["realized_ratios"][dom] - req) < 0.005, dom
    for dom, shares in info["realized_dataset_ratios"].items():
        for ds, share in shares.items():
            assert share == pytest.approx(0.5, abs=0.01), (dom, ds)
    counts = info["counts"]
    # downsampled and exact: code (the scarcest per unit of ratio) contributes its whole balanced pool
    code_pool = 2 * min(counts["train_pool"]["humaneval"], counts["train_pool"]["mbpp"])
    assert counts["train_by_domain"]["code"] == code_pool
    assert counts["unique_train"] == counts["train_total"]  # downsampling never repeats


def test_zero_train_test_overlap(built):
    out = built[0]
    train = read_records(out / "mixed" / "train.jsonl")
    test = read_records(out / "mixed" / "test.jsonl")
    assert not {r.id for r in train} & {r.id for r in test}
    assert not {normalize_text(r.question) for r in train} & {normalize_text(r.question) for r in test}
    # near-duplicates are grouped too: no train question shares a 13-gram with a test question
    def grams(recs):
        out = set()
        for r in recs:
            ws = normalize_text(r.question).split()
            out.update(tuple(ws[i : i + 13]) for i in range(len(ws) - 12))
        return out

    assert not grams(train) & grams(test)
    info = read_info(out)
    assert info["contamination"]["train_test_overlap"] == 0
    # nor does any training question + worked solution (the contamination check's text)
    assert info["contamination"]["train_test_ngram_overlap"] == 0
    assert sum(info["counts"]["test"].values()) == len(test)


def test_rebuild_is_byte_identical(built):
    a, b = built
    for rel in ["mixed/train.jsonl", "mixed/test.jsonl", "test_index.json", "info.json",
                *[f"test/{d}.jsonl" for d in ("gsm8k", "math", "hotpotqa", "boolq", "humaneval", "mbpp")]]:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
