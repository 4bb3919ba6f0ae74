"""The report: sections assembled from results, rendered to Markdown and self-contained HTML, written
atomically.

The HTML has its CSS inline and its PNGs embedded as base64 data URIs: it makes no request, needs no
JavaScript, and can be mailed or attached as one file. The Markdown links the PNGs written beside it.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mixlab import atomic
from mixlab.report import contrast, plots, tables
from mixlab.report import kl as report_kl
from mixlab.report.contrast import Contrast
from mixlab.report.forgetting import StatsConfig, Unit, checkpoint_forgetting, compare_to_base, summarize_runs
from mixlab.report.model import Result, RunMeta, index_results, task_groups
from mixlab.report.tables import Section, Table

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1400px;color:#222;
padding:0 1em;line-height:1.4}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
.tbl{overflow-x:auto;margin:1em 0}
table{border-collapse:collapse;font-size:.82em}
caption{text-align:left;font-weight:600;padding:.3em 0;white-space:nowrap}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right;white-space:nowrap}
th{background:#f4f4f4;white-space:normal;vertical-align:bottom}td:first-child,th:first-child{text-align:left}
td.w,th.w{white-space:normal;text-align:left;min-width:14em}
tbody tr:nth-child(even){background:#fafafa}
.note{color:#666;font-size:.8em;margin:.2em 0}
figure{margin:1.2em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:.85em}
"""


def _cell_html(c: tables.Cell, wrap: bool = False) -> str:
    text = html.escape(c.text)
    tag = '<td class="w">' if wrap else "<td>"
    return f"{tag}<b>{text}</b></td>" if c.bold and text else f"{tag}{text}</td>"


def table_html(t: Table) -> str:
    head = "".join(f'<th class="w">{html.escape(h)}</th>' if i in t.wrap else f"<th>{html.escape(h)}</th>"
                   for i, h in enumerate(t.header))
    body = "".join("<tr>" + "".join(_cell_html(c, i in t.wrap) for i, c in enumerate(row)) + "</tr>"
                   for row in t.rows)
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in t.notes)
    return (f'<div class="tbl"><table><caption>{html.escape(t.title)}</caption><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>{notes}</div>")


def figure_html(f: plots.Figure) -> str:
    data = base64.b64encode(f.png).decode("ascii")
    cap = html.escape(f.caption)
    return f'<figure><img src="data:image/png;base64,{data}" alt="{cap}"><figcaption>{cap}</figcaption></figure>'


def section_id(title: str) -> str:
    """The anchor of a section (``Not compared`` -> ``not-compared``), as GitHub names Markdown headings."""
    return "-".join("".join(ch for ch in title.lower() if ch.isalnum() or ch == " ").split())


def render_html(title: str, sections: Sequence[Section]) -> str:
    """One self-contained HTML page (inline CSS, embedded images, no scripts, no external URLs)."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    for s in sections:
        parts.append(f'<section id="{section_id(s.title)}"><h2>{html.escape(s.title)}</h2>')
        parts += [f"<p>{html.escape(p)}</p>" for p in s.text]
        parts += [table_html(t) for t in s.tables]
        parts += [figure_html(f) for f in s.figures]
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


# ---------------------------------------------------------------- assembling the report


def _columns(index: Mapping, runs_meta: Sequence[RunMeta], base: str | Mapping[str, str]) -> list[str]:
    bases = [base] if isinstance(base, str) else list(dict.fromkeys(base.values()))
    ordered = [m.run for m in runs_meta] + sorted(index)
    return [r for r in dict.fromkeys([*bases, *ordered]) if r in index]


@dataclass(frozen=True, slots=True)
class Report:
    """The report's sections, and the contrasts against the reference run with the findings they
    support (empty without a reference) for callers that also want the numbers."""

    sections: list[Section]
    contrasts: tuple[Contrast, ...] = ()
    findings: tuple[str, ...] = ()


def build_report(results: Iterable[Result], runs_meta: Sequence[RunMeta], base: str | Mapping[str, str],
                 config: StatsConfig = StatsConfig(), unit: Unit = "relative", reference: str | None = None,
                 primary: Mapping[str, str] | None = None, comparable_gain: float = 0.8,
                 stages: Mapping[str, float] | None = None, stage_notes: Mapping[str, str] | None = None) -> Report:
    """Every table and figure of the report, from results held in memory.

    ``reference`` names a run (e.g. plain SFT) every other run is contrasted with, paired item by item;
    the findings those contrasts support open the overview (``comparable_gain``: the fraction of the
    reference's target gain that counts as comparable). ``primary`` maps task -> its primary metric:
    forgetting summaries and contrasts then count each task once, by that metric (score tables still
    show every metric, and the overview names the metrics left out). ``stages``: wall seconds of each
    stage of the study that produced the results (``stage_notes``: what each did), for the Runtime section.
    """
    results, kl_results = report_kl.split_kl(list(results))  # KL to the base is a predictor, not a benchmark
    index = index_results(results)
    counted = index if not primary else index_results(
        r for r in results if r.task not in primary or r.metric == primary[r.task])
    meta = {m.run: m for m in runs_meta}
    groups = task_groups(runs_meta)
    comparison = compare_to_base(counted, base, steps="last", config=config)
    points, curve_bad = checkpoint_forgetting(counted, base)
    summaries = summarize_runs(comparison, meta, points, unit=unit, alpha=config.alpha)
    columns = _columns(index, runs_meta, base)
    labels = [meta[c].name if c in meta else c for c in columns]
    rows, score_bad = tables.score_rows(index, columns, groups)
    avg_imp, n_imp, imp_points = tables.average_improvement(rows)
    incomparable = comparison.incomparable + [b for b in curve_bad if "task version changed" in b.reason] + score_bad

    base_names = base if isinstance(base, str) else ", ".join(sorted(set(base.values())))
    not_averaged = _secondary_metrics(index, primary)
    overview = Section("Overview", [
        f"{sum(len(s) for r in index.values() for s in r.values())} results from {len(index)} runs; "
        + (f"base: {base_names}." if base_names else "no base model (a comparison of runs, e.g. mixtures)."),
        f"{len(comparison.changes)} benchmark comparisons against the base at each run's final checkpoint; "
        + (f"{len(incomparable)} pairs not compared (listed with the reason under 'Not compared')."
           if incomparable else "every pair compared."),
        f"Paired statistics: {config.n_boot} bootstrap resamples (seed {config.seed}), α = {config.alpha}; "
        f"McNemar exact below {config.exact_below} discordant items, chi-square with continuity correction "
        f"above; sign-flip permutation test ({config.n_perm} flips, exact up to {config.exact_max} non-zero "
        "differences) for continuous scores."])
    forgetting = Section("Forgetting", tables=[*tables.forgetting_tables(summaries),
                                               tables.run_summary_table(summaries)])
    forgetting.figures = [f for f in (plots.plot_gain_vs_forgetting(summaries),
                                      plots.plot_change_vs_step(points, meta)) if f is not None]
    imp_text = "–" if avg_imp is None else f"{avg_imp:+.2f}%"
    in_points = f"; {', '.join(imp_points)} start at 0 and count in points" if imp_points else ""
    scores = Section("Scores per task group",
                     [f"Average improvement of {labels[-1]} over {labels[0]} across {n_imp} benchmarks (every task "
                      f"and metric below): {imp_text} (mean of the per-benchmark changes in percent of "
                      f"{labels[0]}'s value, direction-aware{in_points})."] if len(labels) > 1 else [],
                     [*tables.score_tables(rows, labels), tables.wins_table(rows, labels)])
    contrasts: list[Contrast] = []
    findings: list[str] = []
    if reference is not None:
        contrasts = contrast.contrast_runs(comparison, meta, reference, unit, config.alpha)
        findings = contrast.findings(contrasts, comparable_gain, not_averaged)
        forgetting.tables.insert(0, tables.contrast_table(contrasts, unit, comparable_gain))
        overview.text[:0] = findings
    elif not_averaged:
        overview.text.append(not_averaged)
    detail = Section("Change per benchmark", tables=[tables.changes_table(comparison.changes)])
    bases = {base} if isinstance(base, str) else set(base.values())
    kl_sec = report_kl.kl_section(kl_results, points, meta, unit, bases) if kl_results and base_names else None
    # without a base model (a pretraining mixture study) there is nothing to forget relative to
    sections = [overview, forgetting, scores, detail] if base_names else [overview, scores]
    if kl_sec is not None:
        sections.insert(2, kl_sec)
    data_text, data_t = tables.data_tables(runs_meta)
    if data_t:
        sections.append(Section("Data", data_text, data_t))
    mix_t, mix_f = tables.mixture_table(runs_meta), plots.plot_mixture_bars(runs_meta)
    if mix_t is not None:
        sections.append(Section("Mixtures", tables=[mix_t], figures=[mix_f] if mix_f else []))
    runtime = [t for t in (tables.stage_table(stages or {}, stage_notes), tables.runtime_table(runs_meta))
               if t is not None]
    if runtime:
        sections.append(Section("Runtime", tables=runtime))
    if (bad_t := tables.incomparable_table(incomparable)) is not None:
        sections.append(Section("Not compared", ["Results with a different task version or base model are never "
                                                 "compared; each such pair and the reason:"], [bad_t]))
    return Report(sections, tuple(contrasts), tuple(findings))


def _secondary_metrics(index: Mapping, primary: Mapping[str, str] | None) -> str:
    """The sentence naming the metrics the summaries leave out because each task counts once, by its
    primary metric (empty when nothing is left out)."""
    if not primary:
        return ""
    left = sorted({m for runs in index.values() for (task, m) in runs if task in primary and m != primary[task]})
    if not left:
        return ""
    return (f"Each task counts once in every mean, by its primary metric ({', '.join(sorted(set(primary.values())))}); "
            f"its other metrics ({', '.join(left)}) are in the score tables only.")


@dataclass(frozen=True, slots=True)
class ReportFiles:
    markdown: Path
    html: Path
    figures: tuple[Path, ...]
    contrasts: tuple[Contrast, ...] = ()
    findings: tuple[str, ...] = ()


def write_report(results: Iterable[Result], runs_meta: Sequence[RunMeta], base: str | Mapping[str, str],
                 out_dir: str | Path, title: str = "mixlab report", config: StatsConfig = StatsConfig(),
                 unit: Unit = "relative", reference: str | None = None, intro: Sequence[str] = (),
                 primary: Mapping[str, str] | None = None, comparable_gain: float = 0.8,
                 stages: Mapping[str, float] | None = None, stage_notes: Mapping[str, str] | None = None
                 ) -> ReportFiles:
    """Write ``report.md``, a self-contained ``report.html`` and the PNGs into ``out_dir``
    (``intro``: paragraphs that open the overview; the rest as :func:`build_report`).

    Each file is written atomically and the PNGs go first, so a reader never finds a report that links
    a missing or half-written figure.
    """
    out = Path(out_dir)
    report = build_report(results, runs_meta, base, config, unit, reference, primary, comparable_gain, stages,
                          stage_notes)
    sections = report.sections
    if intro:
        sections[0].text[:0] = list(intro)
    figs = [atomic.write_bytes(out / f.filename, f.png) for s in sections for f in s.figures]
    md = atomic.write_text(out / "report.md", tables.render_markdown(title, sections))
    page = atomic.write_text(out / "report.html", render_html(title, sections))
    return ReportFiles(md, page, tuple(figs), report.contrasts, report.findings)
