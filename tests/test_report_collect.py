"""What the report learns about each run of a sweep from its run directory (method, data)."""

from __future__ import annotations

import json

import torch
import yaml
from transformers import LlamaConfig, LlamaForCausalLM

from mixlab.models.tokenizer import byte_tokenizer
from mixlab.report.collect import collect
from mixlab.runs import sweep as S
from mixlab.train import checkpoint


def _save(path, tok, meta_dir=None, meta=None):
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64))
    checkpoint.save(path, model, None, None, {"step": int(path.name.split("-")[1])}, tok)
    if meta_dir is not None:
        (meta_dir / "meta.json").write_text(json.dumps(meta))


def test_step_zero_of_a_finetuning_run_does_not_make_it_look_like_its_base(tmp_path):
    # the base is a pretraining run's checkpoint; step 0 of every fine-tuning run is that base model, and
    # the run's method and data must still come from the fine-tuning run's own meta.json
    tok = byte_tokenizer()
    base_run, ft = tmp_path / "base_run", tmp_path / "runs" / "ft_kl"
    _save(checkpoint.step_dir(base_run, 5), tok, base_run, {
        "stage": "pretrain", "tokens": {"trained": 10}, "timings": {"training": 61.0, "total_this_process": 63.0},
        "mixture": {"requested": {"people": 0.5, "prose": 0.5}, "realized": {"people": 0.5, "prose": 0.5}}})
    _save(checkpoint.step_dir(ft, 10), tok, ft, {"stage": "finetune", "plan": {
        "method": "sft", "anchor": {"type": "kl"}, "replay": None, "data": "datasets toyworld_people"}})
    cfg_path = tmp_path / "sweep.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "name": "t", "out": str(tmp_path / "out"), "runs": [str(tmp_path / "runs" / "*")],
        "base_models": [{"name": "base", "path": str(checkpoint.step_dir(base_run, 5))}],
        "checkpoints": {"last": True, "steps": [0]}, "tasks": ["toyworld_people_mc"]}))
    _, metas, base = collect(S.load_sweep_config(cfg_path))
    by_run = {m.run: m for m in metas}
    assert (by_run["ft_kl"].method, by_run["ft_kl"].dataset) == ("sft+kl", "datasets toyworld_people")
    assert base == {"ft_kl": "base"}
    # the base model is a pretraining run's checkpoint: its run directory gives the report its mixture
    # and its pretraining time
    assert by_run["base"].method == "pretrain" and by_run["base"].mixture_realized == {"people": 0.5, "prose": 0.5}
    assert by_run["base"].runtime["total_this_process"] == 63.0


def test_data_build_replay_and_sweep_time_of_each_run(tmp_path):
    """A fine-tuning run on a real data build: the report gets the build's counts and contamination
    check, the run's replay, and the seconds the sweep spent evaluating each run."""
    from mixlab.config import validate
    from mixlab.data.api import build
    from mixlab.data.build import DataConfig

    data = build(validate(DataConfig, {"name": "people", "split": {"mode": "official"},
                                       "domains": {"people": {"ratio": 1, "datasets": {"toyworld_people": 1}}},
                                       "contamination": {"benchmarks": ["toyworld_prose"], "action": "drop"}}, "test"),
                 tmp_path / "data")
    tok = byte_tokenizer()
    base_dir, ft = tmp_path / "base", tmp_path / "runs" / "replay"
    _save(checkpoint.step_dir(base_dir, 1), tok)
    _save(checkpoint.step_dir(ft, 4), tok, ft, {"stage": "finetune", "plan": {
        "method": "sft", "replay": "text toyworld:prose", "replay_examples": 160, "target_examples": 480,
        "data": f"build {data}"}})
    cfg_path = tmp_path / "sweep.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "name": "t", "out": str(tmp_path / "out"), "runs": [str(ft)], "workers": 1, "limit": 4,
        "base_models": [{"name": "base", "path": str(checkpoint.step_dir(base_dir, 1))}],
        "checkpoints": {"last": True}, "tasks": ["toyworld_people_mc"]}))
    cfg = S.load_sweep_config(cfg_path)
    S.run_sweep(cfg)
    _, metas, _ = collect(cfg)
    m = {x.run: x for x in metas}["replay"]
    info = json.loads((data / "info.json").read_text())
    assert m.data_build.name == "people" and m.data_build.train == info["counts"]["train"] == {"toyworld_people": 480}
    assert m.data_build.test == {"toyworld_people": 64} and m.data_build.split == "official"
    assert [o["reference"] for o in m.data_build.contamination["overlaps"]] == [
        "benchmark/toyworld_prose", "test/toyworld_people"]
    assert m.training_data == {"target examples": "480", "replay": "160 examples of toyworld:prose"}
    from mixlab.runs.store import Store

    rows = Store(S.resolve(cfg).store_path).task_rows()
    want = sum(r["seconds"] for r in rows if r["unit"].startswith("replay/"))
    assert m.eval_seconds == want > 0
