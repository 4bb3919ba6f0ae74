"""Pretraining throughput: mixlab's loop vs a minimal eager PyTorch loop, MFU, and 2 processes vs 1.

Trains ``proxy-1m`` (byte vocabulary, sequence 256, one thread) on real text through
``mixlab.train.loop.train`` (the HF ``LlamaForCausalLM`` built by the registry, the mixture
sampler's batches, checkpoint/metric bookkeeping) and through a hand-written Llama of the same
architecture and weights in a bare loop. Prints tokens/s of both, their ratio, MFU against a
matmul peak measured in this run, and the aggregate throughput of two one-thread processes
running mixlab's loop at once relative to one. Runs alternate (mixlab, minimal, mixlab, ...) so
drifting machine load hits both alike; the median of the rounds is reported along with the load.

    .venv/bin/python benchmarks/pretrain_throughput.py [--steps 30] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from mixlab.data.text import TokenizedSource  # noqa: E402
from mixlab.models.registry import ModelConfig, build_model, hf_config, train_flops_per_token  # noqa: E402
from mixlab.models.tokenizer import byte_tokenizer  # noqa: E402
from mixlab.train.loop import Hooks, LoopConfig, train  # noqa: E402
from mixlab.train.pretrain import NextTokenLoss, PretrainBatches  # noqa: E402
from mixlab.train.sampler import MixtureSampler  # noqa: E402
from mixlab.train.schedule import ScheduleConfig  # noqa: E402

SEQ, BATCH, WARMUP = 256, 16, 3


# ---------------------------------------------------------------- the minimal reference model


class MinimalLlama(nn.Module):
    """Llama (RMSNorm, rotary, causal SDPA, SwiGLU, tied embeddings) in plain PyTorch, no framework."""

    def __init__(self, vocab: int, d: int, layers: int, heads: int, d_ff: int, seq: int, theta: float, eps: float):
        super().__init__()
        self.heads, self.eps = heads, eps
        self.emb = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList()
        for _ in range(layers):
            b = nn.Module()
            b.n1, b.n2 = nn.Parameter(torch.ones(d)), nn.Parameter(torch.ones(d))
            b.q, b.k, b.v, b.o = (nn.Linear(d, d, bias=False) for _ in range(4))
            b.gate, b.up, b.down = nn.Linear(d, d_ff, bias=False), nn.Linear(d, d_ff, bias=False), nn.Linear(d_ff, d, bias=False)
            self.blocks.append(b)
        self.norm = nn.Parameter(torch.ones(d))
        hd = d // heads
        inv = 1.0 / theta ** (torch.arange(0, hd, 2).float() / hd)
        ang = torch.outer(torch.arange(seq).float(), inv)
        ang = torch.cat([ang, ang], dim=-1)
        self.register_buffer("cos", ang.cos(), persistent=False)
        self.register_buffer("sin", ang.sin(), persistent=False)

    def _rope(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[-2]
        x1, x2 = x.chunk(2, dim=-1)
        return x * self.cos[:t] + torch.cat([-x2, x1], dim=-1) * self.sin[:t]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        b, t = ids.shape
        h = self.emb(ids)
        for blk in self.blocks:
            a = F.rms_norm(h, h.shape[-1:], blk.n1, self.eps)
            q, k, v = (p(a).view(b, t, self.heads, -1).transpose(1, 2) for p in (blk.q, blk.k, blk.v))
            o = F.scaled_dot_product_attention(self._rope(q), self._rope(k), v, is_causal=True)
            h = h + blk.o(o.transpose(1, 2).reshape(b, t, -1))
            m = F.rms_norm(h, h.shape[-1:], blk.n2, self.eps)
            h = h + blk.down(F.silu(blk.gate(m)) * blk.up(m))
        return F.linear(F.rms_norm(h, h.shape[-1:], self.norm, self.eps), self.emb.weight)

    @classmethod
    def from_hf(cls, hf: nn.Module) -> "MinimalLlama":
        c = hf.config
        theta = (getattr(c, "rope_parameters", None) or {}).get("rope_theta", getattr(c, "rope_theta", 10000.0))
        m = cls(c.vocab_size, c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size,
                c.max_position_embeddings, theta, c.rms_norm_eps)
        with torch.no_grad():
            m.emb.weight.copy_(hf.model.embed_tokens.weight)
            m.norm.copy_(hf.model.norm.weight)
            for blk, layer in zip(m.blocks, hf.model.layers):
                at, mlp = layer.self_attn, layer.mlp
                blk.n1.copy_(layer.input_layernorm.weight)
                blk.n2.copy_(layer.post_attention_layernorm.weight)
                for mine, theirs in ((blk.q, at.q_proj), (blk.k, at.k_proj), (blk.v, at.v_proj), (blk.o, at.o_proj),
                                     (blk.gate, mlp.gate_proj), (blk.up, mlp.up_proj), (blk.down, mlp.down_proj)):
                    mine.weight.copy_(theirs.weight)
        return m


# ---------------------------------------------------------------- shared pieces


def text_tokens() -> np.ndarray:
    """Bytes of real text (the shared corpora when present, else this file repeated)."""
    from mixlab.settings import data_dir

    path = data_dir() / "corpus_wikitext2" / "valid.txt"
    raw = path.read_bytes() if path.is_file() else open(__file__, "rb").read() * 200
    return np.frombuffer(raw, dtype=np.uint8).astype(np.int32)


def setup(steps: int):
    torch.set_num_threads(1)
    tok = byte_tokenizer()
    cfg = hf_config(ModelConfig(size="proxy-1m"), len(tok), SEQ)
    src = TokenizedSource("text", text_tokens(), np.zeros(2, np.int32), 1)
    sampler = MixtureSampler([src], {"text": 1.0}, SEQ, steps * BATCH, max_epochs=4.0, seed=0)
    return cfg, sampler


def loop_config(steps: int) -> LoopConfig:
    return LoopConfig(total_steps=steps, lr=3e-3, schedule=ScheduleConfig(kind="cosine", warmup=0.1),
                      grad_clip=1.0, log_every=10, precision="fp32")


def run_mixlab(steps: int) -> float:
    """Tokens/s of mixlab's loop over the steps after warm-up (checkpoint writing excluded)."""
    cfg, sampler = setup(steps)
    model = build_model(cfg, seed=0)
    data = PretrainBatches(sampler, BATCH, BATCH, torch.device("cpu"))
    stamps: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        train(model, data, NextTokenLoss(), loop_config(steps), tmp, Hooks(on_step=lambda _i: stamps.append(time.perf_counter())))
    return (steps - WARMUP) * BATCH * SEQ / (stamps[-1] - stamps[WARMUP - 1])


def run_minimal(steps: int) -> float:
    """Tokens/s of a bare eager loop: same model, weights, data, AdamW, clipping and schedule."""
    cfg, sampler = setup(steps)
    model = MinimalLlama.from_hf(build_model(cfg, seed=0))
    params = list(model.parameters())
    decay = [p for p in params if p.dim() >= 2]
    other = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                            lr=3e-3, betas=(0.9, 0.95))
    # OneCycleLR needs a warm-up phase of at least one step (pct_start * steps > 1) for short --steps
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=max(0.1, 2 / steps))
    t0 = 0.0
    for step in range(steps):
        if step == WARMUP:
            t0 = time.perf_counter()
        x = sampler.sequences(step * BATCH, BATCH)
        logits = model(x[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten(), reduction="sum") / (BATCH * SEQ)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    return (steps - WARMUP) * BATCH * SEQ / (time.perf_counter() - t0)


def parity() -> float:
    """Max |logit difference| between the HF proxy and the minimal model (same weights)."""
    cfg, sampler = setup(4)
    hf = build_model(cfg, seed=0).eval()
    mine = MinimalLlama.from_hf(hf).eval()
    x = sampler.sequences(0, 2)[:, :-1]
    with torch.no_grad():
        return float((hf(input_ids=x).logits - mine(x)).abs().max())


def matmul_peak() -> float:
    """Best fp32 GEMM FLOP/s on one thread over a few square sizes (the MFU denominator)."""
    torch.set_num_threads(1)
    best = 0.0
    for n in (256, 512, 1024):
        a, b = torch.randn(n, n), torch.randn(n, n)
        for _ in range(3):
            a @ b
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 0.5:
            a @ b
            reps += 1
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0))
    return best


def parallel(k: int, steps: int) -> float:
    """Aggregate tokens/s of ``k`` one-thread processes running mixlab's loop at the same time."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", str(steps)], stdout=subprocess.PIPE, env=env)
             for _ in range(k)]
    rates = [json.loads(p.communicate()[0].decode().strip().splitlines()[-1])["tokens_per_s"] for p in procs]
    return sum(rates)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps({"tokens_per_s": run_mixlab(args.worker)}))
        return
    torch.set_num_threads(1)
    load0 = os.getloadavg()
    cfg, _ = setup(2)
    fpt = train_flops_per_token(cfg, SEQ)
    print(f"proxy-1m  byte vocab  seq {SEQ}  batch {BATCH}  1 thread  {fpt / 1e6:.2f} MFLOP/token  "
          f"{os.cpu_count()} cores  load avg {load0[0]:.2f}")
    print(f"parity    max |logits(HF proxy) - logits(minimal)| = {parity():.2e}")
    peak = matmul_peak()
    mix, mini = [], []
    for r in range(args.rounds):
        mix.append(run_mixlab(args.steps))
        mini.append(run_minimal(args.steps))
        print(f"round {r}   mixlab {mix[-1]:8.0f} tok/s   minimal {mini[-1]:8.0f} tok/s")
    m, b = statistics.median(mix), statistics.median(mini)
    peak = max(peak, matmul_peak())
    print(f"matmul peak (1 thread, best fp32 GEMM) {peak / 1e9:.1f} GFLOP/s")
    print(f"mixlab loop   {m:8.0f} tokens/s   MFU {m * fpt / peak:6.1%}")
    print(f"minimal loop  {b:8.0f} tokens/s   MFU {b * fpt / peak:6.1%}")
    print(f"ratio mixlab / minimal = {m / b:.3f}   (target >= 0.9)")
    palm = fpt + 6 * cfg.num_hidden_layers * SEQ * cfg.hidden_size  # 6N + 12*L*T*d: masked half counted too
    print(f"MFU counts causal attention as half of 12*L*T*d; under PaLM's convention (full 12*L*T*d) "
          f"mixlab's MFU is {m * palm / peak:.1%}")
    one = parallel(1, args.steps)
    two = parallel(2, args.steps)
    print(f"1 process {one:8.0f} tok/s   2 processes {two:8.0f} tok/s   scaling {two / one:.2f}x   (target >= 1.6x)")
    print(f"load avg at end {os.getloadavg()[0]:.2f} (start {load0[0]:.2f}); other users' jobs count against all figures")


if __name__ == "__main__":
    main()
