"""Metrics every attack reports: AUC, ROC, TPR at low FPR, balanced accuracy, bootstrap intervals.

All numpy/scipy; AUCs count ties as one half (the Mann-Whitney statistic), so a constant score
earns exactly 0.5, never more.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata, spearmanr


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (ties count 1/2); NaN when one class is absent."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(fpr, tpr)`` at every distinct threshold, from (0, 0) to (1, 1)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    distinct = np.flatnonzero(np.diff(s)) if s.size else np.zeros(0, np.int64)
    cut = np.concatenate([distinct, [s.size - 1]]) if s.size else np.zeros(0, np.int64)
    tp = np.cumsum(y)[cut]
    fp = np.cumsum(~y)[cut]
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    fpr = np.concatenate([[0.0], fp / n_neg])
    tpr = np.concatenate([[0.0], tp / n_pos])
    return fpr, tpr


def tpr_at_fpr(scores: np.ndarray, labels: np.ndarray, fpr_target: float) -> float:
    """Highest TPR over thresholds whose FPR is at most ``fpr_target``."""
    fpr, tpr = roc_curve(scores, labels)
    ok = fpr <= fpr_target + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def precision_recall_at_k(scores: np.ndarray, labels: np.ndarray, k: int) -> tuple[float, float]:
    """Precision and recall of the ``k`` highest scores (ties broken by index)."""
    labels = np.asarray(labels, dtype=bool)
    k = min(k, labels.size)
    top = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:k]
    hits = float(labels[top].sum())
    return hits / max(k, 1), hits / max(int(labels.sum()), 1)


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray,
                      classes: Sequence[int] | None = None) -> float:
    """Mean per-class recall over the classes present in ``y_true``: chance is 1 / classes."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    present = np.unique(y_true) if classes is None else [c for c in classes if np.any(y_true == c)]
    return float(np.mean([np.mean(y_pred[y_true == c] == c) for c in present]))


def macro_auc(y_true: np.ndarray, proba: np.ndarray, classes: Sequence[int]) -> float:
    """One-vs-rest AUC averaged over classes present (binary: the AUC of the positive class)."""
    y_true = np.asarray(y_true)
    if len(classes) == 2:
        return auc(proba[:, 1], y_true == classes[1])
    values = [auc(proba[:, j], y_true == c) for j, c in enumerate(classes)
              if 0 < np.sum(y_true == c) < len(y_true)]
    return float(np.mean(values)) if values else float("nan")


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (0 when either side is constant)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else 0.0


@dataclass(frozen=True)
class Interval:
    """A point estimate with a percentile bootstrap interval."""

    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def bootstrap(statistic: Callable[[np.ndarray], float], n: int, *, rounds: int = 200,
              level: float = 0.95, seed: int = 0) -> Interval:
    """Percentile bootstrap of ``statistic(indices)`` over ``n`` units resampled with replacement.

    ``statistic`` receives an index array (the full ``arange(n)`` for the point estimate).
    """
    value = float(statistic(np.arange(n)))
    if n < 2 or rounds < 1:
        return Interval(value, value, value)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xB007]))
    stats = np.array([statistic(rng.integers(0, n, size=n)) for _ in range(rounds)],
                     dtype=np.float64)
    stats = stats[np.isfinite(stats)]
    if stats.size == 0:
        return Interval(value, value, value)
    alpha = (1 - level) / 2
    return Interval(value, float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha)))


def mean_interval(values: np.ndarray, *, rounds: int = 200, seed: int = 0) -> Interval:
    """Bootstrap interval of the mean of per-unit values (NaNs dropped)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    return bootstrap(lambda idx: float(values[idx].mean()), values.size, rounds=rounds, seed=seed)


def dp_roc_bound(fpr: np.ndarray, epsilon: float, delta: float) -> np.ndarray:
    """Largest TPR an (epsilon, delta)-DP mechanism allows at each FPR.

    From the hypothesis-testing view of DP (Kairouz, Oh, Viswanath 2015): any test has
    TPR <= e^eps FPR + delta and FNR >= e^-eps (1 - delta - FPR), i.e.
    TPR <= 1 - e^-eps (1 - delta - FPR).
    """
    fpr = np.asarray(fpr, dtype=np.float64)
    a = np.exp(epsilon) * fpr + delta
    b = 1.0 - np.exp(-epsilon) * (1.0 - delta - fpr)
    return np.clip(np.minimum(a, b), 0.0, 1.0)


__all__ = [
    "Interval", "auc", "balanced_accuracy", "bootstrap", "cosine", "dp_roc_bound",
    "macro_auc", "mean_interval", "precision_recall_at_k", "roc_curve", "spearman",
    "tpr_at_fpr",
]
