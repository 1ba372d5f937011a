"""Fixed-point encoding shared by secure aggregation (Z_2^32) and BFV (Z_t).

A float ``x`` is clipped to ``[-clip, clip]``, scaled by ``scale`` and rounded
*stochastically* (up with probability equal to the fractional part, so the rounding is
unbiased), then stored as a signed integer modulo ``modulus``. Sums of up to
``max_clients`` encoded vectors never wrap around, so decoding a modular sum with a
centred lift and dividing by ``scale`` recovers the float sum.

Error bound, per coordinate, for a sum of ``n`` in-range vectors: ``|decoded - true| < n / scale``
(each client's rounding moves its value by less than one step ``1/scale``). Values outside
``[-clip, clip]`` are clipped first; with user-level DP the clipping norm bounds every
coordinate, so choose ``clip`` at least that norm.

:meth:`FixedPointCodec.encode` draws its rounding randomness from a numpy generator;
:meth:`FixedPointCodec.encode_words` takes it as uniform 32-bit words instead, so a protocol
can feed it a cryptographic keystream (SecAgg+ does) and never touch numpy's generators. It
rounds up with probability ``frac`` up to float64 rounding (below ``2**-21``): each value still
moves by at most one step, so the error bound holds with ``<=``, and the bias is negligible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_BLOCK = 32768
"""Coordinates per block in :meth:`FixedPointCodec.encode_words` (256 KiB of float64)."""


@dataclass(frozen=True)
class FixedPointCodec:
    """Signed fixed-point codec into ``Z_modulus`` with room for ``max_clients`` summands."""

    clip: float
    max_clients: int
    modulus: int = 2**32

    def __post_init__(self) -> None:
        if not (self.clip > 0 and np.isfinite(self.clip)):
            raise ValueError(f"clip must be a positive finite number, got {self.clip}")
        if self.max_clients < 1:
            raise ValueError(f"max_clients must be >= 1, got {self.max_clients}")
        if self.modulus < 4:
            raise ValueError(f"modulus must be >= 4, got {self.modulus}")
        if self.scale < 1.0:
            raise ValueError(
                f"modulus {self.modulus} leaves no precision for {self.max_clients} clients "
                f"with clip {self.clip}: use a larger modulus or fewer clients"
            )

    def rounding_bound(self, length: int) -> float:
        """L2 bound on how far encoding moves a ``length``-vector: each coordinate moves by
        less than one step ``1 / scale``."""
        return float(np.sqrt(length)) / self.scale

    @property
    def scale(self) -> float:
        """Steps per unit: the largest that keeps sums of ``max_clients`` values from wrapping.

        Each encoded value has magnitude at most ``clip * scale + 1`` (rounding up), so a sum
        of ``max_clients`` of them stays below ``modulus / 2``.
        """
        return (self.modulus // 2 - 1 - self.max_clients) / (self.max_clients * self.clip)

    def error_bound(self, n_clients: int) -> float:
        """Largest per-coordinate error of a decoded sum of ``n_clients`` in-range vectors."""
        return n_clients / self.scale

    def encode(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Clip, scale, round stochastically; return uint64 residues in ``[0, modulus)``."""
        x = np.clip(np.asarray(x, dtype=np.float64), -self.clip, self.clip) * self.scale
        low = np.floor(x)
        q = low + (rng.random(x.shape) < (x - low))
        return np.mod(q.astype(np.int64), self.modulus).astype(np.uint64)

    def encode_words(self, x: np.ndarray, words: np.ndarray,
                     out: np.ndarray | None = None) -> np.ndarray:
        """Like :meth:`encode`, with ``words`` (uniform uint32, one per coordinate) as randomness.

        Rounds ``v = clip(x) * scale`` to ``floor(v + words / 2**32)``: up with probability
        ``frac(v)`` up to float64 rounding of the sum (below ``2**-21``), and never by more
        than one step. Needs ``modulus == 2**32``; returns uint32 residues,
        written into ``out`` (uint32, same length) when given. Few passes and temporaries:
        this is on every client's critical path in secure aggregation.
        """
        if self.modulus != 2**32:
            raise ValueError("encode_words writes residues modulo 2**32")
        x = np.asarray(x)
        words = np.asarray(words)
        if out is None:
            out = np.empty(x.shape, dtype=np.uint32)
        signed = out.view(np.int32)
        # v = x * scale * 2**32 + words, then floor(v / 2**32), in cache-sized blocks with one
        # reused temporary: this runs on every client's critical path in secure aggregation
        factor = self.scale * 2.0**32
        limit = self.clip * factor
        block = max(1, min(x.shape[0], _BLOCK))
        v = np.empty(block, dtype=np.float64)
        for start in range(0, x.shape[0], block):
            n = min(block, x.shape[0] - start)
            t = v[:n]
            np.multiply(x[start:start + n], factor, out=t)
            np.clip(t, -limit, limit, out=t)
            np.add(t, words[start:start + n], out=t)
            t *= 2.0**-32
            np.floor(t, out=t)
            signed[start:start + n] = t  # |t| <= clip * scale + 1 < 2**31: exact
        return out

    def count_clipped(self, x: np.ndarray) -> int:
        """How many coordinates of ``x`` lie outside ``[-clip, clip]`` (and will be clipped)."""
        x = np.asarray(x, dtype=np.float64)
        return sum(int(np.count_nonzero(np.abs(x[i:i + _BLOCK]) > self.clip))
                   for i in range(0, x.shape[0], _BLOCK))

    def decode_sum(self, residues: np.ndarray) -> np.ndarray:
        """Centred lift of a modular sum back to floats."""
        r = np.mod(np.asarray(residues, dtype=np.uint64), np.uint64(self.modulus)).astype(np.int64)
        r = np.where(r > self.modulus // 2, r - self.modulus, r)
        return r.astype(np.float64) / self.scale
