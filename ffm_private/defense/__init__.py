"""Defenses on the shared update: a sensitive-subspace projection (see docs/defenses.md).

- :mod:`ffm_private.defense.subspace`: the estimators (linear, spectral) of the directions of
  the shared-update space that predict sensitive attributes, from public users only;
- :mod:`ffm_private.defense.projection`: the client's projection onto the orthogonal
  complement, and the fraction of an update's energy inside the subspace;
- :mod:`ffm_private.defense.server`: the server's side (public users' updates from the current
  broadcast, refresh every N rounds, the basis files of a run).
"""

from ffm_private.defense.errors import SubspaceError
from ffm_private.defense.projection import energy_fraction, project_out
from ffm_private.defense.subspace import ESTIMATORS, SensitiveSubspace, estimate_subspace

__all__ = ["ESTIMATORS", "SensitiveSubspace", "SubspaceError", "energy_fraction",
           "estimate_subspace", "project_out"]
