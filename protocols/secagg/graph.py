"""The sparse neighbour graph of SecAgg+ (Bell et al. 2020), derived from a public seed.

Each client shares its secrets with, and masks against, only its ``k`` neighbours instead of
all ``n - 1`` other clients, so costs grow with ``k = O(log n)`` rather than ``n``.

Construction: order the participating clients by ``SHA-256(seed || id)`` (a random
permutation that every party computes identically from the public round seed and the list of
participants) and connect each to the ``k / 2`` clients on either side of it on that circle
(a circulant, "Harary" graph). Every node has degree exactly ``k``; the graph stays connected
unless ``k / 2`` circle-consecutive clients all drop. ``k`` is rounded up to an even number;
when ``k >= m - 1`` the graph is complete.

The circle order and the graph are pure functions of public values (the participant set, ``k``
and the seed), memoised on exactly those: in an in-process round the server and every client
derive the same graph, so it is built once instead of once per party (each would otherwise
hash every participant and build every neighbourhood). The graph is returned read-only.
"""

from __future__ import annotations

import functools
import hashlib
import math
import struct
import types
from collections.abc import Iterable, Mapping

import numpy as np


def effective_degree(requested: int, m: int) -> int:
    """Degree of every node among ``m`` participants: ``requested`` rounded up to even, at most ``m - 1``."""
    if m < 2:
        return 0
    k = requested + (requested % 2)
    return min(k, m - 1)


def auto_degree(n: int) -> int:
    """Default ``k`` for ``n`` sampled clients: ``4 * ceil(log2 n)`` (O(log n), as Bell et al.)."""
    return 4 * max(1, math.ceil(math.log2(max(n, 2))))


def circle_order(ids: Iterable[int], seed: bytes) -> list[int]:
    """The participants in the seed's pseudo-random circle order."""
    return list(_circle(tuple(sorted(ids)), seed))


@functools.lru_cache(maxsize=4)
def _circle(ids: tuple[int, ...], seed: bytes) -> tuple[int, ...]:
    # a pure function of public values, so it is computed once per round, not once per party
    return tuple(sorted(ids, key=lambda c: hashlib.sha256(seed + struct.pack("<q", c)).digest()))


def neighbour_graph(ids: Iterable[int], k: int, seed: bytes) -> Mapping[int, tuple[int, ...]]:
    """Each participant's sorted neighbours, for degree ``k`` (already effective).

    Read-only, and memoised on (participants, ``k``, seed): every party of an in-process
    round derives the same graph from the same public values, so it is built once."""
    return _graph(tuple(sorted(ids)), k, seed)


@functools.lru_cache(maxsize=4)
def _graph(ids: tuple[int, ...], k: int, seed: bytes) -> Mapping[int, tuple[int, ...]]:
    order = np.asarray(_circle(ids, seed), dtype=np.int64)
    m = len(order)
    if k >= m - 1:
        everyone = order.tolist()
        graph = {c: tuple(sorted(x for x in everyone if x != c)) for c in everyone}
        return types.MappingProxyType(graph)
    if k % 2:
        raise ValueError(f"a circulant graph on {m} nodes needs an even degree, got {k}")
    half = k // 2
    steps = np.concatenate([np.arange(-half, 0), np.arange(1, half + 1)])
    near = order[(np.arange(m)[:, None] + steps) % m]  # the k / 2 on either side of each
    near.sort(axis=1)
    return types.MappingProxyType(dict(zip(order.tolist(), map(tuple, near.tolist()),
                                           strict=True)))


def is_connected(nodes: Iterable[int], graph: Mapping[int, Iterable[int]]) -> bool:
    """Whether ``nodes`` induce a connected subgraph of ``graph``."""
    nodes = set(nodes)
    if not nodes:
        return True
    start = next(iter(nodes))
    seen, stack = {start}, [start]
    while stack:
        for nb in graph[stack.pop()]:
            if nb in nodes and nb not in seen:
                seen.add(nb)
                stack.append(nb)
    return seen == nodes
