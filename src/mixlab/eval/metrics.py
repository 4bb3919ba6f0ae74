"""Metric formulas shared by evaluation and in-loop training evaluation."""

from __future__ import annotations

import math
from collections.abc import Sequence


def bits_per_byte(nll_nats: float, n_bytes: int) -> float:
    """Bits per UTF-8 byte from a summed negative log-likelihood in nats (OLMo's definition).

    ``bpb = -sum(log p(token)) / (n_bytes * ln 2)``. Tokenizer-independent, so models with different
    vocabularies are comparable.
    """
    if n_bytes <= 0:
        raise ValueError("bits_per_byte needs a continuation of at least one byte")
    return nll_nats / (n_bytes * math.log(2))


# ---------------------------------------------------------------- multiple choice (lm-eval definitions)
#
# Each function takes one item's summed log-likelihoods (one per choice) and returns that item's score;
# the task score is the mean over items. Definitions follow lm-evaluation-harness's
# ``ConfigurableTask.process_results`` so numbers are comparable with published ones.

MC_METRICS = ("acc", "acc_norm", "acc_bytes", "mc1", "mc2")
BPB_METRICS = ("bpb",)
IFEVAL_METRICS = ("prompt_level_strict_acc", "prompt_level_loose_acc", "inst_level_strict_acc",
                  "inst_level_loose_acc")
# Each `generate` metric is the mean of one verifier's score (mixlab.eval.verifiers; "ifeval" is
# lm-eval's instruction checkers through mixlab.eval.ifeval) over items.
GENERATE_VERIFIER: dict[str, str] = {
    "numeric_match": "numeric",  # GSM8K: the final number
    "math_verify": "math",  # MATH: math-verify equivalence
    "exact_match": "exact",  # SQuAD-normalized exact match against any alias
    "f1": "f1",  # SQuAD token F1, max over aliases
    "choice_match": "choice",  # the option letter a generated answer picks
    **{m: "ifeval" for m in IFEVAL_METRICS},
}
GENERATE_METRICS = tuple(GENERATE_VERIFIER)
# `code`: pass@<k> for any k up to the number of samples; "pass@k" means k = generation.n.
CODE_METRICS = ("pass@1", "pass@k")
JUDGE_METRICS = ("judge_score",)


def argmax(values: Sequence[float]) -> int:
    """First index of the maximum (numpy's tie rule, which lm-eval relies on)."""
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best


def _is_gold(pred: int, gold: int | Sequence[int]) -> float:
    return 1.0 if (pred in gold if isinstance(gold, (list, tuple)) else pred == gold) else 0.0


def mc_scores(lls: Sequence[float], choices: Sequence[str], gold: int | list[int]) -> dict[str, float]:
    """acc / acc_norm / acc_bytes of one item.

    ``acc_norm`` divides by the character length of the choice text (without the target delimiter),
    ``acc_bytes`` by its UTF-8 byte length, exactly as lm-eval does. ``gold`` may be a list of
    acceptable indices (lm-eval's multiple-target case).
    """
    norm = [ll / float(len(c)) for ll, c in zip(lls, choices, strict=True)]
    per_byte = [ll / float(len(c.encode("utf-8"))) for ll, c in zip(lls, choices, strict=True)]
    return {
        "acc": _is_gold(argmax(lls), gold),
        "acc_norm": _is_gold(argmax(norm), gold),
        "acc_bytes": _is_gold(argmax(per_byte), gold),
    }


def mc2_score(lls: Sequence[float], labels: Sequence[int]) -> float:
    """TruthfulQA MC2: probability mass on the true answers, normalized over all answers.

    lm-eval exponentiates the log-likelihoods directly, which underflows to 0/0 for long answers
    (summed log-probabilities below about -745); shifting by the largest one first gives the same
    ratio wherever lm-eval's is defined and a finite one where it is not."""
    top = max(lls)
    probs = [math.exp(ll - top) for ll in lls]
    total = sum(probs)
    return sum(p for p, lab in zip(probs, labels, strict=True) if lab == 1) / total


def mean_stderr(values: Sequence[float]) -> float:
    """Standard error of the mean with the sample standard deviation (lm-eval's ``mean_stderr``)."""
    n = len(values)
    if n < 2:
        return float("nan")
    mu = sum(values) / n
    var = sum((v - mu) ** 2 for v in values) / (n - 1)
    return math.sqrt(var / n)


def corpus_bits_per_byte(nll_nats: Sequence[float], n_bytes: Sequence[int]) -> float:
    """Byte-weighted bpb over a whole task: total NLL over total bytes."""
    return bits_per_byte(float(sum(nll_nats)), int(sum(n_bytes)))


def pass_k(metric: str, n: int) -> int | None:
    """The k of a ``pass@<k>`` metric name (``pass@k`` is k = n), or None if it is not one."""
    if not metric.startswith("pass@"):
        return None
    k = metric.removeprefix("pass@")
    if k == "k":
        return n
    return int(k) if k.isdigit() and int(k) > 0 else None

