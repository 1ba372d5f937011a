"""The privacy side of one training run: plan, ledger, secrets, and the three places DP acts.

A run with ``privacy.mode != "none"`` owns one :class:`RunPrivacy`. The federated loop calls it
at three points of every round, in the order of the round's data flow:

1. :meth:`RunPrivacy.select` — who may take part. Protected users whose next charge would
   exceed their cap (or who used up ``max_participations``) decline; eligibility is read from
   the ledger as it stood when the round started, so a replayed round selects as it did.
   Under user-level DP with central noise every protected user still in the pool is charged
   *now*, before sampling (the accountant's amplification by Poisson sampling covers users who
   are not picked), and the sample is drawn from the server's own secret.
2. :meth:`RunPrivacy.release` — on the client, after local training and before anything
   leaves the device: the mechanism's client transform (clip to ``C``, add this client's noise
   share from the client's own secret), or the check that the client's DP-SGD ran no more
   than the plan covers; then the participation charge (durable, with a digest of the exact
   bytes released). Only an admitted release is returned, stripped of every unprotected
   statistic (example count, losses).
3. :meth:`RunPrivacy.average` — on the server, from the protocol's sum: the mechanism's server
   transform (central noise from the server's secret, divided by a *public* constant; a
   noise-only step when nobody or too few took part; or the refusal of a distributed-noise
   sum with fewer shares than planned).

The mechanism itself is an object (:mod:`ffm_private.privacy.mechanism`) built from the plan in
one place; the A6 audit runs the same object. The plan is searched once and saved in
``<run>/privacy/plan.json``; the ledger is ``<run>/privacy/ledger.sqlite``; the secrets live
with their owners (:mod:`ffm_private.privacy.client_secrets`).

A run without DP holds :class:`NoPrivacy`, the null object with the same methods: everyone
is eligible, updates leave as they are, the server takes the plain mean, nothing is charged or
written. The loop therefore never asks whether a run is private.

Users of the public pretraining split are not protected: their data trained the backbone
without DP. They take part as clients (their updates pass through the same mechanism) but are
never charged, and the guarantee and the delta check cover the other users only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ffm_private.client import LocalTrainingConfig
from ffm_private.config import ConfigError
from ffm_private.privacy import fingerprint
from ffm_private.privacy.client_secrets import SERVER, MissingSecretError, SecretStore
from ffm_private.privacy.config import PrivacyConfig
from ffm_private.privacy.dpsgd import DPRunReport, ExampleDP, torch_generator
from ffm_private.privacy.errors import UnsupportedClaimError
from ffm_private.privacy.guarantee import NO_DP, guarantee_statement
from ffm_private.privacy.ledger import PrivacyLedger
from ffm_private.privacy.mechanism import NULL_MECHANISM, Mechanism, ReleaseContext
from ffm_private.privacy.mechanisms import distributed_noise_std, poisson_sample
from ffm_private.privacy.planner import PrivacyPlan

PRIVACY_DIR = "privacy"
_SAMPLING, _CLIENT_NOISE, _SERVER_NOISE = 2, 0, 1
NOISE_RANGE_SIGMAS = 8.0
"""Distributed noise: the protocol must carry ``C + 8 std`` per coordinate without clamping
(a Gaussian exceeds 8 std with probability below 1.3e-15 per coordinate)."""


@dataclass(frozen=True)
class Selection:
    """Who takes part in a round, and who declined because of their budget."""

    sampled: list[int]
    declined: list[int]
    pool_size: int


def update_digest(vector: np.ndarray) -> str:
    """SHA-256 of the float64 bytes of a released update (the ledger's replay check)."""
    return hashlib.sha256(np.ascontiguousarray(vector, dtype="<f8").tobytes()).hexdigest()


class RunPrivacy:
    """Plan, mechanism, ledger and secrets of a run; see the module docstring for when each acts.

    Built in steps so that a configuration that supports no claim is refused before the run
    directory is touched: :meth:`prepare` checks everything in memory (and searches the noise
    once); :meth:`bind_protocol` checks the protocol's capabilities; :meth:`start` writes the
    plan and opens the ledger and the secrets.
    """

    def __init__(self, cfg: PrivacyConfig, plan: PrivacyPlan, *, folder: Path,
                 caps: dict[str, float], protocol: str, user_ids: Sequence[str],
                 public: Sequence[int] = ()) -> None:
        self.cfg, self.plan, self.folder, self.caps = cfg, plan, folder, caps
        self.protocol = protocol
        #: the configuration as written (``auto`` unresolved); ``cfg`` is the resolved one
        self.requested: PrivacyConfig = cfg
        self.hides_updates: bool | None = None
        self.user_ids = list(user_ids)
        self.public = frozenset(int(u) for u in public)
        self._ledger: PrivacyLedger | None = None
        self._secrets: SecretStore | None = None
        self.mechanism: Mechanism = cfg.mechanism(plan)
        #: Example-level DP-SGD settings for every client (``None`` in user mode).
        self.example_dp: ExampleDP | None = None

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def prepare(cls, raw: dict[str, Any], run_dir: str | Path, *, user_ids: Sequence[Any],
                rounds: int, client_fraction: float, protocol: str, resume: bool = False,
                train_sizes: Sequence[int] = (), local_cfg: LocalTrainingConfig | None = None,
                has_personal: bool = True, public: Sequence[int] = (),
                protocol_options: Mapping[str, Any] | None = None) -> RunPrivacy | None:
        """The run's privacy, checked but not started; ``None`` for ``mode = "none"``.

        ``user_ids[c]`` is the dataset's id of client ``c``: the ledger and the per-user caps
        file speak in those ids. ``public`` lists the clients of the public pretraining split
        (not protected, never charged). A resumed run reloads its saved plan (no new noise
        search) and refuses one planned for other settings. Example-level DP sizes its
        DP-SGD once from public configuration and ``local_cfg``. ``accountant`` and
        ``distributed_noise`` set to ``auto`` are resolved against the capabilities of the
        protocol ``protocol`` built from ``protocol_options`` (:meth:`bind_protocol` checks the
        protocol the run actually uses against that choice).
        """
        requested = PrivacyConfig.from_dict(raw)
        if not requested.enabled:
            return None
        cfg = requested.for_protocol_config(protocol, protocol_options)
        user_ids = [str(u) for u in user_ids]
        public = sorted(set(int(u) for u in public))
        protected = [c for c in range(len(user_ids)) if c not in set(public)]
        if not protected:
            raise ConfigError("every user is in the public pretraining split: nobody is left "
                              "to protect (lower data.public_fraction)")
        inputs, example = cfg.run_inputs(rounds=rounds, client_rate=client_fraction,
                                         local_cfg=local_cfg, has_personal=has_personal)
        if cfg.mode == "example":
            if not len(train_sizes):
                raise ValueError("example-level DP needs train_sizes (for the delta check)")
            cfg.check_delta_for(int(np.sum([train_sizes[c] for c in protected])))
        else:
            cfg.check_delta_for(len(protected))
        caps = cfg.caps()
        unknown = sorted(set(caps) - set(user_ids))
        if unknown:
            raise ConfigError(f"{cfg.per_user_caps_file}: {len(unknown)} user id(s) are not in "
                              f"the dataset, e.g. {unknown[:5]}")
        folder = Path(run_dir) / PRIVACY_DIR
        saved = folder / "plan.json"
        plan = (_saved_plan(cfg, saved, inputs) if resume and saved.exists()
                else cfg.plan(**inputs))
        out = cls(cfg, plan, folder=folder, caps=caps, protocol=protocol, user_ids=user_ids,
                  public=public)
        out.requested = requested
        out.example_dp = (None if example is None else ExampleDP.from_plan(
            plan, clipping_norm=cfg.clipping_norm,
            expected_batch_size=example.expected_batch_size))
        return out

    def bind_protocol(self, protocol: Any, dim: int) -> RunPrivacy:
        """Check the protocol's declared capabilities against the mechanism (not its name).

        Distributed noise needs a protocol that hides individual updates and enforces its
        ``min_clients`` itself, and whose value range carries ``C`` plus the noise without
        clamping; the clip is lowered by the protocol's rounding bound so that encoding cannot
        lift a norm above ``C``.
        """
        self.protocol = protocol.name
        self.hides_updates = not protocol.reveals_individual_updates
        if self.plan.noise_placement == "distributed" and self.plan.mode == "user":
            if not getattr(protocol, "supports_distributed_noise", False):
                raise UnsupportedClaimError(
                    f"distributed noise with protocol {protocol.name!r}: the protocol does not "
                    "hide individual updates behind a threshold, so each update would be seen "
                    "with only its share of the noise; use secagg or he, or central noise")
            chosen = self.requested.for_protocol(protocol)
            if (chosen.accountant, chosen.distributed_noise) != (self.cfg.accountant,
                                                                 self.cfg.distributed_noise):
                raise UnsupportedClaimError(
                    f"the plan was made for accountant = {self.cfg.accountant!r} and "
                    f"distributed_noise = {self.cfg.distributed_noise!r}, but protocol "
                    f"{protocol.name!r} as built calls for {chosen.accountant!r} and "
                    f"{chosen.distributed_noise!r}: plan with the protocol's options "
                    "(RunPrivacy.prepare(protocol_options=...))")
            self.mechanism = bind_mechanism(self.cfg, self.plan, protocol, dim,
                                            max_clients=len(self.user_ids))
        self.statement()  # refuse, before any file is written, a claim that cannot be stated
        return self

    def start(self, secrets: SecretStore, *, resuming: bool = False) -> RunPrivacy:
        """Write the plan, open the durable ledger; ``secrets`` are the parties' own roots."""
        from ffm_private.storage import atomic_write_json

        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.folder / "plan.json", self.plan.to_dict())
        self._ledger = PrivacyLedger(self.folder / "ledger.sqlite", delta=self.cfg.delta,
                                     accountant=self.cfg.accountant,
                                     default_cap=self.cfg.cap_for_plan(self.plan),
                                     caps=self.caps)
        self._secrets = secrets
        if resuming:
            self.check_resume(secrets)
        return self

    def check_resume(self, secrets: SecretStore) -> None:
        """Refuse to resume without the server's secret once anything was charged (reads only).

        A new secret would release different noise and a different sample for replayed rounds.
        """
        ledger = self.folder / fingerprint.LEDGER_FILE
        if ledger.is_file() and fingerprint.ledger_fingerprint(ledger, 2**62)["rows"]:
            secrets.secret(SERVER, must_exist=True)

    @property
    def ledger(self) -> PrivacyLedger:
        if self._ledger is None:
            raise RuntimeError("RunPrivacy.start() has not been called")
        return self._ledger

    @property
    def secrets(self) -> SecretStore:
        if self._secrets is None:
            raise RuntimeError("RunPrivacy.start() has not been called")
        return self._secrets

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()

    def protected(self, client: int) -> bool:
        """Whether ``client`` is covered by the guarantee (not a public pretraining user)."""
        return client not in self.public

    # -- 1. selection -------------------------------------------------------------------------
    def select(self, round_id: int, users: Sequence[int],
               sampler: Callable[[Sequence[int]], list[int]]) -> Selection:
        """Budget-checked pool, then the round's participants.

        ``sampler`` draws from a pool when sampling does not matter for the guarantee
        (participation charging); with central noise the sample is Poisson with the plan's
        rate, from the server's secret, because the accountant relies on it.
        """
        protected = [u for u in users if self.protected(u)]
        public = [u for u in users if not self.protected(u)]
        if self.plan.charge_basis == "eligibility":
            decisions = self.ledger.charge_many([self.user_ids[u] for u in protected], round_id,
                                                self.plan.charge_events())
            pool = sorted([u for u in protected if decisions[self.user_ids[u]].admitted]
                          + public)
            rng = self.secrets.noise(SERVER).generator(round_id, "sampling", purpose=_SAMPLING)
            sampled = poisson_sample(pool, self.plan.client_rate, rng)
        else:
            events = self.plan.charge_events()
            keys = {u: self.user_ids[u] for u in protected}
            pool = sorted([u for u in protected
                           if self.ledger.participations(keys[u], before_round=round_id)
                           < self.plan.planned_charges
                           and not self.ledger.would_exceed(
                               keys[u], self.ledger.next_epsilon(keys[u], events,
                                                                 before_round=round_id))]
                          + public)
            sampled = sampler(pool) if pool else []
        declined = sorted(set(users) - set(pool))
        return Selection(sorted(sampled), declined, len(pool))

    # -- 2. the client's side -----------------------------------------------------------------
    def client_generator(self, round_id: int, client: int) -> torch.Generator | None:
        """The client's own secret DP-SGD generator in ``round_id`` (example mode only)."""
        if self.example_dp is None:
            return None
        return torch_generator(self.secrets.noise(client), round_id, client)

    def release(self, round_id: int, client: int, delta: np.ndarray,
                report: DPRunReport | None = None) -> np.ndarray | None:
        """What the client sends; ``None`` if it must decline.

        The mechanism's client transform (user level: clipped, plus this client's noise share
        under distributed placement, from the client's own secret). Example level: the
        DP-SGD output as it is, after checking that the client ran no more than the plan
        covers (``report``). For participation charging the spend is recorded durably
        *before* the vector is returned, i.e. before it can leave the client.
        """
        if self.plan.mode == "example":
            if report is None:
                raise UnsupportedClaimError(f"client {client} ran no DP-SGD in an "
                                            "example-level run")
            self.plan.check_client(**report.check_kwargs())
        rng = self.secrets.noise(client).generator(round_id, client, purpose=_CLIENT_NOISE)
        out = self.mechanism.client_transform(delta, rng)
        if self.plan.charge_basis == "participation" and self.protected(client):
            decision = self.ledger.charge(self.user_ids[client], round_id,
                                          self.plan.charge_events(),
                                          digest=update_digest(out))
            if not decision.admitted:
                return None
        return out

    # -- 3. the server's release --------------------------------------------------------------
    def average(self, round_id: int, total: np.ndarray | None, contributors: int,
                pool_size: int, dim: int) -> np.ndarray:
        """The mean update to apply and release: the mechanism's server transform.

        Central: ``(sum + N(0, (sigma C)^2)) / expected_clients_per_round`` (a public
        constant), every round, noise only when nobody or too few took part. Distributed:
        fewer than ``min_survivors`` shares raise
        :class:`~ffm_private.privacy.errors.InsufficientNoiseError` (the round is discarded).
        """
        ctx = ReleaseContext(round_id, contributors=contributors, pool_size=pool_size, dim=dim)
        rng = self.secrets.noise(SERVER).generator(round_id, SERVER, purpose=_SERVER_NOISE)
        return self.mechanism.server_transform(total, ctx, rng)


    def protect(self, round_id: int, client: int, update: Any,
                report: DPRunReport | None = None) -> Any:
        """The :class:`~ffm_private.messages.ClientUpdate` that leaves the client, or ``None``.

        :meth:`release` applied to the update's vector; only the protected vector leaves:
        the example count and the losses are dropped (they are statistics of private data).
        """
        released = self.release(round_id, client, update.delta, report)
        if released is None:
            return None
        return dataclasses.replace(update, delta=released, num_examples=0, metrics={})

    def averager(self, pool_size: int, dim: int) -> Callable[[int, Any], np.ndarray]:
        """The server step for a round whose eligible pool had ``pool_size`` users."""

        def dp_mean(round_id: int, result: Any) -> np.ndarray:
            total = None if result is None else result.total
            contributors = 0 if result is None else len(result.contributors)
            return self.average(round_id, total, contributors, pool_size, dim)

        return dp_mean

    def protocol_options(self, options: Mapping[str, Any],
                         statistics_option: str | None) -> dict[str, Any]:
        """The protocol's options as this mechanism needs them.

        Distributed noise: the protocol must abort below ``min_survivors`` shares (the check
        must happen inside the protocol: once a sum with too few noise shares is unmasked or
        decrypted, discarding it is too late), and it must not report an un-noised statistic
        of the updates (``statistics_option``, e.g. HE's clipped count) to the untrusted server.
        """
        out = dict(options)
        if self.plan.noise_placement != "distributed":
            return out
        if statistics_option:
            out.setdefault(statistics_option, False)
        m = self.cfg.min_survivors
        if out.setdefault("min_clients", m) < m:
            raise ConfigError(
                f"protocol.options.min_clients = {out['min_clients']} is below "
                f"privacy.min_survivors = {m}: the protocol would reveal sums with fewer "
                "noise shares than the guarantee needs")
        return out

    def mirror_charge(self, client: int, round_id: int, delta: np.ndarray) -> bool:
        """Record, on the server's mirror ledger, a participation a node charged first.

        In a deployment each node keeps its user's ledger and charges before it sends; the
        server's copy decides eligibility in later rounds. ``False``: the mirror refuses.
        """
        if self.plan.charge_basis != "participation" or not self.protected(client):
            return True
        return self.ledger.charge(self.user_ids[client], round_id, self.plan.charge_events(),
                                  digest=update_digest(delta)).admitted

    def charge_rounds_up_to(self, client: int, round_id: int) -> int | None:
        """On a node, central noise: charge each round up to ``round_id`` (idempotent).

        Central noise charges a user every round it is eligible; a node cannot know when it
        was, so it assumes always. Returns the first round whose charge its cap refuses.
        """
        if self.plan.charge_basis != "eligibility" or not self.protected(client):
            return None
        events = self.plan.charge_events()
        for r in range(1, round_id + 1):
            if not self.ledger.charge(self.user_ids[client], r, events).admitted:
                return r
        return None

    def round_fields(self, round_id: int, declined: Sequence[int]) -> dict[str, Any]:
        """What a round's metrics line says about privacy: declines and epsilon so far."""
        return {"declined": len(declined), "epsilon": self.epsilon_after_rounds(round_id)}

    @property
    def test_seed(self) -> int | None:
        """``privacy.noise_seed`` when set (tests only: then the run protects nothing)."""
        return self.cfg.noise_seed if self.cfg.noise_seed >= 0 else None

    # -- checkpoints --------------------------------------------------------------------------
    def mechanism_checkpoint(self) -> dict[str, Any]:
        """The mechanism's state for a checkpoint's ``state.json`` (e.g. the adaptive clip)."""
        return {"mechanism_state": self.mechanism.state()}

    def fingerprints(self, round_id: int) -> dict[str, Any]:
        """What a checkpoint records of the privacy state (checked again on resume)."""
        return {"ledger": fingerprint.ledger_fingerprint(self.folder / fingerprint.LEDGER_FILE,
                                                         round_id),
                "secrets": self.secrets_fingerprint()}

    def check_checkpoint(self, recorded: Mapping[str, Any], round_id: int) -> None:
        """Refuse to resume over a lost or altered ledger (before the secrets are opened)."""
        if "ledger" in recorded:
            fingerprint.check_ledger(self.folder / fingerprint.LEDGER_FILE, round_id,
                                     recorded["ledger"])

    def check_secrets(self, secrets: SecretStore, recorded: Mapping[str, Any]) -> None:
        """Refuse to resume when a secret the checkpoint used is gone or changed (reads only)."""
        if recorded.get("secrets") is not None:
            self.verify_secrets(recorded["secrets"], secrets)

    # -- state checks -------------------------------------------------------------------------
    def secrets_fingerprint(self, secrets: SecretStore | None = None) -> dict[str, str]:
        """Fingerprints of the secrets in use (checked on resume; reveal nothing)."""
        return (secrets or self.secrets).fingerprint([SERVER, *range(len(self.user_ids))])

    def verify_secrets(self, saved: dict[str, str], secrets: SecretStore | None = None) -> None:
        """Refuse to resume when a secret the checkpoint used is gone or changed.

        (A secret first created after the checkpoint and lost with the crash is caught by the
        ledger instead: the replayed release has a different digest.)
        """
        store = secrets or self.secrets
        now = self.secrets_fingerprint(store)
        for party, digest in saved.items():
            if now.get(party) != digest:
                where = store.path(party if party == SERVER else int(party))
                state = "is missing" if party not in now else "has changed"
                raise MissingSecretError(
                    f"{where} {state} since the last checkpoint: the rounds already released "
                    "cannot be replayed with the same noise; the run cannot be resumed")

    # -- reporting ----------------------------------------------------------------------------
    def epsilon_after_rounds(self, rounds: int) -> float:
        """Worst-case epsilon of any protected user after ``rounds`` rounds of this plan."""
        return self.plan.epsilon_after_rounds(rounds)

    def statement(self, rounds_completed: int | None = None, with_ledger: bool = False) -> str:
        """The guarantee in words (raises for a configuration that supports no claim)."""
        return guarantee_statement(
            self.plan, clipping_norm=self.cfg.clipping_norm, protocol=self.protocol,
            hides_updates=self.hides_updates,
            min_survivors=self.cfg.min_survivors or None, rounds_completed=rounds_completed,
            ledger_summary=self.ledger.summary() if with_ledger else None,
            test_seeded=self.cfg.noise_seed >= 0,
            expected_clients=self.cfg.expected_clients_per_round or None,
            public_users=len(self.public))

    def report(self, rounds_completed: int) -> dict[str, Any]:
        """The run summary's privacy block: statement, plan, spends."""
        ledger = self.ledger.summary()
        return {
            "statement": self.statement(rounds_completed, with_ledger=True),
            "mode": self.plan.mode,
            "mechanism": self.mechanism.describe(),
            "epsilon": self.epsilon_after_rounds(rounds_completed),
            "planned_epsilon": self.plan.epsilon,
            "delta": self.plan.delta,
            "accountant": self.plan.accountant,
            "noise_multiplier": self.plan.noise_multiplier,
            "clipping_norm": self.cfg.clipping_norm,
            "noise_placement": self.plan.noise_placement,
            "expected_clients_per_round": self.cfg.expected_clients_per_round or None,
            "test_seeded": self.cfg.noise_seed >= 0,
            "protected_users": len(self.user_ids) - len(self.public),
            "public_users_not_protected": len(self.public),
            "users_charged": ledger["users_charged"],
            "max_user_epsilon": ledger["max_epsilon"],
            "mean_user_epsilon": ledger["mean_epsilon"],
            "users_with_declines": ledger["users_with_declines"],
            "ledger": str(self.ledger.path),
        }


class NoPrivacy:
    """The null run privacy (``privacy.mode = "none"``): the methods of :class:`RunPrivacy`,
    doing nothing. Everyone is eligible, updates leave with their statistics, the server takes
    the mean over contributors, nothing is charged, checkpointed or written."""

    plan = None
    example_dp = None
    mechanism: Mechanism = NULL_MECHANISM
    test_seed = None
    hides_updates: bool | None = None

    def __init__(self, protocol: str = "plaintext") -> None:
        self.protocol = protocol

    def bind_protocol(self, protocol: Any, dim: int) -> NoPrivacy:
        self.protocol = protocol.name
        self.hides_updates = not protocol.reveals_individual_updates
        return self

    def start(self, secrets: SecretStore, *, resuming: bool = False) -> NoPrivacy:
        return self

    def check_resume(self, secrets: SecretStore) -> None:
        """Nothing to check."""

    def close(self) -> None:
        """Nothing to release."""

    def protected(self, client: int) -> bool:
        return False

    def select(self, round_id: int, users: Sequence[int],
               sampler: Callable[[Sequence[int]], list[int]]) -> Selection:
        pool = list(users)
        return Selection(sampler(pool) if pool else [], [], len(pool))

    def client_generator(self, round_id: int, client: int) -> torch.Generator | None:
        return None

    def protect(self, round_id: int, client: int, update: Any, report: Any = None) -> Any:
        return update

    def averager(self, pool_size: int, dim: int) -> Callable[[int, Any], np.ndarray]:
        def mean(round_id: int, result: Any) -> np.ndarray:
            ctx = ReleaseContext(round_id, contributors=0 if result is None
                                 else len(result.contributors), pool_size=pool_size, dim=dim)
            return self.mechanism.server_transform(None if result is None else result.total,
                                                   ctx, None)

        return mean

    def protocol_options(self, options: Mapping[str, Any],
                         statistics_option: str | None) -> dict[str, Any]:
        return dict(options)

    def mirror_charge(self, client: int, round_id: int, delta: np.ndarray) -> bool:
        return True

    def charge_rounds_up_to(self, client: int, round_id: int) -> int | None:
        return None

    def round_fields(self, round_id: int, declined: Sequence[int]) -> dict[str, Any]:
        return {}

    def mechanism_checkpoint(self) -> dict[str, Any]:
        return {}

    def fingerprints(self, round_id: int) -> dict[str, Any]:
        return {}

    def check_checkpoint(self, recorded: Mapping[str, Any], round_id: int) -> None:
        """Nothing to check."""

    def check_secrets(self, secrets: SecretStore, recorded: Mapping[str, Any]) -> None:
        """Nothing to check."""

    def statement(self, rounds_completed: int | None = None, with_ledger: bool = False) -> str:
        return NO_DP

    def report(self, rounds_completed: int) -> None:
        return None


def bind_mechanism(cfg: PrivacyConfig, plan: PrivacyPlan, protocol: Any, dim: int, *,
                   max_clients: int) -> Mechanism:
    """The production mechanism of ``plan`` bound to ``protocol``'s declared figures.

    The one binding the run (:meth:`RunPrivacy.bind_protocol`) and the A6 audit share.
    Distributed noise: the discrete Gaussian is calibrated to the protocol's exact integer
    path (``integer_modulus``) for vectors of ``dim`` values and rounds of up to
    ``max_clients``; the float Gaussian needs the protocol's value range to carry ``C`` plus
    the noise without clamping, and clips below ``C`` by the protocol's rounding bound.
    Central noise and example mode take nothing from the protocol.
    """
    if not (plan.mode == "user" and plan.noise_placement == "distributed"):
        return cfg.mechanism(plan)
    if plan.distributed_noise == "discrete_gaussian":  # integer path: no codec, no clamp
        modulus = getattr(protocol, "integer_modulus", None)
        if modulus is None:
            raise UnsupportedClaimError(
                f"privacy.distributed_noise = 'discrete_gaussian' with protocol "
                f"{protocol.name!r}: it has no exact integer path (use secagg, or he with "
                "scheme bfv)")
        try:
            return cfg.mechanism(plan, integer_modulus=modulus, dim=dim,
                                 max_clients=max_clients)
        except ValueError as err:
            raise ConfigError(f"privacy.ddg_gamma / distributed_noise: {err}") from err
    c = cfg.clipping_norm
    std = distributed_noise_std(plan.noise_multiplier, c, cfg.min_survivors)
    value_range = getattr(protocol, "value_range", None)
    if value_range is not None and value_range < c + NOISE_RANGE_SIGMAS * std:
        raise ConfigError(
            f"protocol.options.clip = {value_range:g} is too small for distributed "
            f"noise: a coordinate carries up to C + {NOISE_RANGE_SIGMAS:g} std = "
            f"{c + NOISE_RANGE_SIGMAS * std:.4g}; larger values would be clamped, "
            "which the accounting does not cover. Raise protocol.options.clip")
    bound = getattr(protocol, "rounding_bound", None)
    margin = float(bound(dim, max_clients)) if callable(bound) else 0.0
    if margin >= c:
        raise ConfigError(f"the protocol's rounding error bound {margin:.3g} is not "
                          f"below privacy.clipping_norm = {c:g}")
    return cfg.mechanism(plan, rounding_margin=margin)


def _saved_plan(cfg: PrivacyConfig, path: Path, inputs: dict[str, Any]) -> PrivacyPlan:
    """The resumed run's plan (its epsilon is re-verified), if it matches the settings."""
    saved = PrivacyPlan.from_dict(json.loads(path.read_text()))
    expected = {"mode": cfg.mode, "delta": cfg.delta, "accountant": cfg.accountant, **inputs}
    if cfg.mode == "user":
        expected["noise_placement"] = cfg.noise_placement
        expected["adaptive_clipping"] = cfg.adaptive_clipping
        expected["distributed_noise"] = cfg.distributed_noise
    stale = {k: (getattr(saved, k), v) for k, v in expected.items() if getattr(saved, k) != v}
    if stale:
        raise UnsupportedClaimError(f"{path} was planned for other settings {stale}: "
                                    "start a new run directory")
    return saved


__all__ = ["PRIVACY_DIR", "NoPrivacy", "RunPrivacy", "Selection", "bind_mechanism", "update_digest"]
