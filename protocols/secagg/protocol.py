"""SecAgg+ behind :class:`~protocols.base.AggregationProtocol`: the in-process round.

:meth:`SecAggPlusProtocol.aggregate` plays every party. Client objects hold their own
secrets; the server object sees only the bytes the :class:`~protocols.channel.Channel`
delivers; this module only moves bytes between them, stage by stage, in client-id order:

==================== ========================= =============================================
download (server ->) upload (-> server)        what happens
==================== ========================= =============================================
``round_start``      ``advertise_keys``        two fresh X25519 public keys per client
``neighbour_keys``   ``share_keys``            Shamir shares of ``b`` and the mask key,
                                               AES-GCM encrypted to each neighbour
``forwarded_shares`` ``masked_input``          quantized update + self mask + pairwise masks
``unmask_request``   ``unmask``                ``b`` shares of survivors, key shares of dropouts
==================== ========================= =============================================

A :class:`~protocols.channel.FaultyChannel` drops clients at an upload stage or alters what
they upload; the server's typed errors land in :attr:`AggregateResult.rejected`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from protocols.base import AggregateResult, AggregationProtocol, check_updates
from protocols.channel import Channel
from protocols.errors import ProtocolError
from protocols.secagg import primitives as cr
from protocols.secagg.client import SecAggClient
from protocols.secagg.options import SecAggOptions
from protocols.secagg.server import STAGES, ReplayCache, SecAggServer


@dataclass(frozen=True)
class SecAggResult(AggregateResult):
    """:class:`AggregateResult` plus what SecAgg+ can tell cheaply and securely.

    Attributes:
        clipped: coordinates clipped by the fixed-point codec, summed over the contributors
            (each client appends its count to its masked vector, so the server learns only
            the total).
        neighbours: ``k``, neighbours per client this round; ``threshold``: ``t``.
        timings: seconds per party and step: ``server_*`` for the server, ``client_*`` summed
            over clients, ``client_*_median`` and ``client_*_max`` per client,
            ``client_*_count`` how many clients ran the step.
        client_errors: problems clients found in what the server sent them (they stopped,
            so the server counts them as dropped).

    A client that drops out or is rejected at the ``unmask`` stage already delivered its
    masked input, so it is in ``contributors`` as well as ``dropped`` / ``rejected``.
    ``dropped`` also lists clients the server left out after key sharing because fewer than
    ``t`` of their neighbours remained (they could never have been unmasked).
    """

    clipped: int = 0
    neighbours: int = 0
    threshold: int = 0
    timings: Mapping[str, float] = field(default_factory=dict)
    client_errors: Mapping[int, ProtocolError] = field(default_factory=dict)


Step = Callable[[SecAggClient, Any], Any]


class SecAggPlusProtocol(AggregationProtocol):
    """SecAgg+ (Bonawitz et al. 2017 with Bell et al. 2020's neighbour graph).

    The server learns the sum of the contributors' quantized updates and nothing else about
    them, provided fewer than ``t`` of any client's neighbours collude with it; see
    ``docs/secagg.md``. ``entropy`` replaces the OS CSPRNG (tests only: it must be a
    cryptographically secure source in any real use).
    """

    name = "secagg"
    stages = STAGES
    reveals_individual_updates = False
    supports_distributed_noise = True

    def __init__(self, options: SecAggOptions | None = None, *,
                 entropy: cr.Entropy | None = None) -> None:
        self.options = options or SecAggOptions()
        self._entropy = entropy
        self._replay = ReplayCache()

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> SecAggPlusProtocol:
        return cls(SecAggOptions.from_mapping(options))

    def describe(self) -> str:
        o = self.options
        return (f"secagg (SecAgg+, clip {o.clip}, neighbours {o.neighbours}, threshold "
                f"{o.threshold}): the server learns only the sum of the sampled clients' "
                "shared updates")

    def aggregate(
        self,
        round_id: int,
        updates: Mapping[int, np.ndarray],
        *,
        channel: Channel | None = None,
        seed: int = 0,
        secrets: Mapping[int, bytes] | None = None,
    ) -> SecAggResult:
        """Run one SecAgg+ round; raises :class:`~protocols.errors.TooFewClients` (revealing
        nothing) when too few clients survive to unmask safely."""
        channel = channel or Channel()
        ids, length = check_updates(updates)
        entropy = self._entropy or cr.default_entropy
        server = SecAggServer(round_id, ids, length, self.options,
                              graph_seed=cr.graph_seed(seed, round_id), replay=self._replay,
                              entropy=entropy)
        clients = {cid: SecAggClient(cid, round_id, np.asarray(updates[cid]),
                                     rounding_key=cr.rounding_key(seed, round_id, cid),
                                     entropy=entropy) for cid in ids}
        timings: dict[str, float] = {}
        spent_by_step: dict[str, list[float]] = {}
        client_errors: dict[int, ProtocolError] = {}

        def timed(name: str, fn: Step, client: SecAggClient, arg: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(client, arg)
            finally:
                spent_by_step.setdefault(name, []).append(time.perf_counter() - start)

        def exchange(downloads: dict[int, bytes], down: str, up: str,
                     steps: list[tuple[str, Step]]) -> None:
            for cid, message in downloads.items():
                value = channel.download(down, cid, message)
                if value is None:
                    continue
                try:
                    for name, fn in steps:
                        value = timed(name, fn, clients[cid], value)
                except ProtocolError as err:
                    client_errors[cid] = err
                    continue
                payload = channel.upload(up, cid, value)
                if payload is not None:
                    server.receive(up, cid, payload)

        exchange(server.round_start(), "round_start", "advertise_keys",
                 [("advertise_keys", SecAggClient.advertise_keys)])
        exchange(server.neighbour_keys(), "neighbour_keys", "share_keys",
                 [("share_keys", SecAggClient.share_keys)])
        exchange(server.forward_shares(), "forwarded_shares", "masked_input",
                 [("receive_shares", SecAggClient.receive_shares),
                  ("mask", lambda c, _: c.mask())])
        exchange(server.unmask_requests(), "unmask_request", "unmask",
                 [("unmask", SecAggClient.unmask)])
        outcome = server.finish()
        for name, spent in spent_by_step.items():
            timings[f"client_{name}"] = float(np.sum(spent))
            timings[f"client_{name}_median"] = float(np.median(spent))
            timings[f"client_{name}_max"] = float(np.max(spent))
            timings[f"client_{name}_count"] = len(spent)
        timings.update({f"server_{k}": v for k, v in outcome.timings.items()})
        return SecAggResult(
            total=outcome.total,
            contributors=outcome.contributors,
            dropped=outcome.dropped,
            rejected=outcome.rejected,
            individual=None,
            bytes_up=channel.bytes_up,
            bytes_down=channel.bytes_down,
            clipped=outcome.clipped,
            neighbours=server.k,
            threshold=server.t,
            timings=timings,
            client_errors=client_errors,
        )
