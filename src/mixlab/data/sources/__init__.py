"""Dataset adapters: one module per dataset family, each reading the published file format.

Every adapter registers a :class:`Source` in :data:`REGISTRY`. ``load_records(name)`` finds the files
under ``<data_dir>/<folder>`` (``data_dir`` from ``MIXLAB_DATA_DIR`` unless given), or under an
explicit ``path``; ``hub=True`` loads the same dataset from the Hugging Face hub with ``datasets``
for users who have internet. A missing file is a :class:`~mixlab.errors.DataError` that names the
path and the expected layout. :func:`availability` tells, before any build, which datasets have
local files (``mixlab data sources``), and :meth:`Availability.how_to_add` how to get the others.
"""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from mixlab.data.records import Record
from mixlab.errors import DataError
from mixlab.settings import data_dir as _data_dir
from mixlab.settings import require_dir


@dataclass(frozen=True)
class Source:
    """A registered dataset.

    ``read(folder)`` yields records from a folder laid out as published (``layout`` describes it);
    ``hub`` is ``(hf_dataset_id, config_name_or_None)`` for the online path, read by ``read_hub``.
    Each record's ``metadata['split']`` holds the official split it came from (``train``/``test``/...).
    """

    name: str
    domain: str
    folder: str
    layout: str
    read: Callable[[Path], Iterator[Record]]
    hub: tuple[str, str | None] | None = None
    read_hub: Callable[[], Iterator[Record]] | None = None
    description: str = ""
    embedded: bool = False  # generated in code (toyworld): no folder is read


REGISTRY: dict[str, Source] = {}

# Modules that register sources when imported; kept explicit so the registry is never hidden state.
_MODULES = ("math_sources", "qa_sources", "code_sources", "benchmark_sources", "toyworld_sources")


def register(source: Source) -> Source:
    if source.name in REGISTRY:
        raise ValueError(f"source {source.name!r} registered twice")
    REGISTRY[source.name] = source
    return source


def _load_modules() -> None:
    """Import every adapter module (idempotent: Python imports each module once)."""
    for mod in _MODULES:
        try:
            importlib.import_module(f"{__name__}.{mod}")
        except ModuleNotFoundError as e:  # a module not written yet must not break the others
            if e.name != f"{__name__}.{mod}":
                raise


def get_source(name: str) -> Source:
    _load_modules()
    if name not in REGISTRY:
        import difflib

        close = difflib.get_close_matches(name, REGISTRY, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise DataError(f"unknown dataset {name!r}.{hint} Known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def available() -> list[str]:
    _load_modules()
    return sorted(REGISTRY)


def load_records(
    name: str,
    data_dir: str | Path | None = None,
    path: str | Path | None = None,
    hub: bool = False,
) -> list[Record]:
    """Load every record of dataset ``name`` (all official splits; ``metadata['split']`` tells which)."""
    src = get_source(name)
    if hub:
        if src.read_hub is None:
            raise DataError(f"dataset {name!r} has no Hugging Face hub loader; give a local `path:`")
        return list(src.read_hub())
    if src.embedded:
        return list(src.read(Path(path) if path is not None else Path()))
    folder = Path(path) if path is not None else _data_dir(data_dir) / src.folder
    require_dir(folder, f"data for {name!r}", src.layout)
    records = list(src.read(folder))
    if not records:
        raise DataError(f"no records found for {name!r}. Expected layout:\n{src.layout}", folder)
    return records


# ---------------------------------------------------------------- availability on this machine

# Files a shared-data folder holds beside the data (provenance, licences): they do not make a dataset present.
_NOT_DATA = ("source.txt", "readme", "license", "licence", "fastchat_license")


@dataclass(frozen=True)
class Availability:
    """Whether a dataset can be read here: ``present`` (its folder holds data files), ``missing``
    (no folder), ``empty`` (a folder without data files) or ``embedded`` (generated in code).
    ``records`` (split -> count) or ``error`` are filled in when it was actually read (``check``)."""

    name: str
    status: Literal["present", "missing", "empty", "embedded"]
    folder: Path | None
    files: int
    layout: str
    hub: str | None = None
    records: dict[str, int] | None = None
    error: str | None = None
    domain: str = ""
    description: str = ""

    @property
    def readable(self) -> bool:
        return self.status in ("present", "embedded") and self.error is None

    def how_to_add(self) -> str:
        """What to do so that this dataset loads: its files and their layout, or the hub."""
        lines = [f"put its files in {self.folder}/ laid out as:", *("    " + ln for ln in self.layout.splitlines())]
        if self.hub:
            lines.append(f"  or, with internet, read it from the Hugging Face hub ({self.hub}): in a data config "
                         f"`datasets: {{{self.name}: {{weight: 1, hub: true}}}}`")
        return "\n".join(lines)


def _data_files(folder: Path) -> int:
    """Data files under ``folder`` (provenance and licence files left out)."""
    if not folder.is_dir():
        return 0
    return sum(1 for p in folder.rglob("*") if p.is_file() and not p.name.lower().startswith(_NOT_DATA))


def folder_status(folder: Path) -> tuple[Literal["present", "missing", "empty"], int]:
    """(status, data files) of a data folder; shared with the text corpora's check."""
    n = _data_files(folder)
    return ("present" if n else "empty" if folder.is_dir() else "missing"), n


def availability(name: str, data_dir: str | Path | None = None, check: bool = False) -> Availability:
    """Where dataset ``name`` is looked for under ``data_dir`` (default ``$MIXLAB_DATA_DIR``) and
    whether files are there; ``check`` reads it (slow for large sets) and counts its records per
    official split, or keeps the error that loading gave."""
    src = get_source(name)
    hub = ", ".join(h for h in src.hub if h) if src.hub and src.read_hub else None
    common = {"layout": src.layout, "hub": hub, "domain": src.domain, "description": src.description}
    if src.embedded:
        found = Availability(name, "embedded", None, 0, **common)
    else:
        folder = _data_dir(data_dir) / src.folder
        status, n = folder_status(folder)
        found = Availability(name, status, folder, n, **common)
    if not check or found.status not in ("present", "embedded"):
        return found
    try:
        counts = Counter(str(r.metadata.get("split", "?")) for r in load_records(name, data_dir))
    except DataError as e:
        return replace(found, error=str(e))
    return replace(found, records=dict(sorted(counts.items())))


def availabilities(data_dir: str | Path | None = None, check: bool = False) -> list[Availability]:
    """:func:`availability` of every registered dataset, by name."""
    return [availability(n, data_dir, check) for n in available()]


def corpus_availabilities(data_dir: str | Path | None = None) -> list[Availability]:
    """The text corpora pretraining configs name as ``corpus:<name>`` (folders ``corpus_<name>``)."""
    from mixlab.data.sources import corpus

    out = []
    for name in corpus.available(data_dir):
        folder = _data_dir(data_dir) / f"corpus_{name}"
        status, n = folder_status(folder)
        out.append(Availability(name, status, folder, n, corpus.layout(name), description="pretraining text"))
    return out
