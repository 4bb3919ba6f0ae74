"""Generation throughput: mixlab's decode loop vs the previous ``model.generate`` path, same run.

Workload (default ``--workload cot-chat``): the first ``--prompts`` GSM8K test questions as the
``gsm8k_cot_chat`` task renders them (zero-shot "Let's think step by step." as a user turn in the
chat template), greedy, ``--new-tokens`` (256) new tokens, ``--batch-size`` prompts per batch. For
each model it runs :class:`mixlab.eval.generation.Generator` with ``engine="loop"`` (the decode
loop that drops finished rows and refills their slots) and ``engine="hf"`` (left-padded batches
through ``model.generate``, the path before), and prints generated tokens/s of each, the ratio,
and how many texts are equal. ``--workload plain`` uses "Question: ...\\nAnswer:" without a template.

    .venv/bin/python benchmarks/generation_throughput.py --prompts 32 --threads 1 --models smollm2-135m
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from mixlab.data.sources import load_records  # noqa: E402
from mixlab.eval.generation import Generator  # noqa: E402
from mixlab.eval.tasks import GenerationSpec, get_task  # noqa: E402
from mixlab.models.pretrained import LoadedModel, load_model  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from eval_throughput import proxy_model  # noqa: E402  (the same proxy as the scoring benchmark)


def workload(kind: str, n_prompts: int, new_tokens: int) -> tuple[list[str], GenerationSpec]:
    questions = [r.question for r in load_records("gsm8k") if r.metadata["split"] == "test"][:n_prompts]
    if kind == "plain":
        return [f"Question: {q}\nAnswer:" for q in questions], GenerationSpec(max_new_tokens=new_tokens)
    task = get_task("gsm8k_cot_chat")
    prompts = [task.prompt.replace("{{question}}", q) for q in questions]
    return prompts, task.decoding.model_copy(update={"max_new_tokens": new_tokens})


def run(loaded: LoadedModel, prompts: list[str], spec: GenerationSpec, batch_size: int,
        engine: str) -> tuple[float, int, list[str]]:
    gen = Generator(loaded.model, loaded.tokenizer, batch_size=batch_size, engine=engine)
    t0 = time.perf_counter()
    out = gen.generate(prompts, spec)
    seconds = time.perf_counter() - t0
    return seconds, sum(c[0].n_tokens for c in out), [c[0].text for c in out]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", choices=["cot-chat", "plain"], default="cot-chat")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", default="smollm2-135m")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    prompts, spec = workload(args.workload, args.prompts, args.new_tokens)
    print(f"{len(prompts)} GSM8K prompts ({args.workload}), {args.new_tokens} new tokens max, greedy, batch "
          f"{args.batch_size}, {args.threads} threads, torch {torch.__version__}")
    print(f"{'model':<14} {'loop tok/s':>11} {'generate tok/s':>15} {'speed-up':>9}  same texts")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            loaded = proxy_model(Path(tmp) / "proxy") if name == "proxy" else load_model(name)
            run(loaded, prompts[:2], GenerationSpec(max_new_tokens=4), 2, "loop")  # warm-up
            tn, nn, texts_n = run(loaded, prompts, spec, args.batch_size, "loop")
            to, no, texts_o = run(loaded, prompts, spec, args.batch_size, "hf")
            same = sum(a == b for a, b in zip(texts_n, texts_o, strict=True))
            print(f"{name:<14} {nn / tn:>11.1f} {no / to:>15.1f} {(nn / tn) / (no / to):>8.2f}x  "
                  f"{same}/{len(prompts)}  ({nn} tok in {tn:.1f}s vs {no} tok in {to:.1f}s)")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
