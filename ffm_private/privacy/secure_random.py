"""A cryptographically secure, replayable random generator for DP noise and sampling.

DP noise and the secret Poisson samples must be unpredictable to anyone who does not hold the
secret, even after seeing many outputs; a statistical PRNG (PCG64, MT19937) does not promise
that. :class:`SecureGenerator` is the ChaCha20 keystream of ``cryptography`` (RFC 8439, block
counter and nonce zero), keyed by 32 bytes that HKDF-SHA256 derives from a 32-byte secret and
a context label (round, party, purpose). Given ``(secret, label)`` the stream is fixed, so a
round replayed after a crash regenerates exactly the release it already made.

The API follows numpy's ``Generator`` where the noise code needs it: :meth:`~SecureGenerator.
random` (53-bit uniforms in ``[0, 1)``), :meth:`~SecureGenerator.normal` (float64),
:meth:`~SecureGenerator.integers` (exact, by rejection) and :meth:`~SecureGenerator.bytes`.

Floating-point caveat: :meth:`~SecureGenerator.normal` is Box-Muller on 53-bit uniforms in
float64. Its outputs lie on a finite set of doubles, its tails stop at
``sqrt(106 ln 2) = 8.57`` standard deviations (probability mass ``< 1e-16`` is missing), and a
noisy float ``x + z`` can leak low-order bits of ``x`` (Mironov, CCS 2012). The secure stream
removes predictability, not these floating-point effects; integer (discrete Gaussian) noise in
:mod:`ffm_private.privacy.discrete_gaussian` has none of them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SECRET_BYTES = 32
"""Length of a secret and of a derived ChaCha20 key."""

HKDF_SALT = b"ffm-private/secure-random/v1"
"""Fixed HKDF salt: separates these keys from any other use of the same secret."""

_NONCE = bytes(16)  # cryptography's ChaCha20 nonce: 4-byte block counter (0) + 12-byte nonce (0)
_MAX_BYTES = (1 << 32) * 64  # the 32-bit block counter of RFC 8439: 256 GiB per key
_TWO_PI = 2.0 * math.pi
_2_POW_M53 = 2.0 ** -53


class KeystreamExhaustedError(RuntimeError):
    """One key's keystream is spent (2^32 blocks); reusing it would repeat noise."""


def context_label(*parts: int | str | bytes) -> bytes:
    """An unambiguous byte label for ``parts`` (each type-tagged and length-prefixed).

    ``context_label(3, "client", 7)`` and ``context_label("3", "client", 7)`` differ, and no
    concatenation of parts can collide with another split of the same characters.
    """
    out = [b"ffm-private/label/v1"]
    for part in parts:
        if isinstance(part, bool):
            raise TypeError("label parts are int, str or bytes, not bool")
        if isinstance(part, int):
            tag, raw = b"i", str(part).encode()
        elif isinstance(part, str):
            tag, raw = b"s", part.encode("utf-8")
        elif isinstance(part, bytes):
            tag, raw = b"b", part
        else:
            raise TypeError(f"label part {part!r} must be int, str or bytes")
        out.append(tag + len(raw).to_bytes(4, "big") + raw)
    return b"".join(out)


def derive_key(secret: bytes, label: bytes) -> bytes:
    """HKDF-SHA256(secret, salt=:data:`HKDF_SALT`, info=label) -> 32-byte ChaCha20 key."""
    if not isinstance(secret, bytes | bytearray) or len(secret) != SECRET_BYTES:
        raise ValueError(f"secret must be {SECRET_BYTES} bytes, got "
                         f"{len(secret) if isinstance(secret, bytes | bytearray) else secret!r}")
    if not isinstance(label, bytes):
        raise TypeError("label must be bytes (see context_label)")
    return HKDF(algorithm=hashes.SHA256(), length=SECRET_BYTES, salt=HKDF_SALT,
                info=label).derive(bytes(secret))


def _shape(size: Any) -> tuple[int, ...]:
    if size is None:
        return ()
    if isinstance(size, int | np.integer):
        size = (int(size),)
    shape = tuple(int(s) for s in size)
    if any(s < 0 for s in shape):
        raise ValueError(f"size = {size!r} must not be negative")
    return shape


class SecureGenerator:
    """The ChaCha20 keystream of one derived key, read as uniforms, normals, integers, bytes.

    Build it with :meth:`from_secret` (the normal way) or from a raw 32-byte key. Each call
    consumes the stream in order, so the same sequence of calls on the same ``(secret,
    label)`` returns the same values.
    """

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) != SECRET_BYTES:
            raise ValueError(f"a ChaCha20 key is {SECRET_BYTES} bytes")
        self._enc = Cipher(algorithms.ChaCha20(key, _NONCE), mode=None).encryptor()
        self._used = 0

    @classmethod
    def from_secret(cls, secret: bytes, label: bytes | str) -> SecureGenerator:
        """The stream of ``label`` under ``secret`` (a str label is taken as one part)."""
        raw = label if isinstance(label, bytes) else context_label(label)
        return cls(derive_key(secret, raw))

    def __repr__(self) -> str:  # never show key material
        return "SecureGenerator(chacha20)"

    # -- raw keystream -------------------------------------------------------------------------
    def bytes(self, length: int) -> bytes:
        """The next ``length`` bytes of the keystream."""
        if isinstance(length, bool) or not isinstance(length, int | np.integer) or length < 0:
            raise ValueError(f"length = {length!r} must be an integer >= 0")
        length = int(length)
        if self._used + length > _MAX_BYTES:
            raise KeystreamExhaustedError("this key's ChaCha20 keystream is spent (256 GiB): "
                                          "derive a new stream with a new label")
        self._used += length
        return self._enc.update(bytes(length))

    def _uint64(self, n: int) -> np.ndarray:
        return np.frombuffer(self.bytes(8 * n), dtype="<u8").astype(np.uint64, copy=False)

    # -- numpy-like draws ---------------------------------------------------------------------
    def random(self, size: Any = None) -> Any:
        """Uniforms ``k / 2^53``, ``k`` uniform on ``[0, 2^53)``: exactly uniform on that grid."""
        shape = _shape(size)
        n = math.prod(shape)
        out = (self._uint64(n) >> np.uint64(11)).astype(np.float64) * _2_POW_M53
        return float(out[0]) if size is None else out.reshape(shape)

    def standard_normal(self, size: Any = None) -> Any:
        """Float64 N(0, 1) by Box-Muller on 53-bit uniforms (see the module's caveat)."""
        shape = _shape(size)
        n = math.prod(shape)
        pairs = (n + 1) // 2
        k = self._uint64(2 * pairs) >> np.uint64(11)
        u1 = (k[:pairs] + np.uint64(1)).astype(np.float64) * _2_POW_M53  # (0, 1]: log is finite
        u2 = k[pairs:].astype(np.float64) * _2_POW_M53
        r = np.sqrt(-2.0 * np.log(u1))
        theta = _TWO_PI * u2
        z = np.concatenate([r * np.cos(theta), r * np.sin(theta)])[:n]
        return float(z[0]) if size is None else z.reshape(shape)

    def normal(self, loc: Any = 0.0, scale: Any = 1.0, size: Any = None) -> Any:
        """``loc + scale * N(0, 1)`` in float64 (``scale >= 0``; broadcasts like numpy)."""
        scale_arr = np.asarray(scale, dtype=np.float64)
        loc_arr = np.asarray(loc, dtype=np.float64)
        if not np.all(np.isfinite(scale_arr)) or np.any(scale_arr < 0):
            raise ValueError(f"scale = {scale!r} must be finite and >= 0")
        if size is None:
            shape = np.broadcast_shapes(loc_arr.shape, scale_arr.shape)
            z = self.standard_normal(shape if shape else None)
            out = loc_arr + scale_arr * z
            return float(out) if not shape else out
        return loc_arr + scale_arr * self.standard_normal(size)

    def integers(self, low: int, high: int | None = None, size: Any = None,
                 dtype: Any = np.int64, endpoint: bool = False) -> Any:
        """Uniform integers in ``[low, high)`` (``[low, high]`` with ``endpoint``), unbiased.

        Rejection sampling on masked 64-bit words: each accepted draw is exactly uniform.
        Bounds must fit in int64 (``high`` may be ``2**63`` when exclusive).
        """
        if high is None:
            low, high = 0, low
        low, high = int(low), int(high)
        if endpoint:
            high += 1
        span = high - low
        if span < 1:
            raise ValueError(f"low = {low} must be < high = {high}")
        if low < -(1 << 63) or high > (1 << 63) or span > (1 << 64):
            raise ValueError("integers() bounds must fit in int64")
        shape = _shape(size)
        n = math.prod(shape)
        mask = np.uint64((1 << (span - 1).bit_length()) - 1)
        out = np.empty(0, dtype=np.uint64)
        while out.size < n:
            need = n - out.size
            draw = self._uint64(max(need + need // 2, 16)) & mask  # >= 1/2 accepted per draw
            if span < (1 << 64):
                draw = draw[draw < np.uint64(span)]
            out = np.concatenate([out, draw])
        # low + v in two's complement: the result fits in int64, so uint64 wrap-around is exact
        res = (out[:n] + np.uint64(low % (1 << 64))).view(np.int64).astype(dtype)
        return res.reshape(shape)[()] if size is None else res.reshape(shape)


__all__ = [
    "HKDF_SALT",
    "SECRET_BYTES",
    "KeystreamExhaustedError",
    "SecureGenerator",
    "context_label",
    "derive_key",
]
