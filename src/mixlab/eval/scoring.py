"""Batched log-likelihood scoring: ``log p(continuation | context)`` for many pairs, fast and exact.

Tokenization and truncation copy lm-evaluation-harness's Hugging Face backend so scores match it:
trailing spaces of the context move to the continuation, the pair is encoded as one string and split
at the length of the encoded context, and inputs longer than the window keep their last
``max_length + 1`` tokens (the last one is never fed to the model).

Where lm-eval runs every (context, choice) pair as its own padded row and projects every position
onto the vocabulary, this engine

* puts all requests of one item in a *prefix tree*: their longest common token prefix (the context)
  appears once, followed by each request's own suffix, with a 4D attention mask so every suffix sees
  the shared prefix and itself only, and position ids that continue the prefix. The context is
  computed once for all its choices in the same forward pass, with no KV-cache copying;
* packs several items into one row (first-fit, longest first) so rows carry almost no padding;
* applies the output head and log-softmax only at the positions that predict continuation tokens.

The numbers are the same function as lm-eval's up to float rounding (parity tests check item by
item); batching never changes them beyond ~1e-6 in fp32.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

Pair = tuple[str, str]


@dataclass(frozen=True)
class Scored:
    """One request's result: summed log-probability, whether greedy decoding gives the continuation,
    and how many continuation tokens were scored."""

    logprob: float
    is_greedy: bool
    n_tokens: int


@dataclass
class _Group:
    """One item's requests laid out as a prefix tree: ``tokens`` = shared prefix + each suffix."""

    index: int
    tokens: list[int]
    positions: list[int]
    segments: list[int]  # -1 for the shared prefix, i for request i's suffix
    reads: list[tuple[list[int], list[int]]]  # per request: (layout indices to read, target tokens)


def _common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for i in range(n):
        t = first[i]
        if any(s[i] != t for s in seqs[1:]):
            return i
    return n


class Scorer:
    """Log-likelihood scoring for a Hugging Face causal LM (any model that accepts 4D masks and
    position ids, as Llama-family models do).

    ``batch_size`` counts items (groups of requests sharing a context) per forward pass.
    ``max_length`` is the context window; by default resolved from the model config the way lm-eval
    does (``n_positions``, ``max_position_embeddings``, ``n_ctx``, then the tokenizer, then 2048).
    """

    def __init__(self, model, tokenizer, batch_size: int = 32, max_length: int | None = None,
                 device: str | torch.device | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = max(1, int(batch_size))
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.max_length = int(max_length) if max_length else self._resolve_max_length()
        bos = tokenizer.bos_token_id
        self.prefix_token_id = bos if bos is not None else tokenizer.eos_token_id
        self._prefix_text = tokenizer.decode(self.prefix_token_id) if self.prefix_token_id is not None else None
        self._base = model.base_model
        self._head = model.get_output_embeddings()
        self._softcap = getattr(model.config, "final_logit_softcapping", None)

    def _resolve_max_length(self) -> int:
        from lm_eval.models.utils import resolve_max_length

        return resolve_max_length(self.model.config, self.tokenizer, default=2048)

    # ------------------------------------------------------------ tokenization (lm-eval's rules)

    def _encode(self, strings: list[str]) -> list[list[int]]:
        """``tok_encode`` of lm-eval's HFLM, batched: tokenizer defaults, except that a string already
        starting with the prefix (BOS) token text gets no special tokens added."""
        out: list[list[int]] = [[] for _ in strings]
        with_bos = [i for i, s in enumerate(strings) if self._prefix_text and s.startswith(self._prefix_text)]
        plain = sorted(set(range(len(strings))) - set(with_bos))
        for idx, special in ((plain, True), (with_bos, False)):
            if idx:
                enc = self.tokenizer([strings[i] for i in idx], add_special_tokens=special)["input_ids"]
                for i, ids in zip(idx, enc, strict=True):
                    out[i] = list(ids)
        return out

    def encode_pairs(self, pairs: Sequence[Pair]) -> list[tuple[list[int], list[int]]]:
        """(context tokens, continuation tokens) per pair, exactly as lm-eval's ``loglikelihood``."""
        moved: list[Pair] = []
        for ctx, cont in pairs:
            n = len(ctx) - len(ctx.rstrip())  # lm-eval moves all trailing whitespace, not only spaces
            moved.append((ctx[:-n], ctx[-n:] + cont) if n else (ctx, cont))
        nonempty = [i for i, (c, _) in enumerate(pairs) if c]
        contexts = sorted({moved[i][0] for i in nonempty})
        ctx_enc = dict(zip(contexts, self._encode(contexts), strict=True))
        whole = self._encode([moved[i][0] + moved[i][1] for i in nonempty])
        result: list[tuple[list[int], list[int]] | None] = [None] * len(pairs)
        for i, w in zip(nonempty, whole, strict=True):
            c = ctx_enc[moved[i][0]]
            if not c:
                raise ValueError(f"context {pairs[i][0]!r} encodes to zero tokens once its trailing "
                                 "whitespace moves to the continuation")
            result[i] = (c, w[len(c):])
        for i, (c, cont) in enumerate(pairs):
            if not c:  # empty context: condition on the prefix token, as lm-eval does
                enc = list(self.tokenizer(cont, add_special_tokens=False)["input_ids"])
                if enc and enc[0] == self.prefix_token_id:
                    result[i] = (enc[:1], enc[1:])
                else:
                    result[i] = ([self.prefix_token_id], enc)
        return result  # type: ignore[return-value]

    # ------------------------------------------------------------ layout

    def _group(self, index: int, encoded: Sequence[tuple[list[int], list[int]]]) -> _Group:
        """Lay out one item's requests as shared prefix + suffixes (left-truncated like lm-eval)."""
        inputs, conts = [], []
        for ctx, cont in encoded:
            if not cont:
                raise ValueError(f"item {index}: a continuation encodes to zero tokens")
            if len(cont) > self.max_length:
                raise ValueError(f"item {index}: continuation of {len(cont)} tokens exceeds the "
                                 f"model window of {self.max_length}")
            inputs.append((ctx + cont)[-(self.max_length + 1):][:-1])
            conts.append(cont)
        p = _common_prefix(inputs)
        tokens, positions, segments = list(inputs[0][:p]), list(range(p)), [-1] * p
        reads = []
        for r, (inp, cont) in enumerate(zip(inputs, conts, strict=True)):
            start = len(tokens)
            suffix = inp[p:]
            tokens += suffix
            positions += range(p, len(inp))
            segments += [r] * len(suffix)
            where = [j if j < p else start + j - p for j in range(len(inp) - len(cont), len(inp))]
            reads.append((where, cont))
        return _Group(index, tokens, positions, segments, reads)

    @staticmethod
    def _pack(groups: list[_Group]) -> list[list[_Group]]:
        """First-fit decreasing into rows as long as the longest group: almost no padding."""
        cap = max(len(g.tokens) for g in groups)
        rows: list[list[_Group]] = []
        free: list[int] = []
        for g in groups:
            n = len(g.tokens)
            for r, room in enumerate(free):
                if n <= room:
                    rows[r].append(g)
                    free[r] -= n
                    break
            else:
                rows.append([g])
                free.append(cap - n)
        return rows

    # ------------------------------------------------------------ forward

    def _forward(self, rows: list[list[_Group]]) -> dict[int, list[Scored]]:
        width = max(sum(len(g.tokens) for g in row) for row in rows)
        n = len(rows)
        ids = torch.zeros(n, width, dtype=torch.long)
        pos = torch.zeros(n, width, dtype=torch.long)
        grp = torch.full((n, width), -1, dtype=torch.long)
        seg = torch.full((n, width), -1, dtype=torch.long)
        flat_idx: list[int] = []
        targets: list[int] = []
        spans: list[tuple[int, int, int]] = []  # (group index, request, n target tokens)
        for r, row in enumerate(rows):
            off = 0
            for k, g in enumerate(row):
                m = len(g.tokens)
                ids[r, off:off + m] = torch.tensor(g.tokens)
                pos[r, off:off + m] = torch.tensor(g.positions)
                grp[r, off:off + m] = k
                seg[r, off:off + m] = torch.tensor(g.segments)
                for q, (where, cont) in enumerate(g.reads):
                    flat_idx += [r * width + off + j for j in where]
                    targets += cont
                    spans.append((g.index, q, len(cont)))
                off += m
        same_group = grp[:, :, None] == grp[:, None, :]
        visible = (seg[:, None, :] == -1) | (seg[:, :, None] == seg[:, None, :])
        causal = torch.ones(width, width, dtype=torch.bool).tril()
        allowed = (same_group & visible & causal) | torch.eye(width, dtype=torch.bool)
        dtype = self._head.weight.dtype
        mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
        out = self._base(
            input_ids=ids.to(self.device),
            attention_mask=mask[:, None].to(self.device),
            position_ids=pos.to(self.device),
            use_cache=False,
        )
        tok_lp, greedy = self._logprobs(out[0], torch.tensor(flat_idx, device=self.device),
                                        torch.tensor(targets, device=self.device))
        results: dict[int, list[Scored]] = {}
        start = 0
        for gi, _q, k in spans:
            results.setdefault(gi, []).append(
                Scored(float(tok_lp[start:start + k].sum()), bool(greedy[start:start + k].all()), k))
            start += k
        return results

    def _logprobs(self, hidden: torch.Tensor, positions: torch.Tensor, targets: torch.Tensor,
                  chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probability of each (position, target) and whether the target is the argmax.

        The output head runs once per *distinct* position: choices that share words (PIQA's two
        solutions often differ in one phrase) read the same shared-prefix positions, and projecting
        them once matters because the head dominates small models with 50k vocabularies. Computed as
        ``logit - logsumexp`` in chunks rather than a full log-softmax tensor (same value, half the
        memory traffic)."""
        uniq, inverse = torch.unique(positions, return_inverse=True)
        h = hidden.reshape(-1, hidden.shape[-1])
        lse = torch.empty(len(uniq), dtype=torch.float32, device=hidden.device)
        best = torch.empty(len(uniq), dtype=torch.long, device=hidden.device)
        picked = torch.empty(len(targets), dtype=torch.float32, device=hidden.device)
        order = torch.argsort(inverse)
        bounds = torch.searchsorted(inverse[order], torch.arange(0, len(uniq) + chunk, chunk, device=hidden.device))
        for k, i in enumerate(range(0, len(uniq), chunk)):
            logits = self._head(h[uniq[i:i + chunk]]).float()
            if self._softcap:
                logits = torch.tanh(logits / self._softcap) * self._softcap
            lse[i:i + chunk] = torch.logsumexp(logits, dim=-1)
            best[i:i + chunk] = logits.argmax(-1)
            sel = order[bounds[k]:bounds[k + 1]]
            picked[sel] = logits[inverse[sel] - i, targets[sel]]
        tok_lp = (picked - lse[inverse]).double().cpu()
        return tok_lp, (best[inverse] == targets).cpu()

    # ------------------------------------------------------------ public API

    @torch.inference_mode()
    def score_groups(self, groups: Sequence[Sequence[Pair]],
                     on_progress: Callable[[int], None] | None = None) -> list[list[Scored]]:
        """Score every (context, continuation) pair; pairs of one group (an item's choices) share
        their common prefix. Returns results in the input order. ``on_progress(k)`` is called with
        the number of groups finished in each batch."""
        flat = [pair for g in groups for pair in g]
        encoded = self.encode_pairs(flat)
        laid: list[_Group] = []
        i = 0
        for gi, g in enumerate(groups):
            laid.append(self._group(gi, encoded[i:i + len(g)]))
            i += len(g)
        # Longest first (lm-eval's order): OOMs surface at once and neighbours pack tightly.
        laid.sort(key=lambda g: (-len(g.tokens), g.tokens))
        results: list[list[Scored]] = [[] for _ in groups]
        for b in range(0, len(laid), self.batch_size):
            batch = laid[b:b + self.batch_size]
            for gi, scored in self._forward(self._pack(batch)).items():
                results[gi] = scored
            if on_progress is not None:
                on_progress(len(batch))
        return results

    def score_pairs(self, pairs: Sequence[Pair]) -> list[Scored]:
        """Score independent pairs (each its own group)."""
        return [g[0] for g in self.score_groups([[p] for p in pairs])]
