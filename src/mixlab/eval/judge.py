"""MT-Bench-style judging: a model answers two-turn questions, a judge model rates each turn 1-10.

This follows FastChat's ``llm_judge`` (single-answer grading) as published:

* answers: both turns, the second with the first answer in the conversation, each category with
  FastChat's generation temperature (``FASTCHAT_TEMPERATURES``; greedy when it is 0);
* prompts: FastChat's ``judge_prompts.jsonl`` read from the shared data (``single-v1`` for turn 1,
  ``single-v1-multi-turn`` for turn 2, and their reference-guided ``single-math-v1*`` versions for
  math, reasoning and coding, which show the judge the GPT-4 reference answers);
* ratings: ``[[rating]]`` in the judgment, else the fallback ``[rating]`` (FastChat's two
  patterns); a judgment with neither is *no rating*: asked again up to ``max_retries`` times, then
  recorded as such and left out of the averages (FastChat records -1 and drops it too);
* scores: per turn, per question (mean of its rated turns), per category, overall (mean of all
  rated turns, FastChat's number); :func:`compare` gives per-question deltas between two models.

Judges are a local Hugging Face model (:class:`LocalJudge`) or any OpenAI-compatible endpoint
(:class:`HTTPJudge`: vLLM, llama.cpp server, ...). Judgments are cached on disk under a hash of
(judge, system prompt, user prompt): the user prompt holds the question and the answer, so the
same answer is never judged twice, across re-runs and runs. An endpoint is probed before a run
starts, so an unreachable one is an error before any generation.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mixlab import atomic
from mixlab.errors import DataError, MixlabError
from mixlab.eval import metrics as M
from mixlab.eval.engine import Context, Generative, Scored, Tick
from mixlab.eval.spec import GenerationSpec, JudgeSpec
from mixlab.settings import cache_dir as _cache_dir
from mixlab.settings import data_dir as _data_dir

RATING = re.compile(r"\[\[(\d+\.?\d*)\]\]")
RATING_FALLBACK = re.compile(r"\[(\d+\.?\d*)\]")


class JudgeUnavailable(MixlabError):
    """The judge cannot be reached or loaded; raised before a run starts."""


# ------------------------------------------------------------------------------- judge prompts


@dataclass(frozen=True)
class JudgePrompt:
    """One row of FastChat's judge_prompts.jsonl."""

    name: str
    system: str
    template: str
    output_format: str


def load_judge_prompts(path: str | Path, data_dir: str | Path | None = None) -> dict[str, JudgePrompt]:
    """FastChat's judge prompts by name (a relative ``path`` is under the data dir)."""
    p = Path(path).expanduser()
    if not p.is_absolute():
        p = _data_dir(data_dir) / p
    if not p.is_file():
        raise DataError("judge prompts not found; expected FastChat's llm_judge/data/judge_prompts.jsonl", p)
    out: dict[str, JudgePrompt] = {}
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out[row["name"]] = JudgePrompt(row["name"], row["system_prompt"], row["prompt_template"],
                                           row["output_format"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise DataError(f"not a judge prompt row ({type(e).__name__}: {e})", p, n) from None
    for name in ("single-v1", "single-v1-multi-turn", "single-math-v1", "single-math-v1-multi-turn"):
        if name not in out:
            raise DataError(f"judge prompt {name!r} missing", p)
    return out


def parse_rating(judgment: str) -> float | None:
    """The rating in a judgment: ``[[x]]`` first, else ``[x]`` (FastChat's patterns), else None."""
    match = RATING.search(judgment) or RATING_FALLBACK.search(judgment)
    return float(match.group(1)) if match else None


def judge_request(prompts: dict[str, JudgePrompt], turns: Sequence[str], answers: Sequence[str], turn: int,
                  reference: Sequence[str] | None) -> tuple[str, str, str]:
    """(prompt name, system prompt, user prompt) to judge ``turn`` (1 or 2) of a conversation,
    reference-guided when ``reference`` turns are given, as FastChat builds them."""
    ref = list(reference or [])
    use_ref = len(ref) >= turn
    if turn == 1:
        prompt = prompts["single-math-v1" if use_ref else "single-v1"]
        fields = {"question": turns[0], "answer": answers[0]}
        if use_ref:
            fields["ref_answer_1"] = ref[0]
    else:
        prompt = prompts["single-math-v1-multi-turn" if use_ref else "single-v1-multi-turn"]
        fields = {"question_1": turns[0], "question_2": turns[1], "answer_1": answers[0], "answer_2": answers[1]}
        if use_ref:
            fields.update(ref_answer_1=ref[0], ref_answer_2=ref[1])
    return prompt.name, prompt.system, prompt.template.format(**fields)


# ------------------------------------------------------------------------------- backends


class JudgeBackend(Protocol):
    """Something that answers judge prompts. ``identity`` names it in cache keys and results."""

    identity: str

    def check(self) -> None: ...

    def complete_many(self, requests: Sequence[tuple[str, str]]) -> list[str | Exception]: ...


class HTTPJudge:
    """An OpenAI-compatible ``/chat/completions`` endpoint (vLLM, llama.cpp server, OpenAI).

    Requests are sent with ``urllib`` (no client library needed for one POST), ``parallel`` at a
    time, at temperature 0 with ``max_tokens`` as FastChat does. A connection error or a 5xx is
    retried ``http_retries`` times with a short back-off, then that judgment is an error.
    """

    def __init__(self, base_url: str, model: str, api_key: str | None = None, max_tokens: int = 2048,
                 timeout: float = 120.0, parallel: int = 4, http_retries: int = 3):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.max_tokens = max_tokens
        self.timeout = timeout
        self.parallel = max(1, parallel)
        self.http_retries = http_retries
        self.identity = f"openai-compatible:{model}:max_tokens={max_tokens}"

    def _open(self, path: str, body: dict | None, timeout: float) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode("utf-8") if body is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, headers=headers,
                                     method="POST" if body is not None else "GET")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read().decode("utf-8"))

    def check(self) -> None:
        """Probe ``GET /models``; any HTTP answer means the server is up, no answer is an error."""
        try:
            self._open("/models", None, timeout=min(self.timeout, 10.0))
        except urllib.error.HTTPError:
            return  # the server answered (some servers have no /models)
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            raise JudgeUnavailable(
                f"judge endpoint {self.base_url} is unreachable ({reason}); nothing was run. Start the "
                "server or fix --judge-url (an OpenAI-compatible base URL such as http://127.0.0.1:8000/v1)"
            ) from None

    def complete(self, system: str, user: str) -> str:
        body = {"model": self.model, "temperature": 0, "max_tokens": self.max_tokens,
                "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]}
        for attempt in range(self.http_retries + 1):
            try:
                reply = self._open("/chat/completions", body, self.timeout)
                return str(reply["choices"][0]["message"]["content"] or "")
            except urllib.error.HTTPError as e:
                if e.code < 500 or attempt == self.http_retries:
                    detail = e.read().decode("utf-8", errors="replace")[:300]
                    raise MixlabError(f"judge endpoint answered HTTP {e.code}: {detail}") from None
            except (urllib.error.URLError, OSError) as e:
                if attempt == self.http_retries:
                    raise MixlabError(f"judge endpoint failed: {getattr(e, 'reason', e)}") from None
            except (KeyError, IndexError, TypeError, ValueError) as e:
                raise MixlabError(f"judge endpoint reply is not a chat completion: {e}") from None
            time.sleep(0.5 * 2 ** attempt)
        raise AssertionError("unreachable")

    def complete_many(self, requests: Sequence[tuple[str, str]]) -> list[str | Exception]:
        def one(req: tuple[str, str]) -> str | Exception:
            try:
                return self.complete(*req)
            except MixlabError as e:
                return e

        with ThreadPoolExecutor(max_workers=self.parallel) as pool:
            return list(pool.map(one, requests))


class LocalJudge:
    """A local Hugging Face chat model as judge (greedy, its chat template, batched)."""

    def __init__(self, loaded, max_tokens: int = 2048, batch_size: int = 8, max_length: int | None = None):
        from mixlab.eval.generation import Generator

        self.loaded = loaded
        self.max_tokens = max_tokens
        self.generator = Generator(loaded.model, loaded.tokenizer, batch_size=batch_size, max_length=max_length)
        self.identity = f"hf:{loaded.name}:{loaded.adapter or ''}:max_tokens={max_tokens}"

    def check(self) -> None:
        return None  # loading it already proved it works

    def complete_many(self, requests: Sequence[tuple[str, str]]) -> list[str | Exception]:
        spec = GenerationSpec(max_new_tokens=self.max_tokens, chat_template=True)
        convs = [[{"role": "system", "content": s}, {"role": "user", "content": u}] for s, u in requests]
        return [c[0].text for c in self.generator.generate(convs, spec)]


# ------------------------------------------------------------------------------- cache


class JudgmentCache:
    """Judgments on disk, one JSON file per hash of (judge identity, system prompt, user prompt)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else _cache_dir() / "judgments"

    @staticmethod
    def key(identity: str, system: str, user: str) -> str:
        blob = json.dumps([identity, system, user], ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads(self._path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def put(self, key: str, record: dict[str, Any]) -> None:
        atomic.write_json(self._path(key), record)


# ------------------------------------------------------------------------------- the run


@dataclass
class _Pending:
    row: int
    turn: int
    prompt_name: str
    system: str
    user: str
    key: str


def generate_answers(items, generator, decoding, spec: JudgeSpec) -> list[list[str]]:
    """Answers to every turn of every item, turn by turn (turn k sees answers 1..k-1), each item
    with its category's temperature; returns one list of answer texts per item."""
    answers: list[list[str]] = [[] for _ in items]
    for turn in range(max(len(it.turns) for it in items)):
        by_temp: dict[float, list[int]] = {}
        for i, it in enumerate(items):
            if turn < len(it.turns):
                by_temp.setdefault(spec.temperatures.get(it.category, spec.default_temperature), []).append(i)
        for temp, idx in sorted(by_temp.items()):
            convs = []
            for i in idx:
                conv = []
                for k in range(turn):
                    conv += [{"role": "user", "content": items[i].turns[k]},
                             {"role": "assistant", "content": answers[i][k]}]
                convs.append(conv + [{"role": "user", "content": items[i].turns[turn]}])
            step = decoding.model_copy(update={"temperature": temp if temp >= 1e-4 else 0.0, "n": 1})
            for i, completions in zip(idx, generator.generate(convs, step), strict=True):
                answers[i].append(completions[0].text.strip())
    return answers


def judge_answers(items, answers: list[list[str]], backend: JudgeBackend, spec: JudgeSpec,
                  prompts: dict[str, JudgePrompt], cache: JudgmentCache,
                  on_progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Rate the first two turns of every answered item; per-item rows with each turn's rating,
    judgment, prompt, attempts and status (``rated``, ``no_rating`` or ``error``).
    ``on_progress(k)`` counts finished turn judgments."""
    rows: list[dict[str, Any]] = []
    pending: list[_Pending] = []
    for r, (it, ans) in enumerate(zip(items, answers, strict=True)):
        use_ref = it.category in spec.reference_categories and it.reference_turns
        row = {"id": it.id, "category": it.category, "turns": []}
        for turn in range(1, min(len(it.turns), 2) + 1):
            name, system, user = judge_request(prompts, it.turns, ans, turn, it.reference_turns if use_ref else None)
            key = JudgmentCache.key(backend.identity, system, user)
            entry = {"turn": turn, "question": it.turns[turn - 1], "answer": ans[turn - 1], "judge_prompt": name,
                     "rating": None, "judgment": None, "attempts": 0, "status": "pending", "cached": False}
            hit = cache.get(key)
            if hit is not None and hit.get("rating") is not None:
                entry.update(rating=hit["rating"], judgment=hit["judgment"], status="rated", cached=True)
            else:
                pending.append(_Pending(r, turn, name, system, user, key))
            row["turns"].append(entry)
        rows.append(row)
    if on_progress is not None:
        on_progress(sum(len(r["turns"]) for r in rows) - len(pending))
    for attempt in range(spec.max_retries + 1):
        if not pending:
            break
        replies = backend.complete_many([(p.system, p.user) for p in pending])
        still = []
        for p, reply in zip(pending, replies, strict=True):
            entry = rows[p.row]["turns"][p.turn - 1]
            entry["attempts"] = attempt + 1
            if isinstance(reply, Exception):
                entry.update(status="error", judgment=None, error=str(reply))
                continue  # transport errors were already retried by the backend
            rating = parse_rating(reply)
            entry["judgment"] = reply
            if rating is None:
                entry["status"] = "no_rating"
                still.append(p)
                continue
            entry.update(rating=rating, status="rated")
            cache.put(p.key, {"judge": backend.identity, "prompt": p.prompt_name, "rating": rating, "judgment": reply})
        if on_progress is not None:
            on_progress(len(pending) - (len(still) if attempt < spec.max_retries else 0))
        pending = still
    for row in rows:
        rated = [t["rating"] for t in row["turns"] if t["rating"] is not None]
        row["score"] = sum(rated) / len(rated) if rated else None
    return rows


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Overall and per-turn means over rated turns (FastChat's numbers), per-category means,
    and how many turns got no rating or failed."""
    turns = [t for r in rows for t in r["turns"]]
    rated = [t for t in turns if t["rating"] is not None]

    def mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else float("nan")

    out: dict[str, Any] = {
        "n": len(rows),
        "judge_score": mean([t["rating"] for t in rated]),
        "judge_score_turn1": mean([t["rating"] for t in rated if t["turn"] == 1]),
        "judge_score_turn2": mean([t["rating"] for t in rated if t["turn"] == 2]),
        "n_rated": len(rated),
        "n_no_rating": sum(t["status"] == "no_rating" for t in turns),
        "n_errors": sum(t["status"] == "error" for t in turns),
    }
    out["categories"] = category_scores(rows)
    return out


def category_scores(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Mean rating of the rated turns in each category."""
    acc: dict[str, list[float]] = {}
    for r in rows:
        for t in r["turns"]:
            if t["rating"] is not None:
                acc.setdefault(r["category"], []).append(t["rating"])
    return {c: sum(v) / len(v) for c, v in sorted(acc.items())}


def compare(rows_a: list[dict[str, Any]], rows_b: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-question deltas (B - A) of the question score, over questions both models got a score
    for; with the mean delta, per-category mean deltas, and how many questions B won/lost/tied."""
    a = {r["id"]: r for r in rows_a if r.get("score") is not None}
    b = {r["id"]: r for r in rows_b if r.get("score") is not None}
    common = [q for q in a if q in b]
    per_question = [{"id": q, "category": a[q]["category"], "a": a[q]["score"], "b": b[q]["score"],
                     "delta": b[q]["score"] - a[q]["score"]} for q in common]
    by_cat: dict[str, list[float]] = {}
    for d in per_question:
        by_cat.setdefault(d["category"], []).append(d["delta"])
    deltas = [d["delta"] for d in per_question]
    return {
        "n": len(per_question),
        "mean_delta": sum(deltas) / len(deltas) if deltas else float("nan"),
        "categories": {c: sum(v) / len(v) for c, v in sorted(by_cat.items())},
        "wins": sum(x > 0 for x in deltas), "losses": sum(x < 0 for x in deltas), "ties": sum(x == 0 for x in deltas),
        "per_question": per_question,
    }


def compare_runs(dir_a: str | Path, dir_b: str | Path, task: str = "mt_bench") -> dict[str, Any]:
    """:func:`compare` on the judge task's items.jsonl of two evaluation output directories."""
    loaded = []
    for d in (dir_a, dir_b):
        path = Path(d) / "tasks" / task / "items.jsonl"
        if not path.is_file():
            raise MixlabError(f"{path} not found: evaluate both models on {task!r} first")
        loaded.append([json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()])
    return compare(*loaded)


def run_judge_task(items, generator, decoding, backend: JudgeBackend, spec: JudgeSpec,
                   data_dir: str | Path | None = None, cache: JudgmentCache | None = None,
                   on_progress: Callable[[int], None] | None = None) -> tuple[dict[str, Any], list[dict]]:
    """Answer both turns of every item with ``generator``, have ``backend`` rate them, and return
    (summary, per-item rows with answers, judgments and ratings)."""
    prompts = load_judge_prompts(spec.prompts, data_dir)
    answers = generate_answers(items, generator, decoding, spec)
    rows = judge_answers(items, answers, backend, spec, prompts, cache or JudgmentCache(), on_progress)
    return summarize(rows), rows


class JudgeEngine(Generative):
    """The ``judge`` kind: the model answers every turn, the run's judge rates the first two."""

    kind = "judge"
    metrics = M.JUDGE_METRICS
    needs_judge = True
    blocks = ("judge",)

    def prepare(self, spec, docs: list[dict], pool: list[dict]) -> list:
        from mixlab.eval.items import conversations

        return conversations(spec, docs, pool)

    def check(self, names: Sequence[str], ctx: Context) -> None:
        if ctx.judge is None:
            raise MixlabError(f"task(s) {', '.join(names)} need a judge: pass --judge-url (an OpenAI-compatible "
                              "endpoint) or --judge-model (a local Hugging Face model)")
        ctx.judge.check()

    def units(self, spec, items) -> int:
        return len(items) + sum(min(len(it.turns), 2) for it in items)  # answers, then turn judgments

    def extra(self, spec, ctx: Context) -> dict[str, Any]:
        return super().extra(spec, ctx) | {"judge": ctx.judge.identity}

    def score(self, spec, items, ctx: Context, tick: Tick) -> Scored:
        jspec = spec.judging
        prompts = load_judge_prompts(jspec.prompts, ctx.data_dir)
        answers = generate_answers(items, ctx.generator, spec.decoding, jspec)
        tick(len(items))
        rows = judge_answers(items, answers, ctx.judge, jspec, prompts, JudgmentCache(ctx.judge_cache), tick)
        summary = summarize(rows)
        summary["stderr"] = {"judge_score": M.mean_stderr([r["score"] for r in rows if r["score"] is not None])}
        return summary, rows
