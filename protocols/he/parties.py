"""The two roles that never see a secret key: the client that encrypts, the server that relays.

Both hold only a round's :class:`~protocols.he.keys.PublicContext`. The client checks the key
holder's signed round opening against its own configuration before it encrypts, encrypts at
most once per round, and sends the key holder a receipt of exactly the bytes it sent the
server. The server checks every update completely (a rejected message changes nothing),
forwards the valid ones to the key holder and asks it for the round's sum.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from protocols.errors import (
    ContextMismatch,
    DuplicateMessage,
    MalformedMessage,
    ReplayedMessage,
    TamperedMessage,
    WrongLength,
)
from protocols.he import crypto, wire
from protocols.he.codec import (
    duplicate_key,
    encode_fixed_point,
    encrypt_chunks,
    load_chunk,
)
from protocols.he.keys import KEY_HOLDER, Opening, PublicContext, decode_opening, round_scale
from protocols.he.params import BFV, CKKS, HEOptions, HEParams
from protocols.quantize import FixedPointCodec

ROUND_KEYS = "round_keys"


class HEClient:
    """One client: its receipt key, the key holder's public identity, its own options."""

    def __init__(self, client_id: int, receipt_key: bytes, holder_identity: bytes,
                 options: HEOptions) -> None:
        self.id = client_id
        self._key = receipt_key
        self._holder = holder_identity
        self.options = options
        self._last_opening = -1
        self._contributed: set[int] = set()  # training rounds this client encrypted for
        self.clipped = 0

    def read_opening(self, payload: bytes, *, stage: str = ROUND_KEYS, integer: bool = False
                     ) -> tuple[Opening, PublicContext]:
        """Check a round opening: the key holder's signature, freshness, and that its
        parameters are this client's own (clip, room, ``min_clients`` floor, preset, and the
        encoding: ``integer`` expects BFV's exact integer path)."""
        params, opts = self.options.params, self.options
        where = {"client_id": self.id, "stage": stage}
        op = decode_opening(params, payload, client_id=self.id, stage=stage)
        if not crypto.signature_valid(self._holder, op.signed_input(params), op.signature):
            raise TamperedMessage("the round opening is not signed by the key holder", **where)
        if op.round_id <= self._last_opening:
            raise ReplayedMessage(f"round {op.round_id} is not newer than round "
                                  f"{self._last_opening}", **where)
        if op.clip != opts.clip:
            raise ContextMismatch(f"round clip {op.clip!r}, this client's is {opts.clip!r}",
                                  **where)
        if op.min_contributors < opts.min_clients:
            raise ContextMismatch(f"the key holder would decrypt sums of {op.min_contributors} "
                                  f"clients; this client requires {opts.min_clients}", **where)
        if not (1 <= op.room <= params.max_summands) or (
                opts.max_clients is not None and op.room != opts.max_clients):
            raise ContextMismatch(f"room for {op.room} summands does not match this client's "
                                  "configuration", **where)
        if integer and params.scheme != BFV:
            raise ContextMismatch("only BFV has an exact integer path", **where)
        if op.scale != round_scale(params, op.clip, op.room, integer=integer):
            what = "the integer path" if integer else f"clip {op.clip} and {op.room} summands"
            raise ContextMismatch(f"round scale {op.scale!r} is not that of {what}", **where)
        try:
            public = PublicContext(op.public, params)
        except ValueError as err:
            raise MalformedMessage(f"round opening: {err}", **where) from None
        return op, public

    def encrypt_update(self, opening: bytes, update: np.ndarray, *, round_id: int,
                       secret: bytes | None = None, integer: bool = False
                       ) -> tuple[bytes, bytes]:
        """Encrypt this client's update of federated round ``round_id``, once.

        Returns the framed update (for the server) and the receipt (for the key holder).
        BFV's stochastic rounding is keyed from ``secret`` (the client's 32-byte round secret;
        ``None``: fresh OS randomness). Coordinates beyond the clip are clipped; their count
        goes in the receipt, so only the key holder sees it and the server gets the total
        (0 with ``report_clipped = false``: nobody learns it). ``integer``: ``update`` holds
        residues modulo ``t`` (int64), encrypted as they are (no clip, no rounding; the
        clipped count is 0).
        """
        op, public = self.read_opening(opening, integer=integer)
        params, clip = self.options.params, self.options.clip
        where = {"client_id": self.id, "stage": ROUND_KEYS}
        update = np.asarray(update, dtype=np.int64 if integer else np.float64)
        if update.ndim != 1 or update.shape[0] != op.length:
            raise WrongLength(f"the round is for {op.length} values, this update has "
                              f"{update.shape}", **where)
        if round_id in self._contributed:
            raise ReplayedMessage(f"this client already contributed to round {round_id}: a "
                                  "second encryption of the same update would let the server "
                                  "difference two sums", **where)
        counted = self.options.report_clipped and not integer
        clipped = int(np.count_nonzero(np.abs(update) > clip)) if counted else 0
        if integer:  # the same residue, centred: SEAL's batch encoder takes |v| <= (t - 1) / 2
            t = params.plain_modulus
            values = np.where(update > t // 2, update - t, update)
        elif params.scheme == CKKS:
            values = np.clip(update, -clip, clip)
        else:
            codec = FixedPointCodec(clip=clip, max_clients=op.room, modulus=params.plain_modulus)
            key = crypto.rounding_key(secret if secret is not None else os.urandom(32), round_id)
            values = encode_fixed_point(codec, update, crypto.KeystreamUniform(key))
        chunks = encrypt_chunks(public.context, params, values)
        message = wire.encode(wire.UPDATE, scheme=params.scheme, round_id=op.round_id,
                              party=self.id, length=op.length, scale=op.scale,
                              fingerprint=op.fingerprint, chunks=chunks)
        dig = crypto.digest(message)
        count = clipped.to_bytes(8, "little")
        tag = crypto.receipt_tag(self._key, op.round_id, self.id, op.fingerprint, dig + count)
        receipt = wire.encode(wire.RECEIPT, scheme=params.scheme, round_id=op.round_id,
                              party=self.id, length=op.length, scale=0.0,
                              fingerprint=op.fingerprint, chunks=[dig, tag, count])
        self._last_opening = op.round_id
        self._contributed.add(round_id)
        self.clipped = clipped
        return message, receipt


class RoundInbox:
    """The server's checks for one round; it holds no sum (the key holder computes it).

    :meth:`check` validates a client's whole message (frame, checksums, a second update from
    the same client, chunks copied from another client, ciphertext shape) without changing
    any state; :meth:`accept` then records it once the key holder took it.
    """

    def __init__(self, public: PublicContext, opening: Opening, *, stage: str) -> None:
        params = public.params
        self.public = public
        self.opening = opening
        self.round_id = opening.round_id
        self.stage = stage
        self.lengths = params.chunk_lengths(opening.length)
        self.expect = wire.Expect(wire.UPDATE, params.scheme, opening.round_id, opening.length,
                                  len(self.lengths), opening.scale, public.fingerprint)
        self.contributors: list[int] = []
        self._seen: dict[bytes, int] = {}

    def check(self, client_id: int, payload: bytes) -> list[bytes]:
        """Validate one client's message; return its chunk keys. Raises typed errors."""
        if client_id in self.contributors:
            raise DuplicateMessage("second update in one round (the first is kept)",
                                   client_id=client_id, stage=self.stage)
        expect = dataclasses.replace(self.expect, party=client_id)
        frame = wire.decode(payload, expect, client_id=client_id, stage=self.stage)
        context, params = self.public.context, self.public.params
        keys = []
        for i, size in enumerate(self.lengths):  # checksum, copy and parse, one chunk at a time
            chunk = frame.chunk(i)
            key = duplicate_key(chunk, frame.crcs[i])
            first = self._seen.get(key)
            if first is not None:
                raise DuplicateMessage(f"chunk {i} repeats a ciphertext already received from "
                                       f"client {first}", client_id=client_id, stage=self.stage)
            keys.append(key)
            load_chunk(context, params, chunk, size, client_id=client_id, stage=self.stage,
                       index=i)
        return keys

    def accept(self, client_id: int, keys: list[bytes]) -> None:
        for key in keys:
            self._seen[key] = client_id
        self.contributors.append(client_id)

    def aggregate_message(self) -> bytes:
        """The request that the key holder decrypt this round's sum of :attr:`contributors`."""
        if not self.contributors:
            raise ValueError("no valid update was accepted")
        e = self.expect
        return wire.encode(wire.AGGREGATE, scheme=e.scheme, round_id=self.round_id,
                           party=len(self.contributors), length=e.length, scale=e.scale,
                           fingerprint=e.fingerprint, chunks=[],
                           contributors=self.contributors)

    def read_sum(self, payload: bytes, *, stage: str) -> tuple[np.ndarray, int]:
        """Parse the key holder's decrypted sum: the values (float64 for CKKS, residues mod t
        for BFV) and the contributors' total clipped count."""
        e = self.expect
        where = {"client_id": KEY_HOLDER, "stage": stage}
        expect = wire.Expect(wire.SUM, e.scheme, self.round_id, e.length, 2, e.scale,
                             e.fingerprint, party=len(self.contributors))
        frame = wire.decode(payload, expect, client_id=KEY_HOLDER, stage=stage)
        if sorted(frame.contributors) != sorted(self.contributors):
            raise MalformedMessage("the decrypted sum covers other contributors", **where)
        body, count = frame.chunk(0), frame.chunk(1)
        if len(count) != 8:
            raise WrongLength("the clipped count is not one 8-byte value", **where)
        dtype = "<f8" if e.scheme == CKKS else "<u8"
        if len(body) % 8:
            raise WrongLength(f"decrypted sum of {len(body)} bytes is not a whole number of "
                              "8-byte values", **where)
        values = np.frombuffer(body, dtype=dtype)
        if values.shape[0] != e.length:
            raise WrongLength(f"decrypted sum has {values.shape[0]} values, expected "
                              f"{e.length}", **where)
        return values, int.from_bytes(count, "little")


class HEServer:
    """The aggregating server: a round's public context, so it can check but not read."""

    def __init__(self, params: HEParams) -> None:
        self.params = params
        self.public: PublicContext | None = None

    def open_round(self, opening: bytes, *, stage: str = "encrypted_update") -> RoundInbox:
        """Start checking the updates of the round the key holder opened (its opening)."""
        op = decode_opening(self.params, opening, client_id=None, stage=stage)
        self.public = PublicContext(op.public, self.params)
        return RoundInbox(self.public, op, stage=stage)
