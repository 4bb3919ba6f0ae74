"""Parity with lm-evaluation-harness: same model, same local files, same items -> same acc/acc_norm.

lm-eval reads the shared data files through task YAMLs written here (``dataset_path: json``), with
its own prompt templates; mixlab reads the same files through its dataset adapters and built-in task
files. Also covered: the context/continuation boundary (trailing whitespace, tokens straddling it),
inputs longer than a short window (left truncation), and batch-size independence.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "eval"))
import tiny_lm  # noqa: E402

from mixlab.eval.harness import LM_EVAL_LOCAL, lm_eval_model, run_lm_eval, write_task_yaml  # noqa: E402
from mixlab.eval.runner import score_task  # noqa: E402
from mixlab.eval.scoring import Scorer  # noqa: E402
from mixlab.eval.tasks import DataSpec, build_items, get_task, load_docs, load_task  # noqa: E402
from mixlab.models.pretrained import load_model  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
N = 40


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_model(str(tiny_lm.build(tmp_path_factory.mktemp("tiny") / "model")))


@pytest.fixture(scope="module")
def tiny_short(tmp_path_factory):
    """Same architecture with a 40-token window: most items are longer and get left-truncated."""
    return load_model(str(tiny_lm.build(tmp_path_factory.mktemp("tiny_short") / "model", max_positions=40)))


def _lm_eval_items(loaded, tmp: Path, name: str, data_file: Path, limit: int, **yaml_fields) -> list[dict]:
    write_task_yaml(tmp, name, data_file, **yaml_fields)
    out = run_lm_eval(lm_eval_model(loaded, batch_size=8), [name], include_path=tmp,
                      include_defaults=False, limit=limit, log_samples=True)
    samples = sorted(out["samples"][name], key=lambda s: s["doc_id"])
    return [{"acc": s.get("acc"), "acc_norm": s.get("acc_norm"),
             "lls": [r[0] for r in s["filtered_resps"]]} for s in samples]


def _mixlab_rows(loaded, spec, limit: int, batch_size: int = 16) -> list[dict]:
    docs, pool = load_docs(spec)
    items = build_items(spec, docs[:limit], pool)
    _, rows = score_task(spec, items, Scorer(loaded.model, loaded.tokenizer, batch_size=batch_size))
    return rows


def _assert_same(mine: list[dict], theirs: list[dict], metrics: tuple[str, ...]) -> None:
    assert len(mine) == len(theirs) > 0
    for i, (a, b) in enumerate(zip(mine, theirs, strict=True)):
        assert a["lls"] == pytest.approx(b["lls"], rel=1e-6, abs=1e-4), f"item {i} log-likelihoods differ"
        for m in metrics:
            assert a[m] == b[m], f"item {i}: {m} mixlab={a[m]} lm-eval={b[m]}"


LM_EVAL_TASKS = LM_EVAL_LOCAL


@pytest.mark.parametrize("task", ["arc_easy", "piqa", "boolq"])
def test_item_by_item_parity_on_real_files(task, tiny, data_dir, tmp_path):
    rel, fields = LM_EVAL_TASKS[task]
    theirs = _lm_eval_items(tiny, tmp_path, f"lmeval_{task}", data_dir / rel, N, **fields)
    spec = get_task(task)
    mine = _mixlab_rows(tiny, spec, N)
    metrics = ("acc", "acc_norm") if "acc_norm" in spec.metrics else ("acc",)
    if task == "boolq":  # lm-eval's boolq YAML lists only acc; compare acc_norm from the lls too
        metrics = ("acc",)
    _assert_same(mine, theirs, metrics)
    # the random model is not constant: choices get different scores and predictions vary
    assert len({r["pred"] for r in mine}) > 1


def _boundary_spec(tmp: Path, delimiter: str = ""):
    path = tmp / "boundary.yaml"
    path.write_text(yaml.safe_dump({
        "name": "boundary", "kind": "mc", "data": {"path": str(FIXTURES / "boundary.jsonl")},
        "prompt": "{{question}}", "target_delimiter": delimiter, "metrics": ["acc", "acc_norm"]}))
    return load_task(path)


def test_boundary_cases_match_lm_eval(tiny, tmp_path):
    spec = _boundary_spec(tmp_path)
    scorer = Scorer(tiny.model, tiny.tokenizer)
    docs, _ = load_docs(spec)
    pairs = [p for it in build_items(spec, docs) for p in it.pairs]
    # the fixture really exercises both awkward cases
    assert any(c != c.rstrip() for c, _ in pairs), "no context with trailing whitespace"
    straddle = 0
    for ctx, cont in pairs:
        c = ctx.rstrip()
        moved = ctx[len(c):] + cont
        whole = tiny.tokenizer(c + moved)["input_ids"]
        straddle += whole[:len(tiny.tokenizer(c)["input_ids"])] != tiny.tokenizer(c)["input_ids"]
    assert straddle >= 2, "no token straddles the context/continuation boundary"
    theirs = _lm_eval_items(tiny, tmp_path, "lmeval_boundary", FIXTURES / "boundary.jsonl", None,
                            doc_to_text="{{question}}", doc_to_choice="{{choices}}", doc_to_target="{{label}}",
                            target_delimiter="")
    _assert_same(_mixlab_rows(tiny, spec, 100), theirs, ("acc", "acc_norm"))


def test_left_truncation_matches_lm_eval(tiny_short, data_dir, tmp_path):
    """ARC-Easy items whose contexts overflow a 40-token window (choices fit: lm-eval requires it)."""
    import json

    rel, fields = LM_EVAL_TASKS["arc_easy"]
    tok = tiny_short.tokenizer
    rows = [json.loads(line) for line in (data_dir / rel).read_text().splitlines()[:200]]
    rows = [r for r in rows if all(len(tok(" " + c)["input_ids"]) < 30 for c in r["choices"])][:N]
    data = tmp_path / "arc_short.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = get_task("arc_easy").model_copy(update={"data": DataSpec(path=str(data))})
    docs, _ = load_docs(spec)
    scorer = Scorer(tiny_short.model, tok)
    assert scorer.max_length == 40
    enc = scorer.encode_pairs([p for it in build_items(spec, docs) for p in it.pairs])
    assert sum(len(c) + len(t) > 41 for c, t in enc) > len(enc) // 2, "too few over-long inputs"
    theirs = _lm_eval_items(tiny_short, tmp_path, "lmeval_arc_short", data, N, **fields)
    _assert_same(_mixlab_rows(tiny_short, spec, N), theirs, ("acc", "acc_norm"))


def test_scores_do_not_depend_on_batch_size(data_dir, tmp_path):
    """fp32, transformers' default init scale: batch 1 and 32 agree within 1e-5 per item."""
    model = load_model(str(tiny_lm.build(tmp_path / "std", init=0.02)))
    spec = get_task("arc_easy")
    one = _mixlab_rows(model, spec, N, batch_size=1)
    many = _mixlab_rows(model, spec, N, batch_size=32)
    for a, b in zip(one, many, strict=True):
        assert a["lls"] == pytest.approx(b["lls"], abs=1e-5)
        assert (a["acc"], a["acc_norm"]) == (b["acc"], b["acc_norm"])


def test_winogrande_partial_scoring_matches_lm_eval(tiny, data_dir, tmp_path):
    """WinoGrande through lm-eval's own preprocess functions (copied into the tmp task folder)."""
    import shutil

    import lm_eval

    src = Path(lm_eval.__file__).parent / "tasks" / "winogrande" / "preprocess_winogrande.py"
    shutil.copy(src, tmp_path / "preprocess_winogrande.py")
    data = tmp_path / "wino.jsonl"
    import json

    spec = get_task("winogrande")
    docs, _ = load_docs(spec)
    data.write_text("".join(json.dumps({"sentence": d["sentence"], "option1": d["option1"],
                                        "option2": d["option2"], "answer": d["answer"]}) + "\n" for d in docs[:N]))
    (tmp_path / "lmeval_wino.yaml").write_text(yaml.safe_dump({
        "task": "lmeval_wino", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test", "output_type": "multiple_choice",
        "doc_to_text": "!function preprocess_winogrande.doc_to_text",
        "doc_to_target": "!function preprocess_winogrande.doc_to_target",
        "doc_to_choice": "!function preprocess_winogrande.doc_to_choice",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    }).replace("'!function", "!function").replace("doc_to_text'", "doc_to_text").replace(
        "doc_to_target'", "doc_to_target").replace("doc_to_choice'", "doc_to_choice"))
    out = run_lm_eval(lm_eval_model(tiny, batch_size=8), ["lmeval_wino"], include_path=tmp_path,
                      include_defaults=False, log_samples=True)
    theirs = sorted(out["samples"]["lmeval_wino"], key=lambda s: s["doc_id"])
    mine = _mixlab_rows(tiny, spec, N)
    for a, b in zip(mine, theirs, strict=True):
        assert a["lls"] == pytest.approx([r[0] for r in b["filtered_resps"]], abs=1e-4)
        assert a["acc"] == b["acc"]


def _wikitext_paragraphs(data_dir: Path, n: int) -> list[str]:
    lines = (data_dir / "corpus_wikitext2" / "test.txt").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if len(line.split()) > 30][:n]


def test_texts_longer_than_the_window_match_lm_eval_rolling(tiny_short, data_dir):
    """An empty-context continuation longer than the 40-token window is scored in lm-eval's
    ``loglikelihood_rolling`` windows (its own window function and scoring code), not failed."""
    from lm_eval import utils

    texts = [t[:600] for t in _wikitext_paragraphs(data_dir, 12)]
    scorer = Scorer(tiny_short.model, tiny_short.tokenizer, batch_size=4)
    mine = scorer.score_pairs([("", t) for t in texts])
    lm = lm_eval_model(tiny_short, batch_size=8)
    assert lm.max_length == scorer.max_length == 40
    for text, got in zip(texts, mine, strict=True):
        toks = tiny_short.tokenizer(text, add_special_tokens=False)["input_ids"]
        windows = [utils.make_disjoint_window(w) for w in utils.get_rolling_token_windows(
            token_list=toks, prefix_token=lm.prefix_token_id, max_seq_len=lm.max_length, context_len=1)]
        theirs = lm._loglikelihood_tokens([(None, *w) for w in windows], disable_tqdm=True)
        assert got.windows == len(windows) and got.n_tokens == len(toks)
        assert got.logprob == pytest.approx(sum(ll for ll, _ in theirs), rel=1e-6, abs=1e-4)
        assert got.is_greedy == all(g for _, g in theirs)
    assert sum(s.windows >= 3 for s in mine) >= len(mine) // 2, "too few texts span several windows"


def test_worker_processes_give_the_results_of_one(tiny, data_dir):
    """Two forked workers score the same batches as one process: every result is identical."""
    import torch

    spec = get_task("arc_easy")
    docs, _ = load_docs(spec)
    groups = [it.pairs for it in build_items(spec, docs[:N])]
    torch.set_num_threads(1)
    one = Scorer(tiny.model, tiny.tokenizer, batch_size=3).score_groups(groups)
    seen: list[int] = []
    two = Scorer(tiny.model, tiny.tokenizer, batch_size=3, workers=2).score_groups(groups, seen.append)
    assert two == one
    assert sum(seen) == N and len(seen) == -(-N // 3)  # every batch reported once, whoever ran it
    assert torch.get_num_threads() == 1  # the thread setting is restored


def test_layout_counts_each_shared_token_once(tiny, data_dir):
    """``Scorer.layout`` plans what scoring computes: one trie node per distinct input prefix of an
    item's requests (the shared context once), and the forward passes scoring then really makes."""
    spec = get_task("arc_easy")
    docs, _ = load_docs(spec)
    groups = [it.pairs for it in build_items(spec, docs[:N])]
    scorer = Scorer(tiny.model, tiny.tokenizer, batch_size=7)
    plan = scorer.layout(groups)
    encoded = scorer.encode_pairs([p for g in groups for p in g])
    expected, i = 0, 0
    for g in groups:
        inputs = [(ctx + cont)[:-1] for ctx, cont in encoded[i:i + len(g)]]
        expected += len({tuple(seq[:k]) for seq in inputs for k in range(1, len(seq) + 1)})
        i += len(g)
    assert plan["tokens"] == expected
    assert plan["tokens"] <= plan["padded_tokens"] < sum(len(c) + len(x) for c, x in encoded)
    calls: list[int] = []
    hook = tiny.model.base_model.register_forward_pre_hook(lambda m, a, k: calls.append(k["input_ids"].numel()),
                                                           with_kwargs=True)
    try:
        scorer.score_groups(groups)
    finally:
        hook.remove()
    assert len(calls) == plan["forwards"] == -(-N // 7) and sum(calls) == plan["padded_tokens"]
