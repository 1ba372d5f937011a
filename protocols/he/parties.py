"""The two roles that never see a secret key: the client that encrypts, the server that adds.

Both hold only a :class:`~protocols.he.keys.PublicContext`. A test checks that the server's
context cannot decrypt.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from protocols.errors import DuplicateMessage, WrongLength
from protocols.he import wire
from protocols.he.codec import duplicate_key, encode_fixed_point, encrypt_chunks, load_chunk
from protocols.he.keys import KEY_HOLDER, PublicContext
from protocols.he.params import CKKS
from protocols.quantize import FixedPointCodec


class HEClient:
    """Encrypts one client's update under the public key (BFV: after fixed-point encoding)."""

    def __init__(self, public: PublicContext) -> None:
        self.public = public

    def encrypt_update(self, round_id: int, client_id: int, update: np.ndarray, *,
                       codec: FixedPointCodec | None = None,
                       rng: np.random.Generator | None = None) -> bytes:
        """The framed message of one update: floats (CKKS) or ``codec``'s residues (BFV).

        ``rng`` drives the codec's stochastic rounding (not secret: it only makes rounding
        unbiased).
        """
        params = self.public.params
        update = np.asarray(update, dtype=np.float64)
        if params.scheme == CKKS:
            chunks = encrypt_chunks(self.public.context, params, update)
            scale = params.scale
        else:
            if codec is None or rng is None:
                raise ValueError("BFV encryption needs the round's fixed-point codec and an rng")
            chunks = encrypt_chunks(self.public.context, params,
                                    encode_fixed_point(codec, update, rng))
            scale = codec.scale
        return wire.encode(wire.UPDATE, scheme=params.scheme, round_id=round_id,
                           party=client_id, length=len(update), scale=scale,
                           fingerprint=self.public.fingerprint, chunks=chunks)


class RoundSum:
    """The server's running encrypted sum for one round.

    :meth:`add` validates a client's whole message before touching the sum, so a rejected
    message leaves it unchanged. Chunks are added in place (no ``copy()``: copying a TenSEAL
    vector is slow); the first valid message's own vectors start the sum.
    """

    def __init__(self, public: PublicContext, round_id: int, length: int, scale: float, *,
                 stage: str) -> None:
        params = public.params
        self.public = public
        self.round_id = round_id
        self.stage = stage
        self.lengths = params.chunk_lengths(length)
        self.expect = wire.Expect(wire.UPDATE, params.scheme, round_id, length,
                                  len(self.lengths), scale, public.fingerprint)
        self.contributors: list[int] = []
        self._seen: dict[bytes, int] = {}
        self._sum: list | None = None

    def add(self, client_id: int, payload: bytes) -> None:
        """Check and add one client's message; raise a typed error naming the client."""
        expect = dataclasses.replace(self.expect, party=client_id)
        frame = wire.decode(payload, expect, client_id=client_id, stage=self.stage)
        context, params = self.public.context, self.public.params
        keys, vectors = [], []
        for i, size in enumerate(self.lengths):  # checksum, copy and parse, one chunk at a time
            chunk = frame.chunk(i)
            key = duplicate_key(chunk, frame.crcs[i])
            first = self._seen.get(key)
            if first is not None:
                raise DuplicateMessage(f"chunk {i} repeats a ciphertext already received from "
                                       f"client {first}", client_id=client_id, stage=self.stage)
            keys.append(key)
            vectors.append(load_chunk(context, params, chunk, size, client_id=client_id,
                                      stage=self.stage, index=i))
        if self._sum is None:
            self._sum = vectors
        else:
            for acc, vec in zip(self._sum, vectors, strict=True):
                acc.add_(vec)
        for key in keys:
            self._seen[key] = client_id
        self.contributors.append(client_id)

    def aggregate_message(self) -> bytes:
        """The framed encrypted sum and its contributor list, for the key holder."""
        if self._sum is None:
            raise ValueError("no valid update was added")
        e = self.expect
        return wire.encode(wire.AGGREGATE, scheme=e.scheme, round_id=self.round_id,
                           party=len(self.contributors), length=e.length, scale=e.scale,
                           fingerprint=e.fingerprint, chunks=[v.serialize() for v in self._sum],
                           contributors=self.contributors)

    def read_sum(self, payload: bytes, *, stage: str) -> np.ndarray:
        """Parse the key holder's decrypted sum: float64 (CKKS) or residues mod t (BFV)."""
        e = self.expect
        expect = wire.Expect(wire.SUM, e.scheme, self.round_id, e.length, 1, e.scale,
                             e.fingerprint, party=len(self.contributors))
        frame = wire.decode(payload, expect, client_id=KEY_HOLDER, stage=stage)
        body = frame.chunk(0)
        dtype = "<f8" if e.scheme == CKKS else "<u8"
        if len(body) % 8:
            raise WrongLength(f"decrypted sum of {len(body)} bytes is not a whole number of "
                              "8-byte values", client_id=KEY_HOLDER, stage=stage)
        values = np.frombuffer(body, dtype=dtype)
        if values.shape[0] != e.length:
            raise WrongLength(f"decrypted sum has {values.shape[0]} values, expected {e.length}",
                              client_id=KEY_HOLDER, stage=stage)
        return values


class HEServer:
    """The aggregating server: a public context, so it can add ciphertexts but not read them."""

    def __init__(self, public: PublicContext) -> None:
        self.public = public

    def open_round(self, round_id: int, length: int, scale: float, *,
                   stage: str = "encrypted_update") -> RoundSum:
        """Start the encrypted sum of one round."""
        return RoundSum(self.public, round_id, length, scale, stage=stage)
