"""Key roles: the key holder owns the secret key; everyone else holds a public context.

The :class:`KeyHolder` generates the key pair, publishes the *public context* (parameters and
public key, no secret key, no relinearization or Galois keys: sums need none) and decrypts
one aggregate per round, never an individual update's message type. Clients and the
aggregating server load the public context from its bytes into a :class:`PublicContext`,
which refuses any context that carries a secret key.

Key material is plain bytes, for deployment: :meth:`KeyHolder.public_context_bytes` goes to
the server and the clients, :meth:`KeyHolder.secret_context_bytes` stays with the key holder
(store it as a secret; :meth:`KeyHolder.from_secret_bytes` restores the key holder).
"""

from __future__ import annotations

import hashlib

import numpy as np
import tenseal as ts

from protocols.errors import MalformedMessage, ReplayedMessage, TooFewClients, WrongLength
from protocols.he import wire
from protocols.he.codec import load_chunk
from protocols.he.params import CKKS, HEParams

#: Party id of the key holder on the :class:`~protocols.channel.Channel`.
KEY_HOLDER = -1


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


class PublicContext:
    """What the clients and the server hold: parameters and public key, never a secret key."""

    def __init__(self, data: bytes, params: HEParams) -> None:
        ctx = _load_context(data, params, "public context")
        if ctx.is_private() or ctx.has_secret_key():
            raise ValueError("a public context must not carry the secret key; serialize it "
                             "with KeyHolder.public_context_bytes()")
        self.context = ctx
        self.params = params
        self.fingerprint = fingerprint(data)
        self.size = len(data)


class KeyHolder:
    """Owns the secret key; decrypts only aggregates, at most one per round.

    Threat model: honest-but-curious, and the key holder must not collude with the server
    (together they could decrypt any individual update). ``min_contributors`` is checked
    against the contributor list the server declares; the key holder cannot verify that list,
    so a *malicious* server could pass off one client's ciphertext as an aggregate (see
    docs/he.md). Refusing a second decryption per round limits such a server to one guess per
    round, at the price of losing that round's sum.
    """

    def __init__(self, context: ts.Context, params: HEParams, *, min_contributors: int = 1) -> None:
        if not context.is_private():
            raise ValueError("a key holder needs the secret context")
        if min_contributors < 1:
            raise ValueError("min_contributors must be >= 1")
        self._context = context
        self.params = params
        self.min_contributors = min_contributors
        self._public = context.serialize(save_public_key=True, save_secret_key=False,
                                         save_galois_keys=False, save_relin_keys=False)
        self.fingerprint = fingerprint(self._public)
        self._decrypted_rounds: set[int] = set()

    @classmethod
    def generate(cls, params: HEParams, *, min_contributors: int = 1) -> KeyHolder:
        """Fresh keys from SEAL's cryptographic generator."""
        return cls(_new_context(params), params, min_contributors=min_contributors)

    @classmethod
    def from_secret_bytes(cls, data: bytes, params: HEParams, *,
                          min_contributors: int = 1) -> KeyHolder:
        """Restore a key holder from :meth:`secret_context_bytes`."""
        ctx = _load_context(data, params, "secret context")
        if not ctx.is_private():
            raise ValueError("these bytes hold a public context: the key holder needs the "
                             "secret context (KeyHolder.secret_context_bytes())")
        return cls(ctx, params, min_contributors=min_contributors)

    def public_context_bytes(self) -> bytes:
        """Parameters and public key: what the server and the clients need, nothing secret."""
        return self._public

    def secret_context_bytes(self) -> bytes:
        """Parameters, public and secret key: keep it secret, it decrypts everything."""
        return self._context.serialize(save_public_key=True, save_secret_key=True,
                                       save_galois_keys=False, save_relin_keys=False)

    def decrypt_aggregate(self, payload: bytes, *, round_id: int, stage: str = "aggregate") -> bytes:
        """Decrypt the round's encrypted sum; return the framed plaintext sum.

        Refuses (typed errors, ``client_id`` = :data:`KEY_HOLDER`) anything that is not an
        aggregate under this key for this round, an aggregate of fewer than
        ``min_contributors`` clients, and a second aggregate for a round already decrypted.
        """
        params = self.params
        where = {"client_id": KEY_HOLDER, "stage": stage}
        expect = wire.Expect(wire.AGGREGATE, params.scheme, round_id, None, None,
                             params.scale if params.scheme == CKKS else None, self.fingerprint)
        frame = wire.decode(payload, expect, client_id=KEY_HOLDER, stage=stage)
        if frame.party != len(set(frame.contributors)):
            raise MalformedMessage("the contributor list has duplicates", **where)
        if frame.party < self.min_contributors:
            raise TooFewClients(f"aggregate of {frame.party} clients; the key holder decrypts "
                                f"only sums of at least {self.min_contributors}", stage=stage)
        lengths = params.chunk_lengths(frame.length)
        if frame.n_chunks != len(lengths):
            raise WrongLength(f"{frame.n_chunks} chunks for {frame.length} values, expected "
                              f"{len(lengths)}", **where)
        if round_id in self._decrypted_rounds:
            raise ReplayedMessage(f"an aggregate for round {round_id} was already decrypted",
                                  **where)
        vectors = [load_chunk(self._context, params, frame.chunk(i), size, index=i, **where)
                   for i, size in enumerate(lengths)]
        self._decrypted_rounds.add(round_id)
        if params.scheme == CKKS:
            total = np.concatenate([np.asarray(v.decrypt(), dtype="<f8") for v in vectors])
        else:
            decrypted = np.concatenate([np.asarray(v.decrypt(), dtype=np.int64) for v in vectors])
            total = np.mod(decrypted, params.plain_modulus).astype("<u8")
        return wire.encode(wire.SUM, scheme=params.scheme, round_id=round_id,
                           party=frame.party, length=frame.length, scale=frame.scale,
                           fingerprint=self.fingerprint, chunks=[total[:frame.length].tobytes()])
