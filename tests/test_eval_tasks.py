"""Task files: validation errors before scoring, data loading, prompts, suites, metric formulas."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from mixlab.errors import ConfigError, DataError, MixlabError
from mixlab.eval import metrics as M
from mixlab.eval.runner import prepare
from mixlab.eval.tasks import build_items, builtin_tasks, get_task, load_docs, load_task, resolve_tasks, suite_tasks


def _task(tmp: Path, **fields) -> Path:
    base = {"name": "t", "kind": "mc", "data": {"path": str(tmp / "d.jsonl")}, "prompt": "Q: {{question}}\nA:",
            "metrics": ["acc", "acc_norm"]}
    path = tmp / "t.yaml"
    path.write_text(yaml.safe_dump(base | fields))
    return path


def _data(tmp: Path, rows: list[dict]) -> None:
    (tmp / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


ROWS = [{"question": "2+2?", "choices": ["4", "five", "22"], "label": 0},
        {"question": "Sky?", "choices": ["blue", "green"], "label": 0}]


def test_unknown_kind_names_file_and_line(tmp_path):
    with pytest.raises(ConfigError, match=r"t\.yaml:\d+: field `kind`"):
        load_task(_task(tmp_path, kind="ranking"))


def test_unknown_metric_names_file_and_line(tmp_path):
    with pytest.raises(ConfigError, match=r"t\.yaml:\d+: unknown metric 'accuracy' for kind 'mc'"):
        load_task(_task(tmp_path, metrics=["acc", "accuracy"]))


def test_template_naming_missing_field_fails_before_scoring(tmp_path):
    _data(tmp_path, ROWS)
    spec = load_task(_task(tmp_path, prompt="Q: {{questoin}}\nA:"))
    with pytest.raises(ConfigError, match=r"field `prompt`: 'questoin' is undefined.*fields available: .*question"):
        prepare(spec)


def test_unparsable_data_file_names_line(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps(ROWS[0]) + "\n{not json\n")
    with pytest.raises(DataError, match=r"d\.jsonl:2: malformed JSON"):
        prepare(load_task(_task(tmp_path)))


def test_bad_gold_is_an_error(tmp_path):
    _data(tmp_path, [{"question": "x", "choices": ["a", "b"], "label": 5}])
    with pytest.raises(ConfigError, match="field `gold`: expected an index below 2"):
        prepare(load_task(_task(tmp_path)))


def test_missing_data_is_skipped_with_its_path(tmp_path):
    p = prepare(load_task(_task(tmp_path)))
    assert p.skipped == {"skipped": "data not found", "path": str(tmp_path / "d.jsonl")}


def test_ifeval_generate_task_prepares_all_prompts(data_dir):
    p = prepare(get_task("ifeval"))
    assert not p.skipped and len(p.gen_items) == 541


def test_mc_requests_follow_lm_eval_format(tmp_path):
    _data(tmp_path, ROWS)
    items = prepare(load_task(_task(tmp_path)), limit=1).items
    assert len(items) == 1
    assert items[0].pairs == [("Q: 2+2?\nA:", " 4"), ("Q: 2+2?\nA:", " five"), ("Q: 2+2?\nA:", " 22")]
    assert items[0].gold == 0


def test_partial_scoring_builds_winogrande_requests(tmp_path):
    _data(tmp_path, [{"sentence": "Tom beat Ann so _ won the prize.", "option1": "Tom", "option2": "Ann", "label": 0}])
    spec = load_task(_task(tmp_path, prompt="{{sentence}}", choices="[option1, option2]", scoring="partial",
                           metrics=["acc"]))
    item = prepare(spec).items[0]
    assert item.pairs == [("Tom beat Ann so Tom", " won the prize."), ("Tom beat Ann so Ann", " won the prize.")]


def test_bpb_item_counts_continuation_bytes(tmp_path):
    _data(tmp_path, [{"question": "café?", "answer": "Oui, café"}])
    spec = load_task(_task(tmp_path, kind="bpb", target="{{answer}}", metrics=["bpb"]))
    item = prepare(spec).items[0]
    assert item.pairs == [("Q: café?\nA:", " Oui, café")]
    assert item.n_bytes == len(" Oui, café".encode()) == 11


def test_fewshot_is_seeded_excludes_the_item_and_respects_match(tmp_path):
    rows = [{"id": f"r{i}", "question": f"q{i}", "choices": ["a", "b"], "label": i % 2, "topic": i % 3}
            for i in range(12)]
    _data(tmp_path, rows)
    spec = load_task(_task(tmp_path, fewshot={"n": 2, "seed": 7, "match": ["topic"]}))
    docs, pool = load_docs(spec)
    a = build_items(spec, docs, pool)
    b = build_items(spec, docs[:3], pool)  # --limit does not change an item's context
    assert [it.pairs for it in a[:3]] == [it.pairs for it in b]
    ctx = a[0].pairs[0][0]
    assert ctx.endswith("Q: q0\nA:") and ctx.count("Q: ") == 3 and "Q: q0\nA: " not in ctx[:-8]
    shots = [int(q) for q in __import__("re").findall(r"Q: q(\d+)\nA: ", ctx)]
    assert len(shots) == 2 and all(s % 3 == 0 and s != 0 for s in shots)


def test_suites_resolve_and_list_every_task():
    assert suite_tasks("forgetting10") == ["arc_challenge", "arc_easy", "hellaswag", "winogrande", "piqa",
                                           "boolq", "openbookqa", "truthfulqa_mc2", "mmlu", "ifeval"]
    for suite in ("forgetting10", "bpb", "toyworld"):
        assert resolve_tasks(suite=suite)  # every listed task file validates
    assert all(load_task(p) for p in builtin_tasks().values())
    with pytest.raises(ConfigError, match="Did you mean arc_easy"):
        get_task("arc_easyy")


def test_forgetting10_runs_on_real_files(data_dir):
    """Every forgetting10 task except HellaSwag (no local data) prepares items."""
    prepared = {p.spec.name: p for p in (prepare(s, limit=3) for s in resolve_tasks(suite="forgetting10"))}
    assert prepared["hellaswag"].skipped["path"].endswith("hellaswag/hellaswag_val.jsonl")
    assert len(prepared["ifeval"].gen_items) == 3
    ready = [n for n, p in prepared.items() if p.items or p.gen_items]
    assert sorted(ready) == sorted(["arc_challenge", "arc_easy", "winogrande", "piqa", "boolq", "openbookqa",
                                    "truthfulqa_mc2", "mmlu", "ifeval"])
    mmlu = prepared["mmlu"].items[0].pairs[0][0]
    assert mmlu.startswith("The following are multiple choice questions (with answers) about abstract algebra.\n\n")
    assert mmlu.endswith("\nD. 6\nAnswer:")
    tqa = prepared["truthfulqa_mc2"].items[0]
    assert isinstance(tqa.gold, list) and set(tqa.gold) <= {0, 1}


def test_unknown_model_path_is_a_clear_error(tmp_path):
    from mixlab.models.pretrained import load_model

    with pytest.raises(MixlabError, match="model path does not exist"):
        load_model(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(MixlabError, match="no config.json"):
        load_model(str(tmp_path / "empty"))


# ---------------------------------------------------------------- metric formulas


def test_acc_norm_uses_character_length_of_choice():
    # raw: choice 1 wins; per character: choice 0 (-4/8 = -0.5 > -3/2 = -1.5)
    s = M.mc_scores([-4.0, -3.0], ["abcdefgh", "ab"], gold=0)
    assert s == {"acc": 0.0, "acc_norm": 1.0, "acc_bytes": 1.0}
    # bytes differ from characters for non-ASCII text: "éé" is 2 chars, 4 bytes
    s = M.mc_scores([-2.1, -4.0], ["éé", "abcd"], gold=1)
    assert (s["acc_norm"], s["acc_bytes"]) == (1.0, 0.0)


def test_mc2_is_normalized_true_mass():
    lls = [math.log(0.2), math.log(0.1), math.log(0.3)]
    assert M.mc2_score(lls, [1, 0, 1]) == pytest.approx(0.5 / 0.6)
    # long answers: exp() of each summed log-probability underflows to 0; the ratio does not change
    assert M.mc2_score([ll - 2000.0 for ll in lls], [1, 0, 1]) == pytest.approx(0.5 / 0.6)


def test_bits_per_byte_definitions():
    assert M.bits_per_byte(math.log(2) * 10, 5) == pytest.approx(2.0)
    assert M.corpus_bits_per_byte([math.log(2) * 3, math.log(2) * 9], [3, 3]) == pytest.approx(2.0)
    assert M.mean_stderr([1.0, 0.0, 1.0, 0.0]) == pytest.approx(math.sqrt((1 / 3) / 4))
