"""The one interface every aggregation protocol implements.

A protocol turns many clients' flat update vectors into their sum. It knows nothing about
models: it sees float vectors, integer client ids, a round number, and a :class:`Channel`
that may lose or alter messages. The federated loop calls :meth:`AggregationProtocol.aggregate`
and never needs to know which protocol it holds.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from protocols.channel import Channel
from protocols.errors import ProtocolError, WrongLength


@dataclass(frozen=True)
class AggregateResult:
    """The outcome of one aggregation round.

    Attributes:
        total: float64 sum of the contributors' vectors (within the protocol's documented
            error), the only quantity the server learns under secure protocols.
        contributors: sorted ids of the clients whose vectors are in ``total``.
        dropped: sorted ids of clients that stopped answering during the round.
        rejected: clients excluded because of a bad message, with the typed error.
        individual: what the server saw of each client's update in the clear (plaintext
            only); ``None`` when the protocol hides individual updates.
        bytes_up: bytes carried from clients to the server (and key holder), all stages.
        bytes_down: bytes carried to clients, all stages.
    """

    total: np.ndarray
    contributors: tuple[int, ...]
    dropped: tuple[int, ...] = ()
    rejected: Mapping[int, ProtocolError] = field(default_factory=dict)
    individual: Mapping[int, np.ndarray] | None = None
    bytes_up: int = 0
    bytes_down: int = 0


class AggregationProtocol(ABC):
    """Base class. Subclasses set ``name``, ``stages`` and ``reveals_individual_updates``.

    ``stages`` names the client-to-server uploads in order; a :class:`~protocols.channel.FaultyChannel`
    uses these names to drop or alter messages at a given stage.
    """

    name: ClassVar[str]
    stages: ClassVar[tuple[str, ...]]
    reveals_individual_updates: ClassVar[bool]

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> AggregationProtocol:
        """Build from a config table; unknown keys are an error naming the key."""
        options = dict(options)
        if options:
            raise ValueError(f"protocol {cls.name!r} takes no option {sorted(options)[0]!r}")
        return cls()

    @abstractmethod
    def aggregate(
        self,
        round_id: int,
        updates: Mapping[int, np.ndarray],
        *,
        channel: Channel | None = None,
        seed: int = 0,
    ) -> AggregateResult:
        """Sum ``updates`` (client id -> 1-D float vector) as the protocol allows.

        ``seed`` fixes any non-secret randomness (such as stochastic rounding) so that a
        resumed run reproduces an uninterrupted one. Raises
        :class:`~protocols.errors.TooFewClients` when too few clients survive.
        """

    def describe(self) -> str:
        """One line for run summaries: what the server learns under this protocol."""
        if self.reveals_individual_updates:
            return f"{self.name}: the server sees every client's shared update"
        return f"{self.name}: the server learns only the sum of the sampled clients' shared updates"


def check_updates(updates: Mapping[int, np.ndarray]) -> tuple[list[int], int]:
    """Validate client-side inputs: 1-D finite float vectors of one common length.

    Returns the sorted client ids and the vector length. These are the caller's own
    vectors, so a problem here is a programming error, reported as :class:`WrongLength`
    or :class:`ValueError` naming the client.
    """
    if not updates:
        raise ValueError("no client updates to aggregate")
    ids = sorted(updates)
    length = None
    for cid in ids:
        vec = np.asarray(updates[cid])
        if vec.ndim != 1:
            raise WrongLength(f"update must be 1-D, got shape {vec.shape}", client_id=cid)
        if not np.issubdtype(vec.dtype, np.floating):
            raise ValueError(f"client {cid}: update must be a float vector, got {vec.dtype}")
        if not np.all(np.isfinite(vec)):
            raise ValueError(f"client {cid}: update contains NaN or infinity")
        if length is None:
            length = vec.shape[0]
        elif vec.shape[0] != length:
            raise WrongLength(
                f"update has length {vec.shape[0]}, others have {length}", client_id=cid
            )
    assert length is not None
    return ids, length
