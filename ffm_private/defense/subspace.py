"""Estimate the sensitive subspace: directions of the update space that predict attributes.

Inputs are the shared updates of **public** users only (their data and attributes are
public) and those users' attribute codes; nothing about private users enters. The updates are
centred on the public mean (not rescaled: the projection acts on the updates' own geometry).
Both estimators work in the span of these rows through the
``n x n`` Gram matrix, so their cost is ``O(n^2 P)`` for ``n`` public users and ``P`` shared
parameters, and they never form a ``P x P`` matrix.

- ``linear``: iterative nullspace projection (Ravfogel et al., ACL 2020). Each step fits one
  ridge-regression classifier per attribute (class-balanced one-vs-rest targets; with a large
  ridge its weight vectors become the class-mean differences), takes the leading direction of
  the weight vectors of the attribute predicted best on held-out public users, adds it to the
  basis and removes it from the data, so the next classifier must find another direction; at
  most ``rank`` steps, fewer once no attribute is predictable (leave-one-out ``R^2 <= 0``).
- ``spectral``: for every attribute and class (one class for a binary attribute), the
  covariance of that class's updates minus that of the other classes, plus the outer product
  of their mean difference (a mean shift and a change of spread both show), measured in
  units of the public updates' spread (whitened with shrinkage, so that the sampling noise of
  a high-variance direction does not pass for signal); the top ``rank`` eigenvectors of the
  sum of their squares that stand above the noise floor (the largest eigenvalue with the
  attribute codes shuffled), i.e. the directions along which the attribute-conditional
  distributions differ most.

The result is a ``(P, r)`` matrix with orthonormal columns, ``r <= rank`` (fewer when the
public updates span fewer directions or carry no attribute signal: the basis says so).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ffm_private.defense.errors import SubspaceError
from ffm_private.defense.projection import energy_fraction, project_out

ESTIMATORS = ("linear", "spectral")
#: Relative eigenvalue below which a direction of the public updates counts as absent.
_RELATIVE_TOL = 1e-10
#: Label permutations that set the spectral estimator's noise floor (and their fixed seed).
_NULL_PERMUTATIONS, _NULL_SEED = 8, 0x5B5


@dataclass(frozen=True, eq=False)
class SensitiveSubspace:
    """An orthonormal basis and where it came from (all public)."""

    basis: np.ndarray                    # (P, r), orthonormal columns, float64
    estimator: str
    round_id: int = 0
    public_users: int = 0
    attributes: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def rank(self) -> int:
        return int(self.basis.shape[1])

    def project(self, vector: np.ndarray) -> np.ndarray:
        return project_out(vector, self.basis)

    def energy(self, vector: np.ndarray) -> np.ndarray | float:
        return energy_fraction(vector, self.basis)

    def meta(self) -> dict[str, Any]:
        return {"estimator": self.estimator, "round": self.round_id, "rank": self.rank,
                "public_users": self.public_users, "attributes": list(self.attributes),
                "notes": list(self.notes)}

    def save(self, path: Path) -> None:
        import json

        from ffm_private.storage import save_arrays

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_arrays(path, {"basis": self.basis, "meta": np.frombuffer(
            json.dumps(self.meta(), sort_keys=True).encode(), dtype=np.uint8)})

    @classmethod
    def load(cls, path: Path) -> SensitiveSubspace:
        import json

        from ffm_private.storage import load_arrays

        arrays = load_arrays(path)
        meta = json.loads(arrays["meta"].tobytes().decode())
        return cls(np.asarray(arrays["basis"], dtype=np.float64), meta["estimator"],
                   int(meta["round"]), int(meta["public_users"]), tuple(meta["attributes"]),
                   tuple(meta.get("notes", ())))


def _prepare(updates: np.ndarray, attributes: Mapping[str, np.ndarray]
             ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    x = np.asarray(updates, dtype=np.float64)
    if x.ndim != 2:
        raise SubspaceError(f"public updates must be a (users, P) matrix, got shape {x.shape}")
    if x.shape[0] < 2:
        raise SubspaceError(f"{x.shape[0]} public user update(s): the sensitive subspace "
                            "needs at least 2 public users")
    if not np.all(np.isfinite(x)):
        raise SubspaceError("a public user's update is not finite")
    labels = {}
    for name, codes in attributes.items():
        codes = np.asarray(codes)
        if codes.shape != (x.shape[0],):
            raise SubspaceError(f"attribute {name!r}: {codes.shape} codes for {x.shape[0]} "
                                "public users")
        if len(np.unique(codes)) >= 2:
            labels[name] = codes
    if not labels:
        raise SubspaceError(f"no attribute among {sorted(attributes)} has two classes among "
                            "the public users: nothing to estimate the subspace from")
    return x - x.mean(axis=0), labels


def _targets(codes: np.ndarray) -> np.ndarray:
    """Class-balanced one-vs-rest targets, centred (one column per class; one for binary)."""
    classes, idx = np.unique(codes, return_inverse=True)
    onehot = np.eye(len(classes))[idx]
    onehot = onehot / onehot.sum(axis=0)            # each class weighs the same
    onehot -= onehot.mean(axis=0)
    return onehot[:, :1] if len(classes) == 2 else onehot


def _orthonormal(columns: np.ndarray) -> np.ndarray:
    if columns.shape[1] == 0:
        return columns
    q, _ = np.linalg.qr(columns)
    return q


def _loo_score(gram: np.ndarray, targets: np.ndarray, lam: float
               ) -> tuple[float, np.ndarray]:
    """Leave-one-out R^2 of a ridge fit of ``targets`` on the rows, and its dual coefficients.

    The held-out score is what keeps a step from chasing noise: with more parameters than
    public users, any labels are separable on the training rows.
    """
    inv = np.linalg.inv(gram + lam * np.eye(len(gram)))
    coef = inv @ targets
    leverage = 1.0 - lam * np.diag(inv)
    resid = (targets - gram @ coef) / np.maximum(1.0 - leverage, 1e-12)[:, None]
    denom = float(np.sum(targets ** 2))
    return (1.0 - float(np.sum(resid ** 2)) / denom if denom > 0 else 0.0), coef


def linear_basis(x: np.ndarray, labels: Mapping[str, np.ndarray], rank: int,
                 ridge: float = 100.0) -> np.ndarray:
    """Iterative nullspace projection over ridge classifiers (see the module docstring).

    Each step takes the attribute whose ridge classifier predicts best on held-out public
    users (leave-one-out); it stops early once none predicts better than its mean.
    """
    gram = x @ x.T
    lam = ridge * max(float(np.trace(gram)) / len(x), 1e-300)
    targets = [_targets(codes) for codes in labels.values()]
    directions: list[np.ndarray] = []
    basis = np.zeros((x.shape[1], 0))
    for _ in range(rank):
        scored = [_loo_score(gram, t, lam) for t in targets]
        best, coef = max(scored, key=lambda s: s[0])
        if best <= 0.0:
            break
        vals, vecs = np.linalg.eigh(coef.T @ gram @ coef)   # W^T W for W = X'^T coef
        if vals[-1] <= 0.0:
            break
        w = project_out(x.T @ (coef @ vecs[:, -1]), basis)  # X' = X (I - B B^T)
        norm = float(np.linalg.norm(w))
        if norm == 0:
            break
        w /= norm
        directions.append(w)
        basis = _orthonormal(np.stack(directions, axis=1))
        xw = x @ w
        gram = gram - np.outer(xw, xw)                       # Gram matrix of X (I - w w^T)
    return basis


def _cov(rows: np.ndarray) -> np.ndarray:
    centred = rows - rows.mean(axis=0)
    return centred.T @ centred / len(rows)


def _differences(z: np.ndarray, white: np.ndarray, labels: Mapping[str, np.ndarray]
                 ) -> np.ndarray:
    """Sum of squared (whitened) class-conditional second-moment differences."""
    total = np.zeros((z.shape[1], z.shape[1]))
    for codes in labels.values():
        classes = np.unique(codes)
        for c in classes[:1] if len(classes) == 2 else classes:
            inside = codes == c
            a, b = z[inside], z[~inside]
            shift = a.mean(axis=0) - b.mean(axis=0)
            diff = _cov(a) - _cov(b) + np.outer(shift, shift)
            diff = white[:, None] * diff * white[None, :]
            total += diff @ diff
    return total


def spectral_basis(x: np.ndarray, labels: Mapping[str, np.ndarray], rank: int) -> np.ndarray:
    """Top directions of attribute-conditional second-moment differences (see the docstring)."""
    gram = x @ x.T
    vals, vecs = np.linalg.eigh(gram)
    keep = vals > _RELATIVE_TOL * max(float(vals[-1]), 1e-300)
    if not keep.any():
        return np.zeros((x.shape[1], 0))
    s = np.sqrt(vals[keep])
    u = vecs[:, keep]
    z = u * s                                        # coordinates in the span: Z = X V
    # shrunk whitening: a high-variance direction's sampling noise must not pass for signal
    var = s ** 2 / len(x)
    white = 1.0 / np.sqrt(var + var.mean())
    total = _differences(z, white, labels)
    evals, evecs = np.linalg.eigh(total)
    # the noise floor: the top eigenvalue with the attribute codes shuffled (a fixed,
    # public permutation sequence: this is a significance test, not a secret)
    rng = np.random.default_rng(_NULL_SEED)
    floor = 0.0
    for _ in range(_NULL_PERMUTATIONS):
        perm = rng.permutation(len(z))
        null = _differences(z, white, {k: v[perm] for k, v in labels.items()})
        floor = max(floor, float(np.linalg.eigvalsh(null)[-1]))
    order = np.argsort(-evals)[:rank]
    order = order[evals[order] > floor]
    v = x.T @ (u / s)                                # orthonormal basis of the row span
    # the pattern (covariance times filter) of each whitened eigenvector: the direction along
    # which the classes differ, which is what projecting out must remove
    return _orthonormal(v @ ((var * white)[:, None] * evecs[:, order]))


def estimate_subspace(updates: np.ndarray, attributes: Mapping[str, np.ndarray], *,
                      rank: int, estimator: str = "linear", ridge: float = 100.0,
                      round_id: int = 0) -> SensitiveSubspace:
    """The sensitive subspace of public users' ``updates`` (rows) given their ``attributes``.

    ``attributes`` maps a name to one code per public user (row); attributes with a single
    class among them are skipped. Raises :class:`SubspaceError` naming what is missing.
    """
    if estimator not in ESTIMATORS:
        raise SubspaceError(f"estimator {estimator!r} is not one of {list(ESTIMATORS)}")
    if rank < 1:
        raise SubspaceError(f"rank = {rank} must be >= 1")
    x, labels = _prepare(updates, attributes)
    if estimator == "linear":
        basis = linear_basis(x, labels, rank, ridge)
    else:
        basis = spectral_basis(x, labels, rank)
    notes = []
    if basis.shape[1] < rank:
        notes.append(f"rank {basis.shape[1]} < requested {rank}: the {len(x)} public updates "
                     "carry no further attribute direction")
    return SensitiveSubspace(basis, estimator, round_id, len(x), tuple(sorted(labels)),
                             tuple(notes))
