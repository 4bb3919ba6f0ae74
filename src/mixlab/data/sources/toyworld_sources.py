"""Toyworld sources: one embedded dataset per toyworld domain, e.g. ``toyworld_arithmetic``.

Nothing is read from disk: ``load_records("toyworld_<domain>")`` generates a fixed default set with
seed 0 — train and test records from :func:`mixlab.data.toyworld.records` (``metadata['split']``
says which; the two sides never share a question) — so data-build configs and tests can use the
toyworld like any other dataset. Sizes are fixed here so a config names the same data every time;
the people domain is smaller because its world has only 64 people (6 facts each, 2 phrasings).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from mixlab.data import toyworld
from mixlab.data.records import Record
from mixlab.data.sources import Source, register

SEED = 0
# (train, test) records per domain
SIZES: dict[str, tuple[int, int]] = {
    "arithmetic": (3000, 600),
    "people": (480, 64),
    "code": (1500, 300),
    "prose": (3000, 600),
}
_LAYOUT = "embedded: generated in code by mixlab.data.toyworld (no files needed)"
_DESCRIPTIONS = {
    "arithmetic": "synthetic sums, products and word problems (numeric answers, worked solutions)",
    "people": "questions about a fixed invented population (towns, jobs, pets, ages, friends)",
    "code": "tiny Python functions to write, graded by assert tests in metadata['test_list']",
    "prose": "common-sense and reading-comprehension questions about short stories",
}


def _reader(domain: str):
    def read(folder: Path) -> Iterator[Record]:  # noqa: ARG001 - embedded: the folder is not used
        n_train, n_test = SIZES[domain]
        yield from toyworld.records(domain, n_train, SEED, "train")
        yield from toyworld.records(domain, n_test, SEED, "test")

    return read


for _domain in toyworld.DOMAINS:
    register(Source(
        name=f"toyworld_{_domain}", domain=_domain, folder="", layout=_LAYOUT, read=_reader(_domain),
        description=f"toyworld {_domain}: {_DESCRIPTIONS[_domain]}", embedded=True,
    ))
