"""Shamir secret sharing of 32-byte secrets over GF(p), p = 2**32 - 5, vectorised with numpy.

A secret is cut into 16 chunks of 16 bits; each chunk is the constant term of its own random
polynomial of degree ``t - 1`` over GF(p) (so any ``t - 1`` shares are uniformly distributed
whatever the secret: perfect hiding, chunk by chunk). A share is the 16 polynomial values at
the holder's point ``x``, 64 bytes on the wire.

Field elements are < 2**32, so a product of two fits in uint64 and every operation is one
numpy expression over all chunks, all secrets and all holders at once. Reconstruction
computes the Lagrange coefficients at zero once per distinct set of share points
(vectorised, with a batched Fermat inverse) and recovers every secret with one
multiply-and-sum: no per-share Python loop, which is what makes Flower's unmasking slow.
"""

from __future__ import annotations

import numpy as np

from protocols.secagg.primitives import Entropy

PRIME = 4294967291
"""2**32 - 5, the largest prime below 2**32."""
SECRET_BYTES = 32
CHUNKS = 16
CHUNK_BITS = 16
SHARE_BYTES = 4 * CHUNKS
_P = np.uint64(PRIME)
_TERMS = 1 << 15
"""Terms per partial sum in :func:`split`: 2**15 products below 2**48 each stay below 2**63."""


def secrets_to_field(secrets: list[bytes]) -> np.ndarray:
    """``(s, CHUNKS)`` uint64 field elements (16-bit chunks) of ``s`` 32-byte secrets."""
    for secret in secrets:
        if len(secret) != SECRET_BYTES:
            raise ValueError(f"secrets must be {SECRET_BYTES} bytes, got {len(secret)}")
    raw = np.frombuffer(b"".join(secrets), dtype="<u2").reshape(len(secrets), CHUNKS)
    return raw.astype(np.uint64)


def field_to_secret(chunks: np.ndarray) -> bytes | None:
    """Back to bytes; ``None`` if a chunk is not a 16-bit value (inconsistent shares)."""
    chunks = np.asarray(chunks, dtype=np.uint64)
    if np.any(chunks >= (1 << CHUNK_BITS)):
        return None
    return chunks.astype("<u2").tobytes()


def random_field(shape: tuple[int, ...], entropy: Entropy) -> np.ndarray:
    """Uniform elements of GF(p) from ``entropy``, by rejection sampling of 32-bit words."""
    count = int(np.prod(shape))
    out = np.empty(0, dtype=np.uint64)
    while out.size < count:
        need = count - out.size
        words = np.frombuffer(entropy(4 * (need + 8)), dtype="<u4").astype(np.uint64)
        out = np.concatenate([out, words[words < _P]])
    return out[:count].reshape(shape)


def split(secrets: np.ndarray, xs: np.ndarray, threshold: int, entropy: Entropy) -> np.ndarray:
    """Shares of each secret at each point: ``(len(xs), s, CHUNKS)`` uint64.

    ``secrets``: ``(s, CHUNKS)`` field elements; ``xs``: distinct nonzero points in GF(p).
    """
    secrets = np.asarray(secrets, dtype=np.uint64)
    xs = np.asarray(xs, dtype=np.uint64)
    if threshold < 1:
        raise ValueError(f"threshold must be >= 1, got {threshold}")
    if np.any(xs == 0) or np.any(xs >= _P) or len(set(xs.tolist())) != len(xs):
        raise ValueError("share points must be distinct and in 1..p-1")
    secrets = secrets % _P
    shape = (len(xs), *secrets.shape)
    if threshold == 1:
        return np.array(np.broadcast_to(secrets, shape))
    coeffs = random_field((threshold - 1, *secrets.shape), entropy).reshape(threshold - 1, -1)
    # f(x) = secret + sum_d coeffs[d - 1] x^d: one product of the powers x_i^d (mod p) with the
    # coefficients, split into 16-bit halves so that no sum of products wraps uint64
    powers = np.empty((len(xs), threshold - 1), dtype=np.uint64)  # x^1 .. x^(t-1)
    powers[:, 0] = xs
    done = 1
    while done < threshold - 1:  # doubling: x^(done+1 .. 2 done) = x^(1 .. done) * x^done
        step = min(done, threshold - 1 - done)
        powers[:, done:done + step] = (powers[:, :step] * powers[:, done - 1:done]) % _P
        done += step
    low = coeffs & np.uint64(0xFFFF)
    high = coeffs >> np.uint64(16)
    acc = np.zeros((len(xs), coeffs.shape[1]), dtype=np.uint64)
    for lo in range(0, threshold - 1, _TERMS):
        part = powers[:, lo:lo + _TERMS]
        acc += (((part @ high[lo:lo + _TERMS]) % _P) << np.uint64(16)) % _P
        acc += (part @ low[lo:lo + _TERMS]) % _P
        acc %= _P
    return ((acc + secrets.reshape(1, -1)) % _P).reshape(shape)


def _pow_mod(base: np.ndarray, exponent: int) -> np.ndarray:
    result = np.ones_like(base)
    b = base % _P
    while exponent:
        if exponent & 1:
            result = (result * b) % _P
        b = (b * b) % _P
        exponent >>= 1
    return result


def lagrange_at_zero(xs: np.ndarray) -> np.ndarray:
    """Coefficients ``l[m, a]`` with ``f(0) = sum_a l[m, a] f(xs[m, a])`` for degree < t.

    ``xs``: ``(m, t)`` share points, each row distinct. Rows that repeat are computed once.
    """
    xs = np.asarray(xs, dtype=np.uint64)
    unique, inverse = np.unique(xs, axis=0, return_inverse=True)
    m, t = unique.shape
    num = np.ones((m, t), dtype=np.uint64)
    den = np.ones((m, t), dtype=np.uint64)
    for b in range(t):
        xb = unique[:, b:b + 1]
        diff = (xb + _P - unique) % _P  # x_b - x_a
        own = np.arange(t) == b
        num = np.where(own, num, (num * xb) % _P)
        den = np.where(own, den, (den * diff) % _P)
    if np.any(den == 0):
        raise ValueError("share points must be distinct")
    coeff = (num * _pow_mod(den, PRIME - 2)) % _P
    return coeff[inverse.reshape(-1)]


def reconstruct(xs: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """Secrets ``(m, CHUNKS)`` from ``t`` shares each: ``xs`` ``(m, t)``, ``shares`` ``(m, t, CHUNKS)``."""
    shares = np.asarray(shares, dtype=np.uint64)
    coeff = lagrange_at_zero(xs)
    return ((coeff[:, :, None] * shares) % _P).sum(axis=1) % _P


def share_to_bytes(share: np.ndarray) -> bytes:
    return np.asarray(share, dtype=np.uint64).astype("<u4").tobytes()


def share_from_bytes(raw: bytes) -> np.ndarray | None:
    """Parse one share; ``None`` if it has the wrong size or an element outside GF(p)."""
    if len(raw) != SHARE_BYTES:
        return None
    values = np.frombuffer(raw, dtype="<u4").astype(np.uint64)
    if np.any(values >= _P):
        return None
    return values
