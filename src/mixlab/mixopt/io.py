"""olmix-compatible swarm tables: ``ratios.csv`` and ``metrics.csv``.

Both files share the key columns ``run,name,index``; the remaining columns are domains (ratios)
or metrics. Columns are matched by NAME, never by position, so a file whose domains come in a
different order reads to the same table. Rows of the two files are matched by ``run``. Every bad
input raises a :class:`~mixlab.errors.DataError` naming the file, the line and the column.

``swarm collect`` (the swarm stage) writes these files with :func:`write_ratios` and
:func:`write_metrics`; ``fit`` reads them with :func:`read_swarm`.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mixlab import atomic
from mixlab.errors import DataError

KEY_COLUMNS = ("run", "name", "index")
SUM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Table:
    """Rows keyed by ``run`` with named numeric columns (domains or metrics)."""

    runs: list[str]
    names: list[str]
    index: list[int]
    columns: list[str]
    values: np.ndarray  # (n_rows, n_columns), float64
    lines: list[int] | None = None  # source line of each row, for error messages

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
        return Table([self.runs[i] for i in rows], [self.names[i] for i in rows], [self.index[i] for i in rows],
                     list(self.columns), self.values[rows], [self.line(i) for i in rows])


@dataclass(frozen=True)
class SwarmData:
    """A matched pair of ratios and metrics: row i of ``weights`` and of ``metrics`` is the same run."""

    runs: list[str]
    names: list[str]
    domains: list[str]
    weights: np.ndarray  # (n_runs, n_domains)
    metric_names: list[str]
    metrics: np.ndarray  # (n_runs, n_metrics)


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


def read_table(path: str | Path, kind: str) -> Table:
    """Read one olmix-layout CSV (``run,name,index,<columns...>``); ``kind`` names it in errors."""
    path = Path(path)
    header, rows = _read_csv(path, kind)
    missing = [k for k in KEY_COLUMNS if k not in header]
    if missing:
        raise DataError(f"header lacks column(s) {missing}; an olmix {kind} file starts with `run,name,index`", path, 1)
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise DataError(f"duplicate column(s) {dupes} in the header", path, 1)
    if "" in header:
        raise DataError(f"empty column name at position {header.index('') + 1} of the header", path, 1)
    columns = [h for h in header if h not in KEY_COLUMNS]
    if not columns:
        raise DataError(f"no {kind} columns after `run,name,index`", path, 1)
    pos = {h: i for i, h in enumerate(header)}
    runs, names, index, values, lines, seen = [], [], [], [], [], {}
    for line, row in rows:
        if len(row) != len(header):
            raise DataError(f"row has {len(row)} cells but the header has {len(header)}", path, line)
        run = row[pos["run"]].strip()
        if not run:
            raise DataError("empty `run` id", path, line)
        if run in seen:
            raise DataError(f"run {run!r} appears twice (also on line {seen[run]}); run ids must be unique", path, line)
        seen[run] = line
        try:
            idx = int(float(row[pos["index"]])) if row[pos["index"]].strip() else len(index)
        except ValueError:
            raise DataError(f"column `index`: {row[pos['index']]!r} is not an integer", path, line) from None
        vals = []
        for c in columns:
            cell = row[pos[c]].strip()
            try:
                v = float(cell)
            except ValueError:
                raise DataError(f"column `{c}`: {cell!r} is not a number (run {run!r})", path, line) from None
            if not math.isfinite(v):
                raise DataError(f"column `{c}`: {cell!r} is not finite (run {run!r}); drop the run or fill the value",
                                path, line)
            vals.append(v)
        runs.append(run)
        names.append(row[pos["name"]].strip())
        index.append(idx)
        values.append(vals)
        lines.append(line)
    if not runs:
        raise DataError(f"{kind} file has a header but no rows", path)
    return Table(runs, names, index, columns, np.asarray(values, dtype=np.float64), lines)


def _line_of(table: Table, run: str) -> int:
    return table.line(table.runs.index(run))


def check_ratios(table: Table, path: str | Path, tolerance: float = SUM_TOLERANCE,
                 priors: Mapping[str, float] | None = None) -> None:
    """Weights must be >= 0 and sum to 1 within ``tolerance``; every domain must be in ``priors``."""
    for i, run in enumerate(table.runs):
        row = table.values[i]
        neg = [c for c, v in zip(table.columns, row) if v < 0]
        if neg:
            raise DataError(f"negative weight in column(s) {neg} (run {run!r})", path, table.line(i))
        total = float(row.sum())
        if abs(total - 1.0) > tolerance:
            raise DataError(f"weights of run {run!r} sum to {total:.6g}, not 1 (tolerance {tolerance:g}); "
                            "renormalize the row or fix the mixture", path, table.line(i))
    if priors is not None:
        unknown = [c for c in table.columns if c not in priors]
        if unknown:
            raise DataError(f"domain column(s) {unknown} are not in the priors (known: {sorted(priors)}); "
                            "add them to the priors or rename the columns", path, 1)
        absent = [d for d in priors if d not in table.columns]
        if absent:
            raise DataError(f"priors name domain(s) {absent} that have no column; add a column (zeros if unused) "
                            "or drop them from the priors", path, 1)


def read_ratios(path: str | Path, priors: Mapping[str, float] | None = None,
                tolerance: float = SUM_TOLERANCE) -> Table:
    """Read and check an olmix ``ratios.csv``."""
    table = read_table(path, "ratios")
    check_ratios(table, path, tolerance, priors)
    return table


def read_metrics(path: str | Path) -> Table:
    """Read an olmix ``metrics.csv``."""
    return read_table(path, "metrics")


def match(ratios: Table, metrics: Table, ratios_path: str | Path = "ratios.csv",
          metrics_path: str | Path = "metrics.csv") -> SwarmData:
    """Pair rows by ``run``; runs present in only one file are an error naming them and where they are."""
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
        raise DataError("rows do not match between the ratios and metrics files: " + "; ".join(parts)
                        + ". Both files must list the same runs (matched by the `run` column).")
    m = metrics.reorder(ratios.runs)
    return SwarmData(list(ratios.runs), list(ratios.names), list(ratios.columns), ratios.values.copy(),
                     list(m.columns), m.values.copy())


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
