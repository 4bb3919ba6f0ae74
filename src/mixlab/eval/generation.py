"""Batched text generation with a KV cache, for the ``generate``, ``code`` and ``judge`` kinds.

The decoding loop (``engine="loop"``, the default) runs the model's forward over a ``DynamicCache``
with continuous batching: up to ``batch_size`` prompts (``batch_size * n`` rows) decode together;
a row leaves the batch (and the KV cache) as soon as it ends (EOS, stop string, length) and freed
slots are refilled with the next prompts, prefilled left-padded and joined to the running cache.
``engine="hf"`` keeps the previous path, transformers' ``model.generate`` on left-padded batches
in lock-step (used by ``benchmarks/generation_throughput.py`` for comparison, and as a fallback
for models whose cache is not a plain ``DynamicCache``, e.g. sliding-window layers). Around it:

* prompts are sorted by token length and batched, so a batch carries little padding, and results
  come back in input order;
* stop sequences (lm-eval's ``until``): a row stops decoding as soon as its decoded text contains
  one, and the returned text is cut before the first occurrence (lm-eval cuts at the earliest stop
  string in the decoded text, and so do we);
* greedy when ``temperature == 0``, else sampling with ``temperature``/``top_p`` (the warpers of
  ``generate``, top-k off), ``n`` samples per prompt sharing one prefill, drawn from a generator
  seeded once per call from the task's ``seed`` (same prompts + batch size -> same samples);
* an optional chat template (when the tokenizer has one and the task asks for it), also for
  multi-turn conversations (MT-Bench's second turn);
* prompts longer than the window keep their last tokens, leaving room for ``max_new_tokens``.

``benchmarks/generation_throughput.py`` measures the loop against ``model.generate`` (batched and one
prompt at a time) and lm-eval's ``generate_until``, and checks that the greedy answers are equal.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mixlab.eval.spec import GenerationSpec

Message = dict[str, str]  # {"role": "user"|"assistant"|"system", "content": ...}


@dataclass(frozen=True)
class Completion:
    """One generated answer: the text (cut at the first stop sequence), how many tokens were
    generated, and why generation ended: ``stop`` (a stop sequence), ``eos`` or ``length``."""

    text: str
    n_tokens: int
    finish: str


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_prompt(tokenizer, prompt: str | Sequence[Message], chat: bool) -> tuple[str, bool]:
    """The text fed to the model and whether a chat template produced it.

    ``prompt`` is a plain string or a conversation (list of messages ending with a user turn). With
    ``chat`` and a tokenizer that has a template, the conversation is rendered with the generation
    prompt appended; otherwise a string is used as is and a conversation is joined as plain text.
    """
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if chat and has_chat_template(tokenizer):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text, True
    if isinstance(prompt, str):
        return prompt, False
    # No template: a plain transcript with role headers, ending where the assistant speaks.
    names = {"user": "User", "assistant": "Assistant", "system": "System"}
    lines = [f"{names.get(m['role'], m['role'])}: {m['content']}" for m in messages]
    return "\n\n".join(lines) + "\n\nAssistant:", False


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """``text`` before the earliest occurrence of any stop sequence, and whether one occurred."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def resolve_max_length(model, tokenizer) -> int:
    """The context window, resolved by lm-eval's own function (config, then tokenizer, then 2048), so
    generation, the log-likelihood scorer and lm-eval's HF backend use the same window."""
    from lm_eval.models.utils import resolve_max_length as lm_eval_resolve

    return lm_eval_resolve(model.config, tokenizer, default=2048)


class Generator:
    """Generates completions for many prompts with a Hugging Face causal LM.

    ``batch_size`` counts prompts decoded together (each expands to ``n`` rows when sampling ``n``
    answers). ``max_length`` is the context window (prompt + new tokens); by default from
    the model config.
    """

    def __init__(self, model, tokenizer, batch_size: int = 16, max_length: int | None = None,
                 engine: str = "loop"):
        if engine not in ("loop", "hf"):
            raise ValueError(f"engine must be 'loop' or 'hf', not {engine!r}")
        self.engine = engine  # "hf": the previous path through model.generate (kept for the benchmark)
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = max(1, int(batch_size))
        self.max_length = int(max_length) if max_length else resolve_max_length(model, tokenizer)
        self.device = next(model.parameters()).device
        eos = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
        if self.pad_id is None:
            raise ValueError("the tokenizer has neither a pad nor an EOS token; generation needs one to pad batches")
        self.eos_ids = self._eos_ids()

    def _eos_ids(self) -> list[int]:
        ids: set[int] = set()
        for source in (self.tokenizer.eos_token_id, getattr(self.model.generation_config, "eos_token_id", None)):
            if isinstance(source, int):
                ids.add(source)
            elif isinstance(source, (list, tuple)):
                ids.update(int(i) for i in source)
        return sorted(ids)

    def encode(self, text: str, chat: bool) -> list[int]:
        """Token ids of a prompt. Plain prompts get the tokenizer's special tokens (BOS) as the
        log-likelihood scorer does; chat-rendered prompts already contain theirs."""
        bos = self.tokenizer.bos_token
        special = not chat and not (bos and text.startswith(bos))
        return list(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    def generate(
        self,
        prompts: Sequence[str | Sequence[Message]],
        spec: GenerationSpec,
        on_progress: Callable[[int], None] | None = None,
    ) -> list[list[Completion]]:
        """``spec.n`` completions for each prompt, in input order.

        Batches are formed longest-first; ``on_progress(k)`` is called after each batch with the
        number of prompts it finished. Sampling is seeded from ``spec.seed`` at the start of the
        call, so the same prompts with the same batch size give the same samples.
        """
        if spec.temperature < 0 or not 0 < spec.top_p <= 1 or spec.n < 1:
            raise ValueError(f"bad generation settings: temperature={spec.temperature}, top_p={spec.top_p}, n={spec.n}")
        rendered = [render_prompt(self.tokenizer, p, spec.chat_template) for p in prompts]
        encoded = [self.encode(text, chat) for text, chat in rendered]
        room = self.max_length - spec.max_new_tokens
        if room < 1:
            raise ValueError(f"max_new_tokens={spec.max_new_tokens} leaves no room for a prompt in the "
                             f"{self.max_length}-token window; lower it or raise --max-length")
        encoded = [ids[-room:] for ids in encoded]  # keep the end of over-long prompts
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        out: list[list[Completion]] = [[] for _ in encoded]
        if self.engine == "loop" and self._loop_supported():
            self._decode_loop(encoded, order, spec, out, on_progress)
            return out
        if spec.temperature > 0:
            torch.manual_seed(spec.seed)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            for i, completions in zip(chunk, self._batch([encoded[i] for i in chunk], spec), strict=True):
                out[i] = completions
            if on_progress is not None:
                on_progress(len(chunk))
        return out

    def _batch(self, rows: list[list[int]], spec: GenerationSpec) -> list[list[Completion]]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, r in enumerate(rows):  # left padding: every prompt ends at the last column
            ids[j, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[j, width - len(r):] = 1
        sample = spec.temperature > 0
        kwargs: dict[str, Any] = dict(
            max_new_tokens=spec.max_new_tokens, do_sample=sample, num_return_sequences=spec.n,
            pad_token_id=self.pad_id, eos_token_id=self.eos_ids or None, use_cache=True,
        )
        if sample:
            kwargs.update(temperature=spec.temperature, top_p=spec.top_p, top_k=0)
        else:  # explicit, so a model's own sampling defaults in generation_config cannot apply
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if spec.stop:
            kwargs.update(stop_strings=list(spec.stop), tokenizer=self.tokenizer)
        with torch.inference_mode():
            generated = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), **kwargs)
        new = generated[:, width:].tolist()
        results = [self._completion(tokens, spec) for tokens in new]
        return [results[j * spec.n:(j + 1) * spec.n] for j in range(len(rows))]

    def _completion(self, tokens: list[int], spec: GenerationSpec) -> Completion:
        eos = set(self.eos_ids)
        end = next((k for k, t in enumerate(tokens) if t in eos), None)
        kept = tokens if end is None else tokens[:end]
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        text, stopped = cut_at_stop(text, spec.stop)
        finish = "stop" if stopped else ("eos" if end is not None else "length")
        return Completion(text, len(kept) + (end is not None), finish)

    # --- the decode loop -------------------------------------------------------------------------
    #
    # Why not ``model.generate``: it decodes a left-padded batch in lock-step until its longest row
    # ends, so rows that finished early (EOS, stop string) are still computed, and the next batch
    # only starts when the whole batch is done. Profile (SmolLM2-135M, GSM8K CoT chat, 32 questions,
    # 256 new tokens, batch 16, 1 thread, 2-core CPU): 65.3 tok/s; 21% of row-steps were dead rows;
    # of ~190 ms/step, ~120 ms is the linear layers (16-row matmuls, ~36 GFLOP/s: bound by reading
    # the weights, not by FLOPs), ~27 ms the LM head, ~21 ms SDPA, ~18 ms torch.cat growing the
    # DynamicCache; stop-string checks were not a cost (no stop strings in that task).
    # This loop drops finished rows from the KV cache and refills freed slots with the next prompts
    # (new prompts are prefilled on their own, their cache left-padded and joined to the running
    # one; n samples share one prefill). Same run: 73.5 tok/s (1.13x), 32/32 texts equal. The gain
    # is small on 32 prompts (two waves); on a full eval the old path pays the longest row of every
    # batch. Because a step costs nearly the same at 1 row (61 ms) as at 16 (141 ms), larger
    # ``batch_size`` is where the remaining speed is. transformers' continuous batching
    # (``generate_batch``, paged attention) was not tried for lack of time.
    # The torch.cat growth is gone: cache layers append into spare room (``RoomyLayer``); A/B on 8
    # of these questions x 128 tokens, batch 8: 5-6% less CPU time, texts identical. Whole
    # benchmark after it (32 questions, 256 tokens, batch 16, idle machine): 66.7 tok/s, 1.15x
    # model.generate in batches and lm-eval's generate_until, 4.1x one prompt at a time, 32/32 equal.

    def _loop_supported(self) -> bool:
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        try:
            cache = DynamicCache(config=self.model.config)
        except Exception:  # noqa: BLE001  (a model whose config the cache cannot read)
            return False
        return all(type(layer) is DynamicLayer for layer in cache.layers)

    def _forward(self, ids, mask, pos, cache):
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache,
                         use_cache=True, logits_to_keep=1)
        return out.logits[:, -1].float()

    def _pick(self, logits: torch.Tensor, spec: GenerationSpec, rng: torch.Generator | None) -> list[int]:
        """The next token of each row: argmax, or a sample with the same temperature and top-p
        warpers as ``generate`` (top-k off)."""
        if rng is None:
            return logits.argmax(-1).tolist()
        scores = logits / spec.temperature
        if spec.top_p < 1.0:
            sorted_logits, sorted_idx = torch.sort(scores, descending=False)
            remove = sorted_logits.softmax(-1).cumsum(-1) <= (1 - spec.top_p)
            remove[..., -1:] = False
            scores = scores.masked_fill(remove.scatter(1, sorted_idx, remove), float("-inf"))
        return torch.multinomial(scores.softmax(-1), 1, generator=rng)[:, 0].tolist()

    def _decode_loop(self, encoded: list[list[int]], order: list[int], spec: GenerationSpec,
                     out: list[list[Completion]], on_progress: Callable[[int], None] | None) -> None:
        n = spec.n
        slots = self.batch_size * n  # rows decoded together
        refill_at = max(1, self.batch_size // 4) * n  # free rows that trigger a prefill of new prompts
        rng = None
        if spec.temperature > 0:
            rng = torch.Generator(device=self.device).manual_seed(spec.seed)
        eos = set(self.eos_ids)
        queue = deque(order)
        done: dict[int, list[Completion | None]] = {}
        # live rows: prompt index, generated tokens; the last token of each is not in the cache yet
        row_prompt: list[int] = []
        row_tokens: list[list[int]] = []
        cache = mask = pos = None  # KV cache, 2-D attention mask [rows, cache length], next position ids

        def finished(tokens: list[int]) -> bool:
            if tokens[-1] in eos or len(tokens) >= spec.max_new_tokens:
                return True
            if spec.stop:
                return cut_at_stop(self.tokenizer.decode(tokens, skip_special_tokens=True), spec.stop)[1]
            return False

        def settle(prompts: list[int], tokens: list[list[int]]) -> list[int]:
            """Record finished rows; the positions of those still running."""
            keep, completed = [], 0
            for j, (i, toks) in enumerate(zip(prompts, tokens, strict=True)):
                if not finished(toks):
                    keep.append(j)
                    continue
                slot = done[i]
                k = slot.index(None)
                slot[k] = self._completion(toks, spec)
                if k == n - 1:
                    out[i] = slot  # type: ignore[assignment]
                    completed += 1
            if completed and on_progress is not None:
                on_progress(completed)
            return keep

        with torch.inference_mode():
            while queue or row_prompt:
                if queue and (not row_prompt or slots - len(row_prompt) >= refill_at):
                    take = [queue.popleft() for _ in range(min(len(queue), (slots - len(row_prompt)) // n))]
                    for i in take:
                        done[i] = [None] * n
                    width = max(len(encoded[i]) for i in take)
                    ids = torch.full((len(take), width), self.pad_id, dtype=torch.long)
                    new_mask = torch.zeros((len(take), width), dtype=torch.long)
                    for j, i in enumerate(take):
                        ids[j, width - len(encoded[i]):] = torch.tensor(encoded[i], dtype=torch.long)
                        new_mask[j, width - len(encoded[i]):] = 1
                    ids, new_mask = ids.to(self.device), new_mask.to(self.device)
                    new_pos = (new_mask.cumsum(-1) - 1).clamp(min=0)
                    new_cache = _roomy_cache(self.model.config)
                    logits = self._forward(ids, new_mask, new_pos, new_cache)
                    # n samples share one prefill: repeat its cache, mask and logits per sample
                    if n > 1:
                        new_cache.batch_repeat_interleave(n)
                        new_mask = new_mask.repeat_interleave(n, dim=0)
                        logits = logits.repeat_interleave(n, dim=0)
                    new_prompts = [i for i in take for _ in range(n)]
                    new_tokens = [[t] for t in self._pick(logits, spec, rng)]
                    new_pos = new_mask.sum(-1)
                    keep = settle(new_prompts, new_tokens)
                    if keep:
                        idx = torch.tensor(keep, device=self.device)
                        if len(keep) < len(new_prompts):
                            new_cache.batch_select_indices(idx)
                        new_mask, new_pos = new_mask[idx], new_pos[idx]
                        row_prompt += [new_prompts[j] for j in keep]
                        row_tokens += [new_tokens[j] for j in keep]
                        if cache is None:
                            cache, mask, pos = new_cache, new_mask, new_pos
                        else:
                            cache, mask = _merge(cache, mask, new_cache, new_mask)
                            pos = torch.cat([pos, new_pos])
                    continue  # refill again if prompts finished at once, else decode
                # one decode step over every live row
                last = torch.tensor([[t[-1]] for t in row_tokens], dtype=torch.long, device=self.device)
                mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
                logits = self._forward(last, mask, pos[:, None], cache)
                pos = pos + 1
                for toks, t in zip(row_tokens, self._pick(logits, spec, rng), strict=True):
                    toks.append(t)
                keep = settle(row_prompt, row_tokens)
                if len(keep) < len(row_prompt):
                    row_prompt = [row_prompt[j] for j in keep]
                    row_tokens = [row_tokens[j] for j in keep]
                    if not keep:
                        cache = mask = pos = None
                        continue
                    idx = torch.tensor(keep, device=self.device)
                    cache.batch_select_indices(idx)
                    mask, pos = mask[idx], pos[idx]
                    first = int(mask.any(0).int().argmax())  # drop columns no remaining row attends to
                    if first > 0:
                        _trim_left(cache, first)
                        mask = mask[:, first:]


def _roomy_cache(config):
    """A ``DynamicCache`` whose layers append into spare room (``RoomyLayer``)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=config)
    roomy = _roomy_layer_class()
    cache.layers = [roomy() for _ in cache.layers]
    return cache


@functools.cache
def _roomy_layer_class() -> type:
    """Built on first use, so importing this module does not import transformers (~2 s)."""
    from transformers.cache_utils import DynamicLayer

    class RoomyLayer(DynamicLayer):
        """A ``DynamicLayer`` that writes each new position into spare room instead of re-allocating.

        ``DynamicLayer.update`` concatenates the new keys/values onto the whole cache, a copy of every
        layer's cache at every decoded token (profile: ``torch.cat`` ~6% of the loop's time at 64 new
        tokens, ~10% at 256, growing with the cache). Here ``keys``/``values`` are views of buffers with
        ``SPARE`` positions of room, so a step writes one position; the buffers are re-allocated (one
        copy) only when full or when the batch changed the tensors (rows dropped, prompts joined,
        columns trimmed). Same values, same attention: greedy outputs are unchanged (tested).
        """

        SPARE = 64

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            old, new = (self.keys.shape[-2] if self.keys.numel() else 0), key_states.shape[-2]
            ours = getattr(self, "_views", None)
            if ours is None or ours[0] is not self.keys or ours[1] is not self.values \
                    or old + new > self._kbuf.shape[-2]:
                shape = (*key_states.shape[:-2], old + new + self.SPARE, key_states.shape[-1])
                kbuf, vbuf = key_states.new_empty(shape), value_states.new_empty(shape)
                if old:
                    kbuf[..., :old, :] = self.keys
                    vbuf[..., :old, :] = self.values
                self._kbuf, self._vbuf = kbuf, vbuf
            self._kbuf[..., old:old + new, :] = key_states
            self._vbuf[..., old:old + new, :] = value_states
            self.keys, self.values = self._kbuf[..., :old + new, :], self._vbuf[..., :old + new, :]
            self._views = (self.keys, self.values)
            return self.keys, self.values

    return RoomyLayer


def _merge(cache, mask: torch.Tensor, new_cache, new_mask: torch.Tensor):
    """Stack two DynamicCaches along the batch, left-padding the shorter one (masked out)."""
    a, b = mask.shape[1], new_mask.shape[1]
    width = max(a, b)

    def pad(x: torch.Tensor, length: int) -> torch.Tensor:
        if length == width:
            return x
        shape = list(x.shape)
        shape[-2] = width - length
        return torch.cat([x.new_zeros(shape), x], dim=-2)

    for old, new in zip(cache.layers, new_cache.layers, strict=True):
        old.keys = torch.cat([pad(old.keys, a), pad(new.keys, b)])
        old.values = torch.cat([pad(old.values, a), pad(new.values, b)])
    pad_mask = lambda m: torch.cat([m.new_zeros((m.shape[0], width - m.shape[1])), m], dim=1)  # noqa: E731
    return cache, torch.cat([pad_mask(mask), pad_mask(new_mask)])


def _trim_left(cache, columns: int) -> None:
    for layer in cache.layers:
        layer.keys = layer.keys[..., columns:, :]
        layer.values = layer.values[..., columns:, :]
