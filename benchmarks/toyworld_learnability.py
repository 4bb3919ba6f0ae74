"""Is the toyworld learnable, and forgettable, by a ~1M-parameter byte-level model on a CPU?

The quickstart and the forgetting experiments rest on two properties of ``mixlab.data.toyworld``:

1. pretraining a tiny model for a few minutes on a mixture of all domains lowers held-out
   bits-per-byte of *every* domain well below the unigram baseline, lifts multiple-choice accuracy
   above chance (0.25) and gives arithmetic exact match above zero (so GRPO groups have variance);
2. fine-tuning on one domain's QA records then raises held-out bits-per-byte on the other domains.

This script measures both and prints the numbers. It is a measurement, not mixlab's training stack:
a byte-level encoding (256 byte ids + BOS/EOS/PAD), a ``transformers`` Llama config, and a plain
PyTorch loop bounded by wall-clock time, on one thread.

    python benchmarks/toyworld_learnability.py --pretrain-seconds 180 --finetune-seconds 60
    python benchmarks/toyworld_learnability.py --pretrain-steps 550 --finetune-steps 400   # busy machine

On an idle core one 8x256-byte step takes about 0.3 s, so 550 steps is about 3 minutes; on a
machine shared with other jobs a step budget keeps the measurement comparable.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import random
import time
from collections import Counter
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from mixlab.data import toyworld as tw  # noqa: E402
from mixlab.data.records import Record  # noqa: E402
from mixlab.eval.metrics import bits_per_byte  # noqa: E402

BOS, EOS, PAD, VOCAB = 256, 257, 258, 260
SEQ = 256


def tiny_model(seed: int) -> LlamaForCausalLM:
    """~0.9M parameters: hidden 128, 4 layers, 4 heads, byte vocabulary."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=VOCAB, hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=SEQ, tie_word_embeddings=True,
        bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD,
    )
    return LlamaForCausalLM(cfg)


def enc(text: str) -> list[int]:
    return list(text.encode("utf-8"))


# ------------------------------------------------------------------------------------------- training


def lm_batches(docs: list[str], batch: int, rng: random.Random) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    """Random SEQ-byte windows of the documents packed into one stream (BOS doc EOS BOS doc ...)."""
    order = docs[:]
    rng.shuffle(order)
    stream = torch.tensor([t for d in order for t in [BOS, *enc(d), EOS]])

    def sample() -> tuple[torch.Tensor, torch.Tensor]:
        starts = [rng.randrange(len(stream) - SEQ) for _ in range(batch)]
        x = torch.stack([stream[s : s + SEQ] for s in starts])
        return x, x

    return sample


def pad_examples(pairs: list[tuple[str, str]], eos: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt, continuation) pairs as BOS+prompt+continuation(+EOS), labels only on the continuation."""
    ids, labels = [], []
    for prompt, cont in pairs:
        p, c = [BOS, *enc(prompt)], enc(cont) + [EOS] * eos
        seq = (p + c)[:SEQ]
        ids.append(seq)
        labels.append(([-100] * len(p) + c)[:SEQ])
    width = max(len(s) for s in ids)
    x = torch.full((len(ids), width), PAD)
    y = torch.full((len(ids), width), -100)
    for i, (s, lab) in enumerate(zip(ids, labels)):
        x[i, : len(s)] = torch.tensor(s)
        y[i, : len(lab)] = torch.tensor(lab)
    return x, y


def qa_batches(recs: list[Record], batch: int, rng: random.Random) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    pairs = [(tw.format_prompt(r.question), r.completion) for r in recs]
    return lambda: pad_examples(rng.sample(pairs, batch))


def train(model: LlamaForCausalLM, sample: Callable[[], tuple[torch.Tensor, torch.Tensor]], seconds: float,
          lr: float, max_steps: int = 0, warmup: int = 30) -> tuple[int, int, float]:
    """Train for ``seconds`` of wall clock, or ``max_steps`` steps when given (reproducible on a busy
    machine); cosine decay over the budget. Returns (steps, tokens, seconds)."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    model.train()
    start, steps, tokens = time.perf_counter(), 0, 0
    while True:
        elapsed = time.perf_counter() - start
        frac = steps / max_steps if max_steps else elapsed / seconds
        if frac >= 1:
            break
        scale = min(1.0, (steps + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr * scale
        x, y = sample()
        loss = model(input_ids=x, attention_mask=(x != PAD).long(), labels=y).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        steps += 1
        tokens += int((y != -100).sum())
        if steps % 100 == 0:
            print(f"  step {steps}: loss {loss.item():.3f} ({elapsed:.0f}s)", flush=True)
    model.eval()
    return steps, tokens, time.perf_counter() - start


# ----------------------------------------------------------------------------------------- evaluation


@torch.no_grad()
def continuation_nll(model: LlamaForCausalLM, pairs: list[tuple[str, str]], batch: int = 32) -> list[tuple[float, int]]:
    """Summed NLL (nats) of each continuation given its prompt, and its byte count (EOS not scored)."""
    out = []
    for i in range(0, len(pairs), batch):
        chunk = pairs[i : i + batch]
        x, y = pad_examples(chunk, eos=False)  # bpb counts the continuation's own bytes only
        logits = model(input_ids=x, attention_mask=(x != PAD).long()).logits[:, :-1]
        tgt = y[:, 1:]
        nll = F.cross_entropy(logits.reshape(-1, VOCAB), tgt.reshape(-1), ignore_index=-100, reduction="none")
        nll = nll.view(tgt.shape).sum(1)
        for row in range(len(chunk)):
            out.append((float(nll[row]), int((tgt[row] != -100).sum())))
    return out


def doc_bpb(model: LlamaForCausalLM, docs: list[str]) -> float:
    res = continuation_nll(model, [("", d[: SEQ - 2]) for d in docs])
    return bits_per_byte(sum(n for n, _ in res), sum(b for _, b in res))


def unigram_bpb(train_docs: list[str], test_docs: list[str]) -> float:
    """Cross-entropy of held-out bytes under add-one smoothed byte frequencies of the train docs."""
    counts = Counter(b for d in train_docs for b in d.encode())
    total = sum(counts.values()) + 256
    test = [b for d in test_docs for b in d[: SEQ - 2].encode()]
    return -sum(math.log2((counts[b] + 1) / total) for b in test) / len(test)


def mc_correct(model: LlamaForCausalLM, items: list[Record], per_byte: bool = False) -> list[bool]:
    """Per item: does the gold choice have the lowest NLL, summed (lm-eval's ``acc``) or per byte
    (``acc_norm``, which removes the bias toward short choices)?"""
    pairs = [(tw.format_prompt(r.question), c) for r in items for c in r.choices or []]
    nll = continuation_nll(model, pairs)
    out, k = [], 0
    for r in items:
        scores = [n / b if per_byte else n for n, b in nll[k : k + len(r.choices or [])]]
        k += len(scores)
        out.append(min(range(len(scores)), key=scores.__getitem__) == r.label)
    return out


def mc_accuracy(model: LlamaForCausalLM, items: list[Record], per_byte: bool = False) -> float:
    return sum(mc_correct(model, items, per_byte)) / len(items)


def mc_by_tier(model: LlamaForCausalLM, items: list[Record]) -> str:
    ok = mc_correct(model, items)
    parts = []
    for t in (1, 2, 3):
        hits = [o for o, r in zip(ok, items) if r.metadata["tier"] == t]
        parts.append(f"tier {t} {sum(hits) / max(1, len(hits)):.2f} (n={len(hits)})")
    return ", ".join(parts)


def qa_bpb(model: LlamaForCausalLM, recs: list[Record]) -> float:
    res = continuation_nll(model, [(tw.format_prompt(r.question), r.completion) for r in recs])
    return bits_per_byte(sum(n for n, _ in res), sum(b for _, b in res))


@torch.no_grad()
def generate(model: LlamaForCausalLM, prompt: str, samples: int, temperature: float, max_new: int = 16) -> list[str]:
    """Greedy (temperature 0) or sampled completions up to the first newline, with a KV cache."""
    x = torch.tensor([[BOS, *enc(prompt)]] * samples)
    done = [False] * samples
    outs: list[list[int]] = [[] for _ in range(samples)]
    past = None
    for _ in range(max_new):
        res = model(input_ids=x, past_key_values=past, use_cache=True)
        past, logits = res.past_key_values, res.logits[:, -1]
        nxt = logits.argmax(-1) if temperature == 0 else torch.multinomial(F.softmax(logits / temperature, -1), 1)[:, 0]
        for i, t in enumerate(nxt.tolist()):
            done[i] = done[i] or t == 10 or t > 255
            if not done[i]:
                outs[i].append(t)
        if all(done):
            break
        x = nxt[:, None]
    return [bytes(o).decode("utf-8", "replace") for o in outs]


def final_number(text: str) -> str:
    import re

    nums = re.findall(r"-?\d+", text)
    return nums[-1] if nums else ""


def exact_match(model: LlamaForCausalLM, recs: list[Record]) -> float:
    return sum(final_number(generate(model, tw.format_prompt(r.question), 1, 0.0)[0]) == r.reference_answer
               for r in recs) / len(recs)


def group_variance(model: LlamaForCausalLM, recs: list[Record], k: int = 8) -> tuple[float, float]:
    """(mean reward, fraction of k-sample groups with mixed rewards) at temperature 1, as GRPO sees them."""
    rewards, mixed = [], 0
    torch.manual_seed(0)
    for r in recs:
        got = [final_number(o) == r.reference_answer for o in generate(model, tw.format_prompt(r.question), k, 1.0)]
        rewards += got
        mixed += 0 < sum(got) < k
    return sum(rewards) / len(rewards), mixed / len(recs)


def evaluate(model: LlamaForCausalLM, ev: dict) -> dict:
    out = {d: {"bpb": doc_bpb(model, ev["heldout"][d]), "qa_bpb": qa_bpb(model, ev["test"][d]),
               "mc": mc_accuracy(model, ev["mc"][d]), "mc_norm": mc_accuracy(model, ev["mc"][d], True)}
           for d in tw.DOMAINS}
    out["arithmetic"]["em_tier1_test"] = exact_match(model, ev["em_test"])
    out["arithmetic"]["em_tier1_train"] = exact_match(model, ev["em_train"])
    return out


def table(title: str, before: dict, after: dict, keys: tuple[str, ...]) -> None:
    print(f"\n{title}")
    print(f"{'domain':<11}" + "".join(f"{k + ' before':>16}{k + ' after':>15}" for k in keys))
    for d in tw.DOMAINS:
        print(f"{d:<11}" + "".join(f"{before[d][k]:>16.3f}{after[d][k]:>15.3f}" for k in keys))


def finetune_and_report(model: LlamaForCausalLM, base: dict, target: str, ev: dict, args: argparse.Namespace,
                        rng: random.Random) -> None:
    """Fine-tune a copy of the base on ``target``'s QA records; print target gain and forgetting."""
    ft = copy.deepcopy(model)
    ft_recs = tw.records(target, 1500 if target != "people" else 480, args.seed, "train")
    steps, toks, secs = train(ft, qa_batches(ft_recs, args.batch, rng), args.finetune_seconds, args.ft_lr,
                              args.finetune_steps, warmup=10)
    print(f"\nfine-tune on {target} QA ({len(ft_recs)} records): {steps} steps, {toks / 1e3:.0f}K target bytes"
          f" in {secs:.0f}s")
    after = evaluate(ft, ev)
    table(f"FINE-TUNING on {target} (target gain = QA bpb drop; forgetting = held-out bpb rise elsewhere)",
          base, after, ("bpb", "qa_bpb", "mc", "mc_norm"))
    print("held-out bpb change: " + ", ".join(f"{d} {after[d]['bpb'] - base[d]['bpb']:+.3f}" for d in tw.DOMAINS))
    print("test QA bpb change:  " + ", ".join(f"{d} {after[d]['qa_bpb'] - base[d]['qa_bpb']:+.3f}" for d in tw.DOMAINS))
    a = after["arithmetic"]
    print(f"arithmetic tier-1 exact match after: test {a['em_tier1_test']:.3f}, train {a['em_tier1_train']:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pretrain-seconds", type=float, default=180)
    ap.add_argument("--finetune-seconds", type=float, default=60)
    ap.add_argument("--pretrain-steps", type=int, default=0, help="a step budget instead of seconds (busy machines)")
    ap.add_argument("--finetune-steps", type=int, default=0, help="a step budget instead of seconds")
    ap.add_argument("--target", default="arithmetic", help="domain(s) fine-tuned on, comma-separated")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--docs", type=int, default=3000, help="pretraining documents per domain")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--ft-lr", type=float, default=5e-4)
    ap.add_argument("--eval-n", type=int, default=64, help="held-out docs and test records per domain")
    ap.add_argument("--mc-n", type=int, default=90, help="multiple-choice items per domain")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if bad := [t for t in args.target.split(",") if t not in tw.DOMAINS]:
        ap.error(f"--target {','.join(bad)}: choose from {', '.join(tw.DOMAINS)}")
    rng = random.Random(args.seed)

    t0 = time.perf_counter()
    train_docs = {d: tw.documents(d, args.docs, args.seed) for d in tw.DOMAINS}
    arith_test = tw.records("arithmetic", 400, args.seed, "test")
    arith_train = tw.records("arithmetic", 400, args.seed, "train")
    ev = {
        "heldout": {d: tw.documents(d, args.eval_n, args.seed, "heldout") for d in tw.DOMAINS},
        "test": {d: tw.records(d, args.eval_n, args.seed, "test") for d in tw.DOMAINS},
        "mc": {d: tw.mc_items(d, args.mc_n, args.seed) for d in tw.DOMAINS},
        "em_test": [r for r in arith_test if r.metadata["tier"] == 1][:40],
        "em_train": [r for r in arith_train if r.metadata["tier"] == 1][:40],
    }
    sizes = {d: sum(len(x.encode()) for x in docs) for d, docs in train_docs.items()}
    print(f"data generated in {time.perf_counter() - t0:.1f}s; pretraining bytes per domain: {sizes}")

    model = tiny_model(args.seed)
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, {args.threads} thread(s)")
    unigram = {d: unigram_bpb(train_docs[d], ev["heldout"][d]) for d in tw.DOMAINS}
    init = evaluate(model, ev)

    all_docs = [x for docs in train_docs.values() for x in docs]
    steps, toks, secs = train(model, lm_batches(all_docs, args.batch, rng), args.pretrain_seconds, args.lr,
                              args.pretrain_steps)
    print(f"pretrain: {steps} steps of {args.batch}x{SEQ} bytes, {toks / 1e6:.2f}M bytes in {secs:.0f}s")
    base = evaluate(model, ev)
    table("PRETRAINING (held-out documents bpb vs unigram; MC accuracy vs chance 0.25)", init, base,
          ("bpb", "qa_bpb", "mc", "mc_norm"))
    print(f"{'':<11}unigram bpb: " + ", ".join(f"{d} {unigram[d]:.3f}" for d in tw.DOMAINS))
    print("MC accuracy by tier (format-only expectation 0.50 / 0.33 / 0.25):")
    for d in tw.DOMAINS:
        print(f"  {d:<11}{mc_by_tier(model, ev['mc'][d])}")
    a = base["arithmetic"]
    print(f"arithmetic tier-1 exact match (greedy): test {a['em_tier1_test']:.3f}, train {a['em_tier1_train']:.3f}")
    simple = [r for r in arith_train if r.metadata["tier"] <= 2][:24]
    mean_r, mixed = group_variance(model, simple)
    print(f"GRPO readiness on 24 tier-1/2 train questions, 8 samples at T=1: reward {mean_r:.3f}, "
          f"groups with mixed rewards {mixed:.2f}")

    for target in args.target.split(","):
        finetune_and_report(model, base, target, ev, args, rng)
    print(f"total {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
