"""Shared helpers for the SecAgg+ tests: a deterministic entropy source and input vectors."""

from __future__ import annotations

import hashlib

import numpy as np


class DeterministicEntropy:
    """SHAKE-256 in counter mode: a reproducible stand-in for ``os.urandom`` in tests only.

    It is a cryptographic generator, so test runs exercise the same code paths as real ones,
    but fixed seeds make statistical tests deterministic (they never flake).
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.counter = 0

    def __call__(self, n: int) -> bytes:
        self.counter += 1
        data = self.seed.to_bytes(8, "little") + self.counter.to_bytes(8, "little")
        return hashlib.shake_256(data).digest(n)


def updates(n: int, length: int = 64, seed: int = 0, scale: float = 0.5) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {cid: rng.uniform(-scale, scale, size=length) for cid in range(n)}


def plain_sum(ups: dict[int, np.ndarray], ids) -> np.ndarray:
    return np.sum([ups[c] for c in ids], axis=0)
