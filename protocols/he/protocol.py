"""``he``: clients encrypt, the server checks and relays, the key holder decrypts one sum.

One round, every message through the :class:`~protocols.channel.Channel` as bytes:

1. ``round_keys`` (key holder -> each client, through the server): the key holder opens its
   next round under a fresh key pair and signs the opening (public context, length, clip,
   room, ``min_clients``). A client checks the signature and the parameters against its own.
2. ``receipt`` (client -> key holder, directly): the SHA-256 digest of the client's encrypted
   update, authenticated with HMAC-SHA256 under the key registered at enrolment.
3. ``encrypted_update`` (client -> server): the update, clipped (BFV: mapped to fixed-point
   residues with :class:`~protocols.quantize.FixedPointCodec`, rounding keyed from the
   client's secret), encrypted under the round's key; the receipt also carries the client's
   clipped-coordinate count (the server learns only the round's total; with
   ``report_clipped = false``, as under distributed DP, every client reports 0).
   The server checks it completely and forwards it (``forwarded_update``) to the key holder,
   which adds it to its own sum only if a receipt of that client names exactly these bytes.
4. ``aggregate`` (server -> key holder): the request to decrypt; the key holder decrypts its
   own verified sum once, if it covers at least ``min_clients`` distinct clients, and drops the
   round's secret key. ``decrypted_sum`` (key holder -> server): the plaintext sum.

A client whose message is bad is excluded (typed error in ``rejected``) and the round goes on
if ``min_clients`` valid updates remain; otherwise, or if the key holder cannot be reached or
refuses, the round aborts with :class:`~protocols.errors.TooFewClients` and reveals nothing.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from protocols.base import (
    AggregateResult,
    AggregationProtocol,
    centred_lift,
    check_encoding,
    check_integer_updates,
    check_updates,
)
from protocols.channel import Channel
from protocols.errors import ProtocolError, TooFewClients
from protocols.he.keys import KEY_HOLDER, KeyHolder, PublicContext
from protocols.he.params import BFV, CKKS, HEOptions, HEParams, check_precision, parse_options
from protocols.he.parties import ROUND_KEYS, HEClient, HEServer
from protocols.quantize import FixedPointCodec

RECEIPT = "receipt"
UPLOAD = "encrypted_update"
ANSWER = "decrypted_sum"


@dataclass(frozen=True)
class HEResult(AggregateResult):
    """:class:`AggregateResult` plus what the HE round reports.

    Attributes:
        clipped: coordinates clipped before encryption, summed over the contributors (each
            client's count travels in its authenticated receipt to the key holder, which
            returns only the total with the sum); ``None`` with ``report_clipped = false``
            (nothing is counted).
        round_keys_bytes: size of the round's public context, sent to every client.
        timings: seconds: ``key_holder_open`` (key generation and signature),
            ``client_encrypt`` (summed over clients), ``server_check``, ``key_holder_verify``
            (receipts, digests, ciphertext checks and additions), ``key_holder_decrypt``.
        client_errors: problems clients found in what they were sent (they did not upload).
    """

    clipped: int | None = 0
    round_keys_bytes: int = 0
    timings: Mapping[str, float] = field(default_factory=dict)
    client_errors: Mapping[int, ProtocolError] = field(default_factory=dict)


class HEProtocol(AggregationProtocol):
    """Homomorphic aggregation with TenSEAL (BFV by default, CKKS by opt-in) and a key holder.

    The protocol object simulates all parties in one process, but each holds only its own
    material: :attr:`clients` their receipt keys and a round's public context, :attr:`server`
    a public context, :attr:`key_holder` the round's secret key. Clients are enrolled with the
    key holder the first time they appear.
    """

    name = "he"
    stages = (RECEIPT, UPLOAD, ANSWER)
    reveals_individual_updates = False
    supports_distributed_noise = True
    private_statistics_option = "report_clipped"

    def __init__(self, options: HEOptions | None = None, *, key_holder: KeyHolder | None = None,
                 progress: bool = False) -> None:
        options = options or parse_options({})
        self.options = options
        params = options.params
        if key_holder is None:
            key_holder = KeyHolder.generate(params, min_contributors=options.min_clients)
        elif key_holder.params != params:
            raise ValueError(f"key holder uses preset {key_holder.params.name!r}, the protocol "
                             f"{params.name!r}")
        self.key_holder = key_holder
        self.server = HEServer(params)
        self.clients: dict[int, HEClient] = {}
        self.progress = progress
        self.min_clients = options.min_clients
        self.value_range = options.clip
        # CKKS: the server can recover each round's key from the decrypted sum, so
        # per-client noise shares would not hide individual updates from it
        self.supports_distributed_noise = params.scheme == BFV
        # BFV sums residues modulo its plaintext modulus exactly; CKKS is approximate
        self.integer_modulus = params.plain_modulus if params.scheme == BFV else None

    @classmethod
    def from_options(cls, options: Mapping) -> HEProtocol:
        """``scheme``, ``preset``, ``min_clients``, ``clip``, ``max_clients``,
        ``report_clipped``, and for CKKS the required ``ckks_key_risk_accepted = true``."""
        return cls(parse_options(options))

    @property
    def params(self) -> HEParams:
        return self.options.params

    @property
    def public(self) -> PublicContext | None:
        """The current round's public context (``None`` before the first round)."""
        return self.server.public

    @property
    def public_context_size(self) -> int | None:
        """Bytes of a round's public context, sent to every client every round."""
        return None if self.server.public is None else self.server.public.size

    def describe(self) -> str:
        p, o = self.params, self.options
        head = (f"he ({p.name}, {p.scheme.upper()}, clip {o.clip}; keys rotate every round; "
                f"the key holder decrypts one sum per round, of at least {o.min_clients} "
                "authenticated client ciphertexts, and sees the individual ciphertexts)")
        if p.scheme == CKKS:
            return (head + ": CKKS exposes each round's secret key to the server, which sees "
                    "the decrypted sum (Li-Micciancio passive key recovery), and with it that "
                    "round's individual updates (ckks_key_risk_accepted)")
        return head + ": the server learns only the sum of the sampled clients' shared updates"

    def room(self, n_clients: int) -> int:
        """Summands the round's encoding leaves room for: ``max_clients`` or the sample."""
        room = self.options.max_clients or n_clients
        check_precision(self.params, self.options.clip, room)
        return room

    def rounding_bound(self, length: int, max_clients: int) -> float:
        """BFV: stochastic rounding's L2 bound for rounds of up to ``max_clients``; CKKS
        encodes floats approximately and is not used with distributed noise: 0."""
        codec = self.codec(max(1, max_clients))
        return 0.0 if codec is None else codec.rounding_bound(length)

    def codec(self, n_clients: int) -> FixedPointCodec | None:
        """BFV: the round's fixed-point codec (room for ``max_clients`` or ``n_clients``)."""
        room = self.room(n_clients)
        if self.params.scheme == CKKS:
            return None
        return FixedPointCodec(clip=self.options.clip, max_clients=room,
                               modulus=self.params.plain_modulus)

    def client(self, client_id: int) -> HEClient:
        """Client ``client_id``, enrolled with the key holder on first use."""
        client = self.clients.get(client_id)
        if client is None:
            key = self.key_holder.enroll(client_id)
            client = HEClient(client_id, key, self.key_holder.identity, self.options)
            self.clients[client_id] = client
        return client

    def _check_round(self, updates: Mapping[int, np.ndarray],
                     integer: bool = False) -> tuple[list[int], int]:
        ids, length = (check_integer_updates(updates, self.params.plain_modulus) if integer
                       else check_updates(updates))
        params, n = self.params, len(updates)
        if length == 0:
            raise ValueError("he cannot encrypt empty update vectors")
        if ids[0] < 0:
            raise ValueError(f"client ids must be >= 0 (party {KEY_HOLDER} is the key holder), "
                             f"got {ids[0]}")
        if n > params.max_summands:
            raise ValueError(f"{n} clients exceed the {params.max_summands} summands preset "
                             f"{params.name!r} supports")
        if self.options.max_clients is not None and n > self.options.max_clients:
            raise ValueError(f"{n} clients exceed protocol.options.max_clients = "
                             f"{self.options.max_clients}: their sum could leave the encoding's "
                             "range")
        # the warning names a client's peak value: not emitted when statistics are withheld
        for cid in [] if integer or not self.options.report_clipped else ids:
            peak = float(np.max(np.abs(updates[cid])))
            if peak > self.options.clip:
                warnings.warn(f"client {cid}: update coordinates up to {peak:.3g} are clipped "
                              f"to clip = {self.options.clip} before {params.scheme.upper()} "
                              "encryption", RuntimeWarning, stacklevel=3)
        return ids, length

    def aggregate(
        self,
        round_id: int,
        updates: Mapping[int, np.ndarray],
        *,
        channel: Channel | None = None,
        seed: int = 0,
        secrets: Mapping[int, bytes] | None = None,
        encoding: str = "float",
    ) -> HEResult:
        """One round; ``seed`` is unused (nothing here may depend on public values alone).

        ``encoding="integer"`` (BFV): the updates are residues modulo the plaintext modulus
        ``t``, encrypted as they are; the opening's scale marks the integer path, and each
        client checks it against its own encoding before it encrypts.
        """
        channel = channel or Channel()
        integer = check_encoding(self, encoding)
        ids, length = self._check_round(updates, integer)
        if secrets is not None:
            for cid in ids:
                if cid not in secrets:
                    raise ValueError(f"client {cid}: no secret given for this round")
                if not isinstance(secrets[cid], bytes) or len(secrets[cid]) != 32:
                    raise ValueError(f"client {cid}: the round secret must be 32 bytes")
        if len(ids) < self.options.min_clients:
            raise TooFewClients(f"{len(ids)} clients sampled, at least "
                                f"{self.options.min_clients} required", stage=UPLOAD)
        holder, room = self.key_holder, self.room(len(ids))
        clients = {cid: self.client(cid) for cid in ids}
        timings = dict.fromkeys(("key_holder_open", "client_encrypt", "server_check",
                                 "key_holder_verify", "key_holder_decrypt"), 0.0)
        start = time.perf_counter()
        opening = holder.open_round(length, room=room, clip=self.options.clip, integer=integer)
        timings["key_holder_open"] = time.perf_counter() - start
        inbox = self.server.open_round(opening, stage=UPLOAD)
        rejected: dict[int, ProtocolError] = {}
        client_errors: dict[int, ProtocolError] = {}
        dropped: list[int] = []
        for cid in tqdm(ids, desc=f"he round {round_id}", disable=not self.progress,
                        leave=False):
            got = channel.download(ROUND_KEYS, cid, opening)
            if got is None:
                dropped.append(cid)
                continue
            start = time.perf_counter()
            try:
                message, receipt = clients[cid].encrypt_update(
                    got, updates[cid], round_id=round_id,
                    secret=None if secrets is None else secrets[cid], integer=integer)
            except ProtocolError as err:
                client_errors[cid] = err
                dropped.append(cid)
                continue
            finally:
                timings["client_encrypt"] += time.perf_counter() - start
            sent_receipt = channel.upload(RECEIPT, cid, receipt)
            payload = channel.upload(UPLOAD, cid, message)
            del message
            if sent_receipt is None or payload is None:
                dropped.append(cid)
                continue
            try:
                start = time.perf_counter()
                try:
                    holder.receive_receipt(cid, sent_receipt, stage=RECEIPT)
                finally:
                    timings["key_holder_verify"] += time.perf_counter() - start
                start = time.perf_counter()
                try:
                    keys = inbox.check(cid, payload)
                finally:
                    timings["server_check"] += time.perf_counter() - start
                forwarded = channel.download("forwarded_update", KEY_HOLDER, payload)
                if forwarded is None:
                    raise TooFewClients("the key holder is unreachable: the round aborts",
                                        stage=UPLOAD)
                start = time.perf_counter()
                try:
                    holder.receive_update(cid, forwarded, stage=UPLOAD)
                finally:
                    timings["key_holder_verify"] += time.perf_counter() - start
            except TooFewClients:
                raise
            except ProtocolError as err:
                rejected[cid] = err
                continue
            inbox.accept(cid, keys)
        contributors = tuple(sorted(inbox.contributors))
        if len(contributors) < self.options.min_clients:
            raise TooFewClients(f"{len(contributors)} valid encrypted updates, at least "
                                f"{self.options.min_clients} required", stage=UPLOAD)
        start = time.perf_counter()
        total, count = self._decrypt(inbox, channel, ANSWER)
        timings["key_holder_decrypt"] = time.perf_counter() - start
        codec = None if integer else self.codec(len(ids))
        if integer:
            total = centred_lift(total, self.params.plain_modulus)
        elif codec is not None:
            total = codec.decode_sum(total)
        return HEResult(
            total=np.asarray(total, dtype=np.float64),
            contributors=contributors,
            dropped=tuple(dropped),
            rejected=rejected,
            individual=None,
            bytes_up=channel.bytes_up,
            bytes_down=channel.bytes_down,
            clipped=count if self.options.report_clipped else None,
            round_keys_bytes=inbox.public.size,
            timings=timings,
            client_errors=client_errors,
        )

    def _decrypt(self, inbox, channel: Channel, stage: str) -> tuple[np.ndarray, int]:
        """The key holder hop; any failure aborts the round (nothing is revealed)."""
        sent = channel.download("aggregate", KEY_HOLDER, inbox.aggregate_message())
        if sent is None:
            raise TooFewClients("the key holder is unreachable: the round aborts", stage=stage)
        try:
            answer = self.key_holder.decrypt_aggregate(sent)
        except ProtocolError as err:
            raise TooFewClients(f"the key holder refused the aggregate: {err}",
                                stage=stage) from err
        back = channel.upload(stage, KEY_HOLDER, answer)
        if back is None:
            raise TooFewClients("the key holder's answer was lost: the round aborts", stage=stage)
        try:
            values, count = inbox.read_sum(back, stage=stage)
        except ProtocolError as err:
            raise TooFewClients(f"the decrypted sum is unusable: {err}", stage=stage) from err
        return values, count
