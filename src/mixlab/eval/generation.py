"""Batched text generation with a KV cache, for the ``generate``, ``code`` and ``judge`` kinds.

The decoding loop is transformers' own ``model.generate`` (it keeps a KV cache, stops sequences at
EOS, and supports sampling), fed *left-padded* batches so every row's last prompt token sits at the
same position and new tokens are appended in lock-step. What this module adds around it:

* prompts are sorted by token length and batched, so a batch carries little padding, and results
  come back in input order;
* stop sequences (lm-eval's ``until``): passed to ``generate`` as ``stop_strings`` so a row stops
  decoding as soon as it writes one, and the returned text is cut before the first occurrence
  (lm-eval cuts at the earliest stop string in the decoded text, and so do we);
* greedy when ``temperature == 0``, else sampling with ``temperature``/``top_p``, ``n`` samples per
  prompt (``num_return_sequences``), seeded once per call from the task's ``seed``;
* an optional chat template (when the tokenizer has one and the task asks for it), also for
  multi-turn conversations (MT-Bench's second turn);
* prompts longer than the window keep their last tokens, leaving room for ``max_new_tokens``.

``benchmarks/generation_throughput.py`` measures this against one prompt at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mixlab.eval.tasks import GenerationSpec

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
    """The context window, looked up the way lm-eval does (config, then tokenizer, then 2048)."""
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(model.config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(tokenizer, "model_max_length", None)
    return value if isinstance(value, int) and 0 < value < 1_000_000 else 2048


class Generator:
    """Generates completions for many prompts with a Hugging Face causal LM.

    ``batch_size`` counts prompts per ``generate`` call (each expands to ``n`` rows when sampling
    ``n`` answers). ``max_length`` is the context window (prompt + new tokens); by default from
    the model config.
    """

    def __init__(self, model, tokenizer, batch_size: int = 16, max_length: int | None = None):
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
