"""The sparse neighbour graph of SecAgg+ (Bell et al. 2020), derived from a public seed.

Each client shares its secrets with, and masks against, only its ``k`` neighbours instead of
all ``n - 1`` other clients, so costs grow with ``k = O(log n)`` rather than ``n``.

Construction: order the participating clients by ``SHA-256(seed || id)`` (a random
permutation that every party computes identically from the public round seed and the list of
participants) and connect each to the ``k / 2`` clients on either side of it on that circle
(a circulant, "Harary" graph). Every node has degree exactly ``k``; the graph stays connected
unless ``k / 2`` circle-consecutive clients all drop. ``k`` is rounded up to an even number;
when ``k >= m - 1`` the graph is complete.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Iterable, Mapping, Sequence


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
    return sorted(ids, key=lambda c: hashlib.sha256(seed + struct.pack("<q", c)).digest())


def neighbour_graph(ids: Sequence[int], k: int, seed: bytes) -> dict[int, tuple[int, ...]]:
    """Each participant's sorted neighbours, for degree ``k`` (already effective)."""
    order = circle_order(ids, seed)
    m = len(order)
    if k >= m - 1:
        return {c: tuple(sorted(x for x in order if x != c)) for c in order}
    if k % 2:
        raise ValueError(f"a circulant graph on {m} nodes needs an even degree, got {k}")
    half = k // 2
    graph = {}
    for pos, c in enumerate(order):
        near = {order[(pos + d) % m] for d in range(1, half + 1)}
        near |= {order[(pos - d) % m] for d in range(1, half + 1)}
        graph[c] = tuple(sorted(near))
    return graph


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
