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
``survivor_set``     ``consistency``           (malicious-server mode) signature on the survivors
``unmask_request``   ``unmask``                ``b`` shares of survivors, key shares of dropouts
==================== ========================= =============================================

Every client is built with the protocol's options (the run's public parameters, which a
client applies itself), the run's public seed and its own secret from ``secrets``. In
malicious-server mode the protocol object is also the enrolment authority of the
simulation: it creates each client's Ed25519 identity key the first time the client takes
part, keeps it on the client's side (the server object never sees it), and publishes the
registry of identity public keys.

A :class:`~protocols.channel.FaultyChannel` drops clients at an upload stage or alters what
they upload; the server's typed errors land in :attr:`AggregateResult.rejected`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from protocols.base import (
    AggregateResult,
    AggregationProtocol,
    check_encoding,
    check_integer_updates,
    check_updates,
)
from protocols.channel import Channel
from protocols.errors import ProtocolError
from protocols.quantize import FixedPointCodec
from protocols.secagg import primitives as cr
from protocols.secagg.client import SecAggClient
from protocols.secagg.options import SecAggOptions
from protocols.secagg.server import MALICIOUS_STAGES, STAGES, ReplayCache, SecAggServer


@dataclass(frozen=True)
class SecAggResult(AggregateResult):
    """:class:`AggregateResult` plus what SecAgg+ can tell cheaply and securely.

    Attributes:
        clipped: coordinates clipped by the fixed-point codec, summed over the contributors
            (each client appends its count to its masked vector, so the server learns only
            the total); ``None`` with ``report_clipped = false`` (no count is sent).
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

    clipped: int | None = 0
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
    private_statistics_option = "report_clipped"
    integer_modulus = 2**32

    def __init__(self, options: SecAggOptions | None = None, *,
                 entropy: cr.Entropy | None = None) -> None:
        self.options = options or SecAggOptions()
        self._entropy = entropy
        self._replay = ReplayCache()
        if self.options.malicious_server:
            self.stages = MALICIOUS_STAGES
        self._identities: dict[int, object] = {}  # client side: each client's signing key
        self.registry: dict[int, bytes] = {}  # public: enrolled identity keys

    @property
    def min_clients(self) -> int:  # type: ignore[override]
        """Fewest contributors a round may have: the ``min_clients`` option."""
        return self.options.min_clients

    @property
    def value_range(self) -> float:  # type: ignore[override]
        """Largest coordinate encoded without clamping: the ``clip`` option."""
        return float(self.options.clip)

    def rounding_bound(self, length: int, max_clients: int) -> float:
        """Stochastic rounding's L2 bound for rounds of up to ``max_clients`` participants
        (the codec leaves room for every participant, so more clients mean coarser steps)."""
        return FixedPointCodec(clip=self.options.clip,
                               max_clients=max(1, max_clients)).rounding_bound(length)

    def enrol(self, client_id: int) -> bytes:
        """Create (once) a client's Ed25519 identity key and register its public key."""
        if client_id not in self._identities:
            key = cr.new_identity(self._entropy or cr.default_entropy)
            self._identities[client_id] = key
            self.registry[client_id] = cr.identity_public(key)
        return self.registry[client_id]

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> SecAggPlusProtocol:
        return cls(SecAggOptions.from_mapping(options))

    def describe(self) -> str:
        o = self.options
        mode = ", malicious-server checks" if o.malicious_server else ""
        return (f"secagg (SecAgg+, clip {o.clip}, neighbours {o.neighbours}, threshold "
                f"{o.threshold}{mode}): the server learns only the sum of the sampled clients' "
                "shared updates")

    def aggregate(
        self,
        round_id: int,
        updates: Mapping[int, np.ndarray],
        *,
        channel: Channel | None = None,
        seed: int = 0,
        secrets: Mapping[int, bytes] | None = None,
        encoding: str = "float",
    ) -> SecAggResult:
        """Run one SecAgg+ round; raises :class:`~protocols.errors.TooFewClients` (revealing
        nothing) when too few clients survive to unmask safely.

        ``encoding="integer"``: the updates are residues modulo ``2**32`` and are masked as
        they are (no codec, no clipped count: ``clipped`` is ``None``); the transcript binds
        the encoding, so a client and a server that disagree on it cannot unmask anything.
        """
        channel = channel or Channel()
        integer = check_encoding(self, encoding)
        ids, length = (check_integer_updates(updates, 2**32) if integer
                       else check_updates(updates))
        if secrets is not None:
            for cid in ids:
                secret = secrets.get(cid)
                if not isinstance(secret, bytes | bytearray) or len(secret) != cr.KEY_BYTES:
                    raise ValueError(f"client {cid}: secrets[{cid}] must be {cr.KEY_BYTES} "
                                     "bytes")
        entropy = self._entropy or cr.default_entropy
        malicious = self.options.malicious_server
        if malicious:
            for cid in ids:
                self.enrol(cid)
        server = SecAggServer(round_id, ids, length, self.options, run_seed=seed,
                              replay=self._replay, entropy=entropy,
                              registry=self.registry if malicious else None, integer=integer)
        clients = {cid: SecAggClient(
            cid, round_id, np.asarray(updates[cid]), options=self.options, run_seed=seed,
            secret=bytes(secrets[cid]) if secrets is not None else None, entropy=entropy,
            identity=self._identities.get(cid), registry=self.registry if malicious else None,
            integer=integer)
            for cid in ids}
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
        if malicious:
            exchange(server.survivor_sets(), "survivor_set", "consistency",
                     [("consistency", SecAggClient.consistency)])
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
