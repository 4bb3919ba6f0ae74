"""KL(base || model) as an eval kind: known answers (0 against itself, a hand-computed toy, > 0 for a
perturbed copy, asymmetric), which positions count, one vocabulary required, `mixlab eval --base`
end to end, and a sweep giving each checkpoint its base."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "eval"))
import tiny_lm  # noqa: E402

from mixlab.cli import main  # noqa: E402
from mixlab.errors import MixlabError  # noqa: E402
from mixlab.eval import kl as K  # noqa: E402
from mixlab.eval.tasks import get_task, load_task  # noqa: E402
from mixlab.models.pretrained import load_model  # noqa: E402
from mixlab.results import higher_is_better  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "eval"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny base, the same weights with one matrix perturbed, and the perturbed copy's folder."""
    root = tmp_path_factory.mktemp("kl")
    base_dir = tiny_lm.build(root / "base")
    tuned = load_model(str(base_dir))
    with torch.no_grad():
        w = tuned.model.model.layers[0].mlp.down_proj.weight
        w.add_(0.05 * torch.randn(w.shape, generator=torch.Generator().manual_seed(0)))
    tuned.model.save_pretrained(root / "tuned")
    tuned.tokenizer.save_pretrained(root / "tuned")
    return base_dir, root / "tuned"


def _task(tmp: Path, name: str = "kl_tiny", **over) -> Path:
    spec = {"name": name, "kind": "kl_to_base", "data": {"path": str(FIXTURES / "boundary.jsonl")},
            "prompt": "{{question}}", "target": "{{choices[label]}}", "target_delimiter": "", "metrics": ["kl"]} | over
    p = tmp / f"{name}.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def _seqs(loaded, n: int = 6) -> list[K.TokenSeq]:
    texts = [line for line in (FIXTURES / "corpus.txt").read_text().splitlines() if line.strip()][:n]
    return [K.TokenSeq(str(i), list(loaded.tokenizer(t)["input_ids"]), 1 + i % 3) for i, t in enumerate(texts)]


def test_token_kl_matches_a_hand_computed_two_position_toy():
    p = [[0.5, 0.25, 0.25], [0.9, 0.05, 0.05]]
    q = [[0.25, 0.5, 0.25], [1 / 3, 1 / 3, 1 / 3]]
    by_hand = [sum(a * math.log(a / b) for a, b in zip(pp, qq)) for pp, qq in zip(p, q)]
    assert by_hand[0] == pytest.approx(0.25 * math.log(2))  # 0.5 ln 2 - 0.25 ln 2
    got = K.token_kl(torch.tensor(p).log(), torch.tensor(q).log())  # logits up to a constant
    assert got.tolist() == pytest.approx(by_hand, rel=1e-6)
    ref = torch.nn.functional.kl_div(torch.tensor(q).log(), torch.tensor(p), reduction="none").sum(-1)
    assert got.tolist() == pytest.approx(ref.tolist(), rel=1e-6)
    # asymmetric: KL(p || q) != KL(q || p)
    back = K.token_kl(torch.tensor(q).log(), torch.tensor(p).log())
    assert abs(back[1] - got[1]) > 0.1


def test_a_model_against_itself_is_exactly_zero_and_a_perturbed_copy_is_not(models):
    base, tuned = load_model(str(models[0])), load_model(str(models[1]))
    seqs = _seqs(base)
    same = K.sequence_kl(base.model, base.model, seqs, batch_size=4)
    assert [v.kl for v in same] == [0.0] * len(seqs)
    assert [v.n_tokens for v in same] == [len(s.ids) - s.start for s in seqs]
    fwd = K.sequence_kl(tuned.model, base.model, seqs, batch_size=4)  # KL(base || tuned)
    rev = K.sequence_kl(base.model, tuned.model, seqs, batch_size=4)  # KL(tuned || base)
    assert all(v.kl > 0 for v in fwd)
    assert any(abs(a.kl - b.kl) > 1e-6 * max(a.kl, b.kl) for a, b in zip(fwd, rev))
    # batching and chunking do not change the numbers
    one = K.sequence_kl(tuned.model, base.model, seqs, batch_size=1, chunk=3)
    assert [v.kl for v in one] == pytest.approx([v.kl for v in fwd], rel=1e-5)
    # against full-logit log_softmax on one sequence, position by position
    s = seqs[0]
    ids = torch.tensor([s.ids])
    with torch.inference_mode():
        lb = torch.log_softmax(base.model(ids).logits[0].float(), -1)
        lm = torch.log_softmax(tuned.model(ids).logits[0].float(), -1)
    ref = (lb.exp() * (lb - lm)).sum(-1)[s.start - 1:len(s.ids) - 1].mean()
    assert fwd[0].kl == pytest.approx(float(ref), rel=1e-5)


def test_kl_is_lower_is_better_and_the_built_in_tasks_load():
    assert not higher_is_better("kl") and not higher_is_better("kl_token")
    for name in ("kl_gsm8k_train_chat", "kl_wikitext2"):
        spec = get_task(name)
        assert spec.kind == "kl_to_base" and spec.metrics == ["kl"]


def test_different_vocabularies_are_refused(models, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    base = load_model(str(models[0]))
    other_tok = tiny_lm.build_tokenizer(vocab_size=600)
    other = LlamaForCausalLM(LlamaConfig(vocab_size=len(other_tok), hidden_size=64, intermediate_size=128,
                                         num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2))
    with pytest.raises(MixlabError, match="one vocabulary"):
        K.check_same_vocab(base.model, base.tokenizer, other, other_tok)
    K.check_same_vocab(base.model, base.tokenizer, base.model, tiny_lm.build_tokenizer())  # same vocab: fine


def test_answer_positions_are_the_bpb_continuation_and_text_skips_only_the_first_token(models, tmp_path):
    from mixlab.eval.runner import prepare
    from mixlab.eval.scoring import Scorer

    base = load_model(str(models[0]))
    scorer = Scorer(base.model, base.tokenizer)
    spec = load_task(_task(tmp_path))
    items = prepare(spec).items
    seqs = K.encode_items(spec, items, base.tokenizer, scorer, 512)
    for it, s, (c, k) in zip(items, seqs, scorer.encode_pairs([it.pairs[0] for it in items])):
        assert s.ids == c + k and s.start == len(c) and len(s.ids) - s.start == len(k)
    text = load_task(_task(tmp_path, "kl_text", prompt="", target="{{question}}"))
    seqs = K.encode_items(text, prepare(text).items, base.tokenizer, scorer, 512)
    assert all(s.start == 1 and s.ids[0] == base.tokenizer.bos_token_id for s in seqs)
    cut = K.encode_items(text, prepare(text).items, base.tokenizer, scorer, 4)
    assert all(len(s.ids) <= 4 for s in cut) and any(s.cut for s in cut)


def test_chat_items_are_built_as_fine_tuning_builds_them():
    smol = Path.home() / ".cache" / "mixlab" / "models" / "smollm2-135m"
    if not (smol / "tokenizer_config.json").is_file():
        pytest.skip("the SmolLM2 tokenizer is not cached")
    from transformers import AutoTokenizer

    from mixlab.eval.items import Item
    from mixlab.train.finetune.config import DataSection
    from mixlab.train.sft_data import IGNORE, Formatter

    tok = AutoTokenizer.from_pretrained(str(smol))
    spec = get_task("kl_gsm8k_train_chat")
    q, a = "What is 2 + 3?", "2 + 3 = <<2+3=5>>5\n#### 5"
    (s,) = K.encode_items(spec, [Item("x", [(q, a)])], tok, None, 2048)
    ex, _ = Formatter(tok, DataSection(records="unused.jsonl", chat_template=True)).encode(q, a)
    assert s.ids == ex.ids.tolist()
    assert s.start == int((ex.labels == IGNORE).sum())  # the scored tokens are the trained ones


def test_mixlab_eval_with_base(models, tmp_path):
    task = _task(tmp_path)
    out = tmp_path / "out"
    assert main(["eval", "--model", str(models[1]), "--base", str(models[0]), "--tasks", str(task),
                 "--out", str(out), "--workers", "1"]) == 0
    result = json.loads((out / "tasks" / "kl_tiny" / "result.json").read_text())
    rows = [json.loads(x) for x in (out / "tasks" / "kl_tiny" / "items.jsonl").read_text().splitlines()]
    assert result["n"] == len(rows) == 8 and result["base"]["model"] == str(models[0])
    assert result["metrics"]["kl"] > 0 and result["stderr"]["kl"] > 0
    assert result["metrics"]["kl"] == pytest.approx(sum(r["kl"] for r in rows) / len(rows))
    assert all(r["kl"] > 0 and r["n_tokens"] > 0 for r in rows)
    # the base against itself: recorded, exactly 0
    out0 = tmp_path / "out0"
    assert main(["eval", "--model", str(models[0]), "--base", str(models[0]), "--tasks", str(task),
                 "--out", str(out0), "--workers", "1"]) == 0
    zero = json.loads((out0 / "tasks" / "kl_tiny" / "result.json").read_text())
    assert zero["metrics"]["kl"] == 0.0 and zero["n"] == 8
    # no base: fails before any work, saying what to pass
    assert main(["eval", "--model", str(models[1]), "--tasks", str(task), "--out", str(tmp_path / "o2")]) != 0


def test_a_sweep_measures_kl_for_every_checkpoint_against_its_base(models, tmp_path):
    from mixlab.runs import sweep as S
    from mixlab.runs.store import Store
    from mixlab.train import checkpoint

    tuned = load_model(str(models[1]))
    checkpoint.save(checkpoint.step_dir(tmp_path / "runs" / "ft", 10), tuned.model, None, None, {"step": 10},
                    tuned.tokenizer)
    cfg_path = tmp_path / "sweep.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "name": "t", "out": str(tmp_path / "sweep"), "runs": [str(tmp_path / "runs" / "*")],
        "base_models": [{"name": "base", "path": str(models[0])}], "checkpoints": {"all": True, "steps": [0]},
        "tasks": [str(_task(tmp_path))], "batch_size": 4}))
    cfg = S.load_sweep_config(cfg_path)
    report = S.work(cfg)
    assert not report.failed
    with Store(S.resolve(cfg).store_path) as store:
        kl = {(r.run, r.step): r for r in store.results(metric="kl")}
    assert kl[("base", 0)].value == 0.0 and not kl[("ft", 10)].higher_is_better
    assert kl[("ft", 10)].value > 0


def test_without_base_models_a_sweep_reads_the_base_from_the_run_s_config(models, tmp_path):
    from mixlab.runs import sweep as S
    from mixlab.runs.store import Store
    from mixlab.train import checkpoint

    tuned = load_model(str(models[1]))
    run = tmp_path / "runs" / "ft"
    for step in (5, 10):
        checkpoint.save(checkpoint.step_dir(run, step), tuned.model, None, None, {"step": step}, tuned.tokenizer)
    (run / "config.yaml").write_text(yaml.safe_dump({"model": {"base": str(models[0])}, "method": "sft"}))
    assert S.run_base_model(str(checkpoint.step_dir(run, 10))) == str(models[0])
    cfg_path = tmp_path / "sweep.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "name": "t", "out": str(tmp_path / "sweep"), "runs": [str(run)], "checkpoints": {"all": True},
        "tasks": [str(_task(tmp_path))], "batch_size": 4}))
    cfg = S.load_sweep_config(cfg_path)
    report = S.work(cfg)
    assert not report.failed
    with Store(S.resolve(cfg).store_path) as store:
        kl = {(r.run, r.step): r.value for r in store.results(metric="kl")}
    assert set(kl) == {("ft", 5), ("ft", 10)} and kl[("ft", 5)] == pytest.approx(kl[("ft", 10)]) and kl[("ft", 10)] > 0
