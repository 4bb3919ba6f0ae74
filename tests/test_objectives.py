"""Fine-tuning loss terms against hand computations on a tiny Llama (no training, under a second each)."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from mixlab.train.finetune.config import AnchorConfig
from mixlab.train.objectives import (
    IGNORE,
    Reference,
    SFTLoss,
    forward_kl,
    jensen_shannon,
    last_n_mask,
    reverse_kl,
)

VOCAB = 32


def tiny(seed: int) -> LlamaForCausalLM:
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32, use_cache=False)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).eval()


def batch(step: int = 0) -> dict[str, torch.Tensor]:
    """Two rows: prompt of 3 / 2 tokens, completion of 4 / 3 tokens, right padding on the second."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB, (2, 7), generator=g)
    labels = ids.clone()
    labels[0, :3] = IGNORE
    labels[1, :2] = IGNORE
    labels[1, 5:] = IGNORE
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    return {"input_ids": ids, "labels": labels, "attention_mask": mask, "step": torch.tensor(step)}


def targets(b) -> list[tuple[int, int]]:
    """(row, position) of every trained next-token prediction: position t predicts labels[t + 1]."""
    return [(r, t) for r in range(2) for t in range(6) if b["labels"][r, t + 1] != IGNORE]


@torch.no_grad()
def hand_ce(model, b) -> float:
    logp = torch.log_softmax(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.double(), -1)
    return -sum(float(logp[r, t, b["labels"][r, t + 1]]) for r, t in targets(b))


def hand_div(p_logits: torch.Tensor, q_logits: torch.Tensor, kind: str) -> float:
    """Divergence of model distribution p from base q, summed by explicit sums over the vocabulary."""
    p, q = torch.softmax(p_logits.double(), -1), torch.softmax(q_logits.double(), -1)
    if kind == "kl":
        return float((q * (q.log() - p.log())).sum())
    if kind == "kl_rev":
        return float((p * (p.log() - q.log())).sum())
    m = (p + q) / 2
    return float(0.5 * (p * (p.log() - m.log())).sum() + 0.5 * (q * (q.log() - m.log())).sum())


def test_completion_only_loss_matches_hand_cross_entropy_and_ignores_prompt_tokens():
    model, b = tiny(0), batch()
    loss = SFTLoss()
    value, _ = loss(model, b)
    assert loss.count(b) == len(targets(b)) == 4 + 3
    assert value.item() == pytest.approx(hand_ce(model, b), rel=1e-5)
    # prompt targets are context only: changing the labels hidden under the prompt changes nothing
    b2 = dict(b)
    b2["labels"] = b["labels"].clone()
    b2["labels"][0, 1] = IGNORE  # already ignored: equal
    assert loss(model, b2)[0].item() == pytest.approx(value.item(), rel=1e-7)
    # training the prompt too would change the value: the test can fail
    b3 = dict(b)
    b3["labels"] = b["input_ids"].clone()
    assert loss(model, b3)[0].item() > value.item() + 1e-3


@pytest.mark.parametrize("kind", ["kl", "kl_rev", "js"])
def test_anchor_term_matches_hand_divergence(kind):
    model, base, b = tiny(0), tiny(1), batch()
    anchor = AnchorConfig(type=kind, coef=0.7)
    loss = SFTLoss(anchor, Reference(base))
    value, metrics = loss(model, b)
    with torch.no_grad():
        lm = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        lb = base(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    div = sum(hand_div(lm[r, t], lb[r, t], kind) for r, t in targets(b))
    assert metrics["anchor"].item() == pytest.approx(div, rel=1e-4)
    assert value.item() == pytest.approx(hand_ce(model, b) + 0.7 * div, rel=1e-5)


def test_anchor_is_zero_at_coef_zero_and_before_start_step():
    model, base = tiny(0), tiny(1)
    plain = SFTLoss()(model, batch())[0].item()
    assert SFTLoss(AnchorConfig(coef=0.0), Reference(base))(model, batch())[0].item() == plain
    late = SFTLoss(AnchorConfig(coef=1.0, start_step=5), Reference(base))
    assert late(model, batch(step=4))[0].item() == plain
    assert late(model, batch(step=5))[0].item() > plain + 1e-4


def test_anchor_follows_the_linear_warmup_ramp():
    a = AnchorConfig(coef=0.4, start_step=10, warmup_steps=4)
    assert [a.weight(s) for s in (9, 10, 11, 12, 13, 14, 100)] == pytest.approx([0, 0.1, 0.2, 0.3, 0.4, 0.4, 0.4])
    model, base = tiny(0), tiny(1)
    loss = SFTLoss(a, Reference(base))
    ce = SFTLoss()(model, batch())[0].item()
    full = SFTLoss(AnchorConfig(coef=1.0), Reference(base))(model, batch())[1]["anchor"].item()
    for step, w in ((10, 0.1), (12, 0.3), (20, 0.4)):
        assert loss(model, batch(step))[0].item() == pytest.approx(ce + w * full, rel=1e-5)


def test_last_n_tokens_counts_only_each_examples_last_completion_tokens():
    mask = torch.tensor([[0, 1, 1, 1, 0, 1, 1, 0], [0, 0, 1, 1, 1, 1, 1, 0]], dtype=torch.bool)
    assert last_n_mask(mask, 2).int().tolist() == [[0, 0, 1, 1, 0, 1, 1, 0], [0, 0, 0, 0, 0, 1, 1, 0]]
    assert last_n_mask(mask, 10).equal(mask)
    model, base, b = tiny(0), tiny(1), batch()
    _, metrics = SFTLoss(AnchorConfig(type="kl", coef=1.0, last_n_tokens=2), Reference(base))(model, b)
    with torch.no_grad():
        lm = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        lb = base(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    last2 = [(0, 4), (0, 5), (1, 2), (1, 3)]  # row 0 trains labels 3..6, row 1 labels 2..4: the last two of each
    assert metrics["anchor"].item() == pytest.approx(sum(hand_div(lm[r, t], lb[r, t], "kl") for r, t in last2), rel=1e-4)


def test_kl_directions_differ_as_they_should_and_js_is_symmetric_and_bounded():
    # base q is sharp, model p is flat: forward KL(q||p) = sum q log(q/p), reverse = sum p log(p/q)
    q = torch.log(torch.tensor([[0.9, 0.05, 0.05]]))
    p = torch.log(torch.tensor([[1 / 3, 1 / 3, 1 / 3]]))
    fwd = 0.9 * math.log(0.9 * 3) + 2 * 0.05 * math.log(0.05 * 3)
    rev = sum(1 / 3 * math.log((1 / 3) / x) for x in (0.9, 0.05, 0.05))
    assert forward_kl(p, q).item() == pytest.approx(fwd, rel=1e-5)
    assert reverse_kl(p, q).item() == pytest.approx(rev, rel=1e-5)
    assert abs(fwd - rev) > 0.1
    # reverse KL punishes the model for mass where the base has little: a model that puts mass on a
    # base-unlikely token costs more in reverse KL than in forward KL
    assert reverse_kl(p, q).item() > forward_kl(p, q).item()
    g = torch.Generator().manual_seed(3)
    a, b = torch.log_softmax(torch.randn(50, 40, generator=g) * 3, -1), torch.log_softmax(torch.randn(50, 40, generator=g) * 3, -1)
    assert torch.allclose(jensen_shannon(a, b), jensen_shannon(b, a), atol=1e-6)
    assert (jensen_shannon(a, b) <= math.log(2) + 1e-6).all() and (jensen_shannon(a, b) >= -1e-7).all()
    disjoint = jensen_shannon(torch.log_softmax(torch.tensor([[60.0, -60.0]]), -1), torch.log_softmax(torch.tensor([[-60.0, 60.0]]), -1))
    assert disjoint.item() == pytest.approx(math.log(2), rel=1e-4)
    assert forward_kl(a, a).abs().max().item() < 1e-6


def test_lora_reference_is_the_model_with_its_adapter_disabled():
    from peft import LoraConfig, get_peft_model

    base = tiny(0)
    b = batch()
    with torch.no_grad():
        expected = base(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.clone()
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    with torch.no_grad():
        adapted = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    assert not torch.allclose(adapted, expected, atol=1e-4)  # the adapter changes the model ...
    everywhere = torch.ones(2, 6, dtype=torch.bool)
    ref = Reference(None).logits(model, b, everywhere)
    assert torch.allclose(ref, expected[:, :-1].reshape(12, VOCAB), atol=1e-6)  # ... and the reference is the base without it
    assert torch.allclose(Reference(tiny(0)).logits(model, b, everywhere), ref, atol=1e-6)  # a frozen copy: the same
    _, metrics = SFTLoss(AnchorConfig(coef=1.0), Reference(None))(model, b)
    assert metrics["anchor"].item() > 0


@pytest.mark.parametrize("kind", ["kl", "kl_rev", "js"])
def test_closed_form_gradients_match_autograd_of_the_textbook_formulas(kind):
    """The divergences' hand-written backward equals autograd through the plain definitions."""
    import torch.nn.functional as F

    from mixlab.train.objectives import DIVERGENCES

    g = torch.Generator().manual_seed(5)
    z = (torch.randn(6, 11, generator=g, dtype=torch.float64) * 2).requires_grad_()
    base = torch.log_softmax(torch.randn(6, 11, generator=g, dtype=torch.float64) * 2, -1)
    weights = torch.rand(6, generator=g, dtype=torch.float64)

    def textbook(lp: torch.Tensor) -> torch.Tensor:
        if kind == "kl":
            return F.kl_div(lp, base, log_target=True, reduction="none").sum(-1)
        if kind == "kl_rev":
            return F.kl_div(base, lp, log_target=True, reduction="none").sum(-1)
        m = torch.logsumexp(torch.stack([lp, base]), 0) - math.log(2)
        return 0.5 * (F.kl_div(m, lp, log_target=True, reduction="none").sum(-1)
                      + F.kl_div(m, base, log_target=True, reduction="none").sum(-1))

    ours = DIVERGENCES[kind](torch.log_softmax(z, -1), base)
    (grad_ours,) = torch.autograd.grad((ours * weights).sum(), z)
    ref = textbook(torch.log_softmax(z, -1))
    (grad_ref,) = torch.autograd.grad((ref * weights).sum(), z)
    assert torch.allclose(ours, ref, atol=1e-12)
    assert torch.allclose(grad_ours, grad_ref, atol=1e-12)
    assert grad_ours.abs().max() > 1e-3
