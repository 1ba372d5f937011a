"""User-level DP mechanisms on flat update vectors: clipping, central and distributed noise.

Everything is numpy; a torch tensor is accepted and converted (``.detach().cpu().numpy()``)
without importing torch here. Outputs are float64.

Noise randomness (see ``docs/privacy.md``, "Randomness"):

- Production: :class:`NoiseSource` holds a 32-byte secret (``os.urandom``, or the caller's
  via :meth:`NoiseSource.from_secret`) and derives one
  :class:`~ffm_private.privacy.secure_random.SecureGenerator` (ChaCha20 keyed by
  HKDF-SHA256 of the secret and the label ``(round, party, purpose)``) per stream.
  Each party's secret is persisted (mode 0600, before first use) by
  :class:`~ffm_private.privacy.client_secrets.SecretStore`, so that a round replayed after a
  crash re-sends the *same* noisy update (a different one would be a second release of the
  same data).
- Tests: ``NoiseSource(test_seed=...)`` is reproducible and therefore offers **no privacy**;
  :attr:`NoiseSource.is_test_seeded` lets the run summary say so.

The noise functions take any generator with numpy's ``random``/``normal`` (audits pass numpy
generators for speed); the streams of a run come from :class:`NoiseSource`. The Gaussian is
float64 Box-Muller: see the floating-point caveat in :mod:`ffm_private.privacy.secure_random`.
Masks and keys of the secure aggregation protocols never use this module.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import numpy as np

from ffm_private.privacy.errors import InsufficientNoiseError
from ffm_private.privacy.secure_random import SECRET_BYTES, SecureGenerator, context_label

_ENTROPY_BYTES = SECRET_BYTES
_STREAM_DOMAIN = "ffm-private/noise-source/v1"


class NoiseRNG(Protocol):
    """What the noise functions draw from: a :class:`SecureGenerator` or numpy's Generator."""

    def random(self, size: Any = None) -> Any: ...

    def normal(self, loc: Any = 0.0, scale: Any = 1.0, size: Any = None) -> Any: ...


def to_numpy(vec: Any) -> np.ndarray:
    """A float64 numpy copy of an array-like or torch tensor (no torch import)."""
    if hasattr(vec, "detach") and hasattr(vec, "cpu"):
        vec = vec.detach().cpu().numpy()
    arr = np.array(vec, dtype=np.float64, copy=True)
    if not np.all(np.isfinite(arr)):
        raise ValueError("update contains NaN or infinite values: refusing to clip or noise it "
                         "(its norm is undefined, so the sensitivity bound would not hold)")
    return arr


def _check_positive(name: str, value: float) -> float:
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or value <= 0):
        raise ValueError(f"{name} = {value!r} must be a finite number > 0")
    return float(value)


def _check_min_survivors(min_survivors: int) -> int:
    if isinstance(min_survivors, bool) or not isinstance(min_survivors, int) or min_survivors < 1:
        raise ValueError(f"min_survivors = {min_survivors!r} must be an integer >= 1")
    return min_survivors


def l2_norm(vec: Any) -> float:
    """Euclidean norm of the flattened vector (float64)."""
    return float(np.linalg.norm(to_numpy(vec).ravel()))


def clip_to_norm(vec: Any, clipping_norm: float) -> np.ndarray:
    """Scale ``vec`` down to L2 norm at most ``clipping_norm`` (unchanged if already inside).

    This bounds one user's contribution to the sum (the sensitivity) by ``clipping_norm``.
    The result's float64 norm is guaranteed ``<= clipping_norm`` (a rounding step that lands
    just above is corrected by shrinking a few ulps).
    """
    c = _check_positive("clipping_norm", clipping_norm)
    arr = to_numpy(vec)
    norm = float(np.linalg.norm(arr.ravel()))
    if norm <= c:
        return arr
    out = arr * (c / norm)
    shrink = 1
    while float(np.linalg.norm(out.ravel())) > c:  # rounding landed above C: shrink by ulps
        out = arr * (c / norm * (1.0 - shrink * np.finfo(np.float64).eps))
        shrink *= 2
    return out


def clip_all(updates: Iterable[Any], clipping_norm: float) -> list[np.ndarray]:
    """Clip each update independently."""
    return [clip_to_norm(u, clipping_norm) for u in updates]


def central_noise_std(noise_multiplier: float, clipping_norm: float) -> float:
    """Std of the Gaussian the trusted server adds to the sum: ``sigma * C``."""
    return _check_positive("noise_multiplier", noise_multiplier) * \
        _check_positive("clipping_norm", clipping_norm)


def add_central_noise(total: Any, noise_multiplier: float, clipping_norm: float,
                      rng: NoiseRNG) -> np.ndarray:
    """The sum of clipped updates plus ``N(0, (sigma C)^2)`` per coordinate (trusted server)."""
    arr = to_numpy(total)
    return arr + rng.normal(0.0, central_noise_std(noise_multiplier, clipping_norm), arr.shape)


def dp_sum(updates: Sequence[Any], noise_multiplier: float, clipping_norm: float,
           rng: NoiseRNG) -> np.ndarray:
    """Central user-level DP sum: clip each update to ``C``, sum, add ``N(0, (sigma C)^2)``."""
    if not updates:
        raise ValueError("dp_sum needs at least one update")
    clipped = clip_all(updates, clipping_norm)
    return add_central_noise(np.sum(clipped, axis=0), noise_multiplier, clipping_norm, rng)


def distributed_noise_std(noise_multiplier: float, clipping_norm: float,
                          min_survivors: int) -> float:
    """Per-client noise std ``sigma C / sqrt(m)`` for distributed noise.

    Assumption: at least ``m = min_survivors`` clients whose noise is *not* known to the
    adversary end up in the aggregate. Then the sum carries variance ``k (sigma C)^2 / m >=
    (sigma C)^2`` for any ``k >= m`` survivors, i.e. at least the full central noise. If the
    adversary may collude with ``t`` clients (and so subtract their noise), plan ``m`` as the
    smallest number of *honest* survivors: planned survivors minus ``t``.
    """
    m = _check_min_survivors(min_survivors)
    return central_noise_std(noise_multiplier, clipping_norm) / math.sqrt(m)


def add_distributed_noise(update: Any, noise_multiplier: float, clipping_norm: float,
                          min_survivors: int, rng: NoiseRNG) -> np.ndarray:
    """One client's share: its (already clipped) update plus ``N(0, (sigma C)^2 / m)``."""
    arr = to_numpy(update)
    std = distributed_noise_std(noise_multiplier, clipping_norm, min_survivors)
    return arr + rng.normal(0.0, std, arr.shape)


def surviving_noise_std(noise_multiplier: float, clipping_norm: float, min_survivors: int,
                        survivors: int) -> float:
    """Std of the total distributed noise when ``survivors`` shares reach the sum."""
    if isinstance(survivors, bool) or not isinstance(survivors, int) or survivors < 0:
        raise ValueError(f"survivors = {survivors!r} must be an integer >= 0")
    std = distributed_noise_std(noise_multiplier, clipping_norm, min_survivors)
    return std * math.sqrt(survivors)


def check_survivors(survivors: int, min_survivors: int) -> None:
    """Refuse to release a distributed-noise sum built from fewer than ``m`` noise shares."""
    m = _check_min_survivors(min_survivors)
    if survivors < m:
        raise InsufficientNoiseError(
            f"only {survivors} clients' noise shares reached the sum, fewer than the "
            f"{m} the noise was planned for: the sum carries less than the planned noise and "
            "must not be released (discard the round)")


def _party(client: int | str) -> tuple[str, int | str]:
    """The label part naming a client (ints and strs are tagged apart: 7 != "7")."""
    if isinstance(client, bool) or not isinstance(client, int | np.integer | str):
        raise TypeError("client id must be an int or str")
    return ("client-str", client) if isinstance(client, str) else ("client-int", int(client))


def _check_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(f"{name} = {value!r} must be a non-negative integer")
    return int(value)


class NoiseSource:
    """Independent, reproducible-within-a-run secure streams, one per ``(round, party, purpose)``.

    The secret is 32 bytes: from ``os.urandom`` by default, from ``entropy`` (an int below
    ``2**256``, e.g. read back from a key file), from :meth:`from_secret`, or from
    ``test_seed`` (reproducible: the noise then protects nothing, tests only). Each stream is a
    :class:`~ffm_private.privacy.secure_random.SecureGenerator`; whoever lacks the secret
    cannot predict any stream, even after seeing all the others.
    """

    def __init__(self, *, test_seed: int | None = None, entropy: int | None = None) -> None:
        if test_seed is not None and entropy is not None:
            raise ValueError("give test_seed or entropy, not both")
        if test_seed is not None:
            if isinstance(test_seed, bool) or not isinstance(test_seed, int) or test_seed < 0:
                raise ValueError(f"test_seed = {test_seed!r} must be a non-negative integer")
            value = test_seed
        elif entropy is not None:
            if isinstance(entropy, bool) or not isinstance(entropy, int | np.integer):
                raise ValueError("entropy must be an integer")
            value = int(entropy)
        else:
            value = int.from_bytes(os.urandom(_ENTROPY_BYTES), "big")
        if not 0 <= value < 1 << (8 * _ENTROPY_BYTES):
            raise ValueError(f"test_seed / entropy must satisfy 0 <= value < 2**"
                             f"{8 * _ENTROPY_BYTES}")
        self._secret = value.to_bytes(_ENTROPY_BYTES, "big")
        self.is_test_seeded = test_seed is not None

    @classmethod
    def from_secret(cls, secret: bytes) -> NoiseSource:
        """The streams of a party that holds ``secret`` (exactly 32 bytes, kept private)."""
        if not isinstance(secret, bytes | bytearray):
            raise ValueError(f"a noise secret is {_ENTROPY_BYTES} bytes, got "
                             f"{type(secret).__name__}")
        if len(secret) != _ENTROPY_BYTES:
            raise ValueError(f"a noise secret is {_ENTROPY_BYTES} bytes, got {len(secret)}")
        return cls(entropy=int.from_bytes(bytes(secret), "big"))

    def _stream(self, round_id: int, party: tuple[str, int | str], purpose: int
                ) -> SecureGenerator:
        label = context_label(_STREAM_DOMAIN, "round", _check_int("round_id", round_id),
                              *party, "purpose", _check_int("purpose", purpose))
        return SecureGenerator.from_secret(self._secret, label)

    def generator(self, round_id: int, client: int | str, purpose: int = 0) -> SecureGenerator:
        """The stream of ``client`` in ``round_id`` (``purpose`` separates uses within it)."""
        return self._stream(round_id, _party(client), purpose)

    def server_generator(self, round_id: int) -> SecureGenerator:
        """The stream for central noise in ``round_id`` (disjoint from every client's)."""
        return self._stream(round_id, ("server", "central-noise"), 1)

    def __repr__(self) -> str:  # never print the secret
        return f"NoiseSource(test_seeded={self.is_test_seeded})"


def poisson_sample(ids: Sequence[Any], rate: float, rng: NoiseRNG) -> list[Any]:
    """Each id independently with probability ``rate`` (the sampling the accountant assumes).

    Amplification by sampling needs this randomness hidden from the adversary: draw it from a
    :class:`NoiseSource` stream, not from a seed written in the run's config.
    """
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"rate = {rate!r} must satisfy 0 < rate <= 1")
    keep = rng.random(len(ids)) < rate
    return [i for i, k in zip(ids, keep, strict=True) if k]


__all__ = [
    "NoiseRNG",
    "NoiseSource",
    "add_central_noise",
    "add_distributed_noise",
    "central_noise_std",
    "check_survivors",
    "clip_all",
    "clip_to_norm",
    "distributed_noise_std",
    "dp_sum",
    "l2_norm",
    "poisson_sample",
    "surviving_noise_std",
    "to_numpy",
]
