"""The server's side of a round: sample clients, broadcast, aggregate, update.

The server never sees a client's personal state and, under ``secagg`` or ``he``, never sees
an individual update: it only calls :meth:`AggregationProtocol.aggregate` and applies the
mean of what comes back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from ffm_private.messages import ClientUpdate, GlobalModelMessage
from ffm_private.models import SharedSpec
from ffm_private.privacy.errors import InsufficientNoiseError
from ffm_private.privacy.mechanism import NothingToRelease
from protocols import AggregateResult, AggregationProtocol, Channel
from protocols.errors import ProtocolError, TooFewClients

Averager = Callable[[int, AggregateResult | None], np.ndarray]
"""Turns the protocol's result into the mean update to apply (``(round_id, result)``).

``result`` is ``None`` when no sum exists (nobody took part, or the protocol aborted below its
``min_clients``); an averager that must release every round (central DP) returns a noise-only
step, others raise :class:`~ffm_private.privacy.mechanism.NothingToRelease`.
"""


def plain_mean(round_id: int, result: AggregateResult | None) -> np.ndarray:
    """FedAvg without DP: the sum divided by the number of contributors."""
    if result is None or not result.contributors:
        raise NothingToRelease("no client took part")
    return result.total / len(result.contributors)


def sample_clients(n_clients: int, fraction: float, round_id: int, seed: int) -> list[int]:
    """A uniformly random subset of ``round(fraction * n)`` clients (at least one), sorted."""
    k = max(1, int(round(fraction * n_clients)))
    rng = np.random.default_rng(np.random.SeedSequence([seed, round_id, 11]))
    return sorted(int(c) for c in rng.choice(n_clients, size=k, replace=False))


@dataclass(frozen=True)
class RoundOutcome:
    """What happened to the shared state in one round."""

    round_id: int
    applied: bool
    contributors: tuple[int, ...]
    dropped: tuple[int, ...] = ()
    rejected: Mapping[int, str] = field(default_factory=dict)
    update_norm: float = 0.0
    aborted: str | None = None
    noise_only: bool = False
    bytes_up: int = 0
    individual: Mapping[int, np.ndarray] | None = None
    total: np.ndarray | None = None


class Server:
    """Holds the global shared state and applies aggregated updates (FedAvg).

    ``averager`` turns the protocol's sum into the mean step; user-level DP replaces the
    plain mean with one that adds central noise or checks the distributed noise shares.
    """

    def __init__(self, spec: SharedSpec, shared: Mapping[str, np.ndarray],
                 protocol: AggregationProtocol, server_lr: float = 1.0,
                 averager: Averager = plain_mean) -> None:
        self.spec = spec
        self.vector = spec.flatten(shared)
        self.protocol = protocol
        self.server_lr = server_lr
        self.averager = averager

    @property
    def shared(self) -> dict[str, np.ndarray]:
        return self.spec.unflatten(self.vector)

    def broadcast(self, round_id: int) -> GlobalModelMessage:
        return GlobalModelMessage(round_id=round_id, shared=self.shared)

    def aggregate(self, round_id: int, updates: Mapping[int, ClientUpdate], *,
                  channel: Channel | None = None, seed: int = 0,
                  secrets: Mapping[int, bytes] | None = None,
                  encoding: str = "float") -> RoundOutcome:
        """Sum the updates through the protocol and take a FedAvg step with their mean.

        A round without a sum (nobody took part, or the protocol aborted below its minimum)
        releases what the averager owes for it: nothing (the state is unchanged) or, under
        central DP, a noise-only step. Too few distributed noise shares discard the round.
        ``secrets`` are the clients' own protocol secrets and ``encoding`` the protocol path
        (see :meth:`protocols.base.AggregationProtocol.aggregate`).
        """
        for cid, upd in updates.items():
            if upd.round_id != round_id or upd.client_id != cid:
                raise ValueError(f"update from client {cid} is not for round {round_id}")
        result, aborted = None, "no client took part"
        try:
            if updates:
                result = self.protocol.aggregate(
                    round_id, {cid: u.delta for cid, u in updates.items()}, channel=channel,
                    seed=seed, secrets=secrets, encoding=encoding)
        except TooFewClients as err:
            aborted = str(err)
        try:
            mean = self.averager(round_id, result)
        except (NothingToRelease, InsufficientNoiseError) as err:
            return RoundOutcome(round_id, applied=False, contributors=(),
                                aborted=aborted if result is None else str(err))
        self.vector = self.vector + self.server_lr * mean
        if result is None:
            return RoundOutcome(round_id, applied=True, contributors=(), aborted=aborted,
                                noise_only=True, update_norm=float(np.linalg.norm(mean)))
        return RoundOutcome(
            round_id=round_id,
            applied=True,
            contributors=result.contributors,
            dropped=result.dropped,
            rejected={cid: str(err) for cid, err in result.rejected.items()},
            update_norm=float(np.linalg.norm(mean)),
            bytes_up=result.bytes_up,
            # what the log records: the model's coordinates (a mechanism's extra coordinates,
            # such as the adaptive-clipping count, are summed with them and released noisily)
            individual=(None if result.individual is None else
                        {c: v[:self.spec.size] for c, v in result.individual.items()}),
            total=result.total[:self.spec.size],
        )


__all__ = ["Averager", "ProtocolError", "RoundOutcome", "Server", "plain_mean", "sample_clients"]
