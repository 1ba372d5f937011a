"""Key roles: the key holder owns each round's secret key; everyone else a public context.

The :class:`KeyHolder` is not a decryption oracle. It keeps its own round counter and opens
each round itself with a **fresh key pair** (keys rotate every round; a round's secret key is
dropped once its sum is decrypted or the next round opens). It signs the opening (Ed25519), so
clients encrypt only under a key it issued. It decrypts one thing per round: the sum it
computes *itself* from the ciphertexts the server forwards, each tied by an authenticated
receipt (HMAC-SHA256 under the client's enrolment key, sent by the client directly) to an
enrolled client of that round, at least ``min_contributors`` distinct ones. A crafted
"aggregate" has no receipt and is refused; a second decryption of a round is refused.

The price: the key holder receives every individual ciphertext under its own key, so it must
be trusted not to decrypt them (see docs/he.md, threat model).

Clients and the aggregating server load a round's public context from its bytes into a
:class:`PublicContext`, which refuses any context that carries a secret key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from dataclasses import dataclass, field

import numpy as np
import tenseal as ts

from protocols.errors import (
    DuplicateMessage,
    MalformedMessage,
    ReplayedMessage,
    TamperedMessage,
    TooFewClients,
    WrongLength,
    WrongRound,
)
from protocols.he import crypto, wire
from protocols.he.codec import duplicate_key, load_chunk
from protocols.he.errors import UnverifiedContribution
from protocols.he.params import CKKS, HEParams
from protocols.quantize import FixedPointCodec

#: Party id of the key holder on the :class:`~protocols.channel.Channel`.
KEY_HOLDER = -1

#: Most values a round's vectors may have (checked before anything is allocated).
MAX_LENGTH = 2**28

_ROUND_PARAMS = struct.Struct("<QdQ")  # room, clip, min_contributors


def fingerprint(public_context: bytes) -> bytes:
    """16-byte identity of a public context (parameters and public key): SHA-256 prefix."""
    return hashlib.sha256(public_context).digest()[:16]


def _new_context(params: HEParams) -> ts.Context:
    if params.scheme == CKKS:
        ctx = ts.context(ts.SCHEME_TYPE.CKKS, params.poly_modulus_degree,
                         coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes), n_threads=1)
        ctx.global_scale = params.scale
    else:
        ctx = ts.context(ts.SCHEME_TYPE.BFV, params.poly_modulus_degree,
                         plain_modulus=params.plain_modulus,
                         coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes), n_threads=1)
    return ctx


def _load_context(data: bytes, params: HEParams, what: str) -> ts.Context:
    try:
        ctx = ts.context_from(data, n_threads=1)
    except Exception as err:  # TenSEAL raises ValueError/RuntimeError on bad bytes
        raise ValueError(f"{what} does not parse as a TenSEAL context: {err}") from None
    if params.scheme == CKKS:
        ctx.global_scale = params.scale
    return ctx


INTEGER_SCALE = 0.0
"""The scale field of a BFV round on the exact integer path (no codec; never a codec's scale,
which is at least 1)."""


def round_scale(params: HEParams, clip: float, room: int, *, integer: bool = False) -> float:
    """The scale every update of a round must carry: the codec's (BFV), the preset's (CKKS),
    :data:`INTEGER_SCALE` on BFV's integer path."""
    if params.scheme == CKKS:
        if integer:
            raise ValueError("CKKS has no exact integer path")
        return params.scale
    if integer:
        return INTEGER_SCALE
    return FixedPointCodec(clip=clip, max_clients=room, modulus=params.plain_modulus).scale


class PublicContext:
    """What the clients and the server hold: parameters and public key, never a secret key."""

    def __init__(self, data: bytes, params: HEParams) -> None:
        ctx = _load_context(data, params, "public context")
        if ctx.is_private() or ctx.has_secret_key():
            raise ValueError("a public context must not carry the secret key; use the public "
                             "context of a round opening")
        self.context = ctx
        self.params = params
        self.fingerprint = fingerprint(data)
        self.size = len(data)


@dataclass(frozen=True)
class Opening:
    """A parsed round opening: what clients and the server learn of a round."""

    round_id: int
    length: int
    room: int
    clip: float
    min_contributors: int
    public: bytes
    fingerprint: bytes
    scale: float
    signature: bytes

    def signed_input(self, params: HEParams) -> bytes:
        return crypto.opening_input(self.round_id, params.scheme, params.name, self.length,
                                    self.room, self.clip, self.min_contributors, self.public)


def encode_opening(params: HEParams, opening: Opening) -> bytes:
    blob = _ROUND_PARAMS.pack(opening.room, opening.clip, opening.min_contributors)
    return wire.encode(wire.OPENING, scheme=params.scheme, round_id=opening.round_id,
                       party=KEY_HOLDER, length=opening.length, scale=opening.scale,
                       fingerprint=opening.fingerprint,
                       chunks=[opening.public, blob, opening.signature])


def decode_opening(params: HEParams, payload: bytes, *, client_id: int | None,
                   stage: str) -> Opening:
    """Parse an opening frame (its signature is checked by the client, not here)."""
    where = {"client_id": client_id, "stage": stage}
    if len(payload) < wire.HEADER_SIZE:
        raise MalformedMessage("round opening shorter than its header", **where)
    (_, _, _, _, _, rnd, _, length, _, scale, fp) = wire._HEAD.unpack_from(payload)
    expect = wire.Expect(wire.OPENING, params.scheme, rnd, None, 3, None, fp, party=KEY_HOLDER)
    frame = wire.decode(payload, expect, client_id=client_id, stage=stage)
    public, blob, signature = frame.chunks
    if len(blob) != _ROUND_PARAMS.size or len(signature) != crypto.SIGNATURE_BYTES:
        raise MalformedMessage("round opening has malformed parameters or signature", **where)
    if fingerprint(public) != fp:
        raise TamperedMessage("round opening's public context does not match its fingerprint",
                              **where)
    room, clip, minimum = _ROUND_PARAMS.unpack(blob)
    return Opening(rnd, length, room, clip, minimum, public, fp, scale, signature)


@dataclass
class _Round:
    """One open round at the key holder: its secret key and what it has verified."""

    round_id: int
    length: int
    scale: float
    context: ts.Context | None
    fingerprint: bytes
    receipts: dict[int, tuple[bytes, int]] = field(default_factory=dict)  # digest, clipped
    contributors: list[int] = field(default_factory=list)
    seen: dict[bytes, int] = field(default_factory=dict)
    total: list | None = None
    decrypted: bool = False


class KeyHolder:
    """Issues each round's keys, verifies contributions, decrypts one verified sum per round.

    Threat model: the key holder must not collude with the server, and it sees every
    individual ciphertext of a round under its own key (it recomputes the sum from them), so
    it must also be trusted not to decrypt them. A server that deviates gets no decryption of
    anything but the sum of at least ``min_contributors`` authenticated, distinct, fresh
    client ciphertexts of the round (docs/he.md).
    """

    def __init__(self, params: HEParams, *, min_contributors: int = 1,
                 max_length: int = MAX_LENGTH) -> None:
        if isinstance(min_contributors, bool) or not isinstance(min_contributors, int) or \
                min_contributors < 1:
            raise ValueError(f"min_contributors must be an integer >= 1, got {min_contributors!r}")
        self.params = params
        self.min_contributors = min_contributors
        self.max_length = max_length
        self._identity = crypto.new_identity()
        self.identity = crypto.public_identity(self._identity)
        self._clients: dict[int, bytes] = {}
        self._next_round = 0
        self._round: _Round | None = None
        self.rounds_opened = 0

    @classmethod
    def generate(cls, params: HEParams, *, min_contributors: int = 1) -> KeyHolder:
        """A key holder with a fresh signing identity; round keys come from SEAL's generator."""
        return cls(params, min_contributors=min_contributors)

    # -- enrolment and rounds ------------------------------------------------------------

    def enroll(self, client_id: int) -> bytes:
        """Register a client; return its 32-byte receipt key (deliver it over a secure channel).

        Enrolment is the out-of-band step that decides who counts as a client: whoever can
        enrol identities can fill the ``min_contributors`` floor with its own.
        """
        if isinstance(client_id, bool) or not isinstance(client_id, int) or client_id < 0:
            raise ValueError(f"client ids must be integers >= 0, got {client_id!r}")
        if client_id in self._clients:
            raise ValueError(f"client {client_id} is already enrolled")
        key = crypto.new_key()
        self._clients[client_id] = key
        return key

    def open_round(self, length: int, *, room: int, clip: float, integer: bool = False) -> bytes:
        """Open the next round under a fresh key pair; return the signed opening.

        ``integer``: BFV's exact integer path (clients encrypt residues mod ``t`` as they are).

        ``length`` is checked arithmetically against :attr:`max_length` before anything is
        allocated. The previous round, decrypted or not, is closed and its key dropped.
        """
        where = {"client_id": KEY_HOLDER, "stage": "round_keys"}
        if isinstance(length, bool) or not isinstance(length, int) or not (
                1 <= length <= self.max_length):
            raise WrongLength(f"a round of {length!r} values; the key holder opens rounds of 1 "
                              f"to {self.max_length} values", **where)
        if isinstance(room, bool) or not isinstance(room, int) or not (
                1 <= room <= self.params.max_summands):
            raise ValueError(f"room for {room!r} summands; must be in [1, "
                             f"{self.params.max_summands}]")
        scale = round_scale(self.params, clip, room, integer=integer)
        self._round = None  # the previous round's secret key goes now
        context = _new_context(self.params)
        public = context.serialize(save_public_key=True, save_secret_key=False,
                                   save_galois_keys=False, save_relin_keys=False)
        rnd = self._next_round
        self._next_round += 1
        self.rounds_opened += 1
        fp = fingerprint(public)
        self._round = _Round(rnd, length, scale, context, fp)
        unsigned = Opening(rnd, length, room, float(clip), self.min_contributors, public, fp,
                           scale, b"")
        signature = self._identity.sign(unsigned.signed_input(self.params))
        return encode_opening(self.params, dataclasses.replace(unsigned, signature=signature))

    @property
    def round_id(self) -> int | None:
        """The open round's number (``None`` before the first)."""
        return None if self._round is None else self._round.round_id

    @property
    def fingerprint(self) -> bytes:
        """Fingerprint of the open round's public context."""
        return self._open("aggregate").fingerprint

    def _open(self, stage: str, client_id: int = KEY_HOLDER) -> _Round:
        r = self._round
        if r is None:
            raise WrongRound("no round is open at the key holder", client_id=client_id,
                             stage=stage)
        return r

    # -- contributions -------------------------------------------------------------------

    def receive_receipt(self, client_id: int, payload: bytes, *, stage: str = "receipt") -> None:
        """Record a client's authenticated receipt; unauthenticated bytes change nothing."""
        r = self._open(stage, client_id)
        where = {"client_id": client_id, "stage": stage}
        if r.decrypted:
            raise ReplayedMessage("this round's sum was already decrypted", **where)
        expect = wire.Expect(wire.RECEIPT, self.params.scheme, r.round_id, r.length, 3, None,
                             r.fingerprint, party=client_id)
        frame = wire.decode(payload, expect, client_id=client_id, stage=stage)
        dig, tag, count = frame.chunks
        key = self._clients.get(client_id)
        if key is None:
            raise UnverifiedContribution("not an enrolled client", **where)
        if len(dig) != crypto.DIGEST_BYTES or len(count) != 8 or not crypto.receipt_valid(
                key, r.round_id, client_id, r.fingerprint, dig + count, tag):
            raise UnverifiedContribution("receipt authentication failed", **where)
        clipped = int.from_bytes(count, "little")
        if clipped > r.length:
            raise MalformedMessage(f"receipt reports {clipped} clipped coordinates of "
                                   f"{r.length}", **where)
        if client_id in r.receipts:
            raise DuplicateMessage("second receipt in one round (the first is kept)", **where)
        r.receipts[client_id] = (dig, clipped)

    def receive_update(self, client_id: int, payload: bytes, *,
                       stage: str = "encrypted_update") -> None:
        """Add a forwarded update to the key holder's own sum, if a receipt vouches for it.

        Checks, in order: the round is open and not decrypted; the client is not counted yet;
        its receipt exists and names this exact message (SHA-256); then the frame and every
        ciphertext (fresh, this round's key, no chunk copied from another client). Nothing is
        added unless all pass.
        """
        r = self._open(stage, client_id)
        where = {"client_id": client_id, "stage": stage}
        if r.decrypted:
            raise ReplayedMessage("this round's sum was already decrypted", **where)
        if client_id in r.contributors:
            raise DuplicateMessage("second update in one round", **where)
        receipt = r.receipts.get(client_id)
        if receipt is None:
            raise UnverifiedContribution("no authenticated receipt for this round", **where)
        if crypto.digest(payload) != receipt[0]:
            raise UnverifiedContribution("the update does not match the client's receipt",
                                         **where)
        params = self.params
        lengths = params.chunk_lengths(r.length)
        expect = wire.Expect(wire.UPDATE, params.scheme, r.round_id, r.length, len(lengths),
                             r.scale, r.fingerprint, party=client_id)
        frame = wire.decode(payload, expect, client_id=client_id, stage=stage)
        keys, vectors = [], []
        for i, size in enumerate(lengths):
            chunk = frame.chunk(i)
            key = duplicate_key(chunk, frame.crcs[i])
            if key in r.seen:
                raise DuplicateMessage(f"chunk {i} repeats a ciphertext of client "
                                       f"{r.seen[key]}", **where)
            keys.append(key)
            vectors.append(load_chunk(r.context, params, chunk, size, index=i, **where))
        if r.total is None:
            r.total = vectors
        else:
            for acc, vec in zip(r.total, vectors, strict=True):
                acc.add_(vec)
        for key in keys:
            r.seen[key] = client_id
        r.contributors.append(client_id)

    # -- the one decryption --------------------------------------------------------------

    def decrypt_aggregate(self, payload: bytes, *, stage: str = "aggregate") -> bytes:
        """Decrypt the round's verified sum once; return the framed plaintext sum.

        ``payload`` is the server's request: the round, the vector length and the contributor
        list, which must equal the clients whose updates the key holder verified. ``length``
        is compared with the round's before anything else. Refusals are typed errors with
        ``client_id`` = :data:`KEY_HOLDER`; the round's key is dropped after the decryption.
        """
        r = self._open(stage)
        params = self.params
        where = {"client_id": KEY_HOLDER, "stage": stage}
        expect = wire.Expect(wire.AGGREGATE, params.scheme, r.round_id, None, 0, None,
                             r.fingerprint)
        frame = wire.decode(payload, expect, client_id=KEY_HOLDER, stage=stage)
        if frame.length != r.length:
            raise WrongLength(f"request for {frame.length} values; round {r.round_id} has "
                              f"{r.length}", **where)
        if r.decrypted:
            raise ReplayedMessage(f"round {r.round_id} was already decrypted", **where)
        if frame.party != len(set(frame.contributors)):
            raise MalformedMessage("the contributor list has duplicates", **where)
        if sorted(frame.contributors) != sorted(r.contributors):
            raise MalformedMessage(f"the request names {len(frame.contributors)} contributors; "
                                   f"the key holder verified {len(r.contributors)} others",
                                   **where)
        if len(r.contributors) < self.min_contributors:
            raise TooFewClients(f"{len(r.contributors)} verified contributions; the key holder "
                                f"decrypts only sums of at least {self.min_contributors}",
                                stage=stage)
        assert r.total is not None
        r.decrypted = True
        if params.scheme == CKKS:
            total = np.concatenate([np.asarray(v.decrypt(), dtype="<f8") for v in r.total])
        else:
            decrypted = np.concatenate([np.asarray(v.decrypt(), dtype=np.int64)
                                        for v in r.total])
            total = np.mod(decrypted, params.plain_modulus).astype("<u8")
        r.total = None
        r.context = None  # the round's secret key is gone
        contributors = sorted(r.contributors)
        clipped = sum(r.receipts[cid][1] for cid in contributors)
        return wire.encode(wire.SUM, scheme=params.scheme, round_id=r.round_id,
                           party=len(contributors), length=r.length, scale=r.scale,
                           fingerprint=r.fingerprint,
                           chunks=[total.tobytes(), clipped.to_bytes(8, "little")],
                           contributors=contributors)
