"""mixlab's log-likelihood engine vs lm-eval's Hugging Face backend: same model, same items, one run.

For ARC-Easy, PIQA and BoolQ (the first ``--limit`` items of the shared files), on a proxy-sized
random Llama and on SmolLM2-135M, prints wall time of each, the ratio, and whether acc/acc_norm are
identical item by item. Both use the same batch size; lm-eval reads the same local files through
task YAMLs (no download). Tokenization and request building are included in both timings.

    .venv/bin/python benchmarks/eval_throughput.py --limit 100 --threads 2
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402

from mixlab.eval.harness import LM_EVAL_LOCAL, lm_eval_model, run_lm_eval, write_task_yaml  # noqa: E402
from mixlab.eval.runner import score_task  # noqa: E402
from mixlab.eval.scoring import Scorer  # noqa: E402
from mixlab.eval.tasks import build_items, get_task, load_docs  # noqa: E402
from mixlab.models.pretrained import LoadedModel, load_model  # noqa: E402
from mixlab.settings import data_dir  # noqa: E402

LM_EVAL = LM_EVAL_LOCAL


def proxy_model(folder: Path) -> LoadedModel:
    """A proxy-sized Llama (4 layers, d=256) with SmolLM2's tokenizer, random weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = load_model("smollm2-135m").tokenizer
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return load_model(str(folder))


def run_mixlab(loaded: LoadedModel, task: str, limit: int, batch_size: int) -> tuple[float, list[dict]]:
    t0 = time.perf_counter()
    spec = get_task(task)
    docs, pool = load_docs(spec)
    items = build_items(spec, docs[:limit], pool)
    _, rows = score_task(spec, items, Scorer(loaded.model, loaded.tokenizer, batch_size=batch_size))
    return time.perf_counter() - t0, rows


def run_harness(loaded: LoadedModel, task: str, limit: int, batch_size: int, tmp: Path) -> tuple[float, list[dict]]:
    rel, fields = LM_EVAL[task]
    write_task_yaml(tmp, f"bench_{task}", data_dir() / rel, **fields)
    lm = lm_eval_model(loaded, batch_size=batch_size)
    t0 = time.perf_counter()
    out = run_lm_eval(lm, [f"bench_{task}"], include_path=tmp, include_defaults=False, limit=limit, log_samples=True)
    wall = time.perf_counter() - t0
    samples = sorted(out["samples"][f"bench_{task}"], key=lambda s: s["doc_id"])
    return wall, samples


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default="proxy,smollm2-135m")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import logging

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    tmp = Path(tempfile.mkdtemp(prefix="eval_bench_"))
    print(f"limit={args.limit} batch_size={args.batch_size} threads={args.threads} torch={torch.__version__}")
    print(f"{'model':14s} {'task':9s} {'lm-eval s':>10s} {'mixlab s':>9s} {'speedup':>8s}  identical")
    totals = {"lm": 0.0, "mx": 0.0}
    all_same = True
    for name in args.models.split(","):
        loaded = proxy_model(tmp / "proxy") if name == "proxy" else load_model(name)
        for task in LM_EVAL:
            run_mixlab(loaded, task, 2, args.batch_size)  # warm-up (allocator, lazy imports)
            t_lm, theirs = run_harness(loaded, task, args.limit, args.batch_size, tmp)
            t_mx, mine = run_mixlab(loaded, task, args.limit, args.batch_size)
            same = len(mine) == len(theirs) and all(
                a["pred"] == _argmax([r[0] for r in b["filtered_resps"]]) and a.get("acc") == b["acc"]
                and a.get("acc_norm", b.get("acc_norm")) == b.get("acc_norm") for a, b in zip(mine, theirs))
            all_same &= same
            totals["lm"] += t_lm
            totals["mx"] += t_mx
            print(f"{name:14s} {task:9s} {t_lm:10.2f} {t_mx:9.2f} {t_lm / t_mx:7.2f}x  {same}", flush=True)
    print(f"{'total':24s} {totals['lm']:10.2f} {totals['mx']:9.2f} {totals['lm'] / totals['mx']:7.2f}x  {all_same}")
    return 0 if all_same else 1


def _argmax(xs: list[float]) -> int:
    return max(range(len(xs)), key=lambda i: (xs[i], -i))


if __name__ == "__main__":
    sys.exit(main())
