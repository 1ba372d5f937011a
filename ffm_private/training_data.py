"""Turning a user's item sequence into model inputs.

Histories are right-aligned windows of the ``L`` most recent items before a position,
padded on the left with ``pad`` (the models' padding id), so position ``L - 1`` always holds
the most recent item.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ffm_private.data import sample_train_negatives


def prefix_windows(sequence: np.ndarray, length: int, pad: int) -> np.ndarray:
    """Row ``t`` holds the (up to) ``length`` items before ``sequence[t]``."""
    seq = np.asarray(sequence, dtype=np.int64)
    padded = np.concatenate([np.full(length, pad, dtype=np.int64), seq])
    idx = np.arange(len(seq))[:, None] + np.arange(length)[None, :]
    return padded[idx]


def last_window(sequence: np.ndarray, length: int, pad: int) -> np.ndarray:
    """The ``length`` most recent items of ``sequence``, right-aligned."""
    seq = np.asarray(sequence, dtype=np.int64)[-length:] if length else np.zeros(0, np.int64)
    return np.concatenate([np.full(length - len(seq), pad, dtype=np.int64), seq])


@dataclass(frozen=True)
class Examples:
    """Training rows: each positive with its sampled negatives and its history."""

    history: np.ndarray  # (n, L)
    items: np.ndarray    # (n, 1 + negatives): column 0 is the positive
    labels: np.ndarray   # (n, 1 + negatives) float32

    def __len__(self) -> int:
        return self.items.shape[0]


def build_examples(train_items: np.ndarray, n_items: int, history_length: int,
                   num_negatives: int, rng: np.random.Generator, *,
                   exclude: np.ndarray | None = None) -> Examples:
    """One row per training positive, ``num_negatives`` fresh negatives each.

    ``exclude``: items never drawn as negatives (the user's evaluation candidates under the
    isolated protocol; see :mod:`ffm_private.data.split`).
    """
    train_items = np.asarray(train_items, dtype=np.int64)
    n = len(train_items)
    negs = sample_train_negatives(train_items, n_items, num_negatives, rng,
                                  exclude=exclude).reshape(n, num_negatives)
    items = np.concatenate([train_items[:, None], negs], axis=1)
    labels = np.zeros(items.shape, dtype=np.float32)
    labels[:, 0] = 1.0
    history = prefix_windows(train_items, history_length, pad=n_items)
    return Examples(history, items, labels)
