"""``he``: clients encrypt, the server adds ciphertexts, only the key holder decrypts the sum.

One round, every message through the :class:`~protocols.channel.Channel` as bytes:

1. ``encrypted_update`` (client -> server): each client encrypts its update under the public
   key: CKKS encodes the floats, BFV first maps them to fixed-point residues modulo the plain
   modulus with :class:`~protocols.quantize.FixedPointCodec`. The server checks each message
   (frame, checksums, duplicates, ciphertext shape) and adds the valid ones in place.
2. ``aggregate`` (server -> key holder, party :data:`~protocols.he.keys.KEY_HOLDER`): the
   encrypted sum and its contributor list.
3. ``decrypted_sum`` (key holder -> server): the plaintext sum, decoded by the server.

A client whose message is bad is excluded (typed error in ``rejected``) and the round goes on if
``min_clients`` valid updates remain; otherwise, or if the key holder cannot be reached or
refuses, the round aborts with :class:`~protocols.errors.TooFewClients` and reveals nothing.
The public context is distributed once at set-up (like a certificate), not per round; its size
is :attr:`HEProtocol.public_context_size`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
from tqdm.auto import tqdm

from protocols.base import AggregateResult, AggregationProtocol, check_updates
from protocols.channel import Channel
from protocols.errors import ProtocolError, TooFewClients
from protocols.he.keys import KEY_HOLDER, KeyHolder, PublicContext
from protocols.he.params import CKKS, HEOptions, HEParams, check_precision, parse_options
from protocols.he.parties import HEClient, HEServer
from protocols.quantize import FixedPointCodec


class HEProtocol(AggregationProtocol):
    """Homomorphic aggregation with TenSEAL (CKKS or BFV) and a separate key holder.

    The protocol object simulates all parties in one process, but each holds only its own
    material: :attr:`client` and :attr:`server` a public context loaded from bytes,
    :attr:`key_holder` the secret key. Pass a ``key_holder`` restored from its secret bytes to
    reuse keys; by default fresh keys are generated.
    """

    name = "he"
    stages = ("encrypted_update", "decrypted_sum")
    reveals_individual_updates = False
    supports_distributed_noise = True

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
        public = key_holder.public_context_bytes()
        self.public_context_size = len(public)
        self.client = HEClient(PublicContext(public, params))
        self.server = HEServer(PublicContext(public, params))
        self.progress = progress

    @classmethod
    def from_options(cls, options: Mapping) -> HEProtocol:
        """``scheme``, ``preset``, ``min_clients``; BFV also ``clip``, ``max_clients``."""
        return cls(parse_options(options))

    @property
    def params(self) -> HEParams:
        return self.options.params

    def describe(self) -> str:
        p = self.params
        return (f"he ({p.name}, {p.scheme.upper()}; a separate key holder decrypts only the "
                "sum): the server learns only the sum of the sampled clients' shared updates")

    def codec(self, n_clients: int) -> FixedPointCodec | None:
        """BFV: the round's fixed-point codec (room for ``max_clients`` or ``n_clients``)."""
        if self.params.scheme == CKKS:
            return None
        room = self.options.max_clients or n_clients
        check_precision(self.params, self.options.clip, room)
        return FixedPointCodec(clip=self.options.clip, max_clients=room,
                               modulus=self.params.plain_modulus)

    def _check_round(self, updates: Mapping[int, np.ndarray]) -> tuple[list[int], int]:
        ids, length = check_updates(updates)
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
                             f"{self.options.max_clients}: their fixed-point sum could wrap")
        for cid in ids:
            peak = float(np.max(np.abs(updates[cid])))
            if params.scheme == CKKS and peak * n > params.max_abs_sum:
                raise ValueError(f"client {cid}: |update| reaches {peak:.3g}; {n} such values "
                                 f"could exceed the {params.max_abs_sum:.3g} that "
                                 f"{params.name!r} decrypts correctly")
            if params.scheme != CKKS and peak > self.options.clip:
                warnings.warn(f"client {cid}: update coordinates up to {peak:.3g} are clipped "
                              f"to clip = {self.options.clip} before BFV encoding",
                              RuntimeWarning, stacklevel=3)
        return ids, length

    def aggregate(
        self,
        round_id: int,
        updates: Mapping[int, np.ndarray],
        *,
        channel: Channel | None = None,
        seed: int = 0,
        secrets: Mapping[int, bytes] | None = None,
    ) -> AggregateResult:
        channel = channel or Channel()
        ids, length = self._check_round(updates)
        codec = self.codec(len(ids))
        scale = codec.scale if codec is not None else self.params.scale
        upload, answer = self.stages
        round_sum = self.server.open_round(round_id, length, scale, stage=upload)
        rejected: dict[int, ProtocolError] = {}
        dropped: list[int] = []
        for cid in tqdm(ids, desc=f"he round {round_id}", disable=not self.progress,
                        leave=False):
            rng = np.random.default_rng(np.random.SeedSequence([seed, round_id, cid]))
            message = self.client.encrypt_update(round_id, cid, updates[cid], codec=codec,
                                                 rng=rng)
            payload = channel.upload(upload, cid, message)
            del message
            if payload is None:
                dropped.append(cid)
                continue
            try:
                round_sum.add(cid, payload)
            except ProtocolError as err:
                rejected[cid] = err
        contributors = tuple(sorted(round_sum.contributors))
        if len(contributors) < self.options.min_clients:
            raise TooFewClients(f"{len(contributors)} valid encrypted updates, at least "
                                f"{self.options.min_clients} required", stage=upload)
        total = self._decrypt(round_sum, channel, round_id, answer)
        if codec is not None:
            total = codec.decode_sum(total)
        return AggregateResult(
            total=np.asarray(total, dtype=np.float64),
            contributors=contributors,
            dropped=tuple(dropped),
            rejected=rejected,
            individual=None,
            bytes_up=channel.bytes_up,
            bytes_down=channel.bytes_down,
        )

    def _decrypt(self, round_sum, channel: Channel, round_id: int, stage: str) -> np.ndarray:
        """The key holder hop; any failure aborts the round (nothing is revealed)."""
        sent = channel.download("aggregate", KEY_HOLDER, round_sum.aggregate_message())
        if sent is None:
            raise TooFewClients("the key holder is unreachable: the round aborts", stage=stage)
        try:
            answer = self.key_holder.decrypt_aggregate(sent, round_id=round_id)
        except ProtocolError as err:
            raise TooFewClients(f"the key holder refused the aggregate: {err}",
                                stage=stage) from err
        back = channel.upload(stage, KEY_HOLDER, answer)
        if back is None:
            raise TooFewClients("the key holder's answer was lost: the round aborts", stage=stage)
        try:
            return round_sum.read_sum(back, stage=stage)
        except ProtocolError as err:
            raise TooFewClients(f"the decrypted sum is unusable: {err}", stage=stage) from err
