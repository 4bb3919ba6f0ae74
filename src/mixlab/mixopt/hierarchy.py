"""Hierarchical sources (olmix's source -> topic -> quality): groups whose children share the group's
weight and split it by their own weights.

A leaf is named by its path, ``group/child`` (``code/python_stdlib``, ``dclm/science/high``): that is
how mixtures, ``ratios.csv`` and swarm variants name it, so every flat tool reads a hierarchical
table as it is (the leaves). A nested mapping in olmix's nested form flattens to those names
(:func:`flatten_nested`): ``{code: {weight: 0.4, python_stdlib: 1, toyworld: 1}, prose: 0.6}`` is
``{code/python_stdlib: 0.2, code/toyworld: 0.2, prose: 0.6}`` (children split their group's weight in
proportion to their own). :class:`Hierarchy` aggregates leaf weights to the top-level groups (fit at
``level: group``) and expands group weights back to leaves with a fixed split inside each group; the
reuse of a previous mixture (:mod:`mixlab.mixopt.reuse`) is the same structure with one frozen group.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

SEP = "/"


def flatten_nested(mapping: Mapping[str, Any], where: str = "mixture", prefix: str = "") -> dict[str, float]:
    """Leaf weights of a nested mixture; flat mappings come back unchanged.

    A value is a number (a leaf) or a mapping (a group): its optional ``weight`` (default 1) is the
    group's share among its siblings, and its other keys are children splitting that share in
    proportion to their weights (olmix's nested ``mix``: leaf weight = product along the path).
    Errors are ValueErrors: config validators call this, and pydantic then names the file and line."""
    out: dict[str, float] = {}
    for name, v in mapping.items():
        path = f"{prefix}{name}"
        if isinstance(v, bool) or not isinstance(v, (int, float, Mapping)):
            raise ValueError(f"{where}.{path}: expected a weight or a group of children, got {v!r}")
        if not isinstance(v, Mapping):
            out[path] = float(v)
            continue
        weight = float(v.get("weight", 1.0))
        kids = flatten_nested({k: c for k, c in v.items() if k != "weight"}, where, f"{path}{SEP}")
        total = sum(kids.values())
        if not kids or total <= 0:
            raise ValueError(f"{where}.{path}: a group needs children with weights > 0 (besides `weight`)")
        out.update({k: weight * c / total for k, c in kids.items()})
    return out


def group_of(leaf: str) -> str:
    """The top-level group of a leaf path (a name without ``/`` is its own group)."""
    return leaf.split(SEP, 1)[0]


@dataclass(frozen=True)
class Hierarchy:
    """Top-level groups over named leaves, each group's weight split over its leaves by ``split``."""

    leaves: list[str]
    groups: dict[str, list[str]]              # group -> its leaves, in leaf order
    split: dict[str, dict[str, float]]        # group -> leaf -> share of the group (sums to 1)

    @classmethod
    def from_leaves(cls, leaves: Sequence[str], weights: np.ndarray | None = None) -> Hierarchy:
        """Groups from the leaf paths; the split inside each group from ``weights`` (rows of leaf
        weights, averaged; e.g. the priors), else equal."""
        groups: dict[str, list[str]] = {}
        for leaf in leaves:
            groups.setdefault(group_of(leaf), []).append(leaf)
        return cls.with_groups(leaves, groups, weights)

    @classmethod
    def with_groups(cls, leaves: Sequence[str], groups: Mapping[str, Sequence[str]],
                    weights: np.ndarray | None = None) -> Hierarchy:
        leaves = list(leaves)
        pos = {d: j for j, d in enumerate(leaves)}
        W = None if weights is None else np.atleast_2d(np.asarray(weights, dtype=np.float64))
        split = {}
        for g, kids in groups.items():
            w = np.ones(len(kids)) if W is None else W[:, [pos[k] for k in kids]].sum(axis=0)
            w = w if w.sum() > 0 else np.ones(len(kids))
            split[g] = {k: float(v) for k, v in zip(kids, w / w.sum())}
        return cls(leaves, {g: list(k) for g, k in groups.items()}, split)

    @property
    def names(self) -> list[str]:
        return list(self.groups)

    @property
    def is_flat(self) -> bool:
        return all(len(k) == 1 for k in self.groups.values())

    def _index(self) -> list[list[int]]:
        pos = {d: j for j, d in enumerate(self.leaves)}
        return [[pos[k] for k in kids] for kids in self.groups.values()]

    def aggregate(self, W: np.ndarray) -> np.ndarray:
        """(n, groups) group weights: the sums of their leaves' weights."""
        W = np.atleast_2d(np.asarray(W, dtype=np.float64))
        return np.column_stack([W[:, idx].sum(axis=1) for idx in self._index()])

    def expand(self, G: np.ndarray) -> np.ndarray:
        """(n, leaves) leaf weights: each group's weight split by ``split``."""
        G = np.atleast_2d(np.asarray(G, dtype=np.float64))
        out = np.zeros((len(G), len(self.leaves)))
        for gi, (g, idx) in enumerate(zip(self.groups, self._index())):
            share = np.array([self.split[g][self.leaves[j]] for j in idx])
            out[:, idx] = G[:, [gi]] * share
        return out

    def split_deviation(self, W: np.ndarray) -> np.ndarray:
        """Per row, the largest total-variation distance between a group's split in ``W`` and ``split``
        (0 when every group is split as declared; groups with no weight in a row are skipped)."""
        W = np.atleast_2d(np.asarray(W, dtype=np.float64))
        dev = np.zeros(len(W))
        for g, idx in zip(self.groups, self._index()):
            tot = W[:, idx].sum(axis=1)
            share = np.array([self.split[g][self.leaves[j]] for j in idx])
            inner = W[:, idx] / np.where(tot > 0, tot, 1.0)[:, None]
            d = 0.5 * np.abs(inner - share).sum(axis=1)
            dev = np.maximum(dev, np.where(tot > 1e-12, d, 0.0))
        return dev

    def with_order(self, leaves: Sequence[str]) -> Hierarchy:
        """The same hierarchy with leaves (and each group's children) in the order of ``leaves``."""
        pos = {d: j for j, d in enumerate(leaves)}
        return Hierarchy(list(leaves), {g: sorted(k, key=pos.__getitem__) for g, k in self.groups.items()}, self.split)

    def as_json(self) -> dict[str, Any]:
        return {"leaves": self.leaves, "groups": self.groups, "split": self.split}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Hierarchy:
        return cls(list(data["leaves"]), {g: list(k) for g, k in data["groups"].items()},
                   {g: dict(s) for g, s in data["split"].items()})
