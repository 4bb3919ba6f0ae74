"""Batched log-likelihood scoring: ``log p(continuation | context)`` for many pairs, fast and exact.

Tokenization and truncation copy lm-evaluation-harness's Hugging Face backend so scores match it:
trailing spaces of the context move to the continuation, the pair is encoded as one string and split
at the length of the encoded context, and inputs longer than the window keep their last
``max_length + 1`` tokens (the last one is never fed to the model). A continuation longer than the
window itself (lm-eval's ``loglikelihood`` asserts) is scored in ``loglikelihood_rolling``'s windows
instead of failing; each result says how many context tokens it could not see.

Where lm-eval runs every (context, choice) pair as its own padded row and projects every position
onto the vocabulary, this engine

* lays out all requests of one item as a *token trie*: tokens they share (the context, a common
  start of two choices) appear once, each request's own tokens hang below them, and a 4D attention
  mask lets every token see exactly its ancestors (position ids are the depth). The context is
  computed once for all its choices in the same forward pass, with no KV-cache copying;
* packs several items into one row (first-fit, longest first) so rows carry almost no padding;
* applies the output head and log-softmax only at the positions that predict continuation tokens,
  once per distinct position;
* splits the forward passes over ``workers`` forked processes (one thread each by default) that
  share the model's memory and take batches from a common counter. Small models spend much of a
  forward pass in Python and in ops that do not parallelize over threads; separate processes do.

The numbers are the same function as lm-eval's up to float rounding (parity tests check item by
item); batching never changes them beyond ~1e-6 in fp32, and the worker count not at all (the same
batches run, only in different processes).
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

Pair = tuple[str, str]


@dataclass(frozen=True)
class Scored:
    """One request's result: summed log-probability, whether greedy decoding gives the continuation,
    how many continuation tokens were scored, how many context tokens the first of them could not
    see (left truncation), and in how many windows the continuation was scored (1 unless it is
    longer than the model's window)."""

    logprob: float
    is_greedy: bool
    n_tokens: int
    truncated: int = 0
    windows: int = 1


@dataclass
class _Group:
    """One item's requests laid out as a token trie in pre-order (every subtree is contiguous)."""

    index: int
    tokens: list[int]
    positions: list[int]  # depth in the trie = position id
    ends: list[int]  # per node: one past its subtree's last node (who may see it)
    reads: list[tuple[list[int], list[int]]]  # per request: (node indices to read, target tokens)
    meta: list[tuple[int, int]]  # per request: (context tokens truncated, windows)


def _common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for i in range(n):
        t = first[i]
        if any(s[i] != t for s in seqs[1:]):
            return i
    return n


def _subtree_ends(depth: list[int]) -> list[int]:
    """For nodes in pre-order with these depths: the index one past each node's subtree."""
    ends = [len(depth)] * len(depth)
    stack: list[int] = []
    for j, d in enumerate(depth):
        while stack and depth[stack[-1]] >= d:
            ends[stack.pop()] = j
        stack.append(j)
    return ends


def can_fork() -> bool:
    """Whether scoring can fork worker processes here (POSIX with the fork start method)."""
    return "fork" in mp.get_all_start_methods()


class Scorer:
    """Log-likelihood scoring for a Hugging Face causal LM (any model that accepts 4D masks and
    position ids, as Llama-family models do).

    ``batch_size`` counts items (groups of requests sharing a context) per forward pass.
    ``max_length`` is the context window; by default resolved from the model config the way lm-eval
    does (``n_positions``, ``max_position_embeddings``, ``n_ctx``, then the tokenizer, then 2048).
    ``workers`` > 1 forks that many processes (CPU only; where fork is unavailable it scores in this
    one), each with ``torch.get_num_threads() // workers`` threads.
    """

    def __init__(self, model, tokenizer, batch_size: int = 32, max_length: int | None = None,
                 device: str | torch.device | None = None, workers: int = 1):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = max(1, int(batch_size))
        if int(workers) < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers = int(workers)
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

    def _windows(self, ctx: list[int], cont: list[int]) -> tuple[list[tuple[list[int], list[int]]], int]:
        """The model inputs that predict ``cont`` after ``ctx``: [(input tokens, the targets its last
        positions predict)], and how many context tokens the first continuation token cannot see.

        A continuation that fits the window is one input, ``(ctx + cont)[-(max_length + 1):][:-1]``:
        lm-eval's ``loglikelihood`` (the context left-truncated). A longer one, where lm-eval's
        ``loglikelihood`` asserts, is scored like its ``loglikelihood_rolling`` over ``ctx + cont``:
        windows of ``max_length`` predictions from the sequence start, the last one right-aligned with
        a full window of context; only the continuation's predictions are read. With an empty context
        (``ctx`` is the prefix token) this is exactly ``loglikelihood_rolling`` of the text."""
        L = self.max_length
        seq = ctx + cont
        n, c = len(seq), len(ctx)
        if len(cont) <= L:
            return [(seq[-(L + 1):][:-1], cont)], max(0, n - 1 - L)
        out, starts = [], []
        for a in range(1, n, L):  # predictions seq[a:b] on lm-eval's grid
            b = min(a + L, n)
            if b > c:
                starts.append(max(0, b - 1 - L))
                out.append((seq[starts[-1]:b - 1], seq[max(a, c):b]))
        return out, min(c, starts[0])

    def _group(self, index: int, encoded: Sequence[tuple[list[int], list[int]]]) -> _Group:
        """Lay out one item's requests as a token trie: every input sequence (one per request, or
        several for a continuation longer than the window) is a root-to-node path, so tokens shared
        by several requests (the context, a common start of two choices) are computed once."""
        seqs: list[tuple[list[int], int, list[int]]] = []
        meta: list[tuple[int, int]] = []
        for r, (ctx, cont) in enumerate(encoded):
            if not cont:
                raise ValueError(f"item {index}: a continuation encodes to zero tokens")
            wins, dropped = self._windows(ctx, cont)
            meta.append((dropped, len(wins)))
            seqs += [(inp, r, tgt) for inp, tgt in wins]
        # Sorted, each sequence shares with the trie exactly its common prefix with the previous one,
        # and every subtree is a contiguous run of nodes (what the attention mask relies on).
        seqs.sort(key=lambda s: s[0])
        tokens: list[int] = []
        depth: list[int] = []
        reads: list[tuple[list[int], list[int]]] = [([], []) for _ in encoded]
        path: list[int] = []
        prev: list[int] = []
        for inp, r, tgt in seqs:
            del path[_common_prefix((prev, inp)):]
            for t in inp[len(path):]:
                path.append(len(tokens))
                tokens.append(t)
                depth.append(len(path) - 1)
            where, targets = reads[r]
            where += path[len(inp) - len(tgt):len(inp)]
            targets += tgt
            prev = inp
        return _Group(index, tokens, depth, _subtree_ends(depth), reads, meta)

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
        ids: list[int] = []
        pos: list[int] = []
        ends: list[int] = []
        flat_idx: list[int] = []
        targets: list[int] = []
        spans: list[tuple[int, int, int]] = []  # (group index, request, n target tokens)
        for r, row in enumerate(rows):
            off = 0
            for g in row:
                ids += g.tokens
                pos += g.positions
                ends += [off + e for e in g.ends]
                for q, (where, cont) in enumerate(g.reads):
                    flat_idx += [r * width + off + j for j in where]
                    targets += cont
                    spans.append((g.index, q, len(cont)))
                off += len(g.tokens)
            ids += [0] * (width - off)
            pos += [0] * (width - off)
            ends += range(off + 1, width + 1)  # padding sees only itself (no fully masked row)
        n = len(rows)
        key = torch.arange(width)
        # key k is visible to query q iff k is q's ancestor or q itself in its trie: k <= q < end[k]
        allowed = (key[None, None, :] <= key[None, :, None]) & (
            key[None, :, None] < torch.tensor(ends).view(n, 1, width))
        dtype = self._head.weight.dtype
        mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
        out = self._base(
            input_ids=torch.tensor(ids).view(n, width).to(self.device),
            attention_mask=mask[:, None].to(self.device),
            position_ids=torch.tensor(pos).view(n, width).to(self.device),
            use_cache=False,
        )
        tok_lp, greedy = self._logprobs(out[0], torch.tensor(flat_idx, device=self.device),
                                        torch.tensor(targets, device=self.device))
        meta = {g.index: g.meta for row in rows for g in row}
        results: dict[int, list[Scored]] = {}
        start = 0
        for gi, q, k in spans:
            dropped, windows = meta[gi][q]
            results.setdefault(gi, []).append(Scored(float(tok_lp[start:start + k].sum()),
                                                     bool(greedy[start:start + k].all()), k, dropped, windows))
            start += k
        return results

    def _logprobs(self, hidden: torch.Tensor, positions: torch.Tensor, targets: torch.Tensor,
                  chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probability of each (position, target) and whether the target is the argmax.

        The output head runs once per *distinct* position: choices that share words (PIQA's two
        solutions often differ in one phrase) read the same shared-prefix positions, and projecting
        them once matters because the head dominates small models with 50k vocabularies. Computed as
        ``logit - logsumexp`` in chunks rather than a full log-softmax tensor (same value, half the
        memory traffic). The logits of every chunk go into one buffer and ``logsumexp`` is taken
        in place there (max, subtract, exp, sum: the steps of ``torch.logsumexp``, so the same
        value): profiled on SmolLM2-135M PIQA, ``torch.logsumexp`` on fresh 200 MB chunks spent
        1.8 of 14 s allocating and page-faulting its temporaries."""
        uniq, inverse = torch.unique(positions, return_inverse=True)
        h = hidden.reshape(-1, hidden.shape[-1])
        lse = torch.empty(len(uniq), dtype=torch.float32, device=hidden.device)
        best = torch.empty(len(uniq), dtype=torch.long, device=hidden.device)
        picked = torch.empty(len(targets), dtype=torch.float32, device=hidden.device)
        order = torch.argsort(inverse)
        bounds = torch.searchsorted(inverse[order], torch.arange(0, len(uniq) + chunk, chunk, device=hidden.device))
        weight = self._head.weight
        direct = (isinstance(self._head, torch.nn.Linear) and self._head.bias is None and not self._softcap
                  and weight.dtype == torch.float32)
        buf = torch.empty(min(chunk, len(uniq)), weight.shape[0], dtype=torch.float32, device=hidden.device)
        for k, i in enumerate(range(0, len(uniq), chunk)):
            rows = h[uniq[i:i + chunk]]
            sel = order[bounds[k]:bounds[k + 1]]
            if direct:
                logits = torch.mm(rows, weight.t(), out=buf[:len(rows)])
                best[i:i + chunk] = logits.argmax(-1)
                picked[sel] = logits[inverse[sel] - i, targets[sel]]
                top = logits.amax(-1, keepdim=True)
                lse[i:i + chunk] = logits.sub_(top).exp_().sum(-1).log_().add_(top.squeeze(-1))
                continue
            logits = self._head(rows).float()
            if self._softcap:
                logits = torch.tanh(logits / self._softcap) * self._softcap
            lse[i:i + chunk] = torch.logsumexp(logits, dim=-1)
            best[i:i + chunk] = logits.argmax(-1)
            picked[sel] = logits[inverse[sel] - i, targets[sel]]
        tok_lp = (picked - lse[inverse]).double().cpu()
        return tok_lp, (best[inverse] == targets).cpu()

    # ------------------------------------------------------------ workers

    def _run(self, batches: list[list[_Group]], on_progress: Callable[[int], None] | None) -> dict[int, list[Scored]]:
        results: dict[int, list[Scored]] = {}

        def done(res: dict[int, list[Scored]], k: int) -> None:
            results.update(res)
            if on_progress is not None:
                on_progress(k)

        n_workers = min(self.workers, len(batches))
        if n_workers < 2 or self.device.type != "cpu" or not can_fork():
            for batch in batches:
                done(self._forward(self._pack(batch)), len(batch))
            return results
        self._parallel(batches, n_workers, done)
        return results

    def _parallel(self, batches: list[list[_Group]], n_workers: int,
                  done: Callable[[dict[int, list[Scored]], int], None]) -> None:
        """Score ``batches`` in this process and ``n_workers - 1`` forked ones. Forked children share
        the model's memory copy-on-write (nothing is pickled but results) and take the next batch
        from a shared counter, so a worker slowed by other load on the machine simply takes fewer."""
        ctx = mp.get_context("fork")
        counter = ctx.Value("q", 0)
        threads = torch.get_num_threads()
        per_worker = max(1, threads // n_workers)

        def take() -> int:
            with counter.get_lock():
                i = counter.value
                counter.value += 1
            return i

        def child(conn) -> None:
            try:
                torch.set_num_threads(per_worker)
                with torch.inference_mode():
                    while (i := take()) < len(batches):
                        conn.send(("batch", self._forward(self._pack(batches[i])), len(batches[i])))
                conn.send(("done",))
            except BaseException as e:  # reported to the parent, which raises it
                conn.send(("error", f"{type(e).__name__}: {e}", traceback.format_exc()))
            finally:
                conn.close()

        sys.stdout.flush()  # a forked child flushes its copy of unwritten output on exit
        sys.stderr.flush()
        procs, conns = [], []
        try:
            for _ in range(n_workers - 1):
                recv, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=child, args=(send,), daemon=True)
                proc.start()
                send.close()
                procs.append(proc)
                conns.append(recv)
            torch.set_num_threads(per_worker)
            pending = dict(zip(conns, procs, strict=True))
            while (i := take()) < len(batches):
                done(self._forward(self._pack(batches[i])), len(batches[i]))
                self._collect(pending, done, block=False)
            while pending:
                self._collect(pending, done, block=True)
        finally:
            torch.set_num_threads(threads)
            for proc in procs:
                proc.join(timeout=10)
                if proc.is_alive():
                    proc.terminate()
                    proc.join()

    def _collect(self, pending: dict, done: Callable[[dict[int, list[Scored]], int], None], block: bool) -> None:
        """Take what finished workers sent; drop a worker from ``pending`` once it is done."""
        from multiprocessing.connection import wait

        ready = wait(list(pending)) if block else [c for c in pending if c.poll()]
        for conn in ready:
            while True:
                try:
                    msg = conn.recv()
                except EOFError:
                    proc = pending.pop(conn)
                    proc.join()
                    raise RuntimeError(f"a scoring worker (pid {proc.pid}) died with exit code "
                                       f"{proc.exitcode} (out of memory?)") from None
                if msg[0] == "done":
                    pending.pop(conn).join()
                    break
                if msg[0] == "error":
                    pending.pop(conn)
                    raise RuntimeError(f"a scoring worker failed: {msg[1]}\n{msg[2]}")
                done(msg[1], msg[2])
                if not conn.poll():
                    break

    # ------------------------------------------------------------ public API

    @torch.inference_mode()
    def score_groups(self, groups: Sequence[Sequence[Pair]],
                     on_progress: Callable[[int], None] | None = None) -> list[list[Scored]]:
        """Score every (context, continuation) pair; pairs of one group (an item's choices) share
        their common prefix. Returns results in the input order. ``on_progress(k)`` is called with
        the number of groups finished in each batch."""
        done = self._run(self._batches(groups), on_progress)
        return [done[gi] for gi in range(len(groups))]

    def _batches(self, groups: Sequence[Sequence[Pair]]) -> list[list[_Group]]:
        flat = [pair for g in groups for pair in g]
        encoded = self.encode_pairs(flat)
        laid: list[_Group] = []
        i = 0
        for gi, g in enumerate(groups):
            laid.append(self._group(gi, encoded[i:i + len(g)]))
            i += len(g)
        # Longest first (lm-eval's order): OOMs surface at once and neighbours pack tightly.
        laid.sort(key=lambda g: (-len(g.tokens), g.tokens))
        return [laid[b:b + self.batch_size] for b in range(0, len(laid), self.batch_size)]

    def layout(self, groups: Sequence[Sequence[Pair]]) -> dict[str, int]:
        """What scoring ``groups`` will compute, without computing it: the forward passes, their rows,
        the token positions that must be computed (every trie node), the positions including padding,
        and the positions the output head projects. Benchmarks use it to tell work from overhead."""
        stats = {"forwards": 0, "rows": 0, "tokens": 0, "padded_tokens": 0, "head_positions": 0}
        for batch in self._batches(groups):
            rows = self._pack(batch)
            width = max(sum(len(g.tokens) for g in row) for row in rows)
            stats["forwards"] += 1
            stats["rows"] += len(rows)
            stats["padded_tokens"] += width * len(rows)
            stats["tokens"] += sum(len(g.tokens) for g in batch)
            stats["head_positions"] += sum(len({j for where, _ in g.reads for j in where}) for g in batch)
        return stats

    def score_pairs(self, pairs: Sequence[Pair]) -> list[Scored]:
        """Score independent pairs (each its own group)."""
        return [g[0] for g in self.score_groups([[p] for p in pairs])]
