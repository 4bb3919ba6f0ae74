"""Verifiable answers: which verifier checks a record, against which reference, and the score of a reply.

GRPO rewards and distillation filters both need, for every training record, a verifier from
:mod:`mixlab.eval.verifiers` and the reference it compares with. ``auto`` picks by answer type, as
the evaluation tasks do: ``numeric`` (GSM8K, toyworld sums), ``math`` for the MATH dataset
(math-verify), ``exact`` for other text answers (SQuAD normalization, against every TriviaQA alias),
``choice`` for multiple choice and ``code`` (the record's tests in the sandbox). A record with
nothing to verify against (an empty reference, code without tests) is an error before any work.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from mixlab.data.records import Record
from mixlab.errors import DataError
from mixlab.eval.generation import cut_at_stop
from mixlab.eval.verifiers import get_verifier

# which verifiers can judge an answer of each type
COMPATIBLE: dict[str, tuple[str, ...]] = {
    "numeric": ("numeric", "math", "exact", "f1"),
    "text": ("exact", "f1", "math", "numeric"),
    "choice": ("choice",),
    "code": ("code",),
}
MATH_DATASETS = ("math",)


def auto_verifier(record: Record) -> str:
    """The verifier evaluation uses for a record of this answer type and dataset."""
    if record.answer_type == "text" and record.dataset in MATH_DATASETS:
        return "math"
    return {"numeric": "numeric", "text": "exact", "choice": "choice", "code": "code"}[record.answer_type]


def reference_for(record: Record, verifier: str) -> Any | None:
    """What ``verifier`` compares a reply of ``record`` with; None when the record cannot be verified."""
    m = record.metadata
    if verifier == "code":
        tests = m.get("test_list") or m.get("test")
        if not tests:
            return None
        ref = {"tests": tests, "setup": m.get("test_setup_code", "")}
        if isinstance(tests, str) and m.get("entry_point"):  # HumanEval: a check(candidate) function
            ref["entry_point"] = m["entry_point"]
        if record.dataset == "humaneval":
            ref["prompt"] = record.question
        return ref
    if verifier == "choice":
        if record.label is None:
            return None
        return {"label": record.label, "choices": record.choices or []}
    answer = (record.reference_answer or "").strip()
    if not answer:
        return None
    if verifier in ("exact", "f1"):
        aliases = [a for a in m.get("aliases") or [] if isinstance(a, str)]
        return [answer, *[a for a in aliases if a != answer]]
    return answer


@dataclass(frozen=True)
class Check:
    """How one record is verified."""

    verifier: str
    reference: Any


def plan_checks(found: Sequence[tuple[str, Record]], verifier: str | dict[str, str] = "auto",
                field: str = "verifier") -> list[Check]:
    """A :class:`Check` per record; a clear error when a record has no verifiable answer.

    ``verifier`` is ``auto``, one verifier name for every record, or ``{dataset: name}`` (``auto``
    for the datasets it does not name). ``field`` names the config field in error messages.
    """
    checks, bad, wrong = [], [], []
    for where, r in found:
        name = verifier.get(r.dataset, "auto") if isinstance(verifier, dict) else verifier
        if name == "auto":
            name = auto_verifier(r)
        get_verifier(name)  # unknown name: an error listing the known ones
        if name not in COMPATIBLE.get(r.answer_type, ()):
            wrong.append(f"{where} ({r.answer_type} answer, verifier {name})")
            continue
        ref = reference_for(r, name)
        if ref is None:
            bad.append(f"{where} ({r.answer_type} answer)")
            continue
        checks.append(Check(name, ref))
    if wrong:
        raise DataError(f"{field}: {len(wrong)} record(s) have an answer type the verifier cannot check, e.g. "
                        f"{wrong[0]}; verifiers per answer type: "
                        + "; ".join(f"{t}: {', '.join(v)}" for t, v in COMPATIBLE.items()))
    if bad:
        raise DataError(f"{len(bad)} record(s) have no verifiable answer (empty reference answer, no label, or code "
                        f"without tests), e.g. {bad[0]}; {field} needs records whose answers can be checked")
    return checks


def score(text: str, check: Check, stop: Sequence[str] = ()) -> float:
    """The verifier's score of a reply, cut at the first stop sequence (never raises on model output)."""
    if stop:
        text, _ = cut_at_stop(text, stop)
    return float(get_verifier(check.verifier)(text, check.reference).score)


def score_many(texts: Sequence[str], checks: Sequence[Check], stop: Sequence[str] = (), workers: int = 4) -> list[float]:
    """Scores of many replies; sandboxed code runs ``workers`` at a time, everything else inline."""
    if any(c.verifier == "code" for c in checks):
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            return list(pool.map(lambda tc: score(tc[0], tc[1], stop), zip(texts, checks, strict=True)))
    return [score(t, c, stop) for t, c in zip(texts, checks, strict=True)]
