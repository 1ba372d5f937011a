"""A run directory opened read-only: what ``ffm-private evaluate`` and the audits work from.

Why: an audit must not write into the run it audits, and evaluating a finished run must not
change it. :meth:`RunView.open` therefore reads the saved configuration, the split, the
backbone, the latest verified checkpoint, the privacy plan and the observation log, and
writes nothing: no lock file is created or rewritten (an existing one is held with a shared
``flock``, so a training process on the same directory refuses to start, and the view refuses
to open while one runs), ``config.toml`` and the observation manifest are not rewritten, no
``plan.json`` is written, the ledger is not opened, nothing is pretrained and no synthetic
data is generated (a run without its data is refused).

The privacy plan is derived in one place, :func:`prepare_privacy`: the run calls it before it
starts, the view calls it on a finished run (which reloads the saved plan and checks it
against the settings, as a resumed run does).
"""

from __future__ import annotations

import fcntl
import os
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ffm_private import config as config_mod
from ffm_private.client import LocalTrainingConfig
from ffm_private.config import Config
from ffm_private.data import LeaveOneOutSplit
from ffm_private.errors import CheckpointError, RunDirectoryError, RunLockedError
from ffm_private.models import FROZEN, PERSONAL, Recommender, build_model, params_of
from ffm_private.models.partition import load_group
from ffm_private.observation import ObservationLog
from ffm_private.pretrain import public_users
from ffm_private.privacy.planner import PrivacyPlan
from ffm_private.privacy.run import RunPrivacy
from ffm_private.rundir import DATA_DIR, LOCK
from ffm_private.storage import load_arrays

CONFIG_FILE = "config.toml"
BACKBONE_FILE = Path("checkpoints") / "backbone.npz"


def user_ids(split: LeaveOneOutSplit) -> list[str]:
    """The dataset's id of each client (internal index -> id in the source files)."""
    raw = split.raw_user_ids
    return [str(u) for u in (raw if raw is not None else range(split.n_users))]


def prepare_privacy(cfg: Config, run_dir: str | Path, split: LeaveOneOutSplit,
                    local_cfg: LocalTrainingConfig, *, resume: bool) -> RunPrivacy | None:
    """The run's privacy, checked and planned but not started (``None`` without DP).

    The one place the plan is derived from a configuration and a split; ``resume=True``
    reloads ``<run>/privacy/plan.json`` when it exists. Writes nothing.
    """
    probe = build_model(cfg.model, split.n_items)
    f = cfg.federated
    return RunPrivacy.prepare(
        cfg.privacy, run_dir, user_ids=user_ids(split), rounds=f.rounds,
        client_fraction=f.client_fraction, protocol=cfg.protocol.name, resume=resume,
        train_sizes=[len(t) for t in split.train], local_cfg=local_cfg,
        has_personal=bool(params_of(probe, PERSONAL)),
        public=public_users(split.n_users, cfg.data.public_fraction, f.seed),
        protocol_options=cfg.protocol.options)


class RunView:
    """A finished (or interrupted) run, read-only; use as a context manager or :meth:`close`."""

    def __init__(self, run_dir: Path, cfg: Config, split: LeaveOneOutSplit,
                 backbone: dict[str, np.ndarray], lock_fd: int | None = None) -> None:
        self.run_dir, self.cfg, self.split, self.backbone = run_dir, cfg, split, backbone
        self._lock_fd = lock_fd

    @classmethod
    def open(cls, run_dir: str | Path) -> RunView:
        """Open ``run_dir``; :class:`RunDirectoryError` when it holds no complete run."""
        from ffm_private.simulation import _load_interactions, _split, synthetic_complete

        run_dir = Path(run_dir)
        config_path = run_dir / CONFIG_FILE
        if not config_path.is_file():
            raise RunDirectoryError(f"{run_dir} holds no run (no {CONFIG_FILE})")
        fd = _shared_lock(run_dir)
        try:
            cfg = config_mod.load(config_path, {"run_dir": str(run_dir)})
            data = Path(cfg.data.path) if cfg.data.path else run_dir / DATA_DIR
            if cfg.data.kind == "synthetic" and not synthetic_complete(data):
                raise RunDirectoryError(f"{run_dir}: the run's synthetic data in {data} is "
                                        "missing or incomplete (a read-only view never "
                                        "generates it)")
            split = _split(cfg, _load_interactions(cfg, data))
            path = Path(cfg.pretrain.checkpoint or run_dir / BACKBONE_FILE)
            backbone = load_arrays(path) if path.exists() else {}
        except BaseException:
            _unlock(fd)
            raise
        return cls(run_dir, cfg, split, backbone, fd)

    def close(self) -> None:
        """Release the shared lock (idempotent)."""
        fd, self._lock_fd = self._lock_fd, None
        _unlock(fd)

    def __enter__(self) -> RunView:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- what the run used -------------------------------------------------------------------
    @cached_property
    def public(self) -> np.ndarray:
        """The public pretraining users (by internal index)."""
        return public_users(self.split.n_users, self.cfg.data.public_fraction,
                            self.cfg.federated.seed)

    @cached_property
    def privacy(self) -> RunPrivacy | None:
        """The run's privacy, prepared from its saved plan (never started: no ledger opened)."""
        from ffm_private.simulation import local_config

        return prepare_privacy(self.cfg, self.run_dir, self.split, local_config(self.cfg),
                               resume=True)

    @property
    def plan(self) -> PrivacyPlan | None:
        """The run's privacy plan (``None`` without DP)."""
        return None if self.privacy is None else self.privacy.plan

    @property
    def local_cfg(self) -> LocalTrainingConfig:
        """The clients' training configuration, with the plan's DP-SGD settings if any."""
        import dataclasses

        from ffm_private.simulation import local_config

        local = local_config(self.cfg)
        if self.privacy is not None and self.privacy.example_dp is not None:
            local = dataclasses.replace(local, example_dp=self.privacy.example_dp)
        return local

    def observations(self) -> ObservationLog:
        """The run's observation log (read lazily, round by round)."""
        return ObservationLog.open(self.run_dir)

    def checkpoint(self) -> Any:
        """The latest verified checkpoint (a ``RunState``), or ``None`` when none was written."""
        from ffm_private.simulation import latest_checkpoint

        found = latest_checkpoint(self.run_dir)
        return None if found is None else found[0]

    # -- evaluation --------------------------------------------------------------------------
    def model(self, num_personal: int = 1) -> Recommender:
        """The run's model with its frozen backbone loaded (no gradients)."""
        model = build_model(self.cfg.model, self.split.n_items, num_personal)
        if params_of(model, FROZEN):
            if not self.backbone:
                raise CheckpointError(f"{self.run_dir} has no backbone ({BACKBONE_FILE}): "
                                      "training never got past pretraining")
            load_group(model, FROZEN, self.backbone)
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    def evaluate(self, state: Any) -> dict[str, float]:
        """Ranking metrics of a checkpoint's global and personal state (as the run evaluates)."""
        from ffm_private.evaluation import evaluate_state

        return evaluate_state(self.model(self.split.n_users), self.split, self.cfg, state)


def _shared_lock(run_dir: Path) -> int | None:
    """Hold the run's lock file shared, without creating or writing it."""
    path = run_dir / LOCK
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunLockedError(f"{run_dir} is in use by another ffm-private process (lock {LOCK} "
                             "is held); wait for it to finish") from None
    return fd


def _unlock(fd: int | None) -> None:
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


__all__ = ["RunView", "prepare_privacy", "user_ids"]
