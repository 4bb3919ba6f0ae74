"""SmolLM2-135M tokens/s on this CPU for training, forward scoring and generation, with GFLOP/s.

At ``--threads`` (default 1) threads, fp32:

* training: full fine-tuning steps (forward + backward + AdamW) on batch 4 x 256 random tokens;
  6N FLOPs per token;
* SFT on real examples: GSM8K training problems in the chat template (mixlab's SFT data pipeline),
  batch 8, as one padded micro-batch vs length-grouped micro-batches of 2 (same gradient); tokens/s
  counts real (non-padding) tokens, so padding shows up as lost throughput;
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
    print(f"{what:<48} {tokens / seconds:>9.1f} tok/s {gflops:>7.1f} GFLOP/s  ({gflops / threads:.1f} per thread)")
    sys.stdout.flush()


def sft_steps(loaded, opt, n: int, args) -> None:
    """Real SFT steps on GSM8K chat examples: one padded micro-batch of 8 vs length-grouped micro-batches of 2."""
    from mixlab.train.finetune.config import DataSection
    from mixlab.train.sft_data import SFTBatches, build_sft_data

    section = DataSection(datasets=["gsm8k"], max_records=8 * args.train_steps, max_seq_len=384)
    data = build_sft_data(section, loaded.tokenizer, 0)
    model = loaded.model
    for micro in (8, 2):
        batches = SFTBatches(data.examples, 8, micro, loaded.tokenizer.pad_token_id or 0, 0, torch.device("cpu"))
        real = computed = 0
        t0 = time.perf_counter()
        for step in range(args.train_steps):
            mbs = batches.batch(step)
            total = sum(int((mb["labels"] != -100).sum()) for mb in mbs)
            for mb in mbs:
                out = model(input_ids=mb["input_ids"], attention_mask=mb["attention_mask"])
                logits = out.logits[:, :-1].float()
                loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                         mb["labels"][:, 1:].reshape(-1), reduction="sum")
                (loss / total).backward()
                real += int(mb["attention_mask"].sum())
                computed += mb["input_ids"].numel()
            opt.step()
            opt.zero_grad(set_to_none=True)
        what = "SFT GSM8K chat, b8 " + ("(one padded micro-batch)" if micro == 8 else "(length-grouped micro 2)")
        line(what, real, time.perf_counter() - t0, 6 * n, args.threads)
        print(f"{'':<48} {100 * real / computed:.0f}% of the computed positions are real tokens")


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
    sft_steps(loaded, opt, n, args)
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
