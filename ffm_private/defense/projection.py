"""The client's projection: remove an update's component inside the sensitive subspace.

``basis`` is a ``(P, r)`` matrix with orthonormal columns (as
:func:`ffm_private.defense.subspace.estimate_subspace` returns). The projection ``v - B (B^T v)``
is computed in float64; it is idempotent and leaves every direction orthogonal to the subspace
untouched, so it composes with clipping (it never increases the norm) and with any aggregation
protocol (the sum of projected updates is the projection of the sum).
"""

from __future__ import annotations

import numpy as np

from ffm_private.defense.errors import SubspaceError


def _check(vector: np.ndarray, basis: np.ndarray) -> None:
    if basis.ndim != 2:
        raise SubspaceError(f"the subspace basis must be a (P, r) matrix, got shape "
                            f"{basis.shape}")
    if vector.shape[-1] != basis.shape[0]:
        raise SubspaceError(f"the update has {vector.shape[-1]} coordinates but the subspace "
                            f"basis {basis.shape[0]}: the basis was made for another model")


def project_out(vector: np.ndarray, basis: np.ndarray | None) -> np.ndarray:
    """``vector`` (or each row of a matrix) minus its component in ``span(basis)``.

    Returns the input's dtype; ``basis = None`` or a rank-0 basis returns ``vector`` as it is.
    """
    vector = np.asarray(vector)
    if basis is None or basis.shape[-1] == 0:
        return vector
    basis = np.asarray(basis, dtype=np.float64)
    _check(vector, basis)
    v = vector.astype(np.float64)
    out = v - (v @ basis) @ basis.T
    return out.astype(vector.dtype, copy=False)


def energy_fraction(vector: np.ndarray, basis: np.ndarray) -> np.ndarray | float:
    """``||B^T v||^2 / ||v||^2``: the share of the update's energy inside the subspace.

    One value per row for a matrix; 0 for a zero vector (nothing to leak).
    """
    vector = np.asarray(vector, dtype=np.float64)
    basis = np.asarray(basis, dtype=np.float64)
    _check(vector, basis)
    inside = np.sum((vector @ basis) ** 2, axis=-1)
    total = np.sum(vector ** 2, axis=-1)
    frac = np.divide(inside, total, out=np.zeros_like(total), where=total > 0)
    return float(frac) if np.ndim(frac) == 0 else frac
