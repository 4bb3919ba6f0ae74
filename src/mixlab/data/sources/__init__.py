"""Dataset adapters: one module per dataset family, each reading the published file format.

Every adapter registers a :class:`Source` in :data:`REGISTRY`. ``load_records(name)`` finds the files
under ``<data_dir>/<folder>`` (``data_dir`` from ``MIXLAB_DATA_DIR`` unless given), or under an
explicit ``path``; ``hub=True`` loads the same dataset from the Hugging Face hub with ``datasets``
for users who have internet. A missing file is a :class:`~mixlab.errors.DataError` that names the
path and the expected layout.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

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
