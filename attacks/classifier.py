"""A small L2-regularised (multinomial) logistic regression, fit with L-BFGS.

The attacks train it on shadow users (the public split), so it must be robust with a few dozen
examples and many features: inputs are standardised, classes can be re-weighted to balance
them, and the regularisation strength is picked by k-fold cross-validation on the training set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax, softmax


@dataclass
class LogisticModel:
    """A fitted model: ``predict_proba(x)`` gives class probabilities (columns = ``classes``)."""

    classes: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray  # (features + 1, classes)
    l2: float

    def decision(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, dtype=np.float64) - self.mean) / self.scale
        return z @ self.weights[:-1] + self.weights[-1]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return softmax(self.decision(x), axis=1)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.classes[np.argmax(self.decision(x), axis=1)]


def fit_logistic(x: np.ndarray, y: np.ndarray, *, l2: float = 1.0, balanced: bool = True,
                 classes: Sequence[int] | None = None, max_iter: int = 300) -> LogisticModel:
    """Fit softmax regression with penalty ``l2 * ||W||^2 / 2`` (bias unpenalised)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    cls = np.unique(y) if classes is None else np.sort(np.asarray(classes))
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    z = (x - mean) / scale
    n, d = z.shape
    k = len(cls)
    onehot = (y[:, None] == cls[None, :]).astype(np.float64)
    counts = onehot.sum(axis=0)
    w_class = (np.where(counts > 0, n / (k * np.maximum(counts, 1)), 0.0) if balanced
               else np.ones(k))
    w_row = onehot @ w_class
    zb = np.hstack([z, np.ones((n, 1))])

    def loss(flat: np.ndarray) -> tuple[float, np.ndarray]:
        w = flat.reshape(d + 1, k)
        logits = zb @ w
        logp = log_softmax(logits, axis=1)
        value = -np.sum(w_row * np.sum(onehot * logp, axis=1)) / n
        grad = zb.T @ ((np.exp(logp) - onehot) * w_row[:, None]) / n
        value += 0.5 * l2 * np.sum(w[:-1] ** 2)
        grad[:-1] += l2 * w[:-1]
        return value, grad.ravel()

    res = minimize(loss, np.zeros((d + 1) * k), jac=True, method="L-BFGS-B",
                   options={"maxiter": max_iter})
    return LogisticModel(cls, mean, scale, res.x.reshape(d + 1, k), l2)


def fit_logistic_cv(x: np.ndarray, y: np.ndarray, *, grid: Sequence[float] = (0.01, 0.1, 1.0, 10.0),
                    folds: int = 3, seed: int = 0, balanced: bool = True,
                    classes: Sequence[int] | None = None) -> LogisticModel:
    """Pick ``l2`` from ``grid`` by k-fold log-loss, then refit on everything."""
    y = np.asarray(y)
    cls = np.unique(y) if classes is None else np.sort(np.asarray(classes))
    n = len(y)
    folds = max(2, min(folds, n))
    order = np.random.default_rng(np.random.SeedSequence([seed, 0xC1])).permutation(n)
    best, best_loss = grid[0], np.inf
    for l2 in grid:
        total = 0.0
        for f in range(folds):
            test = order[f::folds]
            train = np.setdiff1d(order, test)
            if len(np.unique(y[train])) < 2:
                continue
            model = fit_logistic(x[train], y[train], l2=l2, balanced=balanced, classes=cls)
            proba = np.clip(model.predict_proba(x[test]), 1e-12, 1.0)
            idx = np.searchsorted(cls, y[test])
            total += -np.sum(np.log(proba[np.arange(len(test)), idx]))
        if total < best_loss:
            best, best_loss = l2, total
    return fit_logistic(x, y, l2=best, balanced=balanced, classes=cls)


__all__ = ["LogisticModel", "fit_logistic", "fit_logistic_cv"]
