"""lm-eval evaluates mixlab models through the registered ``mixlab`` model type, LoRA adapters included.

``simple_evaluate(model="mixlab", model_args="pretrained=DIR,adapter=LORA")`` must score exactly what
``mixlab eval --model DIR --adapter LORA`` scores, item by item, and the adapter must really be applied.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "eval"))
import tiny_lm  # noqa: E402

from mixlab.eval.harness import LM_EVAL_LOCAL, write_task_yaml  # noqa: E402
from mixlab.eval.runner import score_task  # noqa: E402
from mixlab.eval.scoring import Scorer  # noqa: E402
from mixlab.eval.tasks import build_items, get_task, load_docs  # noqa: E402
from mixlab.models.pretrained import load_model  # noqa: E402

N = 12


def _adapter(base: Path, out: Path) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base))
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    torch.manual_seed(1)
    with torch.no_grad():  # peft starts B at zero; a non-zero B makes the adapter change the scores
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    peft.save_pretrained(str(out))
    return out


def _mixlab_lls(loaded) -> list[list[float]]:
    spec = get_task("arc_easy")
    docs, pool = load_docs(spec)
    _, rows = score_task(spec, build_items(spec, docs[:N], pool), Scorer(loaded.model, loaded.tokenizer, batch_size=8))
    return [r["lls"] for r in rows]


def test_lm_eval_mixlab_model_type_with_lora_adapter_matches_mixlab_eval(data_dir, tmp_path):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    base = tiny_lm.build(tmp_path / "base")
    lora = _adapter(base, tmp_path / "lora")
    rel, fields = LM_EVAL_LOCAL["arc_easy"]
    write_task_yaml(tmp_path / "tasks", "bridge_arc_easy", data_dir / rel, **fields)
    out = simple_evaluate(model="mixlab", model_args=f"pretrained={base},adapter={lora},batch_size=4",
                          tasks=["bridge_arc_easy"], task_manager=TaskManager(include_path=str(tmp_path / "tasks"),
                                                                              include_defaults=False),
                          limit=N, log_samples=True, bootstrap_iters=0)
    theirs = [[r[0] for r in s["filtered_resps"]] for s in sorted(out["samples"]["bridge_arc_easy"], key=lambda s: s["doc_id"])]

    with_adapter = _mixlab_lls(load_model(str(base), adapter=lora))
    without = _mixlab_lls(load_model(str(base)))
    assert len(theirs) == len(with_adapter) == N
    for a, b in zip(with_adapter, theirs, strict=True):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-4)
    # the adapter is applied: scores move by far more than the parity tolerance
    assert max(abs(x - y) for a, b in zip(with_adapter, without) for x, y in zip(a, b)) > 0.1


def test_lm_eval_command_runs_lm_eval_tasks_from_mixlab(data_dir, tmp_path):
    """`mixlab lm-eval` runs an lm-eval task (over the local ARC-Easy file) on a mixlab model; its accuracy
    equals mixlab's own ARC-Easy accuracy on the same items (the parity the bridge promises)."""
    import json

    from mixlab.cli import main

    base = tiny_lm.build(tmp_path / "base")
    rel, fields = LM_EVAL_LOCAL["arc_easy"]
    write_task_yaml(tmp_path / "tasks", "cli_arc_easy", data_dir / rel, **fields)
    assert main(["lm-eval", "--model", str(base), "--tasks", "cli_arc_easy", "--include-path", str(tmp_path / "tasks"),
                 "--no-defaults", "--limit", str(N), "--batch-size", "4", "--out", str(tmp_path / "o")]) == 0
    res = json.loads((tmp_path / "o" / "results.json").read_text())["cli_arc_easy"]
    spec = get_task("arc_easy")
    docs, pool = load_docs(spec)
    loaded = load_model(str(base))
    metrics, _ = score_task(spec, build_items(spec, docs[:N], pool), Scorer(loaded.model, loaded.tokenizer, batch_size=8))
    assert res["n"] == N
    assert res["acc"] == pytest.approx(metrics["acc"]) and res["acc_norm"] == pytest.approx(metrics["acc_norm"])
