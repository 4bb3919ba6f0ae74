"""Swarm tables: mixtures (``ratios.csv``) and results (``metrics.csv``) as mixlab, olmix and RegMix publish them.

Three layouts are read, told apart by the header:

* olmix / mixlab: ``run,name,index,<columns...>`` (``name`` and ``index`` optional), rows keyed by ``run``;
* olmix's CSV input: ``run_id[,name],<columns...>``, rows keyed by ``run_id``;
* RegMix (sail-sg/regmix ``data/*.csv``): ``index,train_the_pile_<domain>...`` for mixtures and
  ``index,metric/<name>...`` for losses, rows keyed by ``index``.

Columns are matched by NAME, never by position: a ``train_`` prefix shared by every mixture column
and a ``metric/`` prefix on a result column are dropped (RegMix's ``train_the_pile_arxiv`` is the
domain ``the_pile_arxiv``), so tables from different tools key to the same domains. Rows of the two
files are matched by their key. Weights are rounded in published files (RegMix prints 3 decimals,
so 189 of its 512 rows sum to 0.996-1.003): rows that sum to 1 within ``tolerance`` are
renormalized and reported (:class:`Renormalized`); beyond it, and for negative weights, a domain
spelled two ways, or a cell that is not a finite number, a :class:`~mixlab.errors.DataError` names
the file, the line and the column.

``swarm collect`` writes these files with :func:`write_ratios` and :func:`write_metrics` (olmix
layout); ``fit`` reads them with :func:`read_swarm`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mixlab import atomic
from mixlab.errors import DataError

KEY_COLUMNS = ("run", "name", "index")
# Rounding tolerance on a mixture's sum: olmix's CSV loader accepts rows within 1% (atol 0.01), and
# RegMix's 3-decimal rows are off by at most 17 x 0.0005 = 0.0085 (0.004 in its published swarm).
SUM_TOLERANCE = 0.01
# Rows whose sum is within float noise of 1 are not counted as renormalized.
EXACT_SUM = 1e-9
_DOMAIN_PREFIX = "train_"   # RegMix: train_the_pile_<domain>
_METRIC_PREFIX = "metric/"  # RegMix (wandb export): metric/<name>


@dataclass(frozen=True)
class Renormalized:
    """Rows of a mixture file whose weights summed to 1 only within the tolerance, and were rescaled."""

    path: str
    rows: int          # rows rescaled (off by more than float noise)
    of: int            # rows in the file
    worst: float       # largest |sum - 1|
    worst_sum: float
    worst_run: str
    worst_line: int
    tolerance: float

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def message(self) -> str:
        return (f"{self.path}: renormalized {self.rows} of {self.of} rows whose weights sum to 1 within the "
                f"tolerance {self.tolerance:g}; worst: run {self.worst_run!r} (line {self.worst_line}) sums to "
                f"{self.worst_sum:.6g} (off by {self.worst:.3g})")


@dataclass(frozen=True)
class Table:
    """Rows keyed by ``runs`` with named numeric columns (domains or metrics)."""

    runs: list[str]
    names: list[str]
    index: list[int]
    columns: list[str]
    values: np.ndarray  # (n_rows, n_columns), float64
    lines: list[int] | None = None  # source line of each row, for error messages
    key: str = "run"                # the column rows are keyed by: run (olmix), run_id, index (RegMix)
    labels: list[str] | None = None  # each data column as the file names it ("column 5 `train_the_pile_arxiv`")
    renormalized: Renormalized | None = None

    def label(self, j: int) -> str:
        return self.labels[j] if self.labels else f"`{self.columns[j]}`"

    def line(self, i: int) -> int:
        return self.lines[i] if self.lines else i + 2

    def select(self, columns: Sequence[str]) -> np.ndarray:
        """Values of ``columns`` in the order given (the way to get a name-keyed matrix)."""
        pos = {c: i for i, c in enumerate(self.columns)}
        return self.values[:, [pos[c] for c in columns]]

    def reorder(self, runs: Sequence[str]) -> Table:
        """The same table with rows in the order of ``runs``."""
        pos = {r: i for i, r in enumerate(self.runs)}
        rows = [pos[r] for r in runs]
        return dataclasses.replace(self, runs=[self.runs[i] for i in rows], names=[self.names[i] for i in rows],
                                   index=[self.index[i] for i in rows], columns=list(self.columns),
                                   values=self.values[rows], lines=[self.line(i) for i in rows])


@dataclass(frozen=True)
class SwarmData:
    """A matched pair of ratios and metrics: row i of ``weights`` and of ``metrics`` is the same run."""

    runs: list[str]
    names: list[str]
    domains: list[str]
    weights: np.ndarray  # (n_runs, n_domains)
    metric_names: list[str]
    metrics: np.ndarray  # (n_runs, n_metrics)
    renormalized: Renormalized | None = None


def _read_csv(path: Path, kind: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    if not path.is_file():
        raise DataError(f"{kind} file not found", path)
    text = path.read_text(encoding="utf-8-sig")
    reader = csv.reader(io.StringIO(text))
    rows = [(reader.line_num, r) for r in reader if any(cell.strip() for cell in r)]
    if not rows:
        raise DataError(f"empty {kind} file; expected a header `run,name,index,<...>`", path, 1)
    header = [h.strip() for h in rows[0][1]]
    return header, rows[1:]


def spelling_key(name: str) -> str:
    """What two spellings of one domain share: case, separators and a RegMix ``train_`` prefix ignored."""
    key = re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")
    return key[len(_DOMAIN_PREFIX):] if key.startswith(_DOMAIN_PREFIX) else key


def spelling_hints(unknown: Sequence[str], known: Sequence[str]) -> str:
    """`` (`a` looks like `A` spelled differently)`` for names that differ only in spelling, else ''."""
    by_key = {spelling_key(k): k for k in known}
    pairs = [f"`{u}` looks like `{by_key[spelling_key(u)]}` spelled differently" for u in unknown
             if spelling_key(u) in by_key]
    return f" ({'; '.join(pairs)}; rename the column)" if pairs else ""


def _column_names(header: Sequence[str], data_cols: Sequence[int], kind: str) -> list[str]:
    """Names of the data columns after dropping RegMix's prefixes (see the module docstring)."""
    raw = [header[i] for i in data_cols]
    if kind == "ratios" and all(r.startswith(_DOMAIN_PREFIX) and len(r) > len(_DOMAIN_PREFIX) for r in raw):
        return [r[len(_DOMAIN_PREFIX):] for r in raw]
    return [r[len(_METRIC_PREFIX):] if r.startswith(_METRIC_PREFIX) and len(r) > len(_METRIC_PREFIX) else r
            for r in raw]


def _check_spellings(header: Sequence[str], data_cols: Sequence[int], names: Sequence[str], path: Path,
                     kind: str) -> None:
    """Two columns for one domain (``pile_cc`` and ``Pile-CC``) would split its weight in two: refuse.

    Metric names are only compared exactly (after the ``metric/`` prefix): ``a/acc`` and ``a_acc``
    may well be different results."""
    seen: dict[str, int] = {}
    for i, name in zip(data_cols, names):
        k = spelling_key(name) if kind == "ratios" else name
        if k in seen:
            j = seen[k]
            what = "a domain spelled two ways" if kind == "ratios" else f"the same metric `{name}`"
            raise DataError(f"column {i + 1} `{header[i]}` and column {j + 1} `{header[j]}` are {what}; merge them "
                            "into one column (or rename one if they really differ)", path, 1)
        seen[k] = i


def _layout(header: Sequence[str], path: Path, kind: str) -> tuple[str, set[str]]:
    """The key column and the non-data columns of this header's layout."""
    if "run" in header:
        return "run", {"run", "name", "index"}
    if "run_id" in header:
        return "run_id", {"run_id", "name"}
    if "index" in header:
        return "index", {"index"}
    raise DataError(f"header has none of `run`, `run_id`, `index`; a {kind} file is laid out as olmix's "
                    f"`run,name,index,<...>` or RegMix's `index,<...>`", path, 1)


def read_table(path: str | Path, kind: str) -> Table:
    """Read one swarm CSV in any of the layouts of the module docstring; ``kind`` names it in errors."""
    path = Path(path)
    header, rows = _read_csv(path, kind)
    if "" in header:
        raise DataError(f"empty column name at column {header.index('') + 1} of the header", path, 1)
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise DataError(f"duplicate column(s) {dupes} in the header", path, 1)
    key, meta = _layout(header, path, kind)
    data_cols = [i for i, h in enumerate(header) if h not in meta]
    if not data_cols:
        raise DataError(f"no {kind} columns after `{','.join(h for h in header if h in meta)}`", path, 1)
    columns = _column_names(header, data_cols, kind)
    _check_spellings(header, data_cols, columns, path, kind)
    pos = {h: i for i, h in enumerate(header)}
    runs, names, index, values, lines, seen = [], [], [], [], [], {}
    for line, row in rows:
        if len(row) != len(header):
            raise DataError(f"row has {len(row)} cells but the header has {len(header)}", path, line)
        run = row[pos[key]].strip()
        if not run:
            raise DataError(f"empty `{key}` (column {pos[key] + 1})", path, line)
        if key == "index":
            try:
                run = str(int(float(run)))  # RegMix's 1 and 1.0 are the same run
            except ValueError:
                raise DataError(f"column 1 `index`: {run!r} is not an integer", path, line) from None
        if run in seen:
            raise DataError(f"`{key}` {run!r} appears twice (also on line {seen[run]}); it must be unique", path, line)
        seen[run] = line
        cell = row[pos["index"]].strip() if "index" in pos else ""
        try:
            idx = int(float(cell)) if cell else len(index)
        except ValueError:
            raise DataError(f"column {pos['index'] + 1} `index`: {cell!r} is not an integer", path, line) from None
        vals = []
        for i in data_cols:
            cell = row[i].strip()
            try:
                v = float(cell)
            except ValueError:
                raise DataError(f"column {i + 1} `{header[i]}`: {cell!r} is not a number ({key} {run!r})",
                                path, line) from None
            if not math.isfinite(v):
                raise DataError(f"column {i + 1} `{header[i]}`: {cell!r} is not finite ({key} {run!r}); drop the "
                                "run or fill the value", path, line)
            vals.append(v)
        runs.append(run)
        names.append(row[pos["name"]].strip() if "name" in pos else run)
        index.append(idx)
        values.append(vals)
        lines.append(line)
    if not runs:
        raise DataError(f"{kind} file has a header but no rows", path)
    labels = [f"column {i + 1} `{header[i]}`" for i in data_cols]
    return Table(runs, names, index, columns, np.asarray(values, dtype=np.float64), lines, key, labels)


def renormalize_rows(W: np.ndarray, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows rescaled to sum to 1, and each row's ``|sum - 1|`` (the caller decides what is too far)."""
    sums = W.sum(axis=1)
    return W / np.where(sums > 0, sums, 1.0)[:, None], np.abs(sums - 1.0)


def _line_of(table: Table, run: str) -> int:
    return table.line(table.runs.index(run))


def check_ratios(table: Table, path: str | Path, tolerance: float = SUM_TOLERANCE,
                 priors: Mapping[str, float] | None = None) -> Table:
    """The table with every row summing to 1: weights must be >= 0, and a row whose sum is off by at
    most ``tolerance`` (rounding in a published file) is rescaled and counted in ``renormalized``;
    every domain must be in ``priors`` when they are given."""
    neg = np.argwhere(table.values < 0)
    if len(neg):
        i, j = neg[0]
        more = f"; {len(neg) - 1} more negative cell(s) in the file" if len(neg) > 1 else ""
        raise DataError(f"{table.label(j)}: negative weight {table.values[i, j]:g} ({table.key} {table.runs[i]!r}); "
                        f"weights are shares of the mixture, >= 0{more}", path, table.line(i))
    W, dev = renormalize_rows(table.values, tolerance)
    bad = np.flatnonzero(dev > tolerance)
    if len(bad):
        i = int(bad[0])
        more = f"; {len(bad) - 1} more row(s) are off by more than the tolerance" if len(bad) > 1 else ""
        raise DataError(f"weights of {table.key} {table.runs[i]!r} sum to {table.values[i].sum():.6g}, not 1 "
                        f"(tolerance {tolerance:g}){more}; fix the mixture, or raise the tolerance "
                        "(`sum_tolerance`, --sum-tolerance) if the file is rounded that coarsely", path, table.line(i))
    if priors is not None:
        unknown = [c for c in table.columns if c not in priors]
        if unknown:
            raise DataError(f"domain column(s) {unknown} are not in the priors (known: {sorted(priors)})"
                            f"{spelling_hints(unknown, list(priors))}; add them to the priors or rename the columns",
                            path, 1)
        absent = [d for d in priors if d not in table.columns]
        if absent:
            raise DataError(f"priors name domain(s) {absent} that have no column; add a column (zeros if unused) "
                            "or drop them from the priors", path, 1)
    rescaled = np.flatnonzero(dev > EXACT_SUM)
    if not len(rescaled):
        return table
    w = int(np.argmax(dev))
    note = Renormalized(str(path), int(len(rescaled)), len(table.runs), float(dev[w]), float(table.values[w].sum()),
                        table.runs[w], table.line(w), tolerance)
    return dataclasses.replace(table, values=W, renormalized=note)


def read_ratios(path: str | Path, priors: Mapping[str, float] | None = None,
                tolerance: float = SUM_TOLERANCE) -> Table:
    """Read and check a mixture file (any layout); rows within ``tolerance`` of summing to 1 are renormalized."""
    return check_ratios(read_table(path, "ratios"), path, tolerance, priors)


def read_metrics(path: str | Path) -> Table:
    """Read a results file (any layout; RegMix's ``metric/`` prefix dropped)."""
    return read_table(path, "metrics")


def match(ratios: Table, metrics: Table, ratios_path: str | Path = "ratios.csv",
          metrics_path: str | Path = "metrics.csv") -> SwarmData:
    """Pair rows by their key; runs present in only one file are an error naming them and where they are."""
    only_r = [r for r in ratios.runs if r not in set(metrics.runs)]
    only_m = [r for r in metrics.runs if r not in set(ratios.runs)]
    if only_r or only_m:
        parts = []
        if only_r:
            parts.append(f"{ratios_path}: run(s) {only_r[:5]}{' ...' if len(only_r) > 5 else ''} "
                         f"(line {_line_of(ratios, only_r[0])}) have no row in {metrics_path}")
        if only_m:
            parts.append(f"{metrics_path}: run(s) {only_m[:5]}{' ...' if len(only_m) > 5 else ''} "
                         f"(line {_line_of(metrics, only_m[0])}) have no row in {ratios_path}")
        keys = (f"`{ratios.key}`" if ratios.key == metrics.key else
                f"{ratios_path} by `{ratios.key}`, {metrics_path} by `{metrics.key}`: give both files the same key column")
        raise DataError("rows do not match between the ratios and metrics files: " + "; ".join(parts)
                        + f". Both files must list the same runs (matched by {keys}).")
    m = metrics.reorder(ratios.runs)
    return SwarmData(list(ratios.runs), list(ratios.names), list(ratios.columns), ratios.values.copy(),
                     list(m.columns), m.values.copy(), ratios.renormalized)


def read_swarm(ratios_path: str | Path, metrics_path: str | Path, priors: Mapping[str, float] | None = None,
               tolerance: float = SUM_TOLERANCE) -> SwarmData:
    """Read a ``ratios.csv`` + ``metrics.csv`` pair (from mixlab or olmix) into one matched table."""
    return match(read_ratios(ratios_path, priors, tolerance), read_metrics(metrics_path), ratios_path, metrics_path)


def _format(v: float) -> str:
    return repr(float(v))  # shortest text that reads back to the same float


def write_table(path: str | Path, runs: Sequence[str], names: Sequence[str], columns: Sequence[str],
                values: np.ndarray, index: Sequence[int] | None = None) -> Path:
    """Write an olmix-layout CSV atomically."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (len(runs), len(columns)):
        raise ValueError(f"values shape {values.shape} != ({len(runs)}, {len(columns)})")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*KEY_COLUMNS, *columns])
    idx = list(index) if index is not None else list(range(len(runs)))
    for i, run in enumerate(runs):
        w.writerow([run, names[i], idx[i], *(_format(v) for v in values[i])])
    return atomic.write_text(path, buf.getvalue())


def write_ratios(path: str | Path, runs: Sequence[str], names: Sequence[str], domains: Sequence[str],
                 weights: np.ndarray, index: Sequence[int] | None = None) -> Path:
    """Write ``ratios.csv`` (``run,name,index,<domain...>``)."""
    return write_table(path, runs, names, domains, weights, index)


def write_metrics(path: str | Path, runs: Sequence[str], names: Sequence[str], metric_names: Sequence[str],
                  values: np.ndarray, index: Sequence[int] | None = None) -> Path:
    """Write ``metrics.csv`` (``run,name,index,<metric...>``)."""
    return write_table(path, runs, names, metric_names, values, index)


def read_results_table(path: str | Path, columns: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Read a plain results CSV (fine-tuning mode): a ``run`` column plus the numeric ``columns`` asked for.

    Other columns are ignored, so a wider export of the results store can be used as it is.
    """
    path = Path(path)
    header, rows = _read_csv(path, "results")
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(f"results table lacks column(s) {missing}; it has {header}", path, 1)
    pos = {h: i for i, h in enumerate(header)}
    runs, values = [], []
    for line, row in rows:
        if len(row) != len(header):
            raise DataError(f"row has {len(row)} cells but the header has {len(header)}", path, line)
        runs.append(row[pos["run"]].strip() if "run" in pos else str(len(runs)))
        vals = []
        for c in columns:
            try:
                v = float(row[pos[c]])
            except ValueError:
                raise DataError(f"column `{c}`: {row[pos[c]]!r} is not a number", path, line) from None
            if not math.isfinite(v):
                raise DataError(f"column `{c}`: {row[pos[c]]!r} is not finite", path, line)
            vals.append(v)
        values.append(vals)
    if not runs:
        raise DataError("results table has a header but no rows", path)
    return runs, np.asarray(values, dtype=np.float64)
