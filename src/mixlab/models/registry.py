"""Proxy model sizes as Hugging Face ``transformers`` configs (built locally, nothing downloaded).

Proxies are Llama-architecture decoders (RMSNorm, rotary positions, SwiGLU MLP, tied embeddings)
so that every checkpoint is an ordinary ``LlamaForCausalLM`` directory that
``AutoModelForCausalLM.from_pretrained`` loads, and fine-tuning, evaluation and PEFT treat a
proxy exactly like a real pretrained model. The names give the non-embedding parameter count,
the quantity Chinchilla's 20-tokens-per-parameter rule is stated in.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from pydantic import field_validator, model_validator
from transformers import LlamaConfig, LlamaForCausalLM

from mixlab.config import StrictModel
from mixlab.errors import ConfigError

CHINCHILLA_TOKENS_PER_PARAM = 20


@dataclass(frozen=True)
class ProxySize:
    """Shape of a proxy: width, depth, heads and MLP width (4x width, SwiGLU).

    A custom width without ``n_heads`` gets heads of 32 and ``d_ff = 4 * d_model``.
    """

    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int


# Heads of width 64 (the common choice, e.g. SmolLM) from proxy-1m up: PyTorch's CPU flash-attention
# kernel runs a 2x64 layout ~10% faster than 4x32 (benchmarks/pretrain_throughput.py setting).
# proxy-0.2m keeps two heads of 32 rather than a single head.
PROXY_SIZES: dict[str, ProxySize] = {
    "proxy-0.2m": ProxySize(d_model=64, n_layers=4, n_heads=2, d_ff=256),
    "proxy-1m": ProxySize(d_model=128, n_layers=4, n_heads=2, d_ff=512),
    "proxy-5m": ProxySize(d_model=256, n_layers=5, n_heads=4, d_ff=1024),
    "proxy-14m": ProxySize(d_model=384, n_layers=6, n_heads=6, d_ff=1536),
    "proxy-30m": ProxySize(d_model=512, n_layers=7, n_heads=8, d_ff=2048),
}


class ModelConfig(StrictModel):
    """Which proxy to train: a registered ``size`` or a custom shape (``d_model``, ``n_layers``, ...).

    Fields given next to ``size`` override that size's shape, so ``{size: proxy-1m, n_layers: 6}``
    is a deeper proxy-1m.
    """

    size: str | None = "proxy-1m"
    d_model: int | None = None
    n_layers: int | None = None
    n_heads: int | None = None
    d_ff: int | None = None
    init_std: float = 0.02
    tie_embeddings: bool = True
    attention: str = "sdpa"

    @field_validator("size")
    @classmethod
    def _known(cls, size: str | None) -> str | None:
        if size is not None and size not in PROXY_SIZES:
            close = difflib.get_close_matches(size, PROXY_SIZES, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"unknown model size {size!r}.{hint} Known: {', '.join(PROXY_SIZES)}; "
                "or set size: null and give d_model, n_layers, n_heads"
            )
        return size

    @model_validator(mode="after")
    def _check(self) -> "ModelConfig":
        if self.size is None and (self.d_model is None or self.n_layers is None):
            raise ValueError("a custom model (size: null) needs d_model and n_layers")
        shape = self.shape()
        if shape.d_model % shape.n_heads:
            raise ValueError(f"d_model={shape.d_model} is not divisible by n_heads={shape.n_heads}")
        if min(shape.d_model, shape.n_layers, shape.n_heads, shape.d_ff) <= 0:
            raise ValueError("d_model, n_layers, n_heads and d_ff must be positive")
        if self.attention not in ("sdpa", "eager"):
            raise ValueError(f"attention must be 'sdpa' or 'eager' (got {self.attention!r})")
        return self

    def shape(self) -> ProxySize:
        """The resolved shape: the registered size with any explicit field overriding it."""
        base = PROXY_SIZES[self.size] if self.size else None
        d_model = self.d_model or base.d_model  # type: ignore[union-attr]
        return ProxySize(
            d_model=d_model,
            n_layers=self.n_layers or base.n_layers,  # type: ignore[union-attr]
            n_heads=self.n_heads or (base.n_heads if base and not self.d_model else max(1, d_model // 32)),
            d_ff=self.d_ff or (base.d_ff if base and not self.d_model else 4 * d_model),
        )

    @property
    def label(self) -> str:
        s = self.shape()
        return self.size if self.size and self == ModelConfig(size=self.size) else f"d{s.d_model}-L{s.n_layers}"


# The context window a proxy checkpoint declares (``max_position_embeddings`` in config.json). Tools
# size their window from it: lm-eval's HF backend uses it as ``max_length`` and asserts that every
# continuation fits, vLLM refuses longer requests, ``generate`` warns past it. Declaring the training
# ``seq_len`` (64 tokens for ci_tiny) made lm-eval fail on an ARC answer. Rotary positions are computed
# for any position, so the model serves longer inputs (with the quality of extrapolation); 2048 is
# lm-eval's own default window. The training window is recorded beside it (TRAIN_SEQ_LEN_KEY).
# A constant, not a config field: it changes no weight, and a new field would change every
# pretraining config's hash, so existing runs could no longer resume.
SERVED_CONTEXT = 2048
TRAIN_SEQ_LEN_KEY = "mixlab_train_seq_len"


def hf_config(model: ModelConfig, vocab_size: int, train_seq_len: int, bos_id: int | None = None,
              eos_id: int | None = None, pad_id: int | None = None) -> LlamaConfig:
    """The ``LlamaConfig`` for a proxy with the tokenizer's vocabulary.

    It declares ``max(SERVED_CONTEXT, train_seq_len)`` positions and records ``train_seq_len`` as
    ``mixlab_train_seq_len`` (an extra config.json key that transformers keeps and other tools ignore).
    """
    s = model.shape()
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=s.d_model,
        intermediate_size=s.d_ff,
        num_hidden_layers=s.n_layers,
        num_attention_heads=s.n_heads,
        num_key_value_heads=s.n_heads,
        max_position_embeddings=max(SERVED_CONTEXT, train_seq_len),
        initializer_range=model.init_std,
        tie_word_embeddings=model.tie_embeddings,
        rms_norm_eps=1e-5,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        use_cache=False,
        attention_dropout=0.0,
    )
    cfg._attn_implementation = model.attention
    setattr(cfg, TRAIN_SEQ_LEN_KEY, int(train_seq_len))
    return cfg


def build_model(config: LlamaConfig, seed: int) -> LlamaForCausalLM:
    """A freshly initialised proxy; the seed fixes the initial weights exactly."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model


def non_embedding_params(config: LlamaConfig) -> int:
    """Parameters outside the token embedding and output head (Chinchilla/Kaplan's N).

    Computed from the shape rather than by instantiating a model, so plans and dry runs are free.
    """
    d, f, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    head_dim = getattr(config, "head_dim", None) or d // config.num_attention_heads
    q = d * config.num_attention_heads * head_dim
    kv = 2 * d * config.num_key_value_heads * head_dim
    o = config.num_attention_heads * head_dim * d
    per_layer = q + kv + o + 3 * d * f + 2 * d  # attention, SwiGLU MLP, two RMSNorm weights
    return layers * per_layer + d  # final norm


def total_params(config: LlamaConfig) -> int:
    emb = config.vocab_size * config.hidden_size
    return non_embedding_params(config) + emb * (1 if config.tie_word_embeddings else 2)


def train_flops_per_token(config: LlamaConfig, seq_len: int) -> float:
    """Model FLOPs per trained token (forward + backward = 3x forward), for MFU.

    ``6 * matmul parameters`` (including the output head) plus causal attention scores and values
    (``6 * L * seq * d``, half of the full ``12 * L * seq * d`` because the mask skips half).
    """
    d, layers = config.hidden_size, config.num_hidden_layers
    matmul_params = non_embedding_params(config) - (2 * layers + 1) * d + config.vocab_size * d
    return 6.0 * matmul_params + 6.0 * layers * seq_len * d


def chinchilla_tokens(config: LlamaConfig, multiple: float) -> int:
    return int(round(CHINCHILLA_TOKENS_PER_PARAM * non_embedding_params(config) * multiple))


def check_size(name: str) -> None:
    """Raise a ConfigError naming the known sizes when ``name`` is not registered."""
    try:
        ModelConfig(size=name)
    except ValueError as e:
        raise ConfigError(str(e)) from None
