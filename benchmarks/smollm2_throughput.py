"""SmolLM2-135M tokens/s on this CPU for training, forward scoring and generation, with GFLOP/s.

At ``--threads`` (default 1) threads, fp32:

* training: full fine-tuning steps (forward + backward + AdamW) on batch 4 x 256 random tokens;
  6N FLOPs per token;
* scoring: forward passes (no grad) on batch 8 x 256; 2N FLOPs per token;
* generation: :class:`mixlab.eval.generation.Generator` (the decode loop) on GSM8K CoT chat
  prompts, greedy, batch 16; 2N FLOPs per generated token (prefill tokens are not counted).

N is the parameter count (tied embeddings counted once: the LM head is a matmul, the lookup is
free); attention-score FLOPs are left out, so the GFLOP/s slightly undercount. Compare with the
machine's ~70 GFLOP/s per core.

    .venv/bin/python benchmarks/smollm2_throughput.py --threads 1
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from mixlab.models.pretrained import load_model  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from generation_throughput import run, workload  # noqa: E402


def line(what: str, tokens: int, seconds: float, flops_per_token: float, threads: int) -> None:
    gflops = tokens * flops_per_token / seconds / 1e9
    print(f"{what:<34} {tokens / seconds:>9.1f} tok/s {gflops:>7.1f} GFLOP/s  ({gflops / threads:.1f} per thread)")
    sys.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument("--score-batches", type=int, default=3)
    ap.add_argument("--gen-prompts", type=int, default=16)
    ap.add_argument("--gen-tokens", type=int, default=128)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_model("smollm2-135m")
    model = loaded.model
    n = sum(p.numel() for p in model.parameters())
    vocab = model.config.vocab_size
    print(f"SmolLM2-135M, N = {n / 1e6:.1f}M parameters, fp32, {args.threads} thread(s), torch {torch.__version__}")
    g = torch.Generator().manual_seed(0)

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    batch = torch.randint(0, vocab, (4, 256), generator=g)
    for step in range(args.train_steps + 1):  # the first step is a warm-up
        if step == 1:
            t0 = time.perf_counter()
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    line("train (4x256, AdamW)", args.train_steps * batch.numel(), time.perf_counter() - t0, 6 * n, args.threads)
    del opt
    model.eval()

    batch = torch.randint(0, vocab, (8, 256), generator=g)
    with torch.inference_mode():
        model(input_ids=batch[:2])  # warm-up
        t0 = time.perf_counter()
        for _ in range(args.score_batches):
            model(input_ids=batch).logits.float().log_softmax(-1)
    line("score (8x256 forward)", args.score_batches * batch.numel(), time.perf_counter() - t0, 2 * n, args.threads)

    prompts, spec = workload("cot-chat", args.gen_prompts, args.gen_tokens)
    run(loaded, prompts[:2], spec.model_copy(update={"max_new_tokens": 4}), 2, "loop")  # warm-up
    seconds, tokens, _ = run(loaded, prompts, spec, 16, "loop")
    line(f"generate (GSM8K CoT chat, b16, {args.gen_tokens} new)", tokens, seconds, 2 * n, args.threads)


if __name__ == "__main__":
    main()
