"""End-to-end pretraining: run directory contents, HF checkpoints, mixture, in-loop bpb, resume, skip."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from mixlab.cli import main
from mixlab.errors import MixlabError
from mixlab.train import pretrain as P

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(**over) -> dict:
    """A run of a few seconds: a 2-layer d=32 proxy on small slices of the shared code and wiki text."""
    cfg = {
        "seed": 3,
        "model": {"size": None, "d_model": 32, "n_layers": 2, "n_heads": 2},
        "data": {
            "sources": {
                "code": {"uri": "corpus:python_stdlib", "max_train_bytes": 200_000, "heldout_max_bytes": 4_000},
                "wiki": {"uri": "corpus:wikitext2", "max_train_bytes": 200_000, "heldout_max_bytes": 4_000},
            },
            "mixture": {"code": 0.7, "wiki": 0.3},
        },
        "duration": {"tokens": 40 * 8 * 32},
        "train": {"seq_len": 32, "batch_size": 8, "lr": 0.01, "threads": 1, "log_every": 5},
        "eval": {"every": 20, "max_tokens": 1024},
        "checkpoint": {"every": 20},
    }
    for k, v in over.items():
        node = cfg
        *path, last = k.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[last] = v
    return cfg


def write_config(tmp_path: Path, cfg: dict) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_tiny_run_writes_a_complete_run_directory(tmp_path, data_dir):
    cfg = P.load_pretrain_config(write_config(tmp_path, tiny_config()))
    out = tmp_path / "run"
    res = P.pretrain(cfg, out)
    assert res.steps == 40 and res.tokens == 40 * 8 * 32
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-20", "step-40"]
    # only the newest checkpoint keeps optimizer state; all keep loadable weights
    assert not (out / "checkpoints/step-20/trainer_state.pt").exists()
    assert (out / "checkpoints/step-40/trainer_state.pt").exists()
    model = AutoModelForCausalLM.from_pretrained(out / "checkpoints/step-40")
    tok = AutoTokenizer.from_pretrained(out / "checkpoints/step-40")
    ids = tok("def main():", return_tensors="pt").input_ids
    assert model(input_ids=ids).logits.shape == (1, ids.shape[1], len(tok))

    meta = json.loads((out / "meta.json").read_text())
    for key in ("git_commit", "config_hash", "seed", "versions", "host", "tokens", "mixture", "timings"):
        assert key in meta
    assert meta["status"] == "complete" and meta["seed"] == 3
    assert meta["tokens"]["trained"] == 10_240
    assert sum(meta["tokens"]["per_source"].values()) == 10_240
    for part in ("training", "evaluation", "checkpoint_io"):
        assert meta["timings"][part] > 0
    for k, want in {"code": 0.7, "wiki": 0.3}.items():
        assert abs(meta["mixture"]["realized"][k] - want) < 0.01
        assert meta["tokens"]["per_source"][k] / 10_240 == pytest.approx(meta["mixture"]["realized"][k])
    priors = json.loads((out / "mixture.json").read_text())["priors"]
    assert sum(priors.values()) == pytest.approx(1.0)

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["kind"] == "train"]
    eval_rows = [r for r in rows if r["kind"] == "eval"]
    assert [r["step"] for r in train_rows] == list(range(5, 41, 5))
    assert [r["step"] for r in eval_rows] == [20, 40]
    assert train_rows[-1]["loss"] < train_rows[0]["loss"] - 1.0  # it learns
    assert set(eval_rows[0]) >= {"bpb/code", "bpb/wiki", "bpb/mean"}
    assert eval_rows[-1]["bpb/mean"] < eval_rows[0]["bpb/mean"]
    assert 0 < eval_rows[-1]["bpb/code"] < 8
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert (out / "config.yaml").is_file() and (out / "tokenizer/tokenizer.json").is_file()

    again = P.pretrain(cfg, out)  # finished runs are skipped, not retrained
    assert again.skipped and again.final_checkpoint == res.final_checkpoint


def test_heldout_bpb_matches_transformers_loss():
    """Parity with the reference: HF's own mean next-token loss, converted to bits per byte."""
    from mixlab.models.registry import ModelConfig, build_model, hf_config
    from mixlab.models.tokenizer import byte_tokenizer, token_byte_lengths

    tok = byte_tokenizer()
    model = build_model(hf_config(ModelConfig(size="proxy-0.2m"), len(tok), 64), seed=0).eval()
    text = "The lobster is blue until it is cooked. " * 3  # 120 bytes, no EOS
    ids = np.frombuffer(text.encode(), dtype=np.uint8).astype(np.int32)[:65]  # one window of 64 targets
    bpb = P.heldout_bpb(model, ids, token_byte_lengths(tok), seq_len=64, batch_size=4)
    t = torch.as_tensor(ids, dtype=torch.long)[None]
    with torch.no_grad():
        ref = model(input_ids=t, labels=t).loss.item()  # mean nats per predicted token (= byte)
    assert bpb == pytest.approx(ref / math.log(2), rel=1e-5)


def test_grad_accumulation_matches_one_big_batch(tmp_path, data_dir):
    outs, norms = {}, {}
    for micro in (8, 2):
        cfg = P.load_pretrain_config(write_config(tmp_path, tiny_config(**{
            "train.micro_batch_size": micro, "train.log_every": 1, "duration.tokens": 5 * 8 * 32, "eval.every": 0, "checkpoint.every": 0})))
        res = P.pretrain(cfg, tmp_path / f"m{micro}")
        outs[micro] = load_file(str(res.final_checkpoint / "model.safetensors"))
        rows = [json.loads(x) for x in (tmp_path / f"m{micro}" / "metrics.jsonl").read_text().splitlines()]
        norms[micro] = [v for r in rows if r["kind"] == "train" for v in (r["loss"], r["grad_norm"])]
    # the gradient's scale (which Adam would hide) shows in the logged norm and loss
    assert norms[2] == pytest.approx(norms[8], rel=1e-5)
    for k in outs[8]:  # float re-association only, amplified a little by Adam over 5 steps
        torch.testing.assert_close(outs[8][k], outs[2][k], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_ci_tiny_config_trains_and_loads(tmp_path, data_dir):
    out = tmp_path / "ci"
    assert main(["pretrain", str(ROOT / "configs/pretrain/ci_tiny.yaml"), "--out", str(out)]) == 0
    meta = json.loads((out / "meta.json").read_text())
    final = out / meta["final_checkpoint"]
    model = AutoModelForCausalLM.from_pretrained(final)
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 4
    assert meta["final_metrics"]["bpb/mean"] < 5.0  # uniform over 258 tokens would be 8.0


def test_other_config_in_same_directory_is_refused(tmp_path, data_dir):
    cfg = P.load_pretrain_config(write_config(tmp_path, tiny_config(**{"duration.tokens": 2 * 8 * 32})))
    P.pretrain(cfg, tmp_path / "run")
    other = P.load_pretrain_config(write_config(tmp_path, tiny_config(**{"duration.tokens": 3 * 8 * 32})))
    with pytest.raises(MixlabError, match="different config"):
        P.pretrain(other, tmp_path / "run")


def test_bpe_run_saves_its_tokenizer_and_reports_exact_bpb(tmp_path, data_dir):
    cfg = P.load_pretrain_config(write_config(tmp_path, tiny_config(**{
        "tokenizer": {"kind": "bpe", "vocab_size": 512}, "duration.tokens": 4 * 8 * 32,
        "eval.every": 0, "checkpoint.every": 0, "train.schedule": {"kind": "wsd", "warmup": 1}})))
    res = P.pretrain(cfg, tmp_path / "bpe")
    tok = AutoTokenizer.from_pretrained(res.final_checkpoint)
    assert len(tok) == 512
    model = AutoModelForCausalLM.from_pretrained(res.final_checkpoint)
    assert model.config.vocab_size == 512
    assert 0 < res.metrics["bpb/wiki"] < 12 and math.isfinite(res.metrics["bpb/code"])
    # resuming a finished run reloads the saved tokenizer rather than training a new one
    assert P.pretrain(cfg, tmp_path / "bpe").skipped
