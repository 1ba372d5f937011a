"""The privacy side of one training run: plan, ledger, noise, and the three places DP acts.

A run with ``privacy.mode != "none"`` owns one :class:`RunPrivacy`. The federated loop calls it
at three points of every round, in the order of the round's data flow:

1. :meth:`RunPrivacy.select` — who may take part. Users whose next charge would exceed their
   cap (or who used up ``max_participations``) decline. Under user-level DP with central noise
   every user still in the pool is charged *now*, before sampling (the accountant's
   amplification by Poisson sampling covers users who are not picked), and the sample is
   drawn from secret randomness.
2. :meth:`RunPrivacy.release` — on the client, after local training and before anything
   leaves the device: clip the shared update to ``C`` (user level), add this client's share of
   the noise (distributed placement), or check that the client's DP-SGD (example level,
   driven by :meth:`RunPrivacy.client_generator`) ran no more than the plan covers; then
   durably charge the participation (participation basis) with a digest of the exact bytes
   released.
3. :meth:`RunPrivacy.average` — on the server, from the protocol's sum: add ``N(0, (sigma C)^2)``
   (central placement) and divide by the *expected* number of participants, or refuse to
   release a distributed-noise sum with fewer noise shares than planned.

The plan (noise multiplier) is searched once and saved in ``<run>/privacy/plan.json``; the
ledger is ``<run>/privacy/ledger.sqlite``; the secret root of all noise and sampling
randomness is ``<run>/privacy/noise.key`` (mode 0600), so a round replayed after a crash
releases exactly the same noisy update and is never charged twice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ffm_private.client import LocalTrainingConfig
from ffm_private.config import ConfigError
from ffm_private.privacy.config import PrivacyConfig
from ffm_private.privacy.dpsgd import (
    DPRunReport,
    ExampleDP,
    check_coverage,
    example_plan_inputs,
    torch_generator,
)
from ffm_private.privacy.errors import UnsupportedClaimError
from ffm_private.privacy.guarantee import guarantee_statement
from ffm_private.privacy.ledger import PrivacyLedger
from ffm_private.privacy.mechanisms import (
    NoiseSource,
    add_central_noise,
    add_distributed_noise,
    check_survivors,
    clip_to_norm,
    poisson_sample,
)
from ffm_private.privacy.planner import PrivacyPlan

PRIVACY_DIR = "privacy"
_SAMPLING, _CLIENT_NOISE = 2, 0


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
    """Plan, ledger and noise of a run; see the module docstring for when each part acts.

    Built in two steps so that a configuration that supports no claim is refused before the
    run directory is touched: :meth:`prepare` checks everything in memory (and searches the
    noise once); :meth:`start` writes the plan, opens the ledger and the noise root.
    """

    def __init__(self, cfg: PrivacyConfig, plan: PrivacyPlan, *, folder: Path,
                 caps: dict[str, float], protocol: str, user_ids: Sequence[str]) -> None:
        self.cfg, self.plan, self.folder, self.caps = cfg, plan, folder, caps
        self.protocol = protocol
        self.user_ids = list(user_ids)
        self._ledger: PrivacyLedger | None = None
        self._noise: NoiseSource | None = None
        #: Example-level DP-SGD settings for every client (``None`` in user mode).
        self.example_dp: ExampleDP | None = None
        # refuse, before any file is written, a claim that cannot be stated
        guarantee_statement(plan, clipping_norm=cfg.clipping_norm, protocol=protocol,
                            min_survivors=cfg.min_survivors or None)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def prepare(cls, raw: dict[str, Any], run_dir: str | Path, *, user_ids: Sequence[Any],
                rounds: int, client_fraction: float, protocol: str, resume: bool = False,
                train_sizes: Sequence[int] = (), local_cfg: LocalTrainingConfig | None = None,
                has_personal: bool = True) -> RunPrivacy | None:
        """The run's privacy, checked but not started; ``None`` for ``mode = "none"``.

        ``user_ids[c]`` is the dataset's id of client ``c``: the ledger and the per-user caps
        file speak in those ids. A resumed run reloads its saved plan (no new noise search)
        and refuses one planned for other settings. Example-level DP sizes its DP-SGD once
        from ``train_sizes`` (training interactions per client) and ``local_cfg``.
        """
        cfg = PrivacyConfig.from_dict(raw)
        if not cfg.enabled:
            return None
        user_ids = [str(u) for u in user_ids]
        inputs: dict[str, Any] = {"rounds": rounds, "client_rate": client_fraction}
        example = None
        if cfg.mode == "example":
            if local_cfg is None or not len(train_sizes):
                raise ValueError("example-level DP needs train_sizes and local_cfg")
            example = example_plan_inputs(train_sizes, local_cfg, has_personal=has_personal)
            check_coverage(has_personal=has_personal, personal_epochs=local_cfg.personal_epochs,
                           personal_steps=example.personal_steps)
            inputs.update(example.plan_kwargs())
            cfg.check_delta_for(int(np.sum(train_sizes)))  # units: interactions
        else:
            cfg.check_delta_for(len(user_ids))
        caps = cfg.caps()
        unknown = sorted(set(caps) - set(user_ids))
        if unknown:
            raise ConfigError(f"{cfg.per_user_caps_file}: {len(unknown)} user id(s) are not in "
                              f"the dataset, e.g. {unknown[:5]}")
        folder = Path(run_dir) / PRIVACY_DIR
        saved = folder / "plan.json"
        plan = (_saved_plan(cfg, saved, inputs) if resume and saved.exists()
                else cfg.plan(**inputs))
        out = cls(cfg, plan, folder=folder, caps=caps, protocol=protocol, user_ids=user_ids)
        out.example_dp = (None if example is None else ExampleDP.from_plan(
            plan, clipping_norm=cfg.clipping_norm,
            expected_batch_size=example.expected_batch_size))
        return out

    def start(self) -> RunPrivacy:
        """Write the plan, open the durable ledger and the secret noise root."""
        from ffm_private.storage import atomic_write_json

        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.folder / "plan.json", self.plan.to_dict())
        self._ledger = PrivacyLedger(self.folder / "ledger.sqlite", delta=self.cfg.delta,
                                     accountant=self.cfg.accountant,
                                     default_cap=self.cfg.cap_for_plan(self.plan),
                                     caps=self.caps)
        self._noise = (NoiseSource(test_seed=self.cfg.noise_seed) if self.cfg.noise_seed >= 0
                       else NoiseSource.persistent(self.folder / "noise.key"))
        return self

    @property
    def ledger(self) -> PrivacyLedger:
        if self._ledger is None:
            raise RuntimeError("RunPrivacy.start() has not been called")
        return self._ledger

    @property
    def noise(self) -> NoiseSource:
        if self._noise is None:
            raise RuntimeError("RunPrivacy.start() has not been called")
        return self._noise

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()

    # -- 1. selection -------------------------------------------------------------------------
    def select(self, round_id: int, users: Sequence[int],
               sampler: Callable[[Sequence[int]], list[int]]) -> Selection:
        """Budget-checked pool, then the round's participants.

        ``sampler`` draws from a pool when sampling does not matter for the guarantee
        (participation charging); with central noise the sample is Poisson with the plan's
        rate, from the secret noise root, because the accountant relies on it.
        """
        if self.plan.charge_basis == "eligibility":
            decisions = self.ledger.charge_many([self.user_ids[u] for u in users], round_id,
                                                self.plan.charge_events())
            pool = [u for u in users if decisions[self.user_ids[u]].admitted]
            rng = self.noise.generator(round_id, "sampling", purpose=_SAMPLING)
            sampled = poisson_sample(pool, self.plan.client_rate, rng)
        else:
            events = self.plan.charge_events()
            keys = {u: self.user_ids[u] for u in users}
            pool = [u for u in users
                    if self.ledger.participations(keys[u]) < self.plan.planned_charges
                    and not self.ledger.would_exceed(keys[u],
                                                     self.ledger.next_epsilon(keys[u], events))]
            sampled = sampler(pool) if pool else []
        declined = sorted(set(users) - set(pool))
        return Selection(sorted(sampled), declined, len(pool))

    # -- 2. the client's side -----------------------------------------------------------------
    def client_generator(self, round_id: int, client: int) -> torch.Generator | None:
        """The secret DP-SGD generator of ``client`` in ``round_id`` (example mode only)."""
        if self.example_dp is None:
            return None
        return torch_generator(self.noise, round_id, client)

    def release(self, round_id: int, client: int, delta: np.ndarray,
                report: DPRunReport | None = None) -> np.ndarray | None:
        """What the client sends; ``None`` if it must decline.

        User level: the update clipped to ``C`` (plus this client's noise share under
        distributed placement). Example level: the DP-SGD output as it is, after checking
        that the client ran no more than the plan covers (``report``). For participation
        charging the spend is recorded durably *before* the vector is returned, i.e. before
        it can leave the client.
        """
        if self.plan.mode == "example":
            if report is None:
                raise UnsupportedClaimError(f"client {client} ran no DP-SGD in an "
                                            "example-level run")
            self.plan.check_client(**report.check_kwargs())
            out = np.asarray(delta, dtype=np.float64)
        else:
            out = clip_to_norm(delta, self.cfg.clipping_norm)
        if self.plan.noise_placement == "distributed":
            rng = self.noise.generator(round_id, client, purpose=_CLIENT_NOISE)
            out = add_distributed_noise(out, self.plan.noise_multiplier, self.cfg.clipping_norm,
                                        self.cfg.min_survivors, rng)
        if self.plan.charge_basis == "participation":
            decision = self.ledger.charge(self.user_ids[client], round_id,
                                          self.plan.charge_events(),
                                          digest=update_digest(out))
            if not decision.admitted:
                return None
        return out

    # -- 3. the server's release --------------------------------------------------------------
    def average(self, round_id: int, total: np.ndarray, contributors: Sequence[int],
                pool_size: int) -> np.ndarray:
        """The mean update to apply, with the DP noise the plan requires.

        Central: ``(sum + N(0, (sigma C)^2)) / (q * pool_size)``: a fixed denominator, so the
        number of participants is not revealed through the step size. Distributed: the sum
        already carries the noise; fewer than ``min_survivors`` shares raise
        :class:`~ffm_private.privacy.errors.InsufficientNoiseError` (the round is discarded).
        """
        if self.plan.mode == "example":  # the noise was added on the devices
            return np.asarray(total, dtype=np.float64) / len(contributors)
        if self.plan.noise_placement == "distributed":
            check_survivors(len(contributors), self.cfg.min_survivors)
            return np.asarray(total, dtype=np.float64) / len(contributors)
        noisy = add_central_noise(total, self.plan.noise_multiplier, self.cfg.clipping_norm,
                                  self.noise.server_generator(round_id))
        return noisy / (self.plan.client_rate * max(pool_size, 1))

    # -- reporting ----------------------------------------------------------------------------
    def epsilon_after_rounds(self, rounds: int) -> float:
        """Worst-case epsilon of any user after ``rounds`` rounds of this plan."""
        return self.plan.epsilon_after_rounds(rounds)

    def statement(self, rounds_completed: int | None = None, with_ledger: bool = False) -> str:
        """The guarantee in words (raises for a configuration that supports no claim)."""
        return guarantee_statement(
            self.plan, clipping_norm=self.cfg.clipping_norm, protocol=self.protocol,
            min_survivors=self.cfg.min_survivors or None, rounds_completed=rounds_completed,
            ledger_summary=self.ledger.summary() if with_ledger else None,
            test_seeded=self.noise.is_test_seeded)

    def report(self, rounds_completed: int) -> dict[str, Any]:
        """The run summary's privacy block: statement, plan, spends."""
        ledger = self.ledger.summary()
        return {
            "statement": self.statement(rounds_completed, with_ledger=True),
            "mode": self.plan.mode,
            "epsilon": self.epsilon_after_rounds(rounds_completed),
            "planned_epsilon": self.plan.epsilon,
            "delta": self.plan.delta,
            "accountant": self.plan.accountant,
            "noise_multiplier": self.plan.noise_multiplier,
            "clipping_norm": self.cfg.clipping_norm,
            "noise_placement": self.plan.noise_placement,
            "test_seeded": self.noise.is_test_seeded,
            "users_charged": ledger["users_charged"],
            "max_user_epsilon": ledger["max_epsilon"],
            "mean_user_epsilon": ledger["mean_epsilon"],
            "users_with_declines": ledger["users_with_declines"],
            "ledger": str(self.ledger.path),
        }


def _saved_plan(cfg: PrivacyConfig, path: Path, inputs: dict[str, Any]) -> PrivacyPlan:
    """The resumed run's plan (its epsilon is re-verified), if it matches the settings."""
    saved = PrivacyPlan.from_dict(json.loads(path.read_text()))
    expected = {"mode": cfg.mode, "delta": cfg.delta, "accountant": cfg.accountant, **inputs}
    if cfg.mode == "user":
        expected["noise_placement"] = cfg.noise_placement
    stale = {k: (getattr(saved, k), v) for k, v in expected.items() if getattr(saved, k) != v}
    if stale:
        raise UnsupportedClaimError(f"{path} was planned for other settings {stale}: "
                                    "start a new run directory")
    return saved


__all__ = ["PRIVACY_DIR", "RunPrivacy", "Selection", "update_digest"]
