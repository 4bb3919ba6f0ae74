"""Generation throughput: batched generation with a KV cache vs one prompt at a time, same run.

For a proxy-sized random Llama and for SmolLM2-135M, generates ``--new-tokens`` greedy tokens for
the first ``--prompts`` GSM8K test questions (zero-shot "Question: ...\\nAnswer:") with
:class:`mixlab.eval.generation.Generator`, once with ``--batch-size`` prompts per ``generate`` call
and once with one prompt per call (both with the KV cache), and prints generated tokens/s of each
and their ratio. The sequential run also reports whether its texts equal the batched ones (left
padding must not change greedy answers beyond float rounding). No stop strings are set; a row that
emits EOS early counts only the tokens it generated.

    .venv/bin/python benchmarks/generation_throughput.py --prompts 32 --new-tokens 64 --threads 2
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
from mixlab.eval.tasks import GenerationSpec  # noqa: E402
from mixlab.models.pretrained import LoadedModel, load_model  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from eval_throughput import proxy_model  # noqa: E402  (the same proxy as the scoring benchmark)


def run(loaded: LoadedModel, prompts: list[str], spec: GenerationSpec, batch_size: int) -> tuple[float, int, list[str]]:
    gen = Generator(loaded.model, loaded.tokenizer, batch_size=batch_size)
    t0 = time.perf_counter()
    out = gen.generate(prompts, spec)
    seconds = time.perf_counter() - t0
    return seconds, sum(c[0].n_tokens for c in out), [c[0].text for c in out]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default="proxy,smollm2-135m")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    questions = [r.question for r in load_records("gsm8k") if r.metadata["split"] == "test"][: args.prompts]
    prompts = [f"Question: {q}\nAnswer:" for q in questions]
    spec = GenerationSpec(max_new_tokens=args.new_tokens)
    print(f"{len(prompts)} GSM8K prompts, {args.new_tokens} new tokens each, greedy, batch {args.batch_size} vs 1, "
          f"{args.threads} threads, torch {torch.__version__}")
    print(f"{'model':<14} {'batched tok/s':>14} {'one-at-a-time tok/s':>20} {'speed-up':>9}  same texts")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            loaded = proxy_model(Path(tmp) / "proxy") if name == "proxy" else load_model(name)
            run(loaded, prompts[:2], GenerationSpec(max_new_tokens=4), 2)  # warm-up
            tb, nb, texts_b = run(loaded, prompts, spec, args.batch_size)
            t1, n1, texts_1 = run(loaded, prompts, spec, 1)
            same = sum(a == b for a, b in zip(texts_b, texts_1, strict=True))
            print(f"{name:<14} {nb / tb:>14.1f} {n1 / t1:>20.1f} {(nb / tb) / (n1 / t1):>8.2f}x  "
                  f"{same}/{len(prompts)}  ({nb} tok in {tb:.1f}s vs {n1} tok in {t1:.1f}s)")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
