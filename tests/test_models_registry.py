"""Proxy sizes: parameter counts against instantiated transformers models, configs, HF round trip."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from mixlab.config import validate
from mixlab.errors import ConfigError
from mixlab.models.registry import (
    PROXY_SIZES,
    SERVED_CONTEXT,
    TRAIN_SEQ_LEN_KEY,
    ModelConfig,
    build_model,
    check_size,
    chinchilla_tokens,
    hf_config,
    non_embedding_params,
    total_params,
)


def _counted(model: torch.nn.Module) -> tuple[int, int]:
    """(non-embedding, total unique) parameters counted from the real module."""
    seen, total, emb = set(), 0, 0
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if "embed_tokens" in name or "lm_head" in name:
            emb += p.numel()
    return total - emb, total


@pytest.mark.parametrize("size", ["proxy-0.2m", "proxy-1m", "proxy-5m"])
def test_param_count_matches_the_model(size):
    cfg = hf_config(ModelConfig(size=size), vocab_size=258, train_seq_len=64)
    model = build_model(cfg, seed=0)
    assert (non_embedding_params(cfg), total_params(cfg)) == _counted(model)


def test_names_match_sizes():
    expected = {"proxy-0.2m": 0.2e6, "proxy-1m": 1e6, "proxy-5m": 5e6, "proxy-14m": 14e6, "proxy-30m": 30e6}
    for name, n in expected.items():
        got = non_embedding_params(hf_config(ModelConfig(size=name), 258, 256))
        assert 0.75 * n < got < 1.35 * n, (name, got)
    assert PROXY_SIZES["proxy-0.2m"].d_model == 64 and PROXY_SIZES["proxy-0.2m"].n_layers == 4
    assert PROXY_SIZES["proxy-1m"].d_model == 128 and PROXY_SIZES["proxy-1m"].n_layers == 4


def test_custom_and_overridden_sizes():
    custom = ModelConfig(size=None, d_model=96, n_layers=3)
    s = custom.shape()
    assert (s.d_model, s.n_layers, s.n_heads, s.d_ff) == (96, 3, 3, 384)
    assert custom.label == "d96-L3"
    deeper = ModelConfig(size="proxy-1m", n_layers=6)
    assert deeper.shape().d_model == 128 and deeper.shape().n_layers == 6
    assert ModelConfig(size="proxy-1m").label == "proxy-1m"


def test_unknown_size_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"unknown model size 'proxy-2m'.*Did you mean 'proxy-0.2m'"):
        validate(ModelConfig, {"size": "proxy-2m"}, "cfg.yaml", {("size",): 3})
    with pytest.raises(ConfigError, match="cfg.yaml:3"):
        validate(ModelConfig, {"size": "proxy-2m"}, "cfg.yaml", {("size",): 3})
    with pytest.raises(ConfigError):
        check_size("tiny")
    with pytest.raises(ConfigError, match="not divisible"):
        validate(ModelConfig, {"size": None, "d_model": 100, "n_layers": 2, "n_heads": 3})


def test_chinchilla_budget():
    cfg = hf_config(ModelConfig(size="proxy-1m"), 258, 256)
    n = non_embedding_params(cfg)
    assert chinchilla_tokens(cfg, 1.0) == 20 * n
    assert chinchilla_tokens(cfg, 0.5) == 10 * n


def test_seeded_init_and_hf_round_trip(tmp_path):
    cfg = hf_config(ModelConfig(size="proxy-0.2m"), 258, 32, bos_id=256, eos_id=256, pad_id=257)
    a, b, c = build_model(cfg, 0), build_model(cfg, 0), build_model(cfg, 1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.model.embed_tokens.weight, c.model.embed_tokens.weight)
    a.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    ids = torch.randint(0, 256, (2, 16))
    with torch.no_grad():
        assert torch.equal(a(input_ids=ids).logits, loaded(input_ids=ids).logits)
    assert loaded.config._attn_implementation == "sdpa"


def test_checkpoint_declares_a_served_context_and_records_the_training_window(tmp_path):
    """config.json declares 2048 positions (what lm-eval, vLLM and generate size their window from)
    and keeps the training seq_len; the declared value changes no number: an old-style config that
    declared the training window gives the same initial weights and the same logits."""
    import json

    cfg = hf_config(ModelConfig(size="proxy-0.2m"), 258, 32, bos_id=256, eos_id=256, pad_id=257)
    assert cfg.max_position_embeddings == SERVED_CONTEXT == 2048
    build_model(cfg, 0).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["max_position_embeddings"] == 2048 and saved[TRAIN_SEQ_LEN_KEY] == 32
    assert hf_config(ModelConfig(size="proxy-0.2m"), 258, 4096).max_position_embeddings == 4096
    old = hf_config(ModelConfig(size="proxy-0.2m"), 258, 32, bos_id=256, eos_id=256, pad_id=257)
    old.max_position_embeddings = 32
    delattr(old, TRAIN_SEQ_LEN_KEY)
    a, b = AutoModelForCausalLM.from_pretrained(tmp_path), build_model(old, 0)
    ids = torch.randint(0, 256, (2, 30))
    with torch.no_grad():
        assert torch.equal(a(input_ids=ids).logits, b(input_ids=ids).logits)
