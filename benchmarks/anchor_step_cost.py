"""Cost of an anchored SFT step relative to a plain SFT step (target: at most 1.6x).

An anchored step adds one forward pass of the frozen reference (no gradients: full fine-tuning
keeps a frozen copy, LoRA disables its adapter) and a full-vocabulary divergence at completion
positions. A plain step is forward + backward + AdamW step (~3 forward passes of work), so the
expected ratio is about 4/3 plus the divergence's log-softmaxes, which matter when the vocabulary
is large next to the model width.

Each configuration times plain and anchored steps interleaved (ABAB...), so load from other jobs
on a shared machine hits both alike, and reports the median seconds per step and their ratio.
Models are randomly initialised proxies (cost does not depend on the weights' values).

    python benchmarks/anchor_step_cost.py                 # CPU, one thread
    python benchmarks/anchor_step_cost.py --device cuda --shapes smollm2
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from mixlab.train.loop import LoopConfig, autocast_context, build_optimizer  # noqa: E402
from mixlab.train.objectives import AnchorConfig, Reference, SFTLoss  # noqa: E402
from mixlab.train.sft_data import Example, SFTBatches  # noqa: E402

SHAPES = {  # name: (d_model, layers, heads, d_ff, vocab)
    "proxy-1m/byte": (128, 4, 2, 512, 258),
    "proxy-5m/byte": (256, 5, 4, 1024, 258),
    "proxy-1m/32k-vocab": (128, 4, 2, 512, 32768),
    "smollm2": (576, 30, 9, 1536, 49152),  # SmolLM2-135M's shape (GPU)
}


def model_for(shape: str, device: torch.device) -> LlamaForCausalLM:
    d, layers, heads, ff, vocab = SHAPES[shape]
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=d, intermediate_size=ff, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=2048,
                      tie_word_embeddings=True, use_cache=False)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).to(device)


def examples(vocab: int, n: int, seq: int, prompt: int) -> list[Example]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        ids = rng.integers(0, vocab, seq)
        labels = ids.copy()
        labels[:prompt] = -100
        out.append(Example(ids, labels))
    return out


def time_steps(model, objective, batches, device, precision: str, steps: int) -> list[float]:
    opt = build_optimizer(model, LoopConfig(total_steps=1, lr=1e-5))
    amp = autocast_context(device, precision)
    times = []
    for s in range(steps):
        mb = batches.batch(s % 4)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for b in mb:
            with amp:
                loss, _ = objective(model, b)
            (loss / objective.count(b)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times


def measure(shape: str, lora: bool, kind: str, args, device: torch.device) -> tuple[float, float]:
    model = model_for(shape, device)
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, task_type="CAUSAL_LM",
                                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
        reference = Reference(None)
    else:
        reference = Reference(copy.deepcopy(model))
    vocab = SHAPES[shape][4]
    data = SFTBatches(examples(vocab, 4 * args.batch, args.seq, args.seq // 4), args.batch, args.micro, 0, 0, device)
    plain, anchored = SFTLoss(), SFTLoss(AnchorConfig(type=kind, coef=0.1), reference)
    model.train()
    time_steps(model, plain, data, device, args.precision, 2)  # warm-up (allocator, kernels)
    time_steps(model, anchored, data, device, args.precision, 2)
    a, b = [], []
    for _ in range(args.rounds):
        a += time_steps(model, plain, data, device, args.precision, args.steps)
        b += time_steps(model, anchored, data, device, args.precision, args.steps)
    return statistics.median(a), statistics.median(b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--shapes", nargs="+", default=["proxy-1m/byte", "proxy-5m/byte", "proxy-1m/32k-vocab"],
                    choices=list(SHAPES))
    ap.add_argument("--kinds", nargs="+", default=["kl", "kl_rev", "js"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--micro", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3, help="steps per timing block")
    ap.add_argument("--rounds", type=int, default=3, help="alternating plain/anchored blocks")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device {device}, {args.threads} thread(s), batch {args.batch} x {args.seq} tokens "
          f"(3/4 completion), load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'shape':<20} {'mode':<5} {'anchor':<7} {'plain s/step':>12} {'anchored s/step':>15} {'ratio':>6}")
    worst = 0.0
    for shape in args.shapes:
        for lora in (False, True):
            for kind in args.kinds:
                p, a = measure(shape, lora, kind, args, device)
                worst = max(worst, a / p)
                print(f"{shape:<20} {'lora' if lora else 'full':<5} {kind:<7} {p:>12.4f} {a:>15.4f} {a / p:>6.2f}", flush=True)
    print(f"worst ratio {worst:.2f} (target <= 1.6); load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
