"""write_report end to end, and report.html rendered in headless Chromium.

Chromium is driven through the DevTools protocol over ``--remote-debugging-pipe`` (no port, no
network): the test reads the console and exception events, every network request the page makes,
and asks the page for its tables and for each image's decoded size (``naturalWidth``) — the report
itself has no script. ``scripts/ensure_chromium.sh`` installs Debian's ``chromium`` when missing; the
browser test skips, with that script's reason, where it cannot.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from mixlab.report.forgetting import StatsConfig
from mixlab.report.html import write_report
from mixlab.report.model import Result, RunMeta

ROOT = Path(__file__).resolve().parents[1]


def _study() -> tuple[list[Result], list[RunMeta]]:
    rng = np.random.default_rng(0)
    tasks = [("arc", "acc", True), ("boolq", "acc", True), ("gsm8k", "acc", True), ("wiki", "bpb", False)]
    results, base_items = [], {}
    for task, metric, hib in tasks:
        items = rng.integers(0, 2, 120).astype(float) if hib else rng.uniform(0.8, 1.2, 120)
        base_items[task] = items
        results.append(Result("base", 0, task, metric, float(items.mean()), 120, None, hib, "1", "m0",
                              {f"{task}{i}": v for i, v in enumerate(items)}))
    meta = []
    for k, (method, strength) in enumerate([("sft", 0.3), ("kl", 0.05), ("replay", 0.1)]):
        run = f"{method}-gsm8k"
        meta.append(RunMeta(run, method, "gsm8k", ("gsm8k",), {"math": 0.5, "web": 0.5},
                            {"math": 0.47, "web": 0.53}, {"finetune": 600 + k, "eval": 120},
                            {"arc": "reasoning", "boolq": "reading", "gsm8k": "math", "wiki": "lm"}))
        for step in (100, 200, 300):
            frac = step / 300
            for task, metric, hib in tasks:
                b = base_items[task]
                if hib:
                    flip = rng.random(120) < strength * frac * (1 if task != "gsm8k" else 0)
                    gain = rng.random(120) < (0.3 * frac if task == "gsm8k" else 0)
                    items = np.where(flip, 0.0, np.where(gain, 1.0, b))
                else:
                    items = b * (1 + strength * frac * 0.2) + rng.normal(0, 0.01, 120)
                results.append(Result(run, step, task, metric, float(items.mean()), 120, None, hib, "1", "m0",
                                      {f"{task}{i}": v for i, v in enumerate(items)}))
    results.append(Result("other-base-run", 300, "arc", "acc", 0.4, 120, None, True, "1", "m1"))
    meta.append(RunMeta("other-base-run", "sft", "mbpp"))
    return results, meta


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    results, meta = _study()
    files = write_report(results, meta, "base", out, "Forgetting study <test>", StatsConfig(n_boot=300, n_perm=500))
    assert files.html == out / "report.html" and files.markdown == out / "report.md"
    return out


def test_report_files_and_content(report):
    names = sorted(p.name for p in report.iterdir())
    assert names == ["change_vs_step.png", "gain_vs_forgetting.png", "mixtures.png", "report.html", "report.md"]
    md = (report / "report.md").read_text()
    for png in ("change_vs_step.png", "gain_vs_forgetting.png", "mixtures.png"):
        assert f"]({png})" in md
        assert (report / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "**Average change over benchmarks (method × dataset)**" in md
    assert re.search(r"\| sft \| [+-]\d+\.\d% \[[+-]\d+\.\d, [+-]\d+\.\d\] (\*|ns)? ?\|", md)
    assert "base model 'm1' differs from 'm0'" in md  # the incomparable run is listed with its reason
    assert "**Wins per category**" in md and "**Runtime per run**" in md
    page = (report / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3
    assert "<script" not in page and not re.search(r"(src|href)=\"(https?:)?//", page)
    assert "Forgetting study &lt;test&gt;" in page


def test_no_temporary_files_left(report):
    assert not [p for p in report.iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------- Chromium


@pytest.fixture(scope="module")
def chromium() -> str:
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "ensure_chromium.sh")], capture_output=True, text=True,
                          timeout=900)
    if proc.returncode != 0:
        pytest.skip(f"headless Chromium unavailable: {proc.stderr.strip().splitlines()[-1:]}")
    return proc.stdout.strip().splitlines()[-1]


class DevTools:
    """A minimal DevTools-protocol client over Chromium's fd 3 (commands) / fd 4 (replies) pipe."""

    def __init__(self, browser: str, profile: str):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def wire() -> None:  # in the child: put the pipe ends at fds 3 and 4, where Chromium expects them
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in (to_chrome_r, from_chrome_w)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--remote-debugging-pipe",
                 "about:blank"]
        self.proc = subprocess.Popen([browser, *flags], preexec_fn=wire, pass_fds=(3, 4),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            if time.monotonic() > deadline:
                raise TimeoutError("no reply from Chromium")
            chunk = os.read(self._from_chrome, 1 << 16)
            if not chunk:
                raise RuntimeError(f"Chromium closed the pipe: {self.proc.stderr.read().decode()[-2000:]}")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 60) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        for ev in self.events:
            if ev.get("method") == method:
                return ev
        while True:
            ev = self._read_message(deadline)
            self.events.append(ev)
            if ev.get("method") == method:
                return ev

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


_PROBE = """JSON.stringify({
  tables: Array.from(document.querySelectorAll('table')).map(t => ({
    caption: t.caption ? t.caption.textContent : '', rows: t.tBodies[0].rows.length,
    width: t.getBoundingClientRect().width, bold: t.querySelectorAll('td b').length,
    box: t.parentElement.clientWidth, scroll: t.parentElement.scrollWidth,
    right: t.getBoundingClientRect().right, page: document.documentElement.clientWidth})),
  images: Array.from(document.images).map(i => ({complete: i.complete, w: i.naturalWidth, h: i.naturalHeight,
    shown: i.getBoundingClientRect().width})),
  title: document.title, h2: Array.from(document.querySelectorAll('h2')).map(h => h.textContent)})"""


def _render(browser: str, page_path: Path, width: int = 1400) -> tuple[list[dict], list[str], dict]:
    """Load a page in a ``width``-pixel window; return its console errors/exceptions, the URLs it
    requested, and the probe's answer."""
    profile = tempfile.mkdtemp(prefix="mixlab-chromium-")
    devtools = DevTools(browser, profile)
    try:
        target = devtools.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = devtools.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            devtools.send(f"{domain}.enable", session=session)
        devtools.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": 1000, "deviceScaleFactor": 1,
                                                             "mobile": False}, session=session)
        devtools.send("Page.navigate", {"url": page_path.as_uri()}, session=session)
        devtools.wait_event("Page.loadEventFired")
        probe = devtools.send("Runtime.evaluate", {"expression": _PROBE, "returnByValue": True}, session=session)
        page = json.loads(probe["result"]["value"])
    finally:
        devtools.close()
        shutil.rmtree(profile, ignore_errors=True)
    errors = [e for e in devtools.events if e.get("method") == "Runtime.exceptionThrown"
              or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
              or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
    urls = [e["params"]["request"]["url"] for e in devtools.events if e.get("method") == "Network.requestWillBeSent"]
    return errors, urls, page


def test_chromium_probe_sees_broken_pages(chromium, tmp_path):
    """The checks below can fail: a bad image, a console error and an exception are all caught."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><head><title>b</title></head><body><table><tbody><tr><td>1</td></tr>'
                   '</tbody></table><img src="data:image/png;base64,bm90IGEgcG5n">'
                   "<script>console.error('boom'); undefined_function();</script></body></html>")
    errors, _, page = _render(chromium, bad)
    kinds = {e["method"] for e in errors}
    assert {"Runtime.consoleAPICalled", "Runtime.exceptionThrown"} <= kinds
    assert page["images"][0]["w"] == 0  # the undecodable image has no natural size


def test_report_renders_in_chromium(report, chromium):
    errors, urls, page = _render(chromium, report / "report.html")
    assert errors == []
    assert urls and all(u.startswith(("file://", "data:")) for u in urls), urls  # nothing from the network

    assert page["title"] == "Forgetting study <test>"
    assert page["h2"][:4] == ["Overview", "Forgetting", "Scores per task group", "Change per benchmark"]
    captions = {t["caption"]: t for t in page["tables"]}
    assert captions["Average change over benchmarks (method × dataset)"]["rows"] == 3  # kl, replay, sft
    assert captions["Change per benchmark vs the base model"]["rows"] == 12  # 3 runs x 4 benchmarks
    assert captions["Group: math"]["bold"] >= 1  # the best value is bold
    assert all(t["width"] > 0 and t["rows"] > 0 for t in page["tables"])
    assert len(page["images"]) == 3
    for img in page["images"]:  # decoded (naturalWidth > 0) and laid out
        assert img["complete"] and img["w"] > 100 and img["h"] > 100 and img["shown"] > 0


def _overflowing(page: dict) -> list[str]:
    """Tables wider than their box (a scroll bar; the right columns hidden) or than the page."""
    return [f"{t['caption']}: {t['scroll']} px in a {t['box']} px box" for t in page["tables"]
            if t["scroll"] > t["box"] + 1 or t["right"] > t["page"] + 1]


def test_overflow_probe_sees_a_clipped_table(chromium, tmp_path):
    """The overflow check can fail: a table of long unbreakable cells is caught at 1400 px."""
    wide = tmp_path / "wide.html"
    row = "".join(f"<td style='white-space:nowrap'>{'x' * 60} {i}</td>" for i in range(6))
    wide.write_text("<!DOCTYPE html><html><head><title>w</title><style>.tbl{overflow-x:auto}body{max-width:1400px}"
                    f"</style></head><body><div class='tbl'><table><tbody><tr>{row}</tr></tbody></table></div>"
                    "</body></html>")
    _, _, page = _render(chromium, wide)
    assert len(_overflowing(page)) == 1


def _wide_study() -> tuple[list[Result], list[RunMeta], str]:
    """A quickstart-sized study: six long-named methods against a reference, eleven benchmarks, a base
    value of 0 on one target, replay and a data build: the widest tables the report writes."""
    from mixlab.report.model import DataBuild

    rng = np.random.default_rng(1)
    tasks = [(f"toyworld_{d}_{k}", m, hib) for d in ("arithmetic", "people", "code", "prose")
             for k, m, hib in (("bpb", "bpb", False), ("mc", "acc", True), ("em", "exact_match", True))][:11]
    base = {t: (np.zeros(64) if t == "toyworld_people_em" else
                rng.integers(0, 2, 64).astype(float) if hib else rng.uniform(1, 3, 64)) for t, _, hib in tasks}
    results = [Result("base", 0, t, m, float(base[t].mean()), 64, None, hib, "1", "b", _items(base[t]))
               for t, m, hib in tasks]
    build = DataBuild("toyworld_people", {"toyworld_people": 480}, {"toyworld_people": 64}, {"people": 1.0},
                      {"people": 1.0}, "official", {"ngram": 13, "action": "drop", "overlaps": [
                          {"reference": "benchmark/toyworld_prose", "n_reference": 3600, "exact": 0, "normalized": 0,
                           "ngram": 0}]})
    meta = [RunMeta("base", "pretrain", mixture_requested={"people": 0.5, "prose": 0.5},
                    mixture_realized={"people": 0.5, "prose": 0.5}, runtime={"training": 61, "total_this_process": 63},
                    eval_seconds=13)]
    for k, run in enumerate(["sft", "lora_rank_eight", "sft_kl_anchor", "sft_replay_quarter", "grpo_exact", "spin"]):
        meta.append(RunMeta(run, run.replace("_", "+"), "toyworld_people", ("toyworld_people_bpb", "toyworld_people_mc",
                            "toyworld_people_em"), runtime={"training": 17 + k, "model_io": 1, "total_this_process": 19},
                            eval_seconds=40, data_build=build,
                            training_data={"target examples": "480", "replay": "160 examples of toyworld:arithmetic, "
                                           "toyworld:code, toyworld:prose" if "replay" in run else "–"}))
        for step in (25, 50, 75, 100):
            for t, m, hib in tasks:
                items = base[t].copy()
                if hib:
                    flip = rng.random(64) < 0.02 * (k + 1) * step / 100
                    items = np.where(flip, 1 - items, items)
                else:
                    items = items * (1 + (0.05 if "people" not in t else -0.2) * step / 100) + rng.normal(0, .01, 64)
                results.append(Result(run, step, t, m, float(items.mean()), 64, None, hib, "1", "b", _items(items)))
    return results, meta, "sft"


def _items(scores: np.ndarray) -> dict[str, float]:
    return {f"q{i}": float(v) for i, v in enumerate(scores)}


def test_no_table_overflows_at_1400_px(chromium, tmp_path):
    """Every table of a quickstart-sized report fits its box at 1400 px: no scroll bar, no clipped
    verdict column."""
    results, meta, ref = _wide_study()
    write_report(results, meta, "base", tmp_path, "wide", StatsConfig(n_boot=200, n_perm=200), reference=ref,
                 stages={"data": 1.5, "pretrain": 63.0, "finetune": 55.0, "evaluate": 132.0},
                 stage_notes={"evaluate": "the sweep: the base and every checkpoint on 11 tasks, 2 workers"})
    errors, _, page = _render(chromium, tmp_path / "report.html", width=1400)
    assert errors == []
    captions = [t["caption"] for t in page["tables"]]
    assert "Against sft (paired, final checkpoints)" in captions and "Wall time per stage" in captions
    assert "Data build toyworld_people: records" in captions and "Change per benchmark vs the base model" in captions
    assert _overflowing(page) == []


def test_change_vs_step_panels_targets_first_from_step_0_with_zero_bases_in_points():
    from mixlab.report.forgetting import checkpoint_forgetting
    from mixlab.report.plots import _panel_order, plot_change_vs_step

    results, meta, _ = _wide_study()
    points, _ = checkpoint_forgetting(results, "base")
    em = [p for p in points if p.task == "toyworld_people_em" and p.run == "sft" and p.step == 100][0]
    assert em.base_value == 0 and em.rel is None and em.in_unit("relative") == pytest.approx(100 * em.value)
    fig = plot_change_vs_step(points, {m.run: m for m in meta})
    assert "in points where the base value is 0 (toyworld_people_em)" in fig.caption
    curves = {(p.task, p.metric): {"m": {100: [0.0]}} for p in points}
    order = _panel_order(curves, {"toyworld_people_bpb", "toyworld_people_em", "toyworld_people_mc"}, 24)
    assert [k[0] for k in order[:3]] == ["toyworld_people_bpb", "toyworld_people_em", "toyworld_people_mc"]
    assert order[3:] == sorted(order[3:]) and len(order) == 11
    # with room for 5 panels the 3 targets stay and the 2 others with the largest final drop fill the rest
    curves[("toyworld_code_mc", "acc")]["m"] = {100: [-9.0]}
    curves[("toyworld_arithmetic_bpb", "bpb")]["m"] = {100: [-5.0]}
    assert [k[0] for k in _panel_order(curves, {"toyworld_people_bpb", "toyworld_people_em", "toyworld_people_mc"},
                                       5)[3:]] == ["toyworld_arithmetic_bpb", "toyworld_code_mc"]
