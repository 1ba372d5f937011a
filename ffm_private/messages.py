"""Typed messages between server and clients.

They carry only numpy arrays and plain values, no live objects, so the same client and
server steps can run in-process or as Flower ClientApp/ServerApp on separate machines.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class GlobalModelMessage:
    """Server -> client: the round number and the current shared (global adapter) state.

    ``defense_basis``: the public ``(P, r)`` orthonormal basis of the sensitive subspace the
    client projects its update away from (``[defense] kind = "subspace"``), else ``None``.
    """

    round_id: int
    shared: Mapping[str, np.ndarray]
    defense_basis: np.ndarray | None = None


@dataclass(frozen=True)
class ClientUpdate:
    """Client -> protocol: the flat shared update (new minus old shared state).

    ``delta`` holds only shared parameters, flattened by :class:`SharedSpec`, which refuses
    any personal or frozen tensor.
    """

    client_id: int
    round_id: int
    delta: np.ndarray
    num_examples: int
    metrics: Mapping[str, float] = field(default_factory=dict)
