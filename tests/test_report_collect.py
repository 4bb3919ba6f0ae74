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
    _save(checkpoint.step_dir(base_run, 5), tok, base_run, {"stage": "pretrain", "tokens": {"trained": 10}})
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
