"""Answer verifiers: plain functions shared by evaluation, GRPO rewards and distillation filters.

Every verifier has the signature ``verify(prediction: str, reference) -> Verdict`` and never
raises on what a model wrote: an answer that does not parse scores 0 and says why in
``Verdict.reason``. They are registered by name in ``VERIFIERS``; ``get_verifier(name)`` looks
one up with an error that lists the known names.
"""

from __future__ import annotations

import collections
import dataclasses
import re
import string
import threading
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from mixlab.errors import MixlabError


@dataclasses.dataclass(frozen=True)
class Verdict:
    """A verifier's judgement: ``score`` in [0, 1] (1/0 for right/wrong, F1 in between)."""

    score: float
    extracted: str | None = None  # the answer as read from the prediction, if any
    reason: str = ""  # why the score is 0 (no answer found, mismatch, ...)

    @property
    def correct(self) -> bool:
        return self.score >= 1.0


Verifier = Callable[[str, Any], Verdict]

# ----------------------------------------------------------------------------- numeric (GSM8K)

# A number as written in prose: optional sign, thousands groups "1,234,567" or plain digits,
# optional decimals; also ".5". A sign counts only when it does not follow a digit ("3-5").
_NUMBER = re.compile(r"(?<![\d.])-?(?:(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)")
_FINAL = "####"


def extract_number(text: str) -> str | None:
    """The answer number in ``text``: the first number after the last ``####`` if there is one
    (GSM8K solution format), else the last number in the text. Commas, ``$``, ``%`` and unit
    words around it are ignored. Returns the number with grouping commas removed, or None."""
    if _FINAL in text:
        after = text.rsplit(_FINAL, 1)[1]
        found = _NUMBER.findall(after)
        if found:
            return found[0].replace(",", "")
    found = _NUMBER.findall(text)
    return found[-1].replace(",", "") if found else None


def verify_numeric(prediction: str, reference: str | float | int) -> Verdict:
    """GSM8K-style: the prediction's final number equals the reference's, numerically
    (``18``, ``18.00``, ``$18`` and ``1,8`` vs ``18``: equal, equal, equal, not)."""
    ref_text = str(reference)
    ref = extract_number(ref_text)
    if ref is None:
        return Verdict(0.0, None, f"reference has no number: {ref_text[:80]!r}")
    got = extract_number(prediction)
    if got is None:
        return Verdict(0.0, None, "no number in the prediction")
    try:
        same = Decimal(got) == Decimal(ref)
    except InvalidOperation:
        return Verdict(0.0, got, f"unparsable number {got!r}")
    return Verdict(1.0 if same else 0.0, got, "" if same else f"{got} != {ref}")


# ----------------------------------------------------------------------------- math (MATH)


def last_boxed(text: str) -> str | None:
    """The contents of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text`` with braces
    balanced, or None. MATH solutions mark their final answer this way; a few write
    ``\\boxed 9``, where the answer is the next token."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    body = text[start + (6 if text.startswith("\\boxed", start) else 5) :]
    if not body.lstrip().startswith("{"):
        token = body.split(None, 1)[0].split("$")[0] if body.strip() else ""
        return token or None
    depth, brace = 0, body.index("{")
    for i in range(brace, len(body)):
        depth += {"{": 1, "}": -1}.get(body[i], 0)
        if depth == 0:
            return body[brace + 1 : i]
    return None


def verify_math(prediction: str, reference: str) -> Verdict:
    """MATH-style equivalence with ``math-verify``: the prediction's answer (boxed first,
    then the last expression) is mathematically equal to the reference (``1/2`` = ``0.5`` =
    ``\\frac12``). ``reference`` may be a bare answer or a full solution with ``\\boxed``."""
    from math_verify import parse, verify

    # math-verify's timeouts use SIGALRM, which only the main thread may set.
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    try:
        reference = reference.strip()
        gold_text = reference if "\\boxed" in reference else f"${reference}$"
        gold = parse(gold_text, parsing_timeout=timeout)
        if not gold:
            return Verdict(0.0, None, f"reference does not parse: {reference[:80]!r}")
        pred = parse(prediction, parsing_timeout=timeout)
        if not pred:
            return Verdict(0.0, None, "no answer found in the prediction")
        ok = verify(gold, pred, timeout_seconds=timeout)
    except Exception as e:  # noqa: BLE001 - a verifier must score bad output, not crash on it
        return Verdict(0.0, None, f"math-verify failed: {type(e).__name__}: {e}")
    shown = str(pred[-1]) if pred else None
    why = "" if ok else f"{shown} is not equivalent to the reference"
    return Verdict(1.0 if ok else 0.0, shown, why)


# ----------------------------------------------------------------------------- QA (SQuAD-style)
# Hand-written because the official SQuAD script is not an importable library; this follows
# its normalize_answer / f1_score definitions exactly (lower, drop punctuation, drop a/an/the,
# collapse whitespace; F1 over bags of tokens; empty vs empty is a match for unanswerables).

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalization: lowercase, strip punctuation and articles, squash whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _golds(reference: str | Sequence[str]) -> list[str]:
    """All acceptable answers; no answers at all means 'unanswerable' (the empty string)."""
    golds = [reference] if isinstance(reference, str) else list(reference)
    return golds or [""]


def _token_f1(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((collections.Counter(pred) & collections.Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def verify_exact(prediction: str, reference: str | Sequence[str]) -> Verdict:
    """Exact match after SQuAD normalization, against any of the gold answers (aliases)."""
    got = normalize_answer(prediction)
    ok = any(got == normalize_answer(g) for g in _golds(reference))
    return Verdict(1.0 if ok else 0.0, got, "" if ok else "matches no gold answer")


def verify_f1(prediction: str, reference: str | Sequence[str]) -> Verdict:
    """Token F1 after SQuAD normalization, the max over the gold answers (aliases)."""
    best = max(_token_f1(prediction, g) for g in _golds(reference))
    return Verdict(best, normalize_answer(prediction), "" if best > 0 else "no token overlap")


# ----------------------------------------------------------------------------- multiple choice

_LETTER_PATTERNS = [
    re.compile(r"answer\s*(?:is|:)?\s*[:\-]?\s*\(?([A-Z])\)?(?![A-Za-z])", re.IGNORECASE),
    re.compile(r"^\s*\(?([A-Z])\)?(?:[.):]|\s*$)"),
    re.compile(r"\(([A-Z])\)"),
]


def extract_choice_letter(text: str) -> str | None:
    """The chosen option letter: "The answer is (B)", "B.", "(C)", or a lone "D"."""
    for pattern in _LETTER_PATTERNS:
        found = pattern.findall(text)
        if found:
            return found[-1].upper()
    return None


def verify_choice(prediction: str, reference: str | int | Mapping[str, Any]) -> Verdict:
    """Multiple choice: the letter the prediction picks equals the gold one.

    ``reference`` is the gold letter, a 0-based index, or ``{"label": i, "choices": [...]}``;
    with choices given, a prediction that states exactly one option's text also counts.
    """
    choices: Sequence[str] = ()
    if isinstance(reference, Mapping):
        choices, reference = reference.get("choices", ()), reference["label"]
    gold = chr(ord("A") + reference) if isinstance(reference, int) else str(reference).strip().upper()
    got = extract_choice_letter(prediction)
    if got is None and choices:
        said = normalize_answer(prediction)
        hits = [i for i, c in enumerate(choices) if normalize_answer(c) == said]
        got = chr(ord("A") + hits[0]) if len(hits) == 1 else None
    if got is None:
        return Verdict(0.0, None, "no option letter in the prediction")
    return Verdict(1.0 if got == gold else 0.0, got, "" if got == gold else f"{got} != {gold}")


# ----------------------------------------------------------------------------- code

_FENCE = re.compile(r"```[ \t]*(?:python|py|Python)?[ \t]*\n(.*?)```", re.DOTALL)


def extract_code(text: str) -> str:
    """The program in a model's reply: the first fenced code block if there is one, else all."""
    found = _FENCE.search(text)
    return found.group(1) if found else text


def verify_code(prediction: str, reference: Mapping[str, Any]) -> Verdict:
    """Run the prediction against tests in the sandbox (``mixlab.eval.sandbox``).

    ``reference``: ``{"tests": str | list[str], "entry_point": str?, "setup": str?,
    "prompt": str?, "timeout": float?}``. With ``prompt`` (HumanEval), the program is prompt +
    completion unless the completion already defines the entry point itself; the prompt's helpers
    also run on the tests' side, so a completion cannot redefine what the tests check with.
    Scores 1 only when the sandbox's test runner proves every test ran and passed.
    """
    from mixlab.eval.sandbox import run_tests

    code = extract_code(prediction)
    prompt, entry = reference.get("prompt", ""), reference.get("entry_point")
    if prompt and not (entry and re.search(rf"^def {re.escape(entry)}\b", code, re.MULTILINE)):
        code = prompt + code
    result = run_tests(
        code,
        reference["tests"],
        entry_point=entry,
        setup=reference.get("setup", ""),
        timeout=float(reference.get("timeout", 10.0)),
        prompt=prompt,
    )
    if result.passed:
        return Verdict(1.0)
    return Verdict(0.0, None, f"{result.status}: {result.reason}")


# ----------------------------------------------------------------------------- pass@k


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` passed (Chen et al. 2021, Codex).

    ``1 - C(n-c, k) / C(n, k)``, computed as ``1 - prod_{i=n-c+1}^{n} (1 - k/i)`` so large
    ``n`` neither overflows nor loses precision.
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    prob_all_fail = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_fail *= 1.0 - k / i
    return 1.0 - prob_all_fail


# ----------------------------------------------------------------------------- registry

VERIFIERS: dict[str, Verifier] = {
    "numeric": verify_numeric,
    "math": verify_math,
    "exact": verify_exact,
    "f1": verify_f1,
    "choice": verify_choice,
    "code": verify_code,
}


def get_verifier(name: str) -> Verifier:
    """The verifier registered as ``name``; a clear error naming the known ones otherwise."""
    try:
        return VERIFIERS[name]
    except KeyError:
        known = ", ".join(sorted(VERIFIERS))
        raise MixlabError(f"unknown verifier {name!r}; known verifiers: {known}") from None
