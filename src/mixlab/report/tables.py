"""Tables in the forms papers use, built from results and forgetting summaries, and their Markdown.

A ``Table`` is plain data (header, rows of ``Cell``, notes) so the same table renders to Markdown
here and to HTML in :mod:`mixlab.report.html`. Accuracy-like metrics (higher is better, all values in
[0, 1]) are shown in percent; others (bits-per-byte, judge scores) in their own units.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from mixlab.report.contrast import Contrast, Paired, fmt_ratio, unit_words
from mixlab.report.forgetting import Change, Incomparable, RunSummary, in_points, unit_scale
from mixlab.report.model import DataBuild, Result, RunMeta, TaskKey, is_percent


@dataclass(frozen=True, slots=True)
class Cell:
    text: str
    bold: bool = False


@dataclass(slots=True)
class Table:
    """``wrap``: indices of the columns of prose (verdicts, reasons) the HTML may break over lines, so a
    wide table still fits the page; numbers never break."""

    title: str
    header: list[str]
    rows: list[list[Cell]]
    notes: list[str] = field(default_factory=list)
    wrap: tuple[int, ...] = ()


@dataclass(slots=True)
class Section:
    """A heading with paragraphs, tables and figures (``plots.Figure``), rendered in that order."""

    title: str
    text: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list = field(default_factory=list)


def cells(*texts: object) -> list[Cell]:
    return [Cell("" if t is None else str(t)) for t in texts]


# ---------------------------------------------------------------- number formats


def fmt_value(v: float | None, percent: bool) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{100 * v:.1f}" if percent else f"{v:.3f}"


def fmt_delta(v: float | None, percent: bool) -> str:
    if v is None:
        return "–"
    return f"{100 * v:+.1f}" if percent else f"{v:+.3f}"


def fmt_change(v: float | None, unit: str) -> str:
    if v is None:
        return "–"
    return f"{v:+.1f}%" if unit == "relative" else f"{v:+.4g}"


def fmt_ci(ci: tuple[float, float] | None, unit: str) -> str:
    if ci is None:
        return ""
    if unit == "relative":
        return f" [{ci[0]:+.1f}, {ci[1]:+.1f}]"
    return f" [{ci[0]:+.3g}, {ci[1]:+.3g}]"


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "–"
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


# ---------------------------------------------------------------- scores per task group


@dataclass(frozen=True, slots=True)
class ScoreRow:
    """One benchmark across the compared columns (runs or mixtures) at their final checkpoints."""

    group: str
    key: TaskKey
    results: tuple[Result | None, ...]
    comparable: bool  # False when the columns used different task versions
    best: tuple[int, ...]  # indices of the best column(s); empty when not comparable
    improvement: float | None  # directional, last column minus first column

    def improvement_in(self, unit: str = "relative") -> float | None:
        """Last column vs first in the summaries' unit (relative: percent of the first column's value,
        points where it is 0, as :func:`mixlab.report.forgetting.unit_scale`)."""
        first, last = self.results[0], self.results[-1]
        if self.improvement is None or first is None or last is None:
            return None
        return self.improvement * unit_scale(first.value, last.value, first.higher_is_better, unit)  # type: ignore[arg-type]

    @property
    def first_is_zero(self) -> bool:
        return self.results[0] is not None and in_points(self.results[0].value, "relative")


def score_rows(index: Mapping[str, Mapping[TaskKey, Mapping[int, Result]]], columns: Sequence[str],
               groups: Mapping[str, str]) -> tuple[list[ScoreRow], list[Incomparable]]:
    """Each benchmark's final-checkpoint result per column, its best column(s) and last-vs-first change."""
    keys = sorted({k for run in columns for k in index.get(run, {})})
    rows, bad = [], []
    for key in keys:
        res = tuple(_final(index.get(run, {}).get(key)) for run in columns)
        present = [r for r in res if r is not None]
        versions = {r.task_version for r in present}
        if len(versions) > 1:
            bad.append(Incomparable(",".join(columns), -1, *key, "columns",
                                    f"task versions {sorted(versions)} differ across columns: no best, no change"))
            rows.append(ScoreRow(groups[key[0]], key, res, False, (), None))
            continue
        top = max(r.score() for r in present)
        best = tuple(i for i, r in enumerate(res) if r is not None and r.score() == top)
        imp = res[-1].score() - res[0].score() if res[0] is not None and res[-1] is not None and len(res) > 1 \
            else None
        rows.append(ScoreRow(groups[key[0]], key, res, True, best, imp))
    return rows, bad


def _final(series: Mapping[int, Result] | None) -> Result | None:
    return series[max(series)] if series else None


def score_tables(rows: Sequence[ScoreRow], labels: Sequence[str]) -> list[Table]:
    """One table per task group: a column per run/mixture, best in bold, Δ (last vs first), best column."""
    by_group: dict[str, list[ScoreRow]] = defaultdict(list)
    for r in rows:
        by_group[r.group].append(r)
    tables = []
    for group in sorted(by_group):
        body = []
        for r in by_group[group]:
            pct = is_percent([x.value for x in r.results if x is not None], _hib(r))
            vals = [Cell(fmt_value(x.value if x else None, pct), i in r.best) for i, x in enumerate(r.results)]
            best = ", ".join(labels[i] for i in r.best) if r.comparable else "not compared (task versions differ)"
            body.append([Cell(r.key[0]), Cell(r.key[1] + ("" if _hib(r) else " ↓")), *vals,
                         Cell(fmt_delta(r.improvement, pct)), Cell(best)])
        tables.append(Table(f"Group: {group}", ["task", "metric", *labels, f"Δ {labels[-1]} vs {labels[0]}", "best"],
                            body, ["best value per row in bold; ↓ marks lower-is-better metrics (bits per byte); "
                                   "accuracy-like metrics in percent, Δ in points"]))
    return tables


def _hib(r: ScoreRow) -> bool:
    return next(x.higher_is_better for x in r.results if x is not None)


def wins_table(rows: Sequence[ScoreRow], labels: Sequence[str]) -> Table:
    """How many benchmarks each column wins per category (ties count for every tied column)."""
    wins: dict[str, list[int]] = defaultdict(lambda: [0] * len(labels))
    for r in rows:
        for i in r.best:
            wins[r.group][i] += 1
    total = [sum(w[i] for w in wins.values()) for i in range(len(labels))]
    body = [[Cell(g), *[Cell(str(v), v == max(w) and v > 0) for v in w]] for g, w in sorted(wins.items())]
    if len(wins) > 1:  # with one category the total is that row again
        body.append([Cell("all categories", True), *[Cell(str(v), v == max(total) and v > 0) for v in total]])
    return Table("Wins per category", ["category", *labels], body,
                 ["benchmarks (task × metric) where the column has the best final value; ties count for each"])


def average_improvement(rows: Sequence[ScoreRow]) -> tuple[float | None, int, list[str]]:
    """Mean improvement of the last column over the first across every comparable benchmark, in percent
    of the first column's value (points where it is 0); also the count and the benchmarks in points."""
    used = [r for r in rows if r.improvement_in() is not None]
    vals = [r.improvement_in() for r in used]
    points = [f"{r.key[0]} ({r.key[1]})" for r in used if r.first_is_zero]
    return (sum(vals) / len(vals) if vals else None), len(vals), points  # type: ignore[arg-type]


# ---------------------------------------------------------------- forgetting


def forgetting_tables(summaries: Sequence[RunSummary]) -> list[Table]:
    """Method x dataset: average change (CI, marker) and worst benchmark change (marker)."""
    if not summaries:
        return []
    unit = summaries[0].unit
    methods = sorted({s.method or s.run for s in summaries})
    datasets = sorted({s.dataset or "–" for s in summaries})
    cell: dict[tuple[str, str], list[RunSummary]] = defaultdict(list)
    for s in summaries:
        cell[(s.method or s.run, s.dataset or "–")].append(s)
    avg = [[Cell(m), *[Cell(_avg_text(cell.get((m, d), []), unit)) for d in datasets]] for m in methods]
    worst = [[Cell(m), *[Cell(_worst_text(cell.get((m, d), []), unit)) for d in datasets]] for m in methods]
    notes = [f"change vs the base model in {unit_words(unit)}, positive = better (direction-aware); "
             f"{_points_note(summaries)}[95% bootstrap CI]; "
             "* significant (McNemar for accuracy, sign-flip permutation for continuous scores; CI for "
             "averages); ns = a drop that is not significant; cells with several runs show mean ± sd"]
    return [Table("Average change over benchmarks (method × dataset)", ["method", *datasets], avg, notes),
            Table("Worst benchmark change (method × dataset)", ["method", *datasets], worst, notes)]


def _points_note(summaries: Sequence[RunSummary]) -> str:
    """Which benchmarks count in points (base value 0) and which are left out because the base is at
    chance there, for a table's note; empty when none."""
    names = sorted({t for s in summaries for t in s.points_tasks})
    chance = sorted({t for s in summaries for t in s.chance_tasks})
    return ((f"counted in points (base 0): {', '.join(names)}; " if names else "")
            + (f"left out of the averages, worst, backward transfer and drops: {', '.join(chance)} (the base is "
               "within one standard error of guessing there: a change measures answer bias, not forgetting); "
               if chance else ""))


def _avg_text(runs: Sequence[RunSummary], unit: str) -> str:
    if not runs:
        return ""
    if len(runs) == 1:
        s = runs[0]
        return f"{fmt_change(s.mean_change, unit)}{fmt_ci(s.mean_ci, unit)} {s.mean_marker}".strip()
    vals = [s.mean_change for s in runs]
    mean = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    return f"{fmt_change(mean, unit)} ± {sd:.2g} ({len(vals)} runs)"


def _worst_text(runs: Sequence[RunSummary], unit: str) -> str:
    runs = [s for s in runs if s.worst is not None]
    if not runs:
        return ""
    s = min(runs, key=lambda x: x.worst_change)
    return f"{s.worst.task}: {fmt_change(s.worst_change, unit)} {s.worst.marker}".strip()


def run_summary_table(summaries: Sequence[RunSummary]) -> Table:
    """One row per run: mean and worst change, target gain, backward transfer, largest checkpoint drop."""
    unit = summaries[0].unit if summaries else "relative"
    body = [[Cell(s.run), Cell(s.method), Cell(s.dataset), Cell(str(s.step)),
             Cell(f"{fmt_change(s.mean_change, unit)}{fmt_ci(s.mean_ci, unit)} {s.mean_marker}".strip()),
             Cell(s.worst.task if s.worst else "–"),
             Cell(f"{fmt_change(s.worst_change, unit)} {s.worst.marker if s.worst else ''}".strip()),
             Cell(fmt_change(s.target_gain, unit)), Cell(fmt_change(s.backward_transfer, unit)),
             Cell(fmt_change(s.max_forgetting, unit).lstrip("+")), Cell(str(s.n_significant_drops)),
             Cell(str(s.n_nonsignificant_drops))] for s in summaries]
    return Table("Per run", ["run", "method", "dataset", "step", "mean change", "worst task", "worst change",
                             "target gain", "backward transfer", "max drop from best earlier", "sig. drops",
                             "ns drops"], body,
                 [f"changes in {unit_words(unit)}; {_points_note(summaries)}mean change over every benchmark, "
                  "target gain over the run's target tasks; backward transfer: mean over non-target benchmarks of "
                  "final minus base; max drop: the largest fall below the best earlier checkpoint (base included), "
                  "any benchmark"])


def _paired_text(p: Paired | None, unit: str) -> str:
    if p is None:
        return "–"
    sig = " *" if p.significant else ""
    pv = "" if p.pvalue is None else f" (p={p.pvalue:.3g})"
    return f"{fmt_change(p.value, unit)}{fmt_ci(p.ci, unit)}{pv}{sig}"


def verdict(c: Contrast, threshold: float = 0.8) -> str:
    """One phrase a reader can act on: less/more/same forgetting, and whether the gain is comparable."""
    if c.forgetting is None:
        return "no paired data"
    side = {"less": "forgets significantly less", "more": "forgets significantly more",
            "same": "no significant difference in forgetting"}[c.forgetting]
    r = c.gain_ratio
    gain = "gain unknown" if r is None else (f"comparable gain ({fmt_ratio(r, threshold)} of the reference's)"
                                              if c.comparable_gain(threshold) else f"{fmt_ratio(r, threshold)} of the gain")
    return f"{side}; {gain}"


def contrast_table(contrasts: Sequence[Contrast], unit: str, threshold: float = 0.8) -> Table:
    """Each method against the reference run: gains, forgetting, and the paired differences."""
    ref = contrasts[0].reference if contrasts else "reference"
    body = [[Cell(c.run), Cell(c.method), Cell(fmt_change(c.gain, unit)), Cell(_paired_text(c.gain_difference, unit)),
             Cell(fmt_change(c.other, unit)), Cell(_paired_text(c.forgetting_advantage, unit)),
             Cell(verdict(c, threshold), bold=c.forgets_significantly_less() and c.comparable_gain(threshold))]
            for c in contrasts]
    points = sorted({t for c in contrasts for t in c.points_tasks})
    left = sorted({f"{t} ({why})" for c in contrasts for t, why in c.left_out})
    averaged = "" if not contrasts else (
        f"target tasks averaged: {', '.join(contrasts[0].target_tasks) or 'none'}; other tasks averaged: "
        f"{', '.join(contrasts[0].other_tasks) or 'none'}; "
        + (f"counted in points (base 0): {', '.join(points)}; " if points else "")
        + f"left out: {'; '.join(left) if left else 'nothing'}; ")
    return Table(f"Against {ref} (paired, final checkpoints)",
                 ["run", "method", "target gain", f"gain − {ref}", "change on other tasks",
                  f"forgetting advantage over {ref}", "verdict"], body,
                 [f"target gain / change on other tasks: mean change vs the base model in {unit_words(unit)}, "
                  f"positive = better; {averaged}"
                  f"forgetting advantage = change on other tasks minus {ref}'s (> 0: forgets less), with a 95% paired "
                  "bootstrap CI over the same resampled items and its two-sided p-value; * the CI excludes 0; "
                  f"comparable gain = at least {100 * threshold:.0f}% of {ref}'s target gain"], wrap=(6,))


def changes_table(changes: Sequence[Change]) -> Table:
    """Every benchmark's change vs the base with CI, test, p-value and item flips."""
    body = []
    for c in changes:
        pct = is_percent([c.value, c.base_value], c.higher_is_better)
        ci = "" if c.ci is None else f"[{fmt_delta(c.ci[0], pct)}, {fmt_delta(c.ci[1], pct)}]"
        metric = c.metric + ("" if c.higher_is_better else " ↓")
        base = fmt_value(c.base_value, pct) + (f" (chance {fmt_value(c.base_chance, pct)})" if c.base_at_chance else "")
        body.append([Cell(c.run), Cell(str(c.step)), Cell(c.task), Cell(metric),
                     Cell(base), Cell(fmt_value(c.value, pct)), Cell(fmt_delta(c.delta, pct)),
                     Cell("–" if c.rel is None else f"{100 * c.rel:+.1f}%"), Cell(ci),
                     Cell("–" if c.pvalue is None else f"{c.pvalue:.3g}"), Cell(c.test or "–"), Cell(_flips(c)),
                     Cell(c.marker)])
    return Table("Change per benchmark vs the base model", ["run", "step", "task", "metric", "base", "run value",
                 "Δ", "Δ%", "95% CI", "p", "test", "c→w / w→c", ""], body,
                 ["Δ is direction-aware (positive = better); the CI is of the mean per-item change over the "
                  "items both evaluations scored"]
                 + (["base (chance X): the base scores within one standard error of uniform guessing on this "
                     "benchmark; its changes are answer bias, so run summaries and contrasts leave it out unless it "
                     "is a target"] if any(c.base_at_chance for c in changes) else []))


def _flips(c: Change) -> str:
    if c.flips_correct_to_wrong is None:
        return "–"
    return f"{c.flips_correct_to_wrong} / {c.flips_wrong_to_correct}"


# ---------------------------------------------------------------- runs: mixtures and runtime


def mixture_table(runs_meta: Sequence[RunMeta]) -> Table | None:
    """Requested vs realized mixture weight per domain (percent) for runs that record a mixture."""
    runs = [m for m in runs_meta if m.mixture_requested or m.mixture_realized]
    if not runs:
        return None
    domains = sorted({d for m in runs for d in (*m.mixture_requested, *m.mixture_realized)})
    body = []
    for m in runs:
        devs = [abs(m.mixture_realized.get(d, 0.0) - m.mixture_requested.get(d, 0.0)) for d in domains]
        body.append([Cell(m.name), *[Cell(f"{100 * m.mixture_requested.get(d, 0.0):.1f} → "
                                          f"{100 * m.mixture_realized.get(d, 0.0):.1f}") for d in domains],
                     Cell(f"{100 * max(devs):.2f}")])
    return Table("Mixture: requested → realized (percent of tokens)", ["run", *domains, "max |Δ| (points)"], body)


SWEEP_EVALUATION = "evaluation (sweep)"
_STAGE_ORDER = ["setup", "training", "evaluation", "judging", "model_io", "checkpoint_io"]  # as a run goes


def runtime_table(runs_meta: Sequence[RunMeta]) -> Table | None:
    """Wall time per stage of each run's own process (h:mm:ss), the sweep's evaluation of its
    checkpoints, and the total; a stage that took under half a second in every run is left out (an
    in-training evaluation column of zeros next to a sweep that did the evaluating misleads)."""
    runs = [m for m in runs_meta if m.runtime or m.eval_seconds]
    if not runs:
        return None
    # A run's own total (fine-tuning records `total_this_process`) is the total, not one more stage to add.
    stages = [s for s in dict.fromkeys(s for m in runs for s in m.runtime if not s.startswith("total"))
              if any(m.runtime.get(s, 0.0) >= 0.5 for m in runs)]
    stages.sort(key=lambda s: _STAGE_ORDER.index(s) if s in _STAGE_ORDER else len(_STAGE_ORDER))  # stable
    sweep = any(m.eval_seconds for m in runs)

    def total(m: RunMeta) -> float:
        own = [v for k, v in m.runtime.items() if k.startswith("total")]
        return (sum(own) if own else sum(m.runtime.values())) + (m.eval_seconds or 0.0)

    body = [[Cell(m.name), *[Cell(fmt_seconds(m.runtime.get(s))) for s in stages],
             *([Cell(fmt_seconds(m.eval_seconds))] if sweep else []), Cell(fmt_seconds(total(m)), True)]
            for m in runs]
    notes = ["a run's stages are those of its own process; the total adds the sweep's evaluation of its "
             "checkpoints (seconds summed over tasks, which the sweep runs in parallel)"] if sweep else []
    # beside the sweep's column, a run's own `evaluation` is the one it ran while training
    header = [f"{s} (in run)" if sweep and s == "evaluation" else s for s in stages]
    return Table("Runtime per run", ["run", *header, *([SWEEP_EVALUATION] if sweep else []), "total"], body, notes)


def stage_table(stages: Mapping[str, float], what: Mapping[str, str] | None = None) -> Table | None:
    """Wall time of each stage of a study (h:mm:ss) and what the stage did."""
    if not stages:
        return None
    what = what or {}
    body = [[Cell(k), Cell(fmt_seconds(v)), Cell(what.get(k, ""))] for k, v in stages.items()]
    body.append([Cell("total", True), Cell(fmt_seconds(sum(stages.values())), True), Cell("")])
    return Table("Wall time per stage", ["stage", "wall time", "what"], body, wrap=(2,))


# ---------------------------------------------------------------- data


def data_tables(runs_meta: Sequence[RunMeta]) -> tuple[list[str], list[Table]]:
    """The fine-tuning data: each build's records per dataset and split, its contamination check, and
    what each run trained on (target examples, replay)."""
    builds: dict[str, DataBuild] = {}
    for m in runs_meta:
        if m.data_build is not None:
            builds.setdefault(m.data_build.name, m.data_build)
    text: list[str] = []
    out: list[Table] = []
    for b in builds.values():
        datasets = sorted({*b.train, *b.test})
        body = [cells(d, b.train.get(d, 0), b.test.get(d, 0)) for d in datasets]
        if len(datasets) > 1:
            body.append([Cell("total", True), Cell(str(sum(b.train.values())), True),
                         Cell(str(sum(b.test.values())), True)])
        ratios = ", ".join(f"{d} {100 * b.requested.get(d, 0.0):.0f}% → {100 * b.realized.get(d, 0.0):.1f}%"
                           for d in sorted({*b.requested, *b.realized}))
        out.append(Table(f"Data build {b.name}: records", ["dataset", "train", "test"], body,
                         [f"split: {b.split or '?'}; domain ratios requested → realized: {ratios}"]))
        c = b.contamination
        if c:
            rows = [cells(o.get("reference", "?"), o.get("n_reference", ""), o.get("exact", 0),
                          o.get("normalized", 0), o.get("ngram", 0)) for o in c.get("overlaps", [])]
            n = c.get("ngram", "?")
            dropped = c.get("dropped_before_mixing", 0)
            text.append(f"{b.name}: {n}-gram contamination check of the training items against "
                        f"{len(rows)} test and benchmark sets (action: {c.get('action', '?')}): "
                        f"{dropped} training items dropped before mixing, {c.get('train_test_ngram_overlap', 0)} "
                        f"overlapping training items left.")
            out.append(Table(f"Data build {b.name}: contamination (training items overlapping each set)",
                             ["reference set", "items", "exact", "normalized", f"{n}-gram"], rows,
                             ["counts of training items that match a reference item exactly, after normalization "
                              f"(case, punctuation, spacing), or share a {n}-gram with one, after any drop"]))
    trained = [m for m in runs_meta if m.training_data]
    if trained:
        cols = list(dict.fromkeys(k for m in trained for k in m.training_data))
        out.append(Table("Training data per run", ["run", "data", *cols],
                         [cells(m.name, m.dataset, *[m.training_data.get(k, "–") for k in cols]) for m in trained],
                         wrap=(2 + cols.index("replay"),) if "replay" in cols else ()))
    return text, out


def incomparable_table(bad: Sequence[Incomparable], limit: int = 500) -> Table | None:
    """The pairs that were not compared and why (the first ``limit``; the count of the rest in a note)."""
    if not bad:
        return None
    body = [cells(f"{b.run}@{b.step}" if b.step >= 0 else b.run, b.task, b.metric, b.against, b.reason)
            for b in bad[:limit]]
    notes = [f"{len(bad) - limit} more not shown"] if len(bad) > limit else []
    return Table("Not compared", ["result", "task", "metric", "against", "reason"], body, notes, wrap=(4,))


# ---------------------------------------------------------------- Markdown


def _md_cell(c: Cell) -> str:
    text = c.text.replace("|", "\\|").replace("\n", " ")
    return f"**{text}**" if c.bold and text else text


def table_markdown(t: Table) -> str:
    lines = [f"**{t.title}**", "", "| " + " | ".join(h.replace("|", "\\|") for h in t.header) + " |",
             "|" + "|".join("---" for _ in t.header) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t.rows]
    lines += [""] + [f"_{n}_" for n in t.notes]
    return "\n".join(lines).rstrip() + "\n"


def render_markdown(title: str, sections: Sequence[Section]) -> str:
    """The whole report as Markdown; figures are linked as the PNG files written beside it."""
    out = [f"# {title}", ""]
    for s in sections:
        out += [f"## {s.title}", ""]
        out += [p + "\n" for p in s.text]
        out += [table_markdown(t) for t in s.tables]
        out += [f"![{f.caption}]({f.filename})\n\n_{f.caption}_\n" for f in s.figures]
    return "\n".join(out)
