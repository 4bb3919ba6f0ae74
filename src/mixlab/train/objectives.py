"""Fine-tuning losses: next-token cross-entropy on completion tokens, plus an optional anchor to the base.

A fine-tuning micro-batch is ``{"input_ids", "attention_mask", "labels", "step"}``: ``labels`` equals
``input_ids`` on completion tokens and ``-100`` on prompt and padding tokens, so prompts are context
only; ``step`` (a 0-d tensor) is the optimizer step, which the anchor's schedule needs and which the
generic loop (:mod:`mixlab.train.loop`) does not pass to objectives.

The anchor keeps the fine-tuned model's next-token distribution near a frozen reference's, over the
full vocabulary, at completion positions:

* ``kl``     forward KL(base || model) = sum_v p_base (log p_base - log p_model) (mass-covering);
* ``kl_rev`` reverse KL(model || base) = sum_v p_model (log p_model - log p_base) (mode-seeking);
* ``js``     Jensen-Shannon = (KL(p || m) + KL(q || m)) / 2 with m = (p + q) / 2: symmetric, <= ln 2.

The reference is the base model run forward-only under ``torch.no_grad`` (a frozen copy), or, with
LoRA, the same model with its adapter disabled (no second copy of the weights). The summed loss is
``sum CE(completion tokens) + w(step) * sum D(anchored tokens)``; the loop divides it by the number of
completion tokens of the whole optimizer step, so ``coef`` is the anchor's weight per completion token.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from mixlab.train.checkpoint import unwrap

if TYPE_CHECKING:
    from mixlab.train.finetune.config import AnchorConfig

IGNORE = -100
LN2 = math.log(2.0)


# ---------------------------------------------------------------- divergences, per position


_CHUNK_ELEMS = 1 << 18  # values per block of rows in the divergences (1 MiB of float32)


def _divergence_terms(model_logp: torch.Tensor, base_logp: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(value per row, d value / d model_logp)`` of one block of rows."""
    if kind == "kl":
        q = base_logp.exp()
        return (q * (base_logp - model_logp)).sum(-1), q.neg_()
    if kind == "kl_rev":
        p = model_logp.exp()
        grad = p * (model_logp - base_logp)
        return grad.sum(-1), grad.add_(p)
    p, q = model_logp.exp(), base_logp.exp()
    log_m = torch.logaddexp(model_logp, base_logp) - LN2
    grad = p * (model_logp - log_m)
    value = 0.5 * (grad.sum(-1) + (q * (base_logp - log_m)).sum(-1))
    return value, grad.mul_(0.5)


class _Divergence(torch.autograd.Function):
    """Per-position divergence of the model's log-probabilities from the base's, gradient in closed form.

    Written out because autograd through ``F.kl_div`` / ``logsumexp`` keeps several vocabulary-sized
    temporaries per term: with a 32k vocabulary on a 128-wide proxy that made an anchored step cost
    2.1x (forward KL) and 2.9-3.7x (JS) a plain one (``benchmarks/anchor_step_cost.py``). Here the
    forward pass saves one tensor, the gradient with respect to the model's log-probabilities:
    ``-q`` (forward KL), ``p (log p - log q + 1)`` (reverse KL), ``p (log p - log m) / 2`` (JS).
    ``tests/test_objectives.py`` checks values against hand sums and gradients against autograd.
    Rows are processed a few at a time (``_CHUNK_ELEMS`` values) so the elementwise passes stay in
    cache: with a 32k vocabulary that made the JS term ~3x faster on one CPU core.
    """

    @staticmethod
    def forward(ctx, model_logp: torch.Tensor, base_logp: torch.Tensor, kind: str) -> torch.Tensor:
        vocab = model_logp.shape[-1]
        m = model_logp.detach().reshape(-1, vocab)
        b = base_logp.detach().reshape(-1, vocab)
        grad, value = torch.empty_like(m), m.new_empty(m.shape[0])
        rows = max(1, _CHUNK_ELEMS // max(vocab, 1))
        for s in range(0, m.shape[0], rows):
            value[s:s + rows], grad[s:s + rows] = _divergence_terms(m[s:s + rows], b[s:s + rows], kind)
        ctx.save_for_backward(grad.view(model_logp.shape))
        return value.view(model_logp.shape[:-1])

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad * grad_out.unsqueeze(-1), None, None


def forward_kl(model_logp: torch.Tensor, base_logp: torch.Tensor) -> torch.Tensor:
    """KL(base || model) at each position: log-probabilities over the last dim in, one value per row out."""
    return _Divergence.apply(model_logp, base_logp, "kl")


def reverse_kl(model_logp: torch.Tensor, base_logp: torch.Tensor) -> torch.Tensor:
    """KL(model || base) at each position."""
    return _Divergence.apply(model_logp, base_logp, "kl_rev")


def jensen_shannon(model_logp: torch.Tensor, base_logp: torch.Tensor) -> torch.Tensor:
    """JS(model, base) at each position, in nats (bounded by ln 2)."""
    return _Divergence.apply(model_logp, base_logp, "js")


DIVERGENCES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "kl": forward_kl, "kl_rev": reverse_kl, "js": jensen_shannon,
}


# ---------------------------------------------------------------- positions


def target_mask(labels: torch.Tensor) -> torch.Tensor:
    """Which next-token targets ``labels[:, 1:]`` are trained (completion tokens)."""
    return labels[:, 1:] != IGNORE


def last_n_mask(mask: torch.Tensor, n: int) -> torch.Tensor:
    """Keep only the last ``n`` True positions of each contiguous run of True in ``mask``.

    Every example's completion is one run (the recipe never trains an example's first token, so
    packed examples' runs are always separated), so this selects each example's last ``n`` tokens.
    """
    rev = torch.flip(mask, dims=[1]).to(torch.int64)
    count = torch.cumsum(rev, dim=1)  # True positions from the row's end up to here
    at_gap = torch.cummax(count * (1 - rev), dim=1).values  # the count at the nearest gap to the right
    from_end = count - at_gap  # 1 for the last token of a run, 2 for the one before, ...
    return torch.flip((rev == 1) & (from_end <= n), dims=[1])


# ---------------------------------------------------------------- the objective


class Reference:
    """The frozen distribution the anchor pulls toward: a separate frozen model, or the trained
    model with its LoRA adapter disabled. ``logits(model, batch, where)`` runs forward only, without grad."""

    def __init__(self, frozen: torch.nn.Module | None = None):
        self.frozen = frozen
        if frozen is not None:
            frozen.eval()
            frozen.requires_grad_(False)

    def _context(self, model: torch.nn.Module) -> contextlib.AbstractContextManager:
        if self.frozen is None:
            return model.disable_adapter()  # peft: the base weights are the reference
        return contextlib.nullcontext()

    @torch.no_grad()
    def logits(self, model: torch.nn.Module, batch: Mapping[str, torch.Tensor], where: torch.Tensor) -> torch.Tensor:
        """Reference logits of the next-token predictions selected by ``where`` (``labels[:, 1:]``-shaped).

        The output head runs only at those positions: with a large vocabulary the head dominates a
        small model's cost, and prompt and padding positions need none (as the scorer does).
        """
        model = unwrap(model)  # under DDP: forward-only, no gradient to synchronize
        net = self.frozen if self.frozen is not None else model
        net = net.get_base_model() if hasattr(net, "get_base_model") else net  # peft: LoRA layers stay in place
        with self._context(model):
            hidden = net.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            logits = net.get_output_embeddings()(hidden[:, :-1][where])
        cap = getattr(net.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits


class SFTLoss:
    """Summed cross-entropy of completion tokens, plus ``w(step) * sum D(model, reference)`` when anchored."""

    def __init__(self, anchor: AnchorConfig | None = None, reference: Reference | None = None):
        if anchor is not None and anchor.coef > 0 and reference is None:
            raise ValueError("an anchor needs a reference model")
        self.anchor, self.reference = anchor, reference

    def count(self, batch: Mapping[str, torch.Tensor]) -> int:
        return int(target_mask(batch["labels"]).sum())

    def anchor_weight(self, batch: Mapping[str, torch.Tensor]) -> float:
        if self.anchor is None:
            return 0.0
        return self.anchor.weight(int(batch["step"]))

    def __call__(self, model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        labels = batch["labels"]
        mask = target_mask(labels)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        logp = F.log_softmax(logits[mask].float(), dim=-1)  # (completion tokens, vocab): only trained positions
        ce = F.nll_loss(logp, labels[:, 1:][mask], reduction="sum")
        metrics = {"ce": ce.detach()}
        w = self.anchor_weight(batch)
        if w == 0.0:
            return ce, metrics
        assert self.anchor is not None and self.reference is not None
        if self.anchor.last_n_tokens:  # one log-softmax serves both terms; the anchor reads a subset
            amask = last_n_mask(mask, self.anchor.last_n_tokens)
            model_logp = logp[amask[mask]]
        else:
            amask, model_logp = mask, logp
        ref_logp = F.log_softmax(self.reference.logits(model, batch, amask).float(), dim=-1)
        div = DIVERGENCES[self.anchor.type](model_logp, ref_logp).sum()
        metrics["anchor"] = div.detach()
        return ce + w * div, metrics
