"""Forward KL to the base model as a measured quantity: the ``kl_to_base`` eval kind.

RL's Razor (Shenfeld et al. 2025) finds forgetting predicted by the forward KL between the base and
the fine-tuned model *on the new task's distribution*. Per scored position ``t`` of a token sequence
both models read (teacher forcing)::

    KL_t(base || model) = sum_v p_base(v | x_<t) * (log p_base(v | x_<t) - log p_model(v | x_<t))

in fp32 from each model's log-softmax. An item's value is the mean over its scored positions, so
items pair across checkpoints (the report's paired statistics apply); the task's ``kl`` is the mean
over items (lower is closer to the base), ``kl_token`` the token-weighted mean.

Which positions: a task renders ``prompt`` and ``target`` like a ``bpb`` task and the target's
tokens are scored. With ``generation: {chat_template: true}`` (and a tokenizer that has one) the
prompt is a user turn in the chat template and the sequence is built exactly as fine-tuning builds
it (``prompt + completion + EOS``, the completion and EOS scored, :mod:`mixlab.train.sft_data`);
otherwise the pair is tokenized as the log-likelihood scorer does. An empty prompt (general text)
scores every token after the first (the BOS/prefix token). Sequences longer than the model's window
keep their first ``max_length`` tokens (rows say how many target tokens were cut).

Both models must share a tokenizer (same vocabulary, same output size): a KL over different
vocabularies compares nothing. A model evaluated against itself is short-cut to exactly 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mixlab.errors import MixlabError
from mixlab.eval import items as I
from mixlab.eval import metrics as M
from mixlab.eval.engine import Context, Engine, Scored, Tick

if TYPE_CHECKING:
    import torch

    from mixlab.eval.spec import TaskSpec

KL_METRICS = ("kl",)


@dataclass(frozen=True)
class TokenSeq:
    """One item's tokens and the first scored index (``ids[start:]`` are the targets)."""

    id: str
    ids: list[int]
    start: int
    cut: int = 0  # target tokens dropped at the window


@dataclass(frozen=True)
class ItemKL:
    kl: float  # mean over the item's scored positions
    kl_sum: float
    n_tokens: int


def token_kl(base_logits: torch.Tensor, model_logits: torch.Tensor) -> torch.Tensor:
    """KL(base || model) per row of ``[..., vocab]`` logits, in fp32."""
    import torch

    lp_b = torch.log_softmax(base_logits.float(), dim=-1)
    lp_m = torch.log_softmax(model_logits.float(), dim=-1)
    return (lp_b.exp() * (lp_b - lp_m)).sum(-1)


def check_same_vocab(model: Any, tokenizer: Any, base: Any, base_tokenizer: Any, names: tuple[str, str] = ("model", "base")) -> None:
    """Raise unless both models read and predict the same tokens."""
    out_m = model.get_output_embeddings().weight.shape[0]
    out_b = base.get_output_embeddings().weight.shape[0]
    if out_m != out_b:
        raise MixlabError(f"KL to base needs one vocabulary: {names[0]} predicts {out_m} tokens, {names[1]} {out_b}; "
                          "give the base model the evaluated model was fine-tuned from")
    if tokenizer is not base_tokenizer and tokenizer.get_vocab() != base_tokenizer.get_vocab():
        raise MixlabError(f"KL to base needs one tokenizer: {names[0]} and {names[1]} have different vocabularies "
                          f"({len(tokenizer)} vs {len(base_tokenizer)} tokens); give the base model the evaluated "
                          "model was fine-tuned from")


def _head_logits(model: Any, hidden: torch.Tensor) -> torch.Tensor:
    logits = model.get_output_embeddings()(hidden).float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def _hidden(model: Any, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return model.base_model(input_ids=ids, attention_mask=mask, use_cache=False)[0]


def sequence_kl(model: Any, base: Any, seqs: Sequence[TokenSeq], batch_size: int = 8, pad_id: int = 0,
                chunk: int = 512, on_progress: Callable[[int], None] | None = None) -> list[ItemKL]:
    """Mean KL(base || model) over each sequence's scored positions (``ids[start:]`` predicted from
    what precedes them). Batches of similar length, right-padded; the output heads run only at
    scored positions, ``chunk`` at a time (a 50k vocabulary makes full logits the memory peak)."""
    import torch

    with torch.inference_mode():
        return _sequence_kl(model, base, seqs, batch_size, pad_id, chunk, on_progress)


def _sequence_kl(model: Any, base: Any, seqs: Sequence[TokenSeq], batch_size: int, pad_id: int, chunk: int,
                 on_progress: Callable[[int], None] | None) -> list[ItemKL]:
    import torch

    device = next(model.parameters()).device
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i].ids))
    out: list[ItemKL | None] = [None] * len(seqs)
    for b in range(0, len(order), max(1, batch_size)):
        idx = order[b:b + batch_size]
        width = max(len(seqs[i].ids) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        rows, cols = [], []
        for r, i in enumerate(idx):
            s = seqs[i]
            if not 1 <= s.start < len(s.ids):
                raise MixlabError(f"item {s.id}: no token to score (sequence of {len(s.ids)}, first target {s.start})")
            ids[r, :len(s.ids)] = torch.tensor(s.ids)
            mask[r, :len(s.ids)] = 1
            rows += [r] * (len(s.ids) - s.start)
            cols += range(s.start - 1, len(s.ids) - 1)  # position t-1 predicts token t
        ids, mask = ids.to(device), mask.to(device)
        h_m, h_b = _hidden(model, ids, mask), _hidden(base, ids, mask)
        r_t, c_t = torch.tensor(rows, device=device), torch.tensor(cols, device=device)
        kl = torch.empty(len(rows), dtype=torch.float32, device=device)
        for k in range(0, len(rows), chunk):
            sl = slice(k, k + chunk)
            kl[sl] = token_kl(_head_logits(base, h_b[r_t[sl], c_t[sl]]), _head_logits(model, h_m[r_t[sl], c_t[sl]]))
        kl = kl.double().cpu()
        pos = 0
        for i in idx:
            n = len(seqs[i].ids) - seqs[i].start
            total = float(kl[pos:pos + n].sum())
            out[i] = ItemKL(total / n, total, n)
            pos += n
        if on_progress is not None:
            on_progress(len(idx))
    return out  # type: ignore[return-value]


def encode_items(spec: TaskSpec, items: Sequence[I.Item], tokenizer: Any, scorer: Any, max_length: int) -> list[TokenSeq]:
    """Each item's (prompt, target) pair as one token sequence with its first target index."""
    from mixlab.eval.generation import has_chat_template

    chat = spec.decoding.chat_template and has_chat_template(tokenizer)
    seqs = []
    if chat:  # fine-tuning's own layout: template(user turn) + completion + EOS
        for it in items:
            ctx, cont = it.pairs[0]
            prompt = tokenizer.apply_chat_template([{"role": "user", "content": ctx}], tokenize=False,
                                                   add_generation_prompt=True)
            p = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
            ids = p + list(tokenizer(cont, add_special_tokens=False)["input_ids"])
            if tokenizer.eos_token_id is not None:
                ids.append(tokenizer.eos_token_id)
            seqs.append((it.id, ids, len(p)))
    else:  # the log-likelihood scorer's tokenization (an empty context conditions on the prefix token)
        for it, (c, k) in zip(items, scorer.encode_pairs([it.pairs[0] for it in items]), strict=True):
            seqs.append((it.id, c + k, len(c)))
    out = []
    for item_id, ids, start in seqs:
        cut = max(0, len(ids) - max_length)
        out.append(TokenSeq(item_id, ids[:max_length], start, cut))
    return out


def _same_model(ctx: Context) -> bool:
    base = ctx.base
    return base is ctx.loaded or (base.path == ctx.loaded.path and base.adapter == ctx.loaded.adapter)


class KLToBase(Engine):
    """``kind: kl_to_base`` - mean per-token KL(base || model) on the task's texts."""

    kind = "kl_to_base"
    metrics = KL_METRICS
    needs_base = True

    def prepare(self, spec: TaskSpec, docs: list[dict], pool: list[dict]) -> list[Any]:
        return I.continuations(spec, docs, pool)

    def score(self, spec: TaskSpec, items: Sequence[Any], ctx: Context, tick: Tick) -> Scored:
        loaded, base = ctx.loaded, ctx.base
        scorer = ctx.scorer
        seqs = encode_items(spec, items, loaded.tokenizer, scorer, scorer.max_length)
        same = _same_model(ctx)
        if same:  # the base against itself: exactly 0, nothing to run
            values = [ItemKL(0.0, 0.0, len(s.ids) - s.start) for s in seqs]
            tick(len(seqs))
        else:
            check_same_vocab(loaded.model, loaded.tokenizer, base.model, base.tokenizer, (loaded.name, base.name))
            pad = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else 0
            values = sequence_kl(loaded.model, base.model, seqs, batch_size=getattr(scorer, "batch_size", 8),
                                 pad_id=pad, on_progress=tick)
        rows = []
        for s, v in zip(seqs, values, strict=True):
            row: dict[str, Any] = {"id": s.id, "kl": v.kl, "kl_sum": v.kl_sum, "n_tokens": v.n_tokens}
            if s.cut:
                row["cut"] = s.cut
            if same:
                row["same_as_base"] = True
            rows.append(row)
        summary: dict[str, Any] = {"n": len(rows)}
        kl = [r["kl"] for r in rows]
        summary["kl"] = sum(kl) / len(kl) if kl else float("nan")
        tokens = sum(r["n_tokens"] for r in rows)
        summary["kl_token"] = sum(r["kl_sum"] for r in rows) / tokens if tokens else float("nan")
        summary["stderr"] = {"kl": M.mean_stderr(kl)}
        return summary, rows
