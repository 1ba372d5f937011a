"""A6, empirical epsilon audit with canaries: a lower bound that must never exceed the claim.

The auditor plants ``m`` canaries, includes each independently with probability 1/2, runs the
mechanism once, scores every canary from the output, and guesses which were included. If the
mechanism is (epsilon, delta)-DP, the guesses cannot be much better than randomized response
with parameter epsilon, so many correct guesses *prove* a lower bound on epsilon (at
confidence ``1 - beta``). A correct implementation's bound stays below its claim (with
probability at least ``1 - beta``); a bound above the claim is a bug or a false claim.

Bounds (all at failure probability ``beta``):

- :func:`one_run_epsilon`: Steinke, Nasr and Jagielski, "Privacy Auditing with One (1) Training
  Run", NeurIPS 2023, Theorem 5.2 / Algorithm 1: with ``r`` guesses (abstaining on ``m - r``)
  of which ``v`` are correct, the p-value of (epsilon, delta)-DP is
  ``P[Binomial(r, e^eps / (1 + e^eps)) >= v] + 2 m delta max_i P[v > Binomial >= v - i] / i``;
  the bound is the largest epsilon whose p-value is below ``beta``. With ``m`` canaries even
  perfect guesses prove little: about 5.8 at m = 1,000 and 7.9 at m = 10,000 (beta = 0.05).
- :func:`clopper_pearson_epsilon`: Jagielski, Ullman and Oprea, "Auditing Differentially
  Private Machine Learning: How Private is Private SGD?", NeurIPS 2020: one-sided
  Clopper-Pearson upper bounds on a threshold test's FPR and FNR give
  ``eps >= log((1 - delta - FPR) / FNR)`` (and symmetrically); the threshold is chosen on half
  of the canaries and the bound computed on the other half.
- :func:`gaussian_epsilon_estimate`: Andrew, Kairouz, Oh, Oprea, McMahan, Suriyakumar,
  "One-shot Empirical Privacy Estimation for Federated Learning", ICLR 2024: fit Gaussians to
  the included and excluded canaries' scores and report the epsilon of the Gaussian mechanism
  that separates them that well. An *estimate*, not a bound: a diagnostic only.

Canaries:

- user-level DP (:class:`UserCanaryAudit`): canary clients whose updates are orthonormal
  random directions ``u_j`` (norm ``canary_norm``) on coordinates the real updates leave alone, fed with the real clients' updates through a
  :class:`Mechanism` (the project's clipping and Gaussian noise from
  :mod:`ffm_private.privacy.mechanisms`, or a deliberately broken variant from
  :data:`BROKEN_MECHANISMS`); canary ``j`` is scored by ``<sum of releases, u_j>``;
- example-level DP (:class:`InteractionCanaryAudit`): canary interactions (an item the user
  never touched) inserted into clients' data, the clients' local training run as a pluggable
  trainer, each canary scored by how much the client's update favoured its item.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
from scipy import stats
from scipy.optimize import brentq

from attacks.registry import register_attack
from ffm_private.privacy.errors import InsufficientNoiseError
from ffm_private.privacy.mechanism import NULL_MECHANISM, NothingToRelease, ReleaseContext
from ffm_private.privacy.mechanism import Mechanism as PrivMechanism

DEFAULT_BETA = 1e-3
_EPS_MAX = 50.0


# -- the one-run bound ---------------------------------------------------------------------------
def one_run_p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """p-value of ``v`` or more correct guesses out of ``r`` under (epsilon, delta)-DP.

    Steinke, Nasr, Jagielski (2023), Theorem 5.2 (the delta term as in their Algorithm 1).
    """
    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= v <= r <= m, got m={m}, r={r}, v={v}")
    if epsilon < 0 or not 0 <= delta <= 1:
        raise ValueError(f"need epsilon >= 0 and 0 <= delta <= 1, got {epsilon}, {delta}")
    q = 1.0 / (1.0 + math.exp(-epsilon))
    tail = float(stats.binom.sf(v - 1, r, q))  # P[Binomial(r, q) >= v]
    if delta == 0 or v == 0:
        return min(tail, 1.0)
    # alpha = max_{i=1..v} P[v - i <= Binomial(r, q) < v] / i
    pmf = stats.binom.pmf(np.arange(v - 1, -1, -1), r, q)  # P[B = v - i] for i = 1..v
    alpha = float(np.max(np.cumsum(pmf) / np.arange(1, v + 1)))
    return min(tail + 2.0 * m * delta * alpha, 1.0)


def one_run_epsilon(m: int, r: int, v: int, delta: float, beta: float) -> float:
    """The largest epsilon rejected at level ``beta``: a lower bound on the true epsilon.

    0 when even epsilon = 0 cannot be rejected. Bisection to 1e-6.
    """
    if not 0 < beta < 1:
        raise ValueError(f"beta = {beta} must be in (0, 1)")
    if one_run_p_value(m, r, v, 0.0, delta) >= beta:
        return 0.0
    low, high = 0.0, 1.0
    while one_run_p_value(m, r, v, high, delta) < beta:
        low, high = high, high * 2
        if high > _EPS_MAX:
            return _EPS_MAX
    while high - low > 1e-6:
        mid = (low + high) / 2
        if one_run_p_value(m, r, v, mid, delta) < beta:
            low = mid
        else:
            high = mid
    return low


def guess_counts(m: int) -> list[int]:
    """The numbers of guesses tried (a fixed grid, so a union bound covers the choice)."""
    grid = {max(2, int(round(m * f)) // 2 * 2) for f in (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)}
    return sorted(r for r in grid if r <= m)


def one_run_audit(scores: np.ndarray, included: np.ndarray, delta: float, beta: float
                  ) -> dict[str, Any]:
    """Guess the ``r/2`` highest-scored canaries in and the ``r/2`` lowest out, for each ``r``
    of :func:`guess_counts`, each bound at ``beta / len(grid)`` (union bound); the best.
    """
    scores = np.asarray(scores, dtype=np.float64)
    included = np.asarray(included, dtype=bool)
    m = scores.size
    grid = guess_counts(m)
    order = np.argsort(-scores, kind="stable")
    best = {"epsilon": 0.0, "r": 0, "v": 0}
    tried = []
    for r in grid:
        half = r // 2
        top, bottom = order[:half], order[m - half:] if half else order[:0]
        v = int(included[top].sum() + (~included[bottom]).sum())
        eps = one_run_epsilon(m, r, v, delta, beta / len(grid))
        tried.append({"r": r, "v": v, "epsilon": eps})
        if eps > best["epsilon"]:
            best = {"epsilon": eps, "r": r, "v": v}
    return {**best, "m": m, "beta": beta, "grid": tried}


# -- Clopper-Pearson (Jagielski et al. 2020) -----------------------------------------------------
def _cp_upper(k: int, n: int, alpha: float) -> float:
    """One-sided Clopper-Pearson upper bound on a binomial proportion at level ``alpha``."""
    if n == 0:
        return 1.0
    if k >= n:
        return 1.0
    return float(stats.beta.ppf(1 - alpha, k + 1, n - k))


def _cp_epsilon(fp: int, n_out: int, fn: int, n_in: int, delta: float, alpha: float) -> float:
    fpr, fnr = _cp_upper(fp, n_out, alpha / 2), _cp_upper(fn, n_in, alpha / 2)
    values = [0.0]
    for a, b in ((fpr, fnr), (fnr, fpr)):
        if b > 0 and 1 - delta - a > 0:
            values.append(math.log((1 - delta - a) / b))
    return max(values)


def clopper_pearson_epsilon(scores_in: np.ndarray, scores_out: np.ndarray, delta: float,
                            beta: float, *, seed: int = 0) -> dict[str, Any]:
    """Guess "included" when the score reaches a threshold; the threshold maximises the bound
    on a random half of the canaries, and the reported bound is computed on the other half
    (so choosing it costs no confidence)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xC9]))
    s_in, s_out = np.asarray(scores_in, float), np.asarray(scores_out, float)
    sel_in = rng.random(s_in.size) < 0.5
    sel_out = rng.random(s_out.size) < 0.5
    a_in, b_in, a_out, b_out = s_in[sel_in], s_in[~sel_in], s_out[sel_out], s_out[~sel_out]
    if min(a_in.size, b_in.size, a_out.size, b_out.size) == 0:
        return {"epsilon": 0.0, "threshold": None}
    thresholds = np.unique(np.concatenate([a_in, a_out]))
    if thresholds.size > 512:
        thresholds = np.quantile(thresholds, np.linspace(0, 1, 512))
    best_t, best = float(thresholds[0]), -1.0
    for t in thresholds:
        fp, fn = int((a_out >= t).sum()), int((a_in < t).sum())
        value = _cp_epsilon(fp, a_out.size, fn, a_in.size, delta, beta)
        if value > best:
            best_t, best = float(t), value
    fp, fn = int((b_out >= best_t).sum()), int((b_in < best_t).sum())
    eps = _cp_epsilon(fp, b_out.size, fn, b_in.size, delta, beta)
    return {"epsilon": eps, "threshold": best_t, "fp": fp, "fn": fn,
            "n_in": int(b_in.size), "n_out": int(b_out.size)}


# -- Andrew et al. (2024) ------------------------------------------------------------------------
def gaussian_delta(epsilon: float, mu: float) -> float:
    """delta(epsilon) of mu-GDP (Dong, Roth, Su 2019, Corollary 2.13)."""
    if mu <= 0:
        return 0.0
    a = stats.norm.cdf(-epsilon / mu + mu / 2)
    b = math.exp(min(epsilon + stats.norm.logcdf(-epsilon / mu - mu / 2), 700.0))
    return float(max(a - b, 0.0))


def gaussian_epsilon_estimate(scores_in: np.ndarray, scores_out: np.ndarray,
                              delta: float) -> dict[str, float]:
    """Epsilon of the Gaussian mechanism that separates the two score populations this well."""
    s_in, s_out = np.asarray(scores_in, float), np.asarray(scores_out, float)
    if s_in.size < 2 or s_out.size < 2:
        return {"epsilon": float("nan"), "mu": float("nan")}
    sd = math.sqrt((s_in.var(ddof=1) + s_out.var(ddof=1)) / 2)
    mu = abs(s_in.mean() - s_out.mean()) / sd if sd > 0 else math.inf
    if not math.isfinite(mu):
        return {"epsilon": math.inf, "mu": mu}
    if gaussian_delta(0.0, mu) <= delta:
        return {"epsilon": 0.0, "mu": mu}
    high = 1.0
    while gaussian_delta(high, mu) > delta:
        high *= 2
        if high > 1e4:
            return {"epsilon": math.inf, "mu": mu}
    return {"epsilon": float(brentq(lambda e: gaussian_delta(e, mu) - delta, 0.0, high)),
            "mu": mu}


# -- mechanisms ----------------------------------------------------------------------------------
class Mechanism(Protocol):
    """Turns one round's client updates (rows of a matrix) into what is released."""

    name: str

    def __call__(self, updates: np.ndarray, rng: np.random.Generator) -> np.ndarray: ...


class ProductionRelease:
    """One round of a production :class:`ffm_private.privacy.mechanism.Mechanism`, end to end.

    Each row goes through the mechanism's client transform (what a client sends), the rows
    are summed (what a secure protocol reveals), and the server transform turns the sum into
    the released step. The audit therefore tests the objects the run executes. ``pool_size``
    is the number of eligible users the server step is told about (a correct mechanism ignores
    it).
    """

    def __init__(self, mechanism: PrivMechanism, pool_size: int = 0) -> None:
        self.mechanism = mechanism
        self.pool_size = pool_size
        self.name = getattr(mechanism, "label", None) or (
            f"{mechanism.name}: {mechanism.describe()}")

    def __call__(self, updates: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        rows = np.asarray(updates, dtype=np.float64)
        total = sum((self.mechanism.client_transform(row, rng) for row in rows),
                    np.zeros(rows.shape[1] + self.mechanism.extra_coordinates))
        ctx = ReleaseContext(0, contributors=len(rows), pool_size=max(self.pool_size, len(rows)),
                             dim=rows.shape[1])
        return self.mechanism.server_transform(total, ctx, rng)

    def release(self, total: np.ndarray | None, ctx: ReleaseContext,
                rng: np.random.Generator) -> np.ndarray:
        """The server step alone (the scale audit's view)."""
        return self.mechanism.server_transform(total, ctx, rng)


class _ScaledNoise:
    """A generator whose noise has its scale multiplied by ``factor``: ``normal`` draws, and
    the discrete Gaussian's std through ``noise_factor``; every other draw (the discrete
    mechanism's rounding and sampling bits) comes from ``rng`` unchanged."""

    def __init__(self, rng: Any, factor: float) -> None:
        self.rng, self.factor = rng, factor

    @property
    def noise_factor(self) -> float:
        return self.factor * float(getattr(self.rng, "noise_factor", 1.0))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.rng, name)

    def normal(self, loc: float = 0.0, scale: float = 1.0, size: Any = None) -> np.ndarray:
        if self.factor == 0.0:
            return np.full(size, float(loc))
        return self.rng.normal(loc, scale * self.factor, size)


class PlantedBug(PrivMechanism):
    """A production mechanism with exactly one step broken (the audit must FAIL it)."""

    label: ClassVar[str] = "BROKEN"

    def __init__(self, inner: PrivMechanism) -> None:
        self.inner = inner
        self.releases_every_round = inner.releases_every_round  # type: ignore[misc]
        self.encoding = inner.encoding  # type: ignore[misc]

    def clip(self, update: np.ndarray) -> np.ndarray:
        return self.inner.clip(update)

    def client_noise(self, update: np.ndarray, rng: Any) -> np.ndarray:
        return self.inner.client_noise(update, rng)

    def check_release(self, ctx: ReleaseContext) -> None:
        self.inner.check_release(ctx)

    def decode(self, total: np.ndarray) -> np.ndarray:
        return self.inner.decode(total)

    def server_noise(self, total: np.ndarray, rng: Any) -> np.ndarray:
        return self.inner.server_noise(total, rng)

    def divisor(self, ctx: ReleaseContext) -> float:
        return self.inner.divisor(ctx)

    def events(self) -> tuple:
        return self.inner.events()

    def describe(self) -> str:
        return f"{self.label} ({self.inner.describe()})"


class NoNoise(PlantedBug):
    """Broken: clips, but forgets the noise (client share and server noise)."""

    label = "BROKEN: noise off"

    def client_noise(self, update: np.ndarray, rng: Any) -> np.ndarray:
        return self.inner.client_noise(update, _ScaledNoise(rng, 0.0))

    def server_noise(self, total: np.ndarray, rng: Any) -> np.ndarray:
        return self.inner.server_noise(total, _ScaledNoise(rng, 0.0))


class NoiseOverClients(PlantedBug):
    """Broken: noise sized for the mean (divided by the number of clients), added to the sum."""

    label = "BROKEN: noise divided by the number of clients"

    def server_transform(self, total: np.ndarray | None, ctx: ReleaseContext,
                         rng: Any) -> np.ndarray:
        return super().server_transform(total, ctx, _ScaledNoise(rng, 1.0 / max(ctx.contributors,
                                                                              1)))

    def client_transform(self, update: Any, rng: Any) -> np.ndarray:
        m = getattr(self.inner, "min_survivors", 1)  # share sized sigma C / m, not / sqrt(m)
        return super().client_transform(update, _ScaledNoise(rng, 1.0 / math.sqrt(m)))


class NoClipping(PlantedBug):
    """Broken: adds the right noise but skips clipping (the sensitivity is unbounded)."""

    label = "BROKEN: clipping skipped"

    def clip(self, update: np.ndarray) -> np.ndarray:
        return update


class DenominatorCountsUsers(PlantedBug):
    """Broken: divides the noisy sum by ``q x`` the number of eligible users (a statistic of
    the private data), so one user more or less changes the scale of the released noise."""

    label = "BROKEN: denominator counts users"

    def divisor(self, ctx: ReleaseContext) -> float:
        rate = getattr(self.inner, "client_rate", 1.0)
        return rate * max(ctx.pool_size, 1)


BROKEN_MECHANISMS: dict[str, Callable[[PrivMechanism], PlantedBug]] = {
    "noise-off": NoNoise,
    "noise-over-n": NoiseOverClients,
    "no-clipping": NoClipping,
    "denominator-counts-users": DenominatorCountsUsers,
}
"""Planted-bug wrappers of a production mechanism, by name (``--mechanism`` of the audit)."""


# -- the audits ----------------------------------------------------------------------------------
@dataclass
class CanaryResult:
    """Scores, the bounds and the verdict inputs of one canary audit."""

    kind: str
    mechanism: str
    claimed_epsilon: float | None
    delta: float
    beta: float
    canaries: int
    one_run: dict[str, Any]
    clopper_pearson: dict[str, Any]
    gaussian: dict[str, float]
    scores: np.ndarray = field(repr=False)
    included: np.ndarray = field(repr=False)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def lower_bound(self) -> float:
        """The audit's epsilon lower bound at failure probability ``beta``: the larger of the
        one-run and Clopper-Pearson bounds, each computed at ``beta / 2`` (union bound)."""
        return max(self.one_run["epsilon"], self.clopper_pearson["epsilon"])

    @property
    def exceeds_claim(self) -> bool:
        return self.claimed_epsilon is not None and self.lower_bound > self.claimed_epsilon

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "mechanism": self.mechanism,
                "claimed_epsilon": self.claimed_epsilon, "delta": self.delta, "beta": self.beta,
                "canaries": self.canaries, "lower_bound": self.lower_bound,
                "exceeds_claim": self.exceeds_claim, "one_run": self.one_run,
                "clopper_pearson": self.clopper_pearson, "gaussian_estimate": self.gaussian,
                **self.details}


def evaluate_canaries(scores: np.ndarray, included: np.ndarray, *, kind: str, mechanism: str,
                      claimed_epsilon: float | None, delta: float, beta: float, seed: int,
                      independent: bool, details: dict[str, Any] | None = None) -> CanaryResult:
    """The bounds from canary scores (higher score = more likely included).

    The one-run bound holds for any mechanism. The Clopper-Pearson bound treats canaries as
    independent trials, which holds only when ``independent`` (orthonormal canary clients
    under a per-client mechanism); otherwise it is reported as 0 and not used. Each bound is
    computed at ``beta / 2``, so their maximum holds at ``beta``.
    """
    scores, included = np.asarray(scores, float), np.asarray(included, bool)
    cp = (clopper_pearson_epsilon(scores[included], scores[~included], delta, beta / 2,
                                  seed=seed) if independent else
          {"epsilon": 0.0, "threshold": None,
           "note": "not computed: canaries are not independent trials"})
    return CanaryResult(
        kind=kind, mechanism=mechanism, claimed_epsilon=claimed_epsilon, delta=delta, beta=beta,
        canaries=int(scores.size), one_run=one_run_audit(scores, included, delta, beta / 2),
        clopper_pearson=cp,
        gaussian=gaussian_epsilon_estimate(scores[included], scores[~included], delta),
        scores=scores, included=included, details=details or {})


def audit_delta(delta: float, canaries: int, beta: float) -> float:
    """The delta to audit at: at most ``beta / (100 m)``, so that the one-run bound's delta term
    (``2 m delta``) costs at most a fiftieth of ``beta``.

    A mechanism is DP along a whole curve ``epsilon(delta)``; at the claim's own delta (say
    1e-5) with a thousand canaries, the delta term alone exceeds ``beta`` and no bound above ~1.3
    can ever be proved. The claim is restated at the smaller delta with the run's accountant.
    """
    return min(delta, beta / (100.0 * canaries))


def canary_directions(count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` orthonormal random directions (rows) of dimension the next power of two.

    Rows of a Sylvester-Hadamard matrix (entries ``(-1)^popcount(i & k)``) picked at random, with
    random column signs, scaled to unit norm: orthonormal without a QR factorisation. Orthonormal
    canaries do not leak into each other's scores, which makes their scores independent under a
    per-client Gaussian mechanism (what the Clopper-Pearson bound needs).
    """
    dim = canary_dim(count)
    rows = rng.choice(dim, size=count, replace=False).astype(np.uint64)
    cols = np.arange(dim, dtype=np.uint64)
    bits = rows[:, None] & cols[None, :]
    parity = np.zeros(bits.shape, dtype=np.uint64)
    while np.any(bits):
        parity ^= bits & np.uint64(1)
        bits >>= np.uint64(1)
    signs = rng.choice([-1.0, 1.0], size=dim)
    return (1.0 - 2.0 * parity.astype(np.float64)) * signs[None, :] / math.sqrt(dim)


@dataclass
class UserCanaryAudit:
    """User-level canaries: orthonormal-direction clients through ``mechanism`` for ``rounds``.

    Each round every included canary takes part with probability ``client_rate`` (as the
    accountant assumes of every user) or, with ``participations``, in the first that many
    rounds (distributed noise is charged per participation). ``background`` rows are real
    clients' updates restricted to some coordinates of the model, sent every round; the
    canaries' updates live on other coordinates (a canary is a client whose update touches
    only those), so the real updates never blur the canaries' scores whatever the mechanism
    does to them, and the privacy of the Gaussian mechanism does not depend on the dimension.
    ``claimed_epsilon`` must be the claim at ``delta`` (see :func:`audit_delta`).
    """

    mechanism: Mechanism
    claimed_epsilon: float | None
    delta: float
    canaries: int = 1000
    canary_norm: float = 1.0
    rounds: int = 1
    client_rate: float = 1.0
    participations: int | None = None
    background: np.ndarray | None = None
    beta: float = DEFAULT_BETA
    seed: int = 0
    progress: bool = False

    def run(self) -> CanaryResult:
        from tqdm.auto import tqdm

        root = np.random.SeedSequence([self.seed, 0xCA7A])
        s_dir, s_in, s_part, s_mech = root.spawn(4)
        background = (np.zeros((0, 0)) if self.background is None
                      else np.asarray(self.background, dtype=np.float64))
        directions = canary_directions(self.canaries, np.random.default_rng(s_dir))
        n_bg, d_bg = background.shape
        d_c = directions.shape[1]
        included = np.random.default_rng(s_in).random(self.canaries) < 0.5
        part_rng = np.random.default_rng(s_part)
        mech_rng = np.random.default_rng(s_mech)
        released = np.zeros(d_bg + d_c)
        for t in tqdm(range(self.rounds), desc="A6 canary rounds", leave=False,
                      disable=not self.progress):
            if self.participations is not None:
                active = included & (t < self.participations)
            else:
                active = included & (part_rng.random(self.canaries) < self.client_rate)
            n_active = int(active.sum())
            rows = np.zeros((n_bg + n_active, d_bg + d_c)) if n_bg + n_active else \
                np.zeros((1, d_bg + d_c))
            rows[:n_bg, :d_bg] = background
            rows[n_bg:n_bg + n_active, d_bg:] = self.canary_norm * directions[active]
            try:
                released += self.mechanism(rows, mech_rng)
            except (InsufficientNoiseError, NothingToRelease):
                continue  # the mechanism refused to release this round: nothing is seen
        scores = directions @ released[d_bg:]
        return evaluate_canaries(
            scores, included, kind="user-level canary clients",
            mechanism=self.mechanism.name, claimed_epsilon=self.claimed_epsilon,
            delta=self.delta, beta=self.beta, seed=self.seed, independent=True,
            details={"rounds": self.rounds, "client_rate": self.client_rate,
                     "participations": self.participations, "canary_dim": d_c,
                     "background_dim": d_bg, "canary_norm": self.canary_norm,
                     "background_clients": n_bg})


@dataclass
class ScaleAudit:
    """Neighbouring datasets that differ only in the *scale* of what is released.

    Each of ``trials`` independent runs of ``rounds`` rounds uses a dataset of ``pool_size``
    users, plus one more user with probability 1/2 (the "canary"). Every update is zero, so
    the released steps are the mechanism's noise alone; the distinguisher scores a trial by
    minus the summed squared norm of its released steps (a chi-square statistic: a
    denominator that grows with the user count shrinks the noise). A mechanism whose release
    does not depend on how many users exist gives no signal; one that divides by a count of
    the users is caught. ``mechanism`` is a :class:`ProductionRelease`.
    """

    mechanism: ProductionRelease
    claimed_epsilon: float | None
    delta: float
    pool_size: int
    dim: int
    trials: int = 1000
    rounds: int = 1
    client_rate: float = 1.0
    beta: float = DEFAULT_BETA
    seed: int = 0

    def run(self) -> CanaryResult:
        root = np.random.SeedSequence([self.seed, 0x5CA1E])
        s_in, s_part, s_mech = root.spawn(3)
        included = np.random.default_rng(s_in).random(self.trials) < 0.5
        part_rng = np.random.default_rng(s_part)
        mech_rng = np.random.default_rng(s_mech)
        zero = np.zeros(self.dim + self.mechanism.mechanism.extra_coordinates)
        initial = self.mechanism.mechanism.state()  # trials are independent runs
        scores = np.zeros(self.trials)
        for j in range(self.trials):
            self.mechanism.mechanism.load_state(initial)
            pool = self.pool_size + int(included[j])
            for t in range(self.rounds):
                contributors = int(part_rng.binomial(pool, self.client_rate))
                ctx = ReleaseContext(t + 1, contributors=contributors, pool_size=pool,
                                     dim=self.dim)
                try:
                    step = self.mechanism.release(zero if contributors else None, ctx, mech_rng)
                except Exception:  # noqa: BLE001 - a refused release shows nothing
                    continue
                scores[j] -= float(step @ step)
        return evaluate_canaries(
            scores, included, kind="neighbouring datasets of n and n + 1 users (scale only)",
            mechanism=self.mechanism.name, claimed_epsilon=self.claimed_epsilon,
            delta=self.delta, beta=self.beta, seed=self.seed, independent=True,
            details={"trials": self.trials, "rounds": self.rounds, "pool_size": self.pool_size,
                     "dim": self.dim, "client_rate": self.client_rate})


Trainer = Callable[[int, np.ndarray], np.ndarray]
"""``trainer(user, items) -> shared update``: one client's local training on ``items``."""
ItemScorer = Callable[[np.ndarray], np.ndarray]
"""``scorer(update) -> (n_items,)``: how much an update favoured each item (A1's scorers)."""


@dataclass
class InteractionCanaryAudit:
    """Example-level canaries: canary interactions inserted into clients' data.

    Each of ``clients`` gets ``per_client`` canary items it never interacted with, each
    included independently with probability 1/2 (appended to the client's interactions);
    ``trainer`` runs the client's local training (e.g. DP-SGD) and ``scorer`` ranks items by
    the resulting update. Canary ``(u, i)`` is scored by item ``i``'s z-scored score in ``u``'s
    update.
    """

    trainer: Trainer
    scorer: ItemScorer
    data: Sequence[np.ndarray]
    n_items: int
    clients: Sequence[int]
    claimed_epsilon: float | None
    delta: float
    per_client: int = 10
    beta: float = DEFAULT_BETA
    seed: int = 0
    mechanism: str = "client training"
    progress: bool = False

    def run(self) -> CanaryResult:
        from tqdm.auto import tqdm

        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0xCA7B]))
        scores, included = [], []
        for u in tqdm(self.clients, desc="A6 canary clients", leave=False,
                      disable=not self.progress):
            own = np.asarray(self.data[u], dtype=np.int64)
            free = np.setdiff1d(np.arange(self.n_items), own)
            items = rng.choice(free, size=min(self.per_client, free.size), replace=False)
            keep = rng.random(items.size) < 0.5
            update = self.trainer(int(u), np.concatenate([own, items[keep]]))
            s = np.asarray(self.scorer(update), dtype=np.float64)
            sd = s.std()
            z = (s - s.mean()) / sd if sd > 0 else np.zeros_like(s)
            scores.extend(z[items])
            included.extend(keep)
        return evaluate_canaries(
            np.array(scores), np.array(included), kind="example-level canary interactions",
            mechanism=self.mechanism, claimed_epsilon=self.claimed_epsilon, delta=self.delta,
            beta=self.beta, seed=self.seed, independent=False,
            details={"clients": len(self.clients), "per_client": self.per_client})


__all__ = [
    "BROKEN_MECHANISMS", "DEFAULT_BETA", "CanaryResult", "DenominatorCountsUsers",
    "PlantedBug", "ProductionRelease", "ScaleAudit", "canary_dim", "production_mechanism",
    "scale_audit",
    "InteractionCanaryAudit", "Mechanism", "NoClipping", "NoNoise", "NoiseOverClients",
    "UserCanaryAudit", "audit_delta", "canary_directions", "clopper_pearson_epsilon",
    "evaluate_canaries",
    "gaussian_delta", "gaussian_epsilon_estimate", "guess_counts", "one_run_audit",
    "one_run_epsilon", "one_run_p_value", "run_canary_audit",
]


# -- A6 on a run ---------------------------------------------------------------------------------
def run_canary_audit(ctx: Any, *, canaries: int = 1000, beta: float = DEFAULT_BETA,
                     max_rounds: int = 50, mechanism: Mechanism | None = None,
                     planted_bug: str | None = None,
                     background_clients: int = 256, background_dim: int = 1024
                     ) -> tuple[Any, CanaryResult]:
    """A6 for a run (``ctx``: an :class:`attacks.context.AuditContext`).

    User-level or no DP: canary clients through the run's mechanism (``mechanism`` overrides
    it; ``planted_bug`` names a :data:`BROKEN_MECHANISMS` wrapper of the bound production
    mechanism), for the first ``min(rounds, max_rounds)`` rounds, against the
    plan's epsilon after those rounds, restated at :func:`audit_delta`. Example-level DP:
    canary interactions through the run's client algorithm (:class:`InteractionCanaryAudit`).
    Returns the :class:`~attacks.base.AttackResult` and the raw :class:`CanaryResult`.
    """
    import time

    from attacks.base import FAIL, NOT_APPLICABLE, PASS, AttackResult, Verdict

    start = time.perf_counter()
    cfg, claim = ctx.cfg, ctx.claim
    plan = ctx.plan if getattr(ctx, "plan", None) is not None else _plan(cfg, ctx.run_dir)
    rounds = max(1, min(cfg.federated.rounds, max_rounds))
    delta_claim = claim.delta if claim.delta else 1e-5
    delta = audit_delta(delta_claim, canaries, beta)
    claimed = None
    if plan is not None:
        from ffm_private.privacy.accounting import epsilon_for_events

        charges = plan.worst_case_charges(rounds)
        claimed = epsilon_for_events(plan.events_after(charges), delta, plan.accountant)
    elif claim.claimed:
        delta, claimed = delta_claim, claim.epsilon
    if claim.mode == "example":
        result = _interaction_audit(ctx, claimed, delta, canaries, beta)
    else:
        background = _background(ctx, background_clients, background_dim)
        c = claim.clipping_norm or 1.0
        rows, width = background.shape
        production = production_mechanism(cfg, plan, dim=width + canary_dim(canaries),
                                          max_clients=rows + canaries)
        if planted_bug is not None:  # a wrapper of the bound production mechanism
            production = BROKEN_MECHANISMS[planted_bug](production)
        chosen = production if mechanism is None else mechanism
        release = ProductionRelease(chosen, pool_size=ctx.split.n_users - len(ctx.public))
        if claim.claimed:
            norm = 10.0 * c
        else:
            norms = np.linalg.norm(background, axis=1) if len(background) else np.zeros(0)
            norm = float(np.median(norms)) if norms.size and np.median(norms) > 0 else 1.0
        distributed = plan is not None and plan.noise_placement == "distributed"
        result = UserCanaryAudit(
            release, claimed, delta, canaries=canaries, canary_norm=norm, rounds=rounds,
            client_rate=1.0 if distributed or plan is None else plan.client_rate,
            participations=(min(rounds, plan.planned_charges) if distributed else None),
            background=background, beta=beta, seed=ctx.seed, progress=ctx.progress).run()
        if plan is not None and not distributed:
            scale = scale_audit(release, plan, dim=ctx.log.n_params, canaries=canaries,
                                beta=beta, seed=ctx.seed)
            result.details["scale_audit"] = scale.to_dict()
            if scale.lower_bound - scale.claimed_epsilon > result.lower_bound - (claimed or 0.0):
                result = dataclasses.replace(scale, details={**scale.details,
                                                             "canary_audit": result.to_dict()})
                claimed = scale.claimed_epsilon
    lb = result.lower_bound
    if claimed is None:
        verdict = Verdict(NOT_APPLICABLE, f"no DP claim; empirical epsilon >= {lb:.3f} "
                                          f"(at delta {delta:.2g}, confidence {1 - beta:g})")
    elif result.exceeds_claim:
        verdict = Verdict(FAIL, f"epsilon lower bound {lb:.3f} EXCEEDS the claim {claimed:.3f} "
                                f"at delta {delta:.2g}: the implementation does not meet its "
                                "guarantee (or the claim is wrong)")
    else:
        verdict = Verdict(PASS, f"epsilon lower bound {lb:.3f} <= claim {claimed:.3f} at "
                                f"delta {delta:.2g} (confidence {1 - beta:g})")
    attack = AttackResult(
        attack="A6", title="A6 empirical epsilon audit (canaries)", view="mechanism",
        threat_model="the strongest adversary the DP claim covers: sees the mechanism's output "
                     "and chooses the canaries",
        observes=f"{result.kind} through {result.mechanism}",
        headline="epsilon_lower_bound", estimate=None, reference=claimed, verdict=verdict,
        metrics={"lower_bound": lb, "claimed_epsilon_at_audit_delta": claimed,
                 "claimed_epsilon_at_run_delta": claim.epsilon, "run_delta": claim.delta,
                 **result.to_dict()},
        covered_by_claim=claimed is not None,
        notes=["lower bound = max(one-run bound, Clopper-Pearson bound), each at beta/2",
               "Gaussian estimate (Andrew et al. 2024) is a diagnostic, not a bound"],
        seconds=time.perf_counter() - start)
    return attack, result


@register_attack("a6", title="empirical epsilon audit with canaries", per_view=False)
def audit_canaries(ctx: Any, view: str, options: Any) -> list[Any]:
    """A6 in an audit: the run's mechanism, or (``options.mechanism``) a planted-bug variant."""
    from attacks.context import AuditError

    if options.mechanism:
        plan = ctx.plan if getattr(ctx, "plan", None) is not None else _plan(ctx.cfg,
                                                                              ctx.run_dir)
        if plan is None or plan.mode != "user":
            raise AuditError("a6 --mechanism needs a run with a user-level DP claim")
    result, _ = run_canary_audit(ctx, canaries=options.canaries, beta=options.beta,
                                 max_rounds=options.a6_max_rounds,
                                 planted_bug=options.mechanism or None)
    return [result]


def production_mechanism(cfg: Any, plan: Any, *, dim: int = 0,
                         max_clients: int = 0) -> PrivMechanism:
    """The mechanism the run executes, from its config and plan (the run's own factory).

    Distributed noise is bound to the capabilities of the protocol the config names, exactly
    as the run binds it (:func:`ffm_private.privacy.run.bind_mechanism`): the discrete
    Gaussian to the protocol's integer modulus, calibrated for vectors of ``dim`` values and
    sums of up to ``max_clients`` shares (the audit's own vectors and rounds; the calibration
    keeps the plan's zCDP bound whatever the length), the float Gaussian to its value range
    and rounding bound.
    """
    if plan is None:
        return NULL_MECHANISM
    from ffm_private.privacy.config import resolved_privacy

    pc = resolved_privacy(cfg)
    if not (plan.mode == "user" and plan.noise_placement == "distributed"):
        return pc.mechanism(plan)
    from ffm_private.privacy.config import _probe_protocol
    from ffm_private.privacy.errors import UnsupportedClaimError
    from ffm_private.privacy.run import bind_mechanism

    if dim < 1 or max_clients < 1:
        raise UnsupportedClaimError("a distributed-noise mechanism is bound to the vector "
                                    "length and the largest round: give dim and max_clients")
    protocol = _probe_protocol(cfg.protocol.name, cfg.protocol.options)
    return bind_mechanism(pc, plan, protocol, dim, max_clients=max_clients)


def canary_dim(canaries: int) -> int:
    """Length of the canary directions of :func:`canary_directions` for ``canaries``."""
    return 1 << max(1, int(canaries - 1).bit_length())


def scale_audit(release: ProductionRelease, plan: Any, *, dim: int, canaries: int,
                beta: float = DEFAULT_BETA, seed: int = 0) -> CanaryResult:
    """:class:`ScaleAudit` of one round against the plan's one-round claim at the audit delta."""
    from ffm_private.privacy.accounting import epsilon_for_events

    delta = audit_delta(plan.delta, canaries, beta)
    claimed = epsilon_for_events(plan.events_after(1), delta, plan.accountant)
    return ScaleAudit(release, claimed, delta, pool_size=release.pool_size, dim=dim,
                      trials=canaries, rounds=1, client_rate=plan.client_rate, beta=beta,
                      seed=seed).run()


def _plan(cfg: Any, run_dir: Any = None) -> Any:
    """The run's privacy plan, as the read-only run view derives it, else from the config."""
    raw = dict(cfg.privacy or {})
    if not raw or raw.get("mode", "none") == "none":
        return None
    if run_dir is not None and (Path(run_dir) / "config.toml").exists():
        from ffm_private.run_view import RunView

        with RunView.open(run_dir) as view:
            return view.plan
    from ffm_private.privacy.config import resolved_privacy

    try:
        return resolved_privacy(cfg).run_plan(rounds=cfg.federated.rounds,
                                              client_rate=cfg.federated.client_fraction)
    except (ValueError, TypeError):
        return None


def _background(ctx: Any, clients: int, dim: int) -> np.ndarray:
    """Real updates from the first round with recorded vectors, on ``dim`` random coordinates."""
    for obs in ctx.log:
        ids = obs.client_ids
        if ids:
            rng = ctx.rng(0xB6)
            coords = np.sort(rng.choice(ctx.log.n_params, size=min(dim, ctx.log.n_params),
                                        replace=False))
            chosen = rng.choice(ids, size=min(clients, len(ids)), replace=False)
            return np.stack([obs.vector(int(c))[coords] for c in chosen]).astype(np.float64)
    return np.zeros((0, 0))


def _interaction_audit(ctx: Any, claimed: float | None, delta: float, canaries: int,
                       beta: float) -> CanaryResult:
    from attacks.features import scorers_for
    from attacks.membership import _Simulator

    obs = ctx.log[ctx.log.rounds[0]]
    sim = _Simulator(ctx, obs.round_id, obs.broadcast)
    scorer = next(iter(scorers_for(ctx).values()))
    per_client = 10
    users = ctx.targets()[: max(1, canaries // per_client)]
    return InteractionCanaryAudit(
        trainer=lambda u, items: sim(items, u),
        scorer=lambda update: scorer(update, obs.broadcast), data=ctx.truth.train,
        n_items=ctx.n_items, clients=users, claimed_epsilon=claimed, delta=delta,
        per_client=per_client, beta=beta, seed=ctx.seed, mechanism="the run's client training",
        progress=ctx.progress).run()
