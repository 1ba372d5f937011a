"""Budget planning: from a target (epsilon, delta) to one noise multiplier, and back.

A :class:`PrivacyPlan` fixes the DP mechanism of a whole run and computes its noise multiplier
once (Opacus's search costs seconds). What one *charge* to a protected unit is, and when it is
charged, depends on the mode (see ``docs/privacy.md``):

``user`` + ``central`` (trusted server adds ``N(0, (sigma C)^2)`` to the sum)
    Unit: one user's whole data (add/remove). Clients are Poisson-sampled with rate ``q`` from
    randomness the adversary does not see, so each round costs *every user still in the pool*
    one subsampled-Gaussian step ``(sigma, q, 1)``, whether or not they were sampled
    (amplification by sampling relies on hiding who took part). Charge basis: eligibility.
    The worst case is a user in the pool for all ``rounds``.

``user`` + ``distributed`` (each client adds its share of the noise before masking)
    The server sees *who* sends a message, so sampling hides nothing from it: no amplification.
    Unit: the content of one user's whole data (zero-out: the user's update replaced by zeros).
    Each participation costs ``(sigma, 1, 1)``; rounds a user sits out cost nothing.
    Charge basis: participation. Worst case: ``max_participations`` (default ``rounds``).

``example`` (DP-SGD on the client)
    Unit: one interaction. A participating client runs ``local_steps`` Poisson-sampled steps
    with example rate ``b / N_user`` (the plan uses the largest rate any client uses), plus
    ``personal_steps`` DP steps on the personal adapter if it is trained on the same data and
    feeds the shared update. Rounds the client sits out touch none of its data, so only
    participations are charged (the participation pattern is independent of the data). Client
    sampling is *not* used for amplification: steps inside a round are correlated and the
    server sees who participates. Worst case: ``max_participations`` (default ``rounds``).

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
from ffm_private.privacy.errors import AccountingError

MODES = ("example", "user")
PLACEMENTS = ("central", "distributed")


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
        else:
            what = (f"example-level DP-SGD, {self.local_steps} steps/participation at rate "
                    f"{self.example_rate:.4g}")
            if self.personal_steps:
                what += (f" + {self.personal_steps} personal-adapter steps at rate "
                         f"{self.personal_rate:.4g}")
            what += f", at most {self.planned_charges} participations"
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
  ffm-private budget --epsilon 1 4 8 --rounds 100 --client-rate 0.1
  ffm-private budget --noise 0.8 1.0 1.5 --rounds 200 --client-rate 0.05 --plot eps.png
  ffm-private budget --mode example --epsilon 8 --rounds 30 --client-rate 1 \\
      --local-steps 20 --example-rate 0.05
  ffm-private budget --placement distributed --epsilon 4 --rounds 50 --max-participations 10
"""


def add_budget_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``budget`` on an argparse sub-parser collection (``ffm-private budget``)."""
    p = subparsers.add_parser(
        "budget", help="plan a privacy budget: noise for a target epsilon, epsilon vs rounds",
        description="Print epsilon against rounds for target epsilons (the noise multiplier is "
        "searched once per target) or for given noise multipliers, and optionally plot it. "
        "Figures are worst-case per user; see docs/privacy.md.",
        epilog=BUDGET_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=MODES, default="user",
                   help="user: one user's whole data is protected (DP-FedAvg); example: one "
                   "interaction (DP-SGD on the client). Default: user")
    p.add_argument("--epsilon", type=float, nargs="+", default=[], metavar="EPS",
                   help="target epsilon(s): search the noise multiplier for each")
    p.add_argument("--noise", type=float, nargs="+", default=[], metavar="SIGMA",
                   help="noise multiplier(s): report the epsilon each gives")
    p.add_argument("--delta", type=float, default=1e-5, help="delta (default 1e-5)")
    p.add_argument("--rounds", type=int, required=True, help="federated rounds")
    p.add_argument("--client-rate", type=float, default=1.0,
                   help="Poisson client sampling rate q per round (default 1.0)")
    p.add_argument("--accountant", default="prv", help="prv (default, tight) or rdp")
    p.add_argument("--placement", choices=PLACEMENTS, default="central",
                   help="user mode: central (trusted server) or distributed noise")
    p.add_argument("--local-steps", type=int, default=0,
                   help="example mode: DP-SGD steps per participation")
    p.add_argument("--example-rate", type=float, default=0.0,
                   help="example mode: largest per-example sampling rate b / N_user")
    p.add_argument("--max-participations", type=int, default=0,
                   help="participation-charged modes: cap per user (default: rounds)")
    p.add_argument("--points", type=int, default=8, help="rows in the table (default 8)")
    p.add_argument("--plot", metavar="PNG", help="also save epsilon against rounds here")
    p.set_defaults(func=cmd_budget)
    return p


def cmd_budget(args: argparse.Namespace) -> int:
    """Run ``ffm-private budget``: print the table (and save the plot when asked)."""
    kwargs: dict[str, Any] = dict(
        mode=args.mode, delta=args.delta, rounds=args.rounds, client_rate=args.client_rate,
        accountant=args.accountant, max_participations=args.max_participations)
    if args.mode == "user":
        kwargs["noise_placement"] = args.placement
    else:
        kwargs.update(local_steps=args.local_steps, example_rate=args.example_rate)
    try:
        curves = budget_curves(noise_multipliers=args.noise, targets=args.epsilon,
                               points=curve_points(args.rounds, args.points), **kwargs)
    except AccountingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    header = (f"{args.mode}-level DP, delta={args.delta:g}, q={args.client_rate:g}, "
              f"accountant={args.accountant}"
              + (f", {args.placement} noise" if args.mode == "user" else
                 f", {args.local_steps} steps/participation at rate {args.example_rate:g}")
              + "\nworst-case epsilon of one user after the given number of rounds")
    print(budget_table(curves, header))
    if args.plot:
        out = plot_epsilon_curves(curves, args.plot, header.splitlines()[0])
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
    "curve_points",
    "epsilon_curve",
    "plot_epsilon_curves",
]
