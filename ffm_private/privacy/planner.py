"""Budget planning: from a target (epsilon, delta) to one noise multiplier, and back.

A :class:`PrivacyPlan` fixes the DP mechanism of a whole run and computes its noise multiplier
once (Opacus's search costs seconds). What one *charge* to a protected unit is, and when it is
charged, depends on the mode (see ``docs/privacy.md``):

``user`` + ``central`` (trusted server adds ``N(0, (sigma C)^2)`` to the sum)
    Unit: one user's whole data (add/remove). Clients are Poisson-sampled with rate ``q`` from
    randomness the adversary does not see, so each round costs *every user still in the pool*
    one subsampled-Gaussian step ``(sigma, q, 1)``, whether or not they were sampled
    (amplification by sampling relies on hiding who took part). Charge basis: eligibility.
    The worst case is a user in the pool for all ``rounds``. With ``adaptive_clipping`` the
    round also releases a noisy count of unclipped clients; the update noise is raised to
    ``z_Delta`` so that both together cost exactly ``(sigma, q, 1)``
    (:mod:`ffm_private.privacy.adaptive_clipping`).

``user`` + ``distributed`` (each client adds its share of the noise before masking)
    The server sees *who* sends a message, so sampling hides nothing from it: no amplification.
    Unit: the content of one user's whole data (zero-out: the user's update replaced by zeros).
    Each participation costs ``(sigma, 1, 1)``; rounds a user sits out cost nothing.
    Charge basis: participation. Worst case: ``max_participations`` (default ``rounds``).

``example`` (DP-SGD on the client)
    Unit: one interaction. A participating client runs ``local_steps`` Poisson-sampled steps
    with one example rate ``q = min(1, batch_size / reference_size)`` shared by every client
    (``reference_size`` is public, see :func:`~ffm_private.privacy.dpsgd.example_plan_inputs`),
    plus ``personal_steps`` DP steps at the same rate on the personal parameters if they are
    trained on the same data and feed the shared update. Rounds the client sits out touch
    none of its data, so only participations are charged (the participation pattern is
    independent of the data). Client sampling is *not* used for amplification: steps inside
    a round are correlated and the server sees who participates. Worst case:
    ``max_participations`` (default ``rounds``).

In every mode the per-user ledger (:mod:`ffm_private.privacy.ledger`) counts the charges a
user actually incurred, so a user's recorded epsilon is at most the plan's.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ffm_private.privacy.accounting import (
    GaussianEvent,
    check_accountant,
    check_delta,
    check_epsilon,
    check_noise,
    check_sample_rate,
    epsilon_for_events,
    noise_for_epsilon_phases,
)
from ffm_private.privacy.adaptive_clipping import update_noise_multiplier
from ffm_private.privacy.errors import AccountingError

MODES = ("example", "user")
PLACEMENTS = ("central", "distributed")
DISTRIBUTED_NOISES = ("gaussian", "discrete_gaussian")


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise AccountingError(f"{name} = {value!r} must be an integer >= {minimum}")
    return int(value)


@dataclass(frozen=True)
class PrivacyPlan:
    """The DP mechanism of a run and the noise multiplier that meets its target.

    Build one with :meth:`for_target` (searches the noise once) or :meth:`for_noise` (the
    reverse: a given noise, the epsilon it gives). ``epsilon`` is the worst-case epsilon after
    the whole run, ``<= target_epsilon``: that is the figure a run may claim.
    """

    mode: str
    target_epsilon: float
    delta: float
    rounds: int
    client_rate: float
    accountant: str = "prv"
    noise_placement: str = "central"
    local_steps: int = 0
    example_rate: float = 0.0
    personal_steps: int = 0
    personal_rate: float = 0.0
    max_participations: int = 0
    adaptive_clipping: bool = False
    clip_count_noise: float = 0.0
    distributed_noise: str = "gaussian"
    noise_multiplier: float = 0.0
    epsilon: float = field(default=0.0, init=False, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.mode not in MODES:
            raise AccountingError(f"mode = {self.mode!r} must be one of {list(MODES)} "
                                  "(mode 'none' has no plan)")
        set_(self, "accountant", check_accountant(self.accountant))
        set_(self, "target_epsilon", check_epsilon(self.target_epsilon, "target_epsilon"))
        set_(self, "delta", check_delta(self.delta))
        _positive_int("rounds", self.rounds)
        set_(self, "client_rate", check_sample_rate(self.client_rate, "client_rate"))
        if self.noise_placement not in PLACEMENTS:
            raise AccountingError(f"noise_placement = {self.noise_placement!r} must be one of "
                                  f"{list(PLACEMENTS)}")
        _positive_int("max_participations", self.max_participations, 0)
        if self.max_participations > self.rounds:
            raise AccountingError(f"max_participations = {self.max_participations} exceeds "
                                  f"rounds = {self.rounds}")
        if self.mode == "example":
            _positive_int("local_steps", self.local_steps)
            set_(self, "example_rate", check_sample_rate(self.example_rate, "example_rate"))
            _positive_int("personal_steps", self.personal_steps, 0)
            if self.personal_steps:
                set_(self, "personal_rate",
                     check_sample_rate(self.personal_rate, "personal_rate"))
        elif self.local_steps or self.example_rate or self.personal_steps or self.personal_rate:
            raise AccountingError("local_steps, example_rate, personal_steps and personal_rate "
                                  "describe example-level DP-SGD; leave them 0 for mode 'user'")
        if self.mode == "user" and self.noise_placement == "central" and self.max_participations:
            raise AccountingError("max_participations does not apply to user-level DP with "
                                  "central noise: every round costs every user in the pool")
        self._check_adaptive_fields()
        self._check_distributed_noise()
        if self.noise_multiplier:
            set_(self, "noise_multiplier", check_noise(self.noise_multiplier))
        else:
            set_(self, "noise_multiplier", noise_for_epsilon_phases(
                self.target_epsilon, self._phases(self.planned_charges), self.delta,
                self.accountant))
        eps = self.epsilon_after(self.planned_charges)
        if eps > self.target_epsilon:
            raise AccountingError(
                f"noise_multiplier = {self.noise_multiplier} gives epsilon = {eps:.4f} > target "
                f"{self.target_epsilon} at delta = {self.delta} ({self.accountant})")
        set_(self, "epsilon", eps)
        if self.adaptive_clipping:  # refuses 2 sigma_b <= z
            update_noise_multiplier(self.noise_multiplier, self.clip_count_noise)

    def _check_adaptive_fields(self) -> None:
        if not isinstance(self.adaptive_clipping, bool):
            raise AccountingError(f"adaptive_clipping = {self.adaptive_clipping!r} must be "
                                  "true or false")
        if not self.adaptive_clipping:
            if self.clip_count_noise:
                raise AccountingError("clip_count_noise applies only with adaptive_clipping")
            return
        if self.mode != "user" or self.noise_placement != "central":
            raise AccountingError("adaptive_clipping is supported for user-level DP with "
                                  "central noise only (the server noises the clip count)")
        c = self.clip_count_noise
        if (isinstance(c, bool) or not isinstance(c, int | float) or not math.isfinite(c)
                or c <= 0):
            raise AccountingError(f"clip_count_noise = {c!r} must be a finite number > 0 "
                                  "with adaptive_clipping")
        object.__setattr__(self, "clip_count_noise", float(c))

    def _check_distributed_noise(self) -> None:
        """The distributed discrete Gaussian is known by its zCDP bound (KLS Theorem 1), which
        is recorded as the Gaussian of the same Renyi divergences: valid for RDP composition
        without sampling only (``gaussian_event_for_zcdp``), so other accountants are refused.
        """
        if self.distributed_noise not in DISTRIBUTED_NOISES:
            raise AccountingError(f"distributed_noise = {self.distributed_noise!r} must be one "
                                  f"of {list(DISTRIBUTED_NOISES)}")
        if self.distributed_noise == "gaussian":
            return
        if self.mode != "user" or self.noise_placement != "distributed":
            raise AccountingError("distributed_noise = 'discrete_gaussian' applies to user-level "
                                  "DP with distributed noise")
        if self.accountant != "rdp":
            raise AccountingError(
                f"the distributed discrete Gaussian is accounted through its zCDP bound, "
                f"which only the RDP accountant composes soundly; accountant = "
                f"{self.accountant!r} would under-state epsilon (use rdp)")

    @property
    def update_noise_multiplier(self) -> float:
        """Noise multiplier of the sum of updates: ``z``, or ``z_Delta`` with adaptive clipping.

        With adaptive clipping the round releases the update sum with noise ``z_Delta C_t`` and
        the clip count with noise ``clip_count_noise``; together they are the Gaussian
        mechanism with multiplier ``noise_multiplier`` (Andrew et al. 2021, Theorem 1), which
        is what the plan accounts and the ledger charges.
        """
        if not self.adaptive_clipping:
            return self.noise_multiplier
        return update_noise_multiplier(self.noise_multiplier, self.clip_count_noise)

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def for_target(cls, **kwargs: Any) -> PrivacyPlan:
        """Search the noise multiplier meeting ``target_epsilon`` (cached; seconds at most)."""
        kwargs.pop("noise_multiplier", None)
        return cls(**kwargs)

    @classmethod
    def for_noise(cls, noise_multiplier: float, **kwargs: Any) -> PrivacyPlan:
        """The reverse: the plan (and epsilon) of a given noise multiplier."""
        probe = {k: v for k, v in kwargs.items() if k != "target_epsilon"}
        probe["noise_multiplier"] = check_noise(noise_multiplier)
        loose = cls(target_epsilon=sys.float_info.max, **probe)
        return dataclasses.replace(loose, target_epsilon=loose.epsilon)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PrivacyPlan:
        """Rebuild a saved plan without searching again (its epsilon is re-verified)."""
        fields = {k: v for k, v in data.items() if k != "epsilon"}
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise AccountingError(f"unknown plan field(s) {unknown}")
        if not fields.get("noise_multiplier"):
            raise AccountingError("a saved plan must carry its noise_multiplier")
        return cls(**fields)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, including the derived noise multiplier and epsilon."""
        return asdict(self)

    # -- what one charge is -----------------------------------------------------------------
    @property
    def charge_basis(self) -> str:
        """``eligibility`` (every round in the pool costs) or ``participation``."""
        if self.mode == "user" and self.noise_placement == "central":
            return "eligibility"
        return "participation"

    @property
    def planned_charges(self) -> int:
        """The most charges one user can incur: the worst case the plan is sized for."""
        if self.charge_basis == "eligibility":
            return self.rounds
        return self.max_participations or self.rounds

    def _phases(self, charges: int) -> list[tuple[float, int]]:
        if self.mode == "user":
            rate = self.client_rate if self.noise_placement == "central" else 1.0
            return [(rate, charges)]
        phases = [(self.example_rate, self.local_steps * charges)]
        if self.personal_steps:
            phases.append((self.personal_rate, self.personal_steps * charges))
        return phases

    def charge_events(self) -> tuple[GaussianEvent, ...]:
        """The mechanism one charge adds to a user's history (what the ledger records)."""
        return tuple(GaussianEvent(self.noise_multiplier, q, n) for q, n in self._phases(1))

    def events_after(self, charges: int) -> tuple[GaussianEvent, ...]:
        """The composed history after ``charges`` charges."""
        _positive_int("charges", charges)
        return tuple(GaussianEvent(self.noise_multiplier, q, n)
                     for q, n in self._phases(charges))

    def epsilon_after(self, charges: int) -> float:
        """Epsilon of one user after ``charges`` charges (0 charges: 0)."""
        if charges == 0:
            return 0.0
        return epsilon_for_events(self.events_after(charges), self.delta, self.accountant)

    def worst_case_charges(self, round_count: int) -> int:
        """Charges a user can have incurred after ``round_count`` rounds, at most."""
        _positive_int("round_count", round_count, 0)
        return min(round_count, self.planned_charges)

    def epsilon_after_rounds(self, round_count: int) -> float:
        """Worst-case epsilon of any user after ``round_count`` rounds of this plan."""
        return self.epsilon_after(self.worst_case_charges(round_count))

    @property
    def expected_participations(self) -> float:
        """Mean number of rounds a client takes part in (``q * rounds``), for information."""
        return self.client_rate * self.rounds

    def check_client(self, example_rate: float, local_steps: int, personal_rate: float = 0.0,
                     personal_steps: int = 0) -> None:
        """Refuse a client whose DP-SGD is weaker than planned (higher rate or more steps).

        Epsilon grows with the sampling rate and the number of steps, so a client at or below
        the plan's figures is covered by the plan's worst case.
        """
        if self.mode != "example":
            raise AccountingError("check_client applies to example-level plans")
        if example_rate > self.example_rate or local_steps > self.local_steps:
            raise AccountingError(
                f"client runs {local_steps} steps at rate {example_rate:.4g}; the plan covers "
                f"at most {self.local_steps} steps at rate {self.example_rate:.4g}")
        if personal_steps and (personal_rate > self.personal_rate
                               or personal_steps > self.personal_steps):
            raise AccountingError(
                f"client runs {personal_steps} personal DP steps at rate {personal_rate:.4g}; "
                f"the plan covers {self.personal_steps} at rate {self.personal_rate:.4g}")

    def describe(self) -> str:
        """One line: the mechanism and its worst-case epsilon."""
        if self.mode == "user":
            what = (f"user-level DP-FedAvg, {self.noise_placement} noise, q={self.client_rate:g}, "
                    f"{self.rounds} rounds")
            if self.charge_basis == "participation":
                what += f", at most {self.planned_charges} participations per user"
            if self.distributed_noise == "discrete_gaussian":
                what += ", distributed discrete Gaussian (zCDP, RDP accounting)"
        else:
            what = (f"example-level DP-SGD, {self.local_steps} steps/participation at rate "
                    f"{self.example_rate:.4g}")
            if self.personal_steps:
                what += (f" + {self.personal_steps} personal-adapter steps at rate "
                         f"{self.personal_rate:.4g}")
            what += f", at most {self.planned_charges} participations"
        if self.adaptive_clipping:
            what += (f", adaptive clipping (count noise {self.clip_count_noise:g}, update noise "
                     f"multiplier {self.update_noise_multiplier:.4f})")
        return (f"{what}: noise multiplier {self.noise_multiplier:.4f} -> epsilon "
                f"{self.epsilon:.3f} at delta {self.delta:g} ({self.accountant.upper()})")


def epsilon_curve(plan: PrivacyPlan, rounds: int | Iterable[int]) -> list[tuple[int, float]]:
    """Worst-case ``(round, epsilon)`` after each given round count (or ``1..rounds``).

    Each PRV point costs up to a few hundred milliseconds: ask for a handful of points.
    """
    points = range(1, rounds + 1) if isinstance(rounds, int) else rounds
    return [(int(r), plan.epsilon_after_rounds(int(r))) for r in points]


def curve_points(rounds: int, count: int = 8) -> list[int]:
    """About ``count`` round counts spread over ``1..rounds``, always ending at ``rounds``."""
    _positive_int("rounds", rounds)
    step = max(1, math.ceil(rounds / max(1, count)))
    pts = sorted({*range(step, rounds + 1, step), rounds})
    return pts


def budget_curves(*, noise_multipliers: Sequence[float] = (), targets: Sequence[float] = (),
                  points: Sequence[int] | None = None, **plan_kwargs: Any
                  ) -> dict[str, list[tuple[int, float]]]:
    """Epsilon against rounds for several noise multipliers and/or target epsilons."""
    if not noise_multipliers and not targets:
        raise AccountingError("give at least one noise multiplier or one target epsilon")
    rounds = plan_kwargs["rounds"]
    points = list(points) if points is not None else curve_points(rounds)
    curves: dict[str, list[tuple[int, float]]] = {}
    for target in targets:
        plan = PrivacyPlan.for_target(target_epsilon=target, **plan_kwargs)
        curves[f"target {target:g} (sigma={plan.noise_multiplier:.3f})"] = \
            epsilon_curve(plan, points)
    for sigma in noise_multipliers:
        plan = PrivacyPlan.for_noise(sigma, **plan_kwargs)
        curves[f"sigma={sigma:g}"] = epsilon_curve(plan, points)
    return curves


def budget_table(curves: Mapping[str, Sequence[tuple[int, float]]], header: str = "") -> str:
    """A plain-text table: one row per round count, one column per curve."""
    labels = list(curves)
    rounds = [r for r, _ in next(iter(curves.values()))]
    widths = [max(len(lbl), 8) for lbl in labels]
    lines = [header] if header else []
    lines.append(" | ".join(["rounds".rjust(6)] + [lbl.rjust(w) for lbl, w in zip(labels, widths,
                                                                                   strict=True)]))
    lines.append("-+-".join(["-" * 6] + ["-" * w for w in widths]))
    for i, r in enumerate(rounds):
        cells = [f"{curves[lbl][i][1]:.3f}".rjust(w) for lbl, w in zip(labels, widths,
                                                                         strict=True)]
        lines.append(" | ".join([str(r).rjust(6), *cells]))
    return "\n".join(lines)


def plot_epsilon_curves(curves: Mapping[str, Sequence[tuple[int, float]]], path: str | Path,
                        title: str = "") -> Path:
    """Save a PNG of epsilon against rounds (Agg canvas; no global backend change)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for label, pts in curves.items():
        ax.plot([r for r, _ in pts], [e for _, e in pts], marker="o", ms=3, label=label)
    ax.set_xlabel("rounds")
    ax.set_ylabel("epsilon (worst-case user)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


# -- ``ffm-private budget`` ----------------------------------------------------------------
BUDGET_EPILOG = """\
examples:
  ffm-private budget --config run.toml          # exactly the plan a run of run.toml makes
  ffm-private budget --config run.toml --set privacy.target_epsilon=4 --noise 1.5 2
  ffm-private budget --epsilon 1 4 8 --rounds 100 --client-rate 0.1
  ffm-private budget --noise 0.8 1.0 1.5 --rounds 200 --client-rate 0.05 --plot eps.png
  ffm-private budget --mode example --epsilon 8 --rounds 30 --client-rate 1 \\
      --local-steps 20 --example-rate 0.05 --personal-steps 20 --personal-rate 0.05
  ffm-private budget --placement distributed --epsilon 4 --rounds 50 --max-participations 10
  ffm-private budget --placement distributed --distributed-noise discrete_gaussian \
      --epsilon 4 --rounds 50 --max-participations 10
"""

_MECHANISM_FLAGS = {"mode": "--mode", "delta": "--delta", "rounds": "--rounds",
                    "client_rate": "--client-rate", "accountant": "--accountant",
                    "placement": "--placement", "local_steps": "--local-steps",
                    "example_rate": "--example-rate", "personal_steps": "--personal-steps",
                    "personal_rate": "--personal-rate",
                    "max_participations": "--max-participations",
                    "distributed_noise": "--distributed-noise"}
_FLAG_DEFAULTS = {"mode": "user", "delta": 1e-5, "client_rate": 1.0, "accountant": "auto",
                  "placement": "central", "local_steps": 0, "example_rate": 0.0,
                  "personal_steps": 0, "personal_rate": 0.0, "max_participations": 0,
                  "distributed_noise": "gaussian"}


def add_budget_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``budget`` on an argparse sub-parser collection (``ffm-private budget``)."""
    p = subparsers.add_parser(
        "budget", help="plan a privacy budget: noise for a target epsilon, epsilon vs rounds",
        description="Print epsilon against rounds for target epsilons (the noise multiplier is "
        "searched once per target) or for given noise multipliers, and optionally plot it. "
        "With --config, plan exactly what a run of that configuration plans (same function, "
        "including example-level DP-SGD's shared and personal phases). Figures are worst-case "
        "per user; see docs/privacy.md.",
        epilog=BUDGET_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", "-c", metavar="TOML",
                   help="run configuration: plan what its run plans (mechanism flags below "
                   "then come from it and may not be given)")
    p.add_argument("--set", "-s", action="append", metavar="SECTION.KEY=VALUE",
                   help="with --config: override one config value (repeatable)")
    p.add_argument("--mode", choices=MODES, default=None,
                   help="user: one user's whole data is protected (DP-FedAvg); example: one "
                   "interaction (DP-SGD on the client). Default: user")
    p.add_argument("--epsilon", type=float, nargs="+", default=[], metavar="EPS",
                   help="target epsilon(s): search the noise multiplier for each")
    p.add_argument("--noise", type=float, nargs="+", default=[], metavar="SIGMA",
                   help="noise multiplier(s): report the epsilon each gives")
    p.add_argument("--delta", type=float, default=None, help="delta (default 1e-5)")
    p.add_argument("--rounds", type=int, default=None,
                   help="federated rounds (required without --config)")
    p.add_argument("--client-rate", type=float, default=None,
                   help="Poisson client sampling rate q per round (default 1.0)")
    p.add_argument("--accountant", default=None,
                   help="auto (default: rdp for the discrete Gaussian, else prv), prv (tight) "
                   "or rdp")
    p.add_argument("--placement", choices=PLACEMENTS, default=None,
                   help="user mode: central (trusted server) or distributed noise")
    p.add_argument("--distributed-noise", choices=DISTRIBUTED_NOISES, default=None,
                   help="distributed placement: gaussian (default here) or discrete_gaussian; "
                   "a run over a protocol with an exact integer path (secagg, he with bfv) "
                   "uses discrete_gaussian unless its config says otherwise: plan it with "
                   "--config")
    p.add_argument("--local-steps", type=int, default=None,
                   help="example mode: DP-SGD steps on the shared parameters per participation")
    p.add_argument("--example-rate", type=float, default=None,
                   help="example mode: per-example sampling rate q, the same for every client "
                   "(a run uses min(1, batch_size / privacy.reference_size))")
    p.add_argument("--personal-steps", type=int, default=None,
                   help="example mode: DP-SGD steps on the personal parameters per "
                   "participation (0: none)")
    p.add_argument("--personal-rate", type=float, default=None,
                   help="example mode: sampling rate of the personal phase (a run uses the "
                   "example rate)")
    p.add_argument("--max-participations", type=int, default=None,
                   help="participation-charged modes: cap per user (default: rounds)")
    p.add_argument("--points", type=_table_rows, default=8,
                   help=f"rows in the table (default 8, at most {MAX_POINTS})")
    p.add_argument("--plot", metavar="PNG", help="also save epsilon against rounds here")
    p.set_defaults(func=cmd_budget)
    return p


MAX_POINTS = 100
"""Most rows ``budget`` computes: each PRV point can cost a few hundred milliseconds."""


def _table_rows(text: str) -> int:
    """``--points``: an integer in ``[1, MAX_POINTS]`` (argparse names the flag on error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if not 1 <= value <= MAX_POINTS:
        raise argparse.ArgumentTypeError(f"{value} is not in [1, {MAX_POINTS}]")
    return value


def _check_plot_path(plot: str | None) -> None:
    """Refuse a ``--plot`` target that cannot be a PNG file before any search runs."""
    if plot is None:
        return
    if not plot.strip() or "\x00" in plot:
        raise AccountingError(f"--plot {plot!r} is not a file name")
    if Path(plot).is_dir():
        raise AccountingError(f"--plot {plot} is a directory, not a PNG file name")


def has_personal_parameters(model_cfg: Any) -> bool:
    """Whether the configured model has personal parameters (they need no data to list)."""
    from ffm_private.models import PERSONAL, build_model, params_of

    return bool(params_of(build_model(model_cfg, n_items=2), PERSONAL))


def config_plan(path: str | Path, overrides: Mapping[str, Any] | None = None) -> PrivacyPlan:
    """The plan a run of this configuration makes, from the same function the run uses.

    Rounds and client rate come from ``[federated]``, DP-SGD sizing from the local training
    settings and ``privacy.reference_size``, ``auto`` accountant and distributed noise from the
    capabilities of the ``[protocol]`` it names (as the run resolves them); no data is read.
    """
    from ffm_private import config as config_mod
    from ffm_private.privacy.config import resolved_privacy
    from ffm_private.simulation import local_config

    cfg = config_mod.load(path, overrides)
    privacy = resolved_privacy(cfg)
    if not privacy.enabled:
        raise config_mod.ConfigError(f"{path}: privacy.mode = 'none' has no privacy plan")
    return privacy.run_plan(rounds=cfg.federated.rounds,
                            client_rate=cfg.federated.client_fraction,
                            local_cfg=local_config(cfg),
                            has_personal=has_personal_parameters(cfg.model))


def _plan_kwargs_of(plan: PrivacyPlan) -> dict[str, Any]:
    """The mechanism of ``plan`` (everything but its noise and target)."""
    skip = {"target_epsilon", "noise_multiplier", "epsilon"}
    return {f.name: getattr(plan, f.name) for f in dataclasses.fields(plan)
            if f.init and f.name not in skip}


def _header(kw: Mapping[str, Any]) -> str:
    head = (f"{kw['mode']}-level DP, delta={kw['delta']:g}, q={kw['client_rate']:g}, "
            f"accountant={kw['accountant']}")
    if kw["mode"] == "user":
        head += f", {kw.get('noise_placement', 'central')} noise"
        if kw.get("distributed_noise") == "discrete_gaussian":
            head += " (distributed discrete Gaussian)"
    else:
        head += f", {kw['local_steps']} steps/participation at rate {kw['example_rate']:g}"
        if kw.get("personal_steps"):
            head += f" + {kw['personal_steps']} personal steps at rate {kw['personal_rate']:g}"
    return head + "\nworst-case epsilon of one user after the given number of rounds"


def _flag_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The mechanism described by the command-line flags (no config)."""
    if args.rounds is None:
        raise AccountingError("--rounds is required without --config")
    given = {k: getattr(args, k) for k in _MECHANISM_FLAGS}
    v = {k: (_FLAG_DEFAULTS.get(k) if val is None else val) for k, val in given.items()}
    discrete = (v["mode"] == "user" and v["placement"] == "distributed"
                and v["distributed_noise"] == "discrete_gaussian")
    if given["distributed_noise"] is not None and not (
            v["mode"] == "user" and v["placement"] == "distributed"):
        raise AccountingError("--distributed-noise applies to --placement distributed")
    accountant = v["accountant"]
    if accountant == "auto":
        accountant = "rdp" if discrete else "prv"
    kwargs: dict[str, Any] = dict(
        mode=v["mode"], delta=v["delta"], rounds=v["rounds"], client_rate=v["client_rate"],
        accountant=accountant, max_participations=v["max_participations"])
    if v["mode"] == "user":
        kwargs["noise_placement"] = v["placement"]
        if discrete:
            kwargs["distributed_noise"] = "discrete_gaussian"
    else:
        kwargs.update(local_steps=v["local_steps"], example_rate=v["example_rate"],
                      personal_steps=v["personal_steps"], personal_rate=v["personal_rate"])
    return kwargs


def cmd_budget(args: argparse.Namespace) -> int:
    """Run ``ffm-private budget``: print the table (and save the plot when asked)."""
    from ffm_private.config import ConfigError, parse_override

    try:
        _check_plot_path(args.plot)
        lines: list[str] = []
        if args.config:
            clash = [flag for k, flag in _MECHANISM_FLAGS.items()
                     if getattr(args, k) is not None]
            if clash:
                raise AccountingError(f"{clash[0]} comes from --config {args.config}; change "
                                      "it there or with --set")
            overrides = dict(parse_override(o) for o in args.set or [])
            plan = config_plan(args.config, overrides)
            kwargs = _plan_kwargs_of(plan)
            lines.append(f"plan of {args.config}: {plan.describe()}")
            curves = {f"run plan (sigma={plan.noise_multiplier:.3f})":
                      epsilon_curve(plan, curve_points(plan.rounds, args.points))}
            if args.noise or args.epsilon:
                curves.update(budget_curves(noise_multipliers=args.noise, targets=args.epsilon,
                                            points=curve_points(plan.rounds, args.points),
                                            **kwargs))
        else:
            if args.set:
                raise AccountingError("--set needs --config")
            kwargs = _flag_kwargs(args)
            curves = budget_curves(noise_multipliers=args.noise, targets=args.epsilon,
                                   points=curve_points(kwargs["rounds"], args.points), **kwargs)
    except (AccountingError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    header = _header(kwargs)
    print("\n".join([*lines, budget_table(curves, header)]))
    if args.plot:
        try:
            out = plot_epsilon_curves(curves, args.plot, header.splitlines()[0])
        except OSError as err:  # the table is printed; only the plot could not be written
            print(f"error: --plot {args.plot}: {err.strerror or err}", file=sys.stderr)
            return 2
        print(f"plot: {out}")
    return 0


__all__ = [
    "MODES",
    "PLACEMENTS",
    "PrivacyPlan",
    "add_budget_command",
    "budget_curves",
    "budget_table",
    "cmd_budget",
    "config_plan",
    "curve_points",
    "epsilon_curve",
    "has_personal_parameters",
    "plot_epsilon_curves",
]
