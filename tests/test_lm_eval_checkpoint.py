"""A freshly pretrained proxy checkpoint (configs/pretrain/ci_tiny.yaml, unchanged) opens in the tools
users use: ``AutoTokenizer``/``AutoModelForCausalLM``, lm-eval's own HF backend (``model="hf"``,
scores identical to ``mixlab eval`` item by item), and ``model.generate`` past the training window.
Checkpoints written before the declared window was widened still load, evaluate with the window
lm-eval gives them, and resume training bit-identically."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from mixlab.cli import main
from mixlab.eval.generation import Generator
from mixlab.eval.harness import LM_EVAL_LOCAL, write_task_yaml
from mixlab.eval.scoring import Scorer
from mixlab.eval.tasks import GenerationSpec
from mixlab.models.pretrained import load_model
from mixlab.models.registry import SERVED_CONTEXT, TRAIN_SEQ_LEN_KEY
from mixlab.train import checkpoint

ROOT = Path(__file__).resolve().parents[1]
N = 100  # ARC-Easy items
SEQ_LEN = 64  # ci_tiny's train.seq_len


@pytest.fixture(scope="module")
def ci_tiny(tmp_path_factory, data_dir) -> Path:
    """The run directory of configs/pretrain/ci_tiny.yaml as committed (about 15 s on one thread)."""
    out = tmp_path_factory.mktemp("ci_tiny") / "run"
    assert main(["pretrain", str(ROOT / "configs/pretrain/ci_tiny.yaml"), "--out", str(out)]) == 0
    return out


def _final(run: Path) -> Path:
    return run / json.loads((run / "meta.json").read_text())["final_checkpoint"]


def test_checkpoint_declares_a_served_window_and_records_the_training_one(ci_tiny):
    ckpt = _final(ci_tiny)
    config = json.loads((ckpt / "config.json").read_text())
    assert config["max_position_embeddings"] == SERVED_CONTEXT == 2048
    assert config[TRAIN_SEQ_LEN_KEY] == SEQ_LEN
    assert config["use_cache"] is True  # generate() reuses its KV cache (training ran without one)
    assert json.loads((ckpt / "generation_config.json").read_text())["use_cache"] is True
    plan = json.loads((ci_tiny / "meta.json").read_text())["plan"]
    assert plan["seq_len"] == SEQ_LEN and plan["max_position_embeddings"] == 2048
    for folder in (ckpt, ci_tiny / "tokenizer"):
        tok = AutoTokenizer.from_pretrained(str(folder))
        assert tok.model_max_length == 2048
        assert tok("héllo", add_special_tokens=False)["input_ids"] == list("héllo".encode())
        assert tok.eos_token_id == 256 and tok.pad_token_id == 257


def test_lm_eval_hf_backend_scores_the_checkpoint_exactly_as_mixlab_eval(ci_tiny, data_dir, tmp_path):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    ckpt = _final(ci_tiny)
    rel, fields = LM_EVAL_LOCAL["arc_easy"]
    write_task_yaml(tmp_path / "tasks", "ckpt_arc_easy", data_dir / rel, **fields)
    docs = [json.loads(line) for line in (data_dir / rel).read_text().splitlines()[:N]]
    # the case lm-eval used to assert on: answers longer than the 64-token training window
    assert sum(len((" " + c).encode()) > SEQ_LEN for d in docs for c in d["choices"]) >= 1
    out = simple_evaluate(model="hf", model_args=f"pretrained={ckpt},device=cpu,dtype=float32",
                          batch_size=16, tasks=["ckpt_arc_easy"], limit=N, log_samples=True, bootstrap_iters=0,
                          task_manager=TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False))
    theirs = sorted(out["samples"]["ckpt_arc_easy"], key=lambda s: s["doc_id"])

    assert main(["eval", "--model", str(ckpt), "--tasks", "arc_easy", "--limit", str(N), "--batch-size", "16",
                 "--out", str(tmp_path / "mixlab")]) == 0
    task_dir = tmp_path / "mixlab" / "tasks" / "arc_easy"
    ours = [json.loads(line) for line in (task_dir / "items.jsonl").read_text().splitlines()]
    result = json.loads((task_dir / "result.json").read_text())

    assert len(theirs) == len(ours) == N
    assert [s["acc"] for s in theirs] == [r["acc"] for r in ours]
    assert [s["acc_norm"] for s in theirs] == [r["acc_norm"] for r in ours]
    for s, r in zip(theirs, ours, strict=True):
        assert r["lls"] == pytest.approx([x[0] for x in s["filtered_resps"]], rel=1e-6, abs=1e-4)
    res = out["results"]["ckpt_arc_easy"]
    assert res["acc,none"] == result["metrics"]["acc"] and res["acc_norm,none"] == result["metrics"]["acc_norm"]
    assert 0.15 < result["metrics"]["acc"] < 0.6  # a real score, not every item wrong or right


def test_generate_runs_past_the_training_window(ci_tiny):
    ckpt = _final(ci_tiny)
    model, tok = AutoModelForCausalLM.from_pretrained(str(ckpt)).eval(), AutoTokenizer.from_pretrained(str(ckpt))
    prompt = "import os\n\ndef main():\n    "
    ids = tok(prompt, return_tensors="pt").input_ids
    new = 3 * SEQ_LEN
    with torch.inference_mode():
        full = model.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False)
        logits = model(full).logits
    assert full.shape[1] == ids.shape[1] + new > 3 * SEQ_LEN
    assert torch.isfinite(logits).all()
    # mixlab's generator agrees with transformers' on the same positions (its window is the declared one)
    gen = Generator(model, tok, batch_size=2)
    assert gen.max_length == 2048
    spec = GenerationSpec(max_new_tokens=new)
    text = gen.generate([prompt], spec)[0][0].text
    reference = model.generate(ids, max_new_tokens=new, do_sample=False)[0, ids.shape[1]:].tolist()
    assert text == tok.decode([t for t in reference if t != tok.eos_token_id], skip_special_tokens=True)


def _as_old_checkpoint(path: Path) -> None:
    """Rewrite a checkpoint's config.json as mixlab wrote it before: the training seq_len declared."""
    config = json.loads((path / "config.json").read_text())
    config["max_position_embeddings"] = SEQ_LEN
    config["use_cache"] = False
    del config[TRAIN_SEQ_LEN_KEY]
    (path / "config.json").write_text(json.dumps(config))


def test_old_checkpoints_load_evaluate_with_lm_eval_window_and_resume(ci_tiny, tmp_path):
    from lm_eval.models.huggingface import HFLM

    old_run = tmp_path / "run"
    keep_all = ["--set", "checkpoint.keep_optimizer_states=2"]  # step-32 keeps its optimizer state to resume from
    assert main(["pretrain", str(ROOT / "configs/pretrain/ci_tiny.yaml"), "--out", str(old_run), *keep_all]) == 0
    final = _final(old_run)
    shutil.rmtree(final)
    (mid,) = [p for _, p in checkpoint.list_checkpoints(old_run)]
    _as_old_checkpoint(mid)
    loaded = load_model(str(mid))
    lm = HFLM(pretrained=str(mid), device="cpu", batch_size=4)
    assert Scorer(loaded.model, loaded.tokenizer).max_length == lm.max_length == SEQ_LEN
    assert Generator(loaded.model, loaded.tokenizer).max_length == SEQ_LEN
    # resuming the run from the old-style checkpoint ends with the same weights as the original run
    meta = json.loads((old_run / "meta.json").read_text())
    (old_run / "meta.json").write_text(json.dumps(meta | {"status": "running"}))
    assert main(["pretrain", str(ROOT / "configs/pretrain/ci_tiny.yaml"), "--out", str(old_run), *keep_all]) == 0
    assert json.loads((old_run / "meta.json").read_text())["resumed_from"] == 32
    a, b = load_file(str(final / "model.safetensors")), load_file(str(_final(ci_tiny) / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
