"""The server's side of the subspace defense: estimate, refresh, publish the basis.

Every ``refresh_every`` rounds (rounds 1, 1 + N, ...) the server computes what each **public**
user would send from the current broadcast (their data is public, so it can run their local
step itself, without DP: nothing private enters), estimates the sensitive subspace from those
updates and the public users' attributes, and ships the basis with the broadcast. Private
users' data and attributes are never handed to this class: it keeps the public rows only.

The basis of each refresh is written to ``<run_dir>/defense/basis-round-NNNN.npz`` (public,
like the broadcast): a resumed run reloads it, and an audit's adaptive attacker reads it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from ffm_private.config import ConfigError, DefenseConfig
from ffm_private.defense.errors import SubspaceError
from ffm_private.defense.subspace import SensitiveSubspace, estimate_subspace
from ffm_private.errors import CheckpointError, CorruptFileError
from ffm_private.messages import GlobalModelMessage

DEFENSE_DIR = "defense"

#: Computes one public user's flat shared update from a broadcast (no basis attached).
PublicUpdate = Callable[[GlobalModelMessage, int], np.ndarray]


def basis_file(run_dir: Path, round_id: int) -> Path:
    return Path(run_dir) / DEFENSE_DIR / f"basis-round-{round_id:04d}.npz"


def refresh_round(round_id: int, every: int) -> int:
    """The round whose broadcast the basis used in ``round_id`` was estimated from."""
    return 1 + ((round_id - 1) // every) * every


def load_basis(run_dir: Path, round_id: int, every: int) -> SensitiveSubspace | None:
    """The published basis in force in ``round_id`` (``None`` if none was written)."""
    path = basis_file(run_dir, refresh_round(round_id, every))
    return SensitiveSubspace.load(path) if path.exists() else None


class SubspaceDefense:
    """Holds the public users' attributes and the current basis; attaches it to broadcasts."""

    def __init__(self, cfg: DefenseConfig, run_dir: Path, public: np.ndarray,
                 attributes: Mapping[str, np.ndarray], n_params: int) -> None:
        if cfg.rank > n_params:
            raise ConfigError(f"defense.rank = {cfg.rank} exceeds the model's {n_params} "
                              "shared parameters")
        if len(public) < 2:
            raise ConfigError(f"defense.kind = 'subspace' needs at least 2 public users "
                              f"(data.public_fraction selects {len(public)})")
        if not attributes:
            raise ConfigError("defense.kind = 'subspace' needs user attributes (gender, age, "
                              "...): the dataset has none")
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.public = np.asarray(public, dtype=np.int64)
        # only the public rows are kept: nothing of a private user's attributes stays here
        self.attributes = {k: np.asarray(v)[self.public] for k, v in attributes.items()}
        self.n_params = n_params
        self.current: SensitiveSubspace | None = None

    def basis(self, message: GlobalModelMessage, public_update: PublicUpdate
              ) -> SensitiveSubspace:
        """The basis for ``message``'s round: re-estimated on refresh rounds, else reused."""
        round_id = message.round_id
        start = refresh_round(round_id, self.cfg.refresh_every)
        if self.current is not None and self.current.round_id == start:
            return self.current
        path = basis_file(self.run_dir, start)
        if start == round_id:
            updates = np.stack([np.asarray(public_update(message, int(u)), dtype=np.float64)
                                for u in self.public])
            try:
                sub = estimate_subspace(updates, self.attributes, rank=self.cfg.rank,
                                        estimator=self.cfg.estimator, ridge=self.cfg.ridge,
                                        round_id=round_id)
            except SubspaceError as err:
                raise SubspaceError(f"round {round_id}: {err}") from None
            sub.save(path)
        else:  # a resumed run between refreshes: the basis published at the last refresh
            try:
                sub = SensitiveSubspace.load(path)
            except (FileNotFoundError, CorruptFileError, KeyError, ValueError) as err:
                raise CheckpointError(f"round {round_id} needs the subspace basis estimated in "
                                      f"round {start} ({path}): {err}") from None
            if sub.basis.shape[0] != self.n_params or sub.round_id != start:
                raise CheckpointError(f"{path} does not fit this run (shape "
                                      f"{sub.basis.shape}, round {sub.round_id})")
        self.current = sub
        return sub

    def attach(self, message: GlobalModelMessage, public_update: PublicUpdate
               ) -> GlobalModelMessage:
        """``message`` with the round's basis (public: it travels with the broadcast)."""
        sub = self.basis(message, public_update)
        return dataclasses.replace(message, defense_basis=sub.basis)


def make_defense(cfg: DefenseConfig, run_dir: Path, public: np.ndarray,
                 attributes: Mapping[str, np.ndarray], n_params: int
                 ) -> SubspaceDefense | None:
    """The run's defense (``None`` for ``kind = "none"``)."""
    if cfg.kind == "none":
        return None
    return SubspaceDefense(cfg, run_dir, public, attributes, n_params)
