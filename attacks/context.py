"""What an audit works from: the observation log, the released artefacts, and ground truth.

The *attacker* may use only: the observation log (``ffm_private.observation``), the run's
configuration (it describes the public algorithm), the frozen backbone, the released global
state, and the public split's users (their data and attributes are public: they consented,
and the backbone was pretrained on them). The *scorer* additionally uses ground truth from
the dataset (private users' interactions, attributes, the synthetic generator's planted
traits) and, for A5, the users' final personal states, to measure what the attacker got right.
Nothing here reads training internals on the attacker's behalf.

Views (threat models):

- ``server``: the honest-but-curious server. It sees each contributor's update when the
  protocol reveals individual updates (plaintext), otherwise only the round's sum (secagg,
  he), which is then every contributor's observation.
- ``public``: anyone who sees the broadcast models: per round ``after - broadcast``, the same
  for every user.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ffm_private.config import Config, ConfigError
from ffm_private.data import LeaveOneOutSplit
from ffm_private.observation import ObservationLog, RoundObservation

VIEWS = ("server", "public")
VIEW_TEXT = {
    "server": "honest-but-curious server: each client's shared update when the protocol "
              "reveals it (plaintext), otherwise only the round's sum",
    "public": "anyone who sees the released models: the change of the global state per round",
}


class AuditError(RuntimeError):
    """An audit cannot run: missing artefacts, or nothing observed that the attack needs."""


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """What the scorer knows (rows follow the split's users)."""

    train: list[np.ndarray]
    held_out: list[np.ndarray]
    attributes: dict[str, np.ndarray] = field(default_factory=dict)
    attribute_names: dict[str, list[str]] = field(default_factory=dict)
    traits: np.ndarray | None = None        # synthetic: planted latent traits (users x K)
    item_factors: np.ndarray | None = None  # synthetic: planted item factors (items x K)
    personal_scores: Any = None             # callable user -> (n_items,) scores, for A5


@dataclass(frozen=True)
class Claim:
    """The DP guarantee the run states, and which views it covers."""

    mode: str = "none"
    epsilon: float | None = None
    delta: float | None = None
    noise_multiplier: float | None = None
    clipping_norm: float | None = None
    placement: str | None = None
    rounds: int = 1
    client_rate: float = 1.0
    min_survivors: int = 0
    covers: tuple[str, ...] = ()
    text: str = "no differential privacy claimed"

    @property
    def claimed(self) -> bool:
        return self.epsilon is not None and math.isfinite(self.epsilon)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def claim_from_config(cfg: Config, plan: Any = None) -> Claim:
    """The run's claim from its ``[privacy]`` table and its plan.

    ``plan`` is the run's own (:attr:`ffm_private.run_view.RunView.plan`, the derivation the
    run itself uses); without it the plan is searched from the config where it can be, else
    the configured target is stated.
    """
    raw = dict(cfg.privacy or {})
    if not raw or raw.get("mode", "none") == "none":
        return Claim()
    from ffm_private.privacy.config import PrivacyConfig, resolved_privacy
    from protocols.registry import protocol_class

    pc = PrivacyConfig.from_dict(raw)
    f = cfg.federated
    epsilon, sigma = (pc.target_epsilon or None), (pc.noise_multiplier or None)
    if plan is None:
        try:  # ``auto`` accountant and distributed noise resolved as the run resolves them
            plan = resolved_privacy(cfg).run_plan(rounds=f.rounds, client_rate=f.client_fraction)
        except (ConfigError, ValueError, TypeError):  # example level needs the
            plan = None  # client's DP-SGD figures: keep the target
    if plan is not None:
        epsilon, sigma = plan.epsilon, plan.noise_multiplier
    hides = not protocol_class(cfg.protocol.name).reveals_individual_updates
    if pc.mode == "user" and pc.noise_placement == "central":
        covers: tuple[str, ...] = ("public",)
        who = "user-level, central noise: covers the released models, not the trusted server"
    elif pc.mode == "user":
        covers = ("server", "public") if hides else ("public",)
        who = "user-level, distributed noise" + ("" if hides else
                                                  " without a hiding protocol: no server claim")
    else:
        covers = ("server", "public")
        who = ("example-level (one interaction): covers single interactions from every view, "
               "not a user's data as a whole")
    eps_text = f"epsilon = {epsilon:.3g}" if epsilon else "epsilon unknown"
    return Claim(mode=pc.mode, epsilon=epsilon, delta=pc.delta, noise_multiplier=sigma,
                 clipping_norm=pc.clipping_norm, placement=pc.noise_placement, rounds=f.rounds,
                 client_rate=f.client_fraction, min_survivors=pc.min_survivors, covers=covers,
                 text=f"{who}; {eps_text}, delta = {pc.delta:g}")


@dataclass
class AuditContext:
    """Everything an attack reads; build it with :meth:`from_run` (or directly, in tests)."""

    cfg: Config
    split: LeaveOneOutSplit
    truth: GroundTruth
    log: ObservationLog
    backbone: Mapping[str, np.ndarray]
    public: np.ndarray
    seed: int = 0
    claim: Claim = field(default_factory=Claim)
    run_dir: Path | None = None
    progress: bool = False
    #: The run's privacy plan and client configuration (from the run view; ``None``: derive
    #: from the config, for contexts built directly).
    plan: Any = None
    local_cfg: Any = None
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_run(cls, run_dir: str | Path, *, seed: int = 0, progress: bool = False,
                 log: ObservationLog | None = None) -> AuditContext:
        """Load a finished (or interrupted) run directory, read-only (see :class:`RunView`)."""
        from ffm_private.errors import RunDirectoryError
        from ffm_private.run_view import RunView

        run_dir = Path(run_dir)
        if not (run_dir / "config.toml").exists():
            raise AuditError(f"{run_dir} is not a run directory (no config.toml)")
        try:
            view = RunView.open(run_dir)
        except RunDirectoryError as err:
            raise AuditError(str(err)) from None
        with view:
            log = log or view.observations()
            truth = load_ground_truth(view.cfg, run_dir, view.split)
            plan, local = view.plan, view.local_cfg
        return cls(cfg=view.cfg, split=view.split, truth=truth, log=log,
                   backbone=view.backbone, public=view.public, seed=seed,
                   claim=claim_from_config(view.cfg, plan), run_dir=run_dir, progress=progress,
                   plan=plan, local_cfg=local)

    def with_log(self, log: ObservationLog, claim: Claim | None = None) -> AuditContext:
        """The same run seen through another observation log (a what-if audit)."""
        return dataclasses.replace(self, log=log, claim=claim or self.claim, _cache={})

    # -- who is audited ---------------------------------------------------------------------
    @property
    def n_items(self) -> int:
        return self.split.n_items

    @property
    def public_set(self) -> set[int]:
        return {int(u) for u in self.public}

    def observed_users(self) -> list[int]:
        """Users with at least one server-view observation (recorded vector or a sum)."""
        seen: set[int] = set()
        for obs in self.log:
            seen.update(recorded_users(obs))
        return sorted(seen)

    def targets(self) -> list[int]:
        """Private users with observations: the users the attacks try to learn about."""
        public = self.public_set
        return [u for u in self.observed_users() if u not in public]

    def shadows(self) -> list[int]:
        """Public users with observations: the attacker's labelled examples."""
        public = self.public_set
        return [u for u in self.observed_users() if u in public]

    # -- what the attacker observed ---------------------------------------------------------
    def observations(self, user: int, view: str) -> Iterator[tuple[RoundObservation, np.ndarray]]:
        """``(round, vector)`` pairs the attacker holds about ``user`` under ``view``."""
        for obs in self.log:
            vec = view_vector(obs, user, view)
            if vec is not None:
                yield obs, vec

    def popularity(self) -> np.ndarray:
        """Item popularity among public users (the no-information attacker's prior)."""
        if "popularity" not in self._cache:
            counts = np.zeros(self.n_items, dtype=np.float64)
            for u in self.public:
                np.add.at(counts, self.split.train[int(u)], 1.0)
            self._cache["popularity"] = counts
        return self._cache["popularity"]

    def model_class(self) -> Any:
        """The run's model class (the config names the public algorithm): its declared layout."""
        from ffm_private.models import model_class

        return model_class(self.cfg.model.kind)

    def item_embeddings(self) -> np.ndarray:
        """Item vectors the attacker knows: the table the model declares it scores items with.

        Read from the backbone when the model keeps it frozen, else from the released shared
        state (the final global model, or the last recorded round's).
        """
        if "item_emb" not in self._cache:
            name = self.model_class().item_embedding
            table = None
            if name is not None:
                for source in (self.backbone, self._released_state()):
                    if name in source:
                        table = np.asarray(source[name][:self.n_items], dtype=np.float64)
                        break
            if table is None:
                raise AuditError(f"model {self.cfg.model.kind!r}: its item embedding table "
                                 f"({name}) is not among the released artefacts")
            self._cache["item_emb"] = table
        return self._cache["item_emb"]

    def _released_state(self) -> dict[str, np.ndarray]:
        vec = self.log.released
        if vec is None:
            last = self.log[self.log.rounds[-1]] if self.log.rounds else None
            vec = None if last is None else (last.after if last.after is not None
                                             else last.broadcast)
        return {} if vec is None else self.log.spec.unflatten(np.asarray(vec))

    def rng(self, *tags: int) -> np.random.Generator:
        """A generator for one purpose, derived from the audit seed."""
        return np.random.default_rng(np.random.SeedSequence([self.seed, *tags]))


def recorded_users(obs: RoundObservation) -> list[int]:
    """Users the server holds an observation of in this round."""
    if obs.has_individual:
        return obs.client_ids
    if obs.total is not None:
        return [int(c) for c in obs.contributors]
    return []


def view_vector(obs: RoundObservation, user: int, view: str) -> np.ndarray | None:
    """What ``view`` saw of ``user`` in this round, or ``None``."""
    if view == "server":
        if obs.has_individual:
            return obs.vector(user) if user in set(obs.client_ids) else None
        if obs.total is not None and user in set(int(c) for c in obs.contributors):
            return np.asarray(obs.total, dtype=np.float32)
        return None
    if view == "public":
        delta = obs.public_delta
        if delta is None or user not in set(recorded_users(obs)):
            return None
        return delta.astype(np.float32)
    raise ValueError(f"unknown view {view!r}; choose one of {list(VIEWS)}")


def load_ground_truth(cfg: Config, run_dir: Path, split: LeaveOneOutSplit) -> GroundTruth:
    """Interactions, attributes and (synthetic) planted traits for the split's users."""
    from ffm_private.data import load_dataset, load_personality

    users = split.source_users if split.source_users is not None else np.arange(split.n_users)
    held_out = [np.array([split.valid[u], split.test[u]]) for u in range(split.n_users)]
    attributes: dict[str, np.ndarray] = {}
    names: dict[str, list[str]] = {}
    traits = factors = None
    data_path = Path(cfg.data.path) if cfg.data.path else run_dir / "data"
    if cfg.data.kind != "csv":  # a csv file carries no user attributes
        interactions = load_dataset(cfg.data.kind, data_path, cfg.data)
        attributes = {k: np.asarray(v)[users] for k, v in interactions.user_attributes.items()}
        names = {k: list(v) for k, v in interactions.attribute_names.items()}
        if cfg.data.kind == "synthetic":
            personality = load_personality(data_path, interactions)
            traits = personality.traits[users]
            factors = personality.item_factors
    return GroundTruth(train=list(split.train), held_out=held_out, attributes=attributes,
                       attribute_names=names, traits=traits, item_factors=factors)


__all__ = ["VIEWS", "VIEW_TEXT", "AuditContext", "AuditError", "Claim", "GroundTruth",
           "claim_from_config", "load_ground_truth", "recorded_users", "view_vector"]
