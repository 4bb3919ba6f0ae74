"""The report's forgetting-vs-KL section: present only with kl_to_base results, one point per
fine-tuned checkpoint, a fitted line, Spearman's rho and leave-one-run-out predictions; KL results
never count as benchmarks in the forgetting summaries."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_report_html import _study  # noqa: E402

from mixlab.report import kl as RK  # noqa: E402
from mixlab.report.forgetting import StatsConfig  # noqa: E402
from mixlab.report.html import build_report, write_report  # noqa: E402
from mixlab.report.model import Result  # noqa: E402

CFG = StatsConfig(n_boot=50, n_perm=50)


def _with_kl(results):
    """KL grows with each run's strength and step (the base: 0), so it tracks forgetting."""
    strength = {"sft-gsm8k": 0.3, "kl-gsm8k": 0.05, "replay-gsm8k": 0.1}
    out = list(results) + [Result("base", 0, "kl_gsm8k_train_chat", "kl", 0.0, 120, 0.0, False, "1", "m0",
                                  {str(i): 0.0 for i in range(120)})]
    for run, s in strength.items():
        for step in (100, 200, 300):
            v = s * step / 300
            out.append(Result(run, step, "kl_gsm8k_train_chat", "kl", v, 120, 0.001, False, "1", "m0",
                              {str(i): v for i in range(120)}))
    return out


def test_no_kl_results_no_section():
    results, meta = _study()
    titles = [s.title for s in build_report(results, meta, "base", CFG).sections]
    assert "Forgetting vs KL to the base" not in titles


def test_forgetting_vs_kl_section_and_kl_is_not_a_benchmark(tmp_path):
    results, meta = _study()
    plain = build_report(results, meta, "base", CFG)
    rep = build_report(_with_kl(results), meta, "base", CFG)
    sec = next(s for s in rep.sections if s.title == "Forgetting vs KL to the base")
    (table,) = sec.tables
    assert len(table.rows) == 9 and "leave-one-run-out" in table.title
    assert sec.figures[0].filename == "forgetting_vs_kl.png" and sec.figures[0].png[:4] == b"\x89PNG"
    assert "Spearman rho = +" in sec.text[1]  # more KL, more forgetting in this study
    # the forgetting summaries are the same with and without the KL results
    forget = lambda r: next(s for s in r.sections if s.title == "Forgetting").tables  # noqa: E731
    assert [t.rows for t in forget(rep)] == [t.rows for t in forget(plain)]
    files = write_report(_with_kl(results), meta, "base", tmp_path, config=CFG)
    assert "Forgetting vs KL to the base" in files.markdown.read_text()
    assert "forgetting_vs_kl.png" in files.html.read_text() or "Forgetting vs KL" in files.html.read_text()


def test_fit_spearman_and_leave_one_run_out_known_answers():
    pts = [RK.KLPoint(f"r{i % 3}", "m", i, x, 2 * x + 1, 1) for i, x in enumerate([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])]
    x, y = np.array([p.kl for p in pts]), np.array([p.forgetting for p in pts])
    assert RK.fit_line(x, y) == pytest.approx((1.0, 2.0))
    assert RK.spearman(x, y)[0] == pytest.approx(1.0)
    assert RK.loro_predictions(pts) == pytest.approx([2 * p.kl + 1 for p in pts])
    assert RK.fit_line(np.array([1.0, 1.0]), np.array([0.0, 1.0])) is None
