"""`judge` kind against a real HTTP server started here: an OpenAI-compatible /chat/completions
endpoint (http.server) serving a real local model. In "rate" mode the served model picks the rating
by log-likelihood of "1".."10" after the judge prompt (the project's Scorer); in "fallback" mode it
writes it as "[k]"; in "chatter" mode it answers with free generation (a random model: no rating)."""

from __future__ import annotations

import json
import math
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "eval"))
import tiny_lm  # noqa: E402

from mixlab.errors import MixlabError  # noqa: E402
from mixlab.eval import judge as J  # noqa: E402
from mixlab.eval import runner  # noqa: E402
from mixlab.eval.scoring import Scorer  # noqa: E402
from mixlab.eval.tasks import load_task  # noqa: E402
from mixlab.models.pretrained import load_model  # noqa: E402

QUESTIONS = ["81", "101", "111", "121"]  # writing, reasoning, math, coding


class ModelServer:
    """A chat/completions server around a local HF model, counting the requests it answers."""

    def __init__(self, model_dir: Path, mode: str):
        loaded = load_model(str(model_dir))
        self.tok, self.model, self.mode = loaded.tokenizer, loaded.model, mode
        self.scorer = Scorer(loaded.model, loaded.tokenizer, batch_size=10, max_length=512)
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self.replies: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, obj: dict) -> None:
                data = json.dumps(obj).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send({"object": "list", "data": [{"id": "tiny-judge", "object": "model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    reply = server.answer(body["messages"])
                    server.requests.append(body)
                    server.replies.append(reply)
                self._send({"choices": [{"index": 0, "message": {"role": "assistant", "content": reply}}]})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def answer(self, messages: list[dict]) -> str:
        text = "\n".join(m["content"] for m in messages)[-1500:]
        if self.mode == "chatter":
            ids = self.tok(text[-300:], return_tensors="pt").input_ids
            with torch.inference_mode():
                out = self.model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=self.tok.eos_token_id)
            return self.tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        ctx = text + "\nRating: [["
        lls = [s.logprob for s in self.scorer.score_groups([[(ctx, f"{k}]]") for k in range(1, 11)]])[0]]
        k = max(range(10), key=lambda i: lls[i]) + 1
        return f"Brief explanation. Rating: [[{k}]]" if self.mode == "rate" else f"Score: [{k}] overall."

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_lm.build(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def answerer(tiny):
    return load_model(str(tiny))


def _task(tmp_path: Path, questions=QUESTIONS, **judge) -> Path:
    spec = {"name": "mt_bench_subset", "kind": "judge",
            "data": {"source": "mt_bench", "where": {"original_id": list(questions)}},
            "prompt": "{{question}}", "metrics": ["judge_score"],
            "generation": {"max_new_tokens": 8, "chat_template": True}, "judge": judge}
    path = tmp_path / "mt_bench_subset.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _items(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "tasks" / "mt_bench_subset" / "items.jsonl").read_text().splitlines()]


def test_judge_over_http_rates_both_turns_caches_and_compares(tiny, answerer, tmp_path, data_dir):
    server = ModelServer(tiny, "rate")
    try:
        spec = load_task(_task(tmp_path))
        backend = J.HTTPJudge(server.url, "tiny-judge", max_tokens=64)
        cache = tmp_path / "cache"
        res = runner.evaluate(answerer, [spec], tmp_path / "a", judge=backend, judge_cache=cache)["mt_bench_subset"]
        assert len(server.requests) == 8  # 4 questions x 2 turns, each judged once
        assert res["n"] == 4 and res["n_rated"] == 8 and res["n_no_rating"] == 0
        rows = _items(tmp_path / "a")
        ratings = [t["rating"] for r in rows for t in r["turns"]]
        served = sorted(float(x.split("[[")[1].split("]]")[0]) for x in server.replies)
        assert sorted(ratings) == served and all(1 <= x <= 10 for x in ratings)
        assert res["judge_score"] == pytest.approx(sum(ratings) / 8)
        assert res["judge_score_turn1"] == pytest.approx(sum(r["turns"][0]["rating"] for r in rows) / 4)
        by_cat = {r["category"]: r for r in rows}
        assert set(by_cat) == {"writing", "reasoning", "math", "coding"} == set(res["categories"])
        assert res["categories"]["math"] == pytest.approx(by_cat["math"]["score"])
        # reference-guided prompts for math/reasoning/coding, with the GPT-4 reference in the request
        assert [t["judge_prompt"] for t in by_cat["writing"]["turns"]] == ["single-v1", "single-v1-multi-turn"]
        assert [t["judge_prompt"] for t in by_cat["math"]["turns"]] == ["single-math-v1", "single-math-v1-multi-turn"]
        math_req = [b for b in server.requests if "[The Start of Reference Answer]" in b["messages"][1]["content"]]
        assert len(math_req) == 3 and all(b["temperature"] == 0 for b in server.requests)
        # turn 2 was answered with turn 1 in the conversation and both are in the multi-turn prompt
        t2 = by_cat["writing"]["turns"][1]
        assert t2["question"].startswith("Rewrite your previous response")
        # a re-run elsewhere costs no request: every judgment comes from the cache
        res2 = runner.evaluate(answerer, [spec], tmp_path / "b", judge=backend, judge_cache=cache)["mt_bench_subset"]
        assert len(server.requests) == 8 and res2["judge_score"] == res["judge_score"]
        assert all(t["cached"] for r in _items(tmp_path / "b") for t in r["turns"])
        diff = J.compare_runs(tmp_path / "a", tmp_path / "b", task="mt_bench_subset")
        assert diff["n"] == 4 and diff["mean_delta"] == 0.0 and diff["ties"] == 4
    finally:
        server.close()


def test_fallback_rating_pattern_over_http(tiny, answerer, tmp_path, data_dir):
    server = ModelServer(tiny, "fallback")
    try:
        spec = load_task(_task(tmp_path, questions=["81"]))
        res = runner.evaluate(answerer, [spec], tmp_path / "o", judge=J.HTTPJudge(server.url, "tiny-judge"),
                              judge_cache=tmp_path / "c")["mt_bench_subset"]
        assert res["n_rated"] == 2 and len(server.requests) == 2
        # the two turns are judged concurrently, so replies arrive in either order: match by text
        turns = _items(tmp_path / "o")[0]["turns"]
        assert sorted(t["judgment"] for t in turns) == sorted(server.replies)
        assert [t["rating"] for t in turns] == [float(t["judgment"].split("[")[1].split("]")[0]) for t in turns]
    finally:
        server.close()


def test_no_rating_is_retried_a_bounded_number_of_times_and_recorded(tiny, answerer, tmp_path, data_dir):
    server = ModelServer(tiny, "chatter")
    try:
        spec = load_task(_task(tmp_path, questions=["81"], max_retries=2))
        res = runner.evaluate(answerer, [spec], tmp_path / "o", judge=J.HTTPJudge(server.url, "tiny-judge"),
                              judge_cache=tmp_path / "c")["mt_bench_subset"]
        assert len(server.requests) == 2 * 3  # two turns, first try + 2 retries each
        turns = _items(tmp_path / "o")[0]["turns"]
        assert [(t["status"], t["attempts"], t["rating"]) for t in turns] == [("no_rating", 3, None)] * 2
        assert {t["judgment"] for t in turns} <= set(server.replies[-2:])  # the last attempt is kept
        assert res["n_no_rating"] == 2 and res["n_rated"] == 0 and math.isnan(res["judge_score"])
        assert not any((tmp_path / "c").rglob("*.json"))  # a judgment without a rating is not cached
    finally:
        server.close()


def test_unreachable_endpoint_and_missing_judge_fail_before_the_run(answerer, tmp_path, data_dir, monkeypatch):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = load_task(_task(tmp_path))
    monkeypatch.setattr(runner._Engines, "run", lambda *a: pytest.fail("work started"))
    with pytest.raises(J.JudgeUnavailable, match=rf"judge endpoint http://127.0.0.1:{port}/v1 is unreachable"):
        runner.evaluate(answerer, [spec], tmp_path / "o", judge=J.HTTPJudge(f"http://127.0.0.1:{port}/v1", "m"))
    with pytest.raises(MixlabError, match="need a judge: pass --judge-url"):
        runner.evaluate(answerer, [spec], tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_rating_patterns_follow_fastchat():
    assert J.parse_rating("Rating: [[8]]") == 8.0
    assert J.parse_rating("[[8.5]] but elsewhere [3]") == 8.5
    assert J.parse_rating("I give it [7].") == 7.0  # FastChat's fallback pattern
    assert J.parse_rating("seven out of ten") is None
    assert J.parse_rating("Rating: [[ten]]") is None


def test_reference_guided_prompts_and_per_question_deltas(data_dir):
    prompts = J.load_judge_prompts("mt_bench/judge_prompts.jsonl")
    name, system, user = J.judge_request(prompts, ["Q1", "Q2"], ["A1", "A2"], 2, ["R1", "R2"])
    assert name == "single-math-v1-multi-turn" and "### Reference answer:\nR2" in user and "### Assistant A:\nA2" in user
    name, system, user = J.judge_request(prompts, ["Q1", "Q2"], ["A1", "A2"], 1, None)
    assert name == "single-v1" and system == "You are a helpful assistant." and "[Question]\nQ1" in user
    a = [{"id": "q1", "category": "math", "score": 4.0}, {"id": "q2", "category": "writing", "score": 6.0},
         {"id": "q3", "category": "writing", "score": None}]
    b = [{"id": "q1", "category": "math", "score": 7.0}, {"id": "q2", "category": "writing", "score": 5.0},
         {"id": "q3", "category": "writing", "score": 9.0}]
    d = J.compare(a, b)
    assert d["n"] == 2 and d["mean_delta"] == 1.0 and d["categories"] == {"math": 3.0, "writing": -1.0}
    assert (d["wins"], d["losses"], d["ties"]) == (1, 1, 0)


def test_local_hf_judge_backend(answerer, tiny, tmp_path, data_dir):
    local = J.LocalJudge(load_model(str(tiny)), max_tokens=6)
    spec = load_task(_task(tmp_path, questions=["81"], max_retries=0))
    res = runner.evaluate(answerer, [spec], tmp_path / "o", judge=local, judge_cache=tmp_path / "c")["mt_bench_subset"]
    turns = _items(tmp_path / "o")[0]["turns"]
    assert all(isinstance(t["judgment"], str) and t["attempts"] == 1 for t in turns)
    assert res["n_rated"] + res["n_no_rating"] == 2
