"""Fine-tuning runs on a tiny pretrained toyworld base: early stopping, evaluation, baseline cache, replay."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from mixlab.train import sft
from mixlab.train.objectives import IGNORE
from tests.finetune_base import pretrain_toy_base


@pytest.fixture(scope="session")
def toy_base(tmp_path_factory):
    return pretrain_toy_base(tmp_path_factory.getbasetemp())


def ft_config(base, **sections) -> sft.FinetuneConfig:
    data = {
        "seed": 0, "method": "sft", "model": {"base": str(base)},
        "data": {"datasets": ["toyworld_arithmetic"], "max_records": 64, "max_seq_len": 128},
        "train": {"steps": 8, "batch_size": 4, "lr": 1e-3, "threads": 1, "log_every": 2},
        "checkpoint": {"every": 2},
    }
    for k, v in sections.items():
        data[k] = {**data.get(k, {}), **v} if isinstance(v, dict) and isinstance(data.get(k), dict) else v
    return sft.FinetuneConfig.model_validate(data)


def test_early_stopping_stops_at_the_right_evaluation_and_keeps_the_best_checkpoint(toy_base, tmp_path):
    scores = {2: 0.50, 4: 0.70, 6: 0.60, 8: 0.65, 10: 0.40, 12: 0.90}  # best at step 4, then 2 without gain
    seen = []

    def fake_metric(model, step):
        seen.append(step)
        return {"score": scores[step]}

    cfg = ft_config(toy_base, train={"steps": 12},
                    early_stop={"tasks": ["toyworld_prose_mc"], "every": 2, "patience": 2, "baseline": False})
    result = sft.finetune(cfg, tmp_path / "run", evaluate_fn=fake_metric)
    assert seen == [2, 4, 6, 8]
    assert result.stopped_early and result.steps == 8
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["best_step"] == 4 and meta["best_score"] == 0.70 and meta["stopped_early"]
    assert meta["evaluations"] == [[2, 0.5], [4, 0.7], [6, 0.6], [8, 0.65]]
    best = load_file(str(result.best_checkpoint / "model.safetensors"))
    step4 = load_file(str(tmp_path / "run" / "checkpoints" / "step-4" / "model.safetensors"))
    step8 = load_file(str(tmp_path / "run" / "checkpoints" / "step-8" / "model.safetensors"))
    assert all(torch.equal(best[k], step4[k]) for k in step4)
    assert not all(torch.equal(best[k], step8[k]) for k in step8)
    # killed after the stopping checkpoint but before meta.json said so: resuming trains nothing more
    meta["status"] = "running"
    (tmp_path / "run" / "meta.json").write_text(json.dumps(meta))
    again = sft.finetune(cfg, tmp_path / "run", evaluate_fn=fake_metric)
    assert again.steps == 8 and again.stopped_early and seen == [2, 4, 6, 8]
    assert not (tmp_path / "run" / "checkpoints" / "step-10").exists()
    # minimizing: the lowest score wins; patience null evaluates to the end without stopping
    stopper = sft.EarlyStopper(maximize=False, patience=None)
    assert [stopper.update(s, v) for s, v in scores.items()] == [False] * 6 and stopper.best_step == 10


def test_run_evaluates_through_the_runner_and_caches_the_baseline(toy_base, tmp_path, monkeypatch):
    monkeypatch.setenv("MIXLAB_CACHE_DIR", str(tmp_path / "cache"))
    es = {"tasks": ["toyworld_prose_mc", "toyworld_prose_bpb"], "metric": "toyworld_prose_bpb/bpb", "every": 4,
          "patience": None, "limit": 8, "batch_size": 8}
    first = sft.finetune(ft_config(toy_base, early_stop=es), tmp_path / "a")
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    assert set(meta["timings"]) >= {"training", "evaluation", "judging", "model_io"}
    assert meta["timings"]["evaluation"] > 0 and meta["timings"]["training"] > 0
    base_bpb = first.baseline["toyworld_prose_bpb"]["bpb"]
    assert 0 < base_bpb < 8
    evals = dict(meta["evaluations"])
    assert sorted(evals) == [4, 8]  # every 4 steps; the final step is the second
    step8 = json.loads((tmp_path / "a" / "eval" / "step-8" / "results.json").read_text())
    assert evals[8] == step8["toyworld_prose_bpb"]["bpb"] != base_bpb
    assert meta["best_step"] == min(evals, key=evals.get)  # bpb is minimized
    cached = sft.baseline_dir(sft.prepare(ft_config(toy_base, early_stop=es)))
    stamp = (cached / "tasks" / "toyworld_prose_mc" / "result.json").stat().st_mtime_ns
    second = sft.finetune(ft_config(toy_base, seed=1, early_stop=es), tmp_path / "b")
    assert second.baseline == first.baseline
    assert (cached / "tasks" / "toyworld_prose_mc" / "result.json").stat().st_mtime_ns == stamp  # not re-scored
    skipped = sft.finetune(ft_config(toy_base, seed=1, early_stop=es), tmp_path / "b")
    assert skipped.skipped and skipped.steps == 8


def test_replay_and_sample_ratio_compose_the_stream(toy_base):
    plain = sft.prepare(ft_config(toy_base)).data
    assert plain.n_target == 64 and plain.n_replay == 0
    half = sft.prepare(ft_config(toy_base, data={"sample_ratio": 0.5})).data
    assert half.n_target == 32
    text = sft.prepare(ft_config(toy_base, data={"replay": {"source": "toyworld:prose", "ratio": 0.2}})).data
    assert text.n_replay == 16 and len(text.examples) == 80  # 16 / 80 = 20% of the stream
    replayed = [e for e in text.examples if e.replay]
    assert len(replayed) == 16
    assert all((e.labels[1:] != IGNORE).all() and e.labels[0] == IGNORE for e in replayed)  # LM on every token
    recs = sft.prepare(ft_config(toy_base, data={"replay": {"source": "toyworld_prose", "ratio": 0.5}})).data
    assert recs.n_replay == 64 and recs.replay_origin == "records toyworld_prose"
    packed = sft.prepare(ft_config(toy_base, data={"packing": True})).data
    assert len(packed.examples) < 64 and packed.completion_tokens == plain.completion_tokens
    assert all(len(e.ids) <= 128 for e in packed.examples)


def test_completion_tokens_are_what_evaluation_scores(toy_base):
    """The SFT target tokens of a record equal the continuation tokens the scorer uses for it."""
    from mixlab.data import toyworld
    from mixlab.eval.scoring import Scorer
    from mixlab.train.sft_data import Formatter

    prep = sft.prepare(ft_config(toy_base))
    rec = toyworld.records("arithmetic", 1, 0, "train")[0]
    example, _ = Formatter(prep.tokenizer, prep.config.data).encode(rec.question, rec.completion)
    ctx, cont = Scorer(prep.model, prep.tokenizer).encode_pairs([(toyworld.format_prompt(rec.question), rec.completion)])[0]
    trained = example.ids[example.labels != IGNORE].tolist()
    assert trained == cont + [prep.tokenizer.eos_token_id]


def test_chat_template_formats_the_prompt_and_only_the_answer_is_trained(toy_base):
    from mixlab.train.finetune.config import DataSection
    from mixlab.train.sft_data import Formatter

    prep = sft.prepare(ft_config(toy_base))
    tok = prep.tokenizer
    tok.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}<assistant>{% endif %}")
    fmt = Formatter(tok, DataSection(datasets=["x"]))
    assert fmt.chat and fmt.prompt("2+2?") == "<user>2+2?\n<assistant>"
    example, cut = fmt.encode("2+2?", "4")
    assert not cut
    assert tok.decode(example.ids.tolist()) == "<user>2+2?\n<assistant>4<|endoftext|>"
    assert tok.decode(example.ids[example.labels != IGNORE].tolist()) == "4<|endoftext|>"
    off = Formatter(tok, DataSection(datasets=["x"], chat_template=False))
    assert not off.chat and off.prompt("2+2?") == "Q: 2+2?\nA: "
