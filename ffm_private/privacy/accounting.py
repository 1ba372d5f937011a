"""Epsilon of (compositions of) Poisson-subsampled Gaussian mechanisms, via Opacus 1.6.

Every DP mechanism in this project is a Poisson-subsampled Gaussian: a DP-SGD step on a
client (examples sampled with one public per-example rate) or a DP-FedAvg round (clients
sampled with rate ``q``, noise ``sigma * C`` on the sum of clipped updates). A run is a
composition of *events* ``(noise_multiplier, sample_rate, steps)``; this module turns a list
of events into epsilon at a given delta with Opacus's accountants, and searches the noise
multiplier that meets a target epsilon.

- ``prv`` (default): Opacus's PRV accountant (Gopi et al. 2021). It returns the *upper* end of
  its error interval (``eps_error = 0.01``), so the figure is a valid bound, not an estimate.
- ``rdp``: Opacus's RDP accountant (Mironov et al. 2019) with the improved conversion to
  (epsilon, delta). Looser than PRV; kept as the conservative cross-check.
- ``gdp`` is refused: it is a central-limit approximation that can under-state epsilon.

Opacus is imported lazily (it pulls in torch), so importing this module stays cheap. Results
are cached: a noise search costs seconds, an epsilon tens to hundreds of milliseconds (PRV).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from ffm_private.privacy.errors import AccountingError

ACCOUNTANTS: tuple[str, ...] = ("prv", "rdp")
"""Accountants accepted for claims."""

PRV_EPS_ERROR = 0.01
"""Width of the PRV accountant's error interval; its upper end is what we report."""

NOISE_TOLERANCE = 0.01
"""A searched noise multiplier gives epsilon in ``[target - NOISE_TOLERANCE, target]``."""

RDP_ORDERS: tuple[float, ...] = tuple(
    [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
    + [64, 80, 96, 128, 160, 192, 256, 384, 512, 768, 1024]
)
"""RDP orders: Opacus's defaults plus larger integer orders. Extra orders can only tighten
the bound (the minimum is taken over orders); they matter when noise is large and sampling
is absent (``q = 1``), where Opacus's defaults stop short of the optimum."""

MIN_NOISE = 0.3
"""Smallest noise multiplier the search considers (see :func:`_check_reachable`)."""
_MAX_NOISE = 1e6


def check_accountant(accountant: str) -> str:
    """The accountant's canonical name, or a clear error (GDP is refused for claims)."""
    name = str(accountant).strip().lower()
    if name == "gdp":
        raise AccountingError(
            "accountant 'gdp' is refused for privacy claims: it relies on a central-limit "
            "approximation that can under-state epsilon; use 'prv' (tight) or 'rdp' (conservative)")
    if name not in ACCOUNTANTS:
        raise AccountingError(f"unknown accountant {accountant!r}; use one of {list(ACCOUNTANTS)}")
    return name


def check_delta(delta: float) -> float:
    """Delta must be a probability strictly between 0 and 1."""
    if isinstance(delta, bool) or not isinstance(delta, int | float) or not 0.0 < delta < 1.0:
        raise AccountingError(f"delta = {delta!r} must satisfy 0 < delta < 1")
    return float(delta)


def check_epsilon(epsilon: float, name: str = "epsilon") -> float:
    """Epsilon must be a finite positive number."""
    if (isinstance(epsilon, bool) or not isinstance(epsilon, int | float)
            or not math.isfinite(epsilon) or epsilon <= 0):
        raise AccountingError(f"{name} = {epsilon!r} must be a finite number > 0")
    return float(epsilon)


def check_sample_rate(sample_rate: float, name: str = "sample_rate") -> float:
    """A Poisson sampling rate must satisfy ``0 < q <= 1``."""
    if (isinstance(sample_rate, bool) or not isinstance(sample_rate, int | float)
            or not 0.0 < sample_rate <= 1.0):
        raise AccountingError(f"{name} = {sample_rate!r} must satisfy 0 < q <= 1")
    return float(sample_rate)


def check_steps(steps: int, name: str = "steps") -> int:
    """Steps are a positive integer count of compositions."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise AccountingError(f"{name} = {steps!r} must be an integer >= 1")
    return int(steps)


def check_noise(noise_multiplier: float) -> float:
    """A noise multiplier is finite and > 0 (zero noise has no finite epsilon)."""
    if (isinstance(noise_multiplier, bool) or not isinstance(noise_multiplier, int | float)
            or not math.isfinite(noise_multiplier) or noise_multiplier <= 0):
        raise AccountingError(f"noise_multiplier = {noise_multiplier!r} must be a finite "
                              "number > 0 (zero noise gives no finite epsilon)")
    return float(noise_multiplier)


@dataclass(frozen=True)
class GaussianEvent:
    """``steps`` self-compositions of a Gaussian mechanism with Poisson sampling.

    ``noise_multiplier`` is the noise std divided by the L2 sensitivity (the clipping norm);
    ``sample_rate`` is the probability that the protected unit takes part in one step
    (1.0: no amplification by sampling).
    """

    noise_multiplier: float
    sample_rate: float
    steps: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "noise_multiplier", check_noise(self.noise_multiplier))
        object.__setattr__(self, "sample_rate", check_sample_rate(self.sample_rate))
        object.__setattr__(self, "steps", check_steps(self.steps))

    def as_tuple(self) -> tuple[float, float, int]:
        """The ``(noise_multiplier, sample_rate, steps)`` triple Opacus's history uses."""
        return (self.noise_multiplier, self.sample_rate, self.steps)

    def times(self, k: int) -> GaussianEvent:
        """This event composed ``k`` times."""
        return GaussianEvent(self.noise_multiplier, self.sample_rate, self.steps * check_steps(k))


def compose(events: Iterable[GaussianEvent | Sequence[float]]) -> tuple[GaussianEvent, ...]:
    """Normalize a composition: merge events with equal (sigma, q), in first-seen order.

    Composition is commutative, so merging equal mechanisms does not change epsilon; it keeps
    the accountant's history short (and the cache key canonical).
    """
    merged: dict[tuple[float, float], int] = {}
    for ev in events:
        e = ev if isinstance(ev, GaussianEvent) else GaussianEvent(*ev)
        key = (e.noise_multiplier, e.sample_rate)
        merged[key] = merged.get(key, 0) + e.steps
    if not merged:
        raise AccountingError("cannot account an empty composition (no mechanism ran)")
    return tuple(GaussianEvent(s, q, n) for (s, q), n in merged.items())


def _make_accountant(name: str):  # noqa: ANN202 - opacus type, imported lazily
    from opacus.accountants import PRVAccountant, RDPAccountant

    return PRVAccountant() if name == "prv" else RDPAccountant()


def _epsilon_kwargs(name: str) -> dict:
    return {"eps_error": PRV_EPS_ERROR} if name == "prv" else {"alphas": list(RDP_ORDERS)}


@lru_cache(maxsize=8192)
def _epsilon_cached(history: tuple[tuple[float, float, int], ...], delta: float,
                    accountant: str) -> float:
    acc = _make_accountant(accountant)
    acc.history = list(history)
    try:
        with warnings.catch_warnings():
            # q = 1 makes PRV take log(0) on a branch it then discards; RDP warns when the
            # best order is the largest one (the bound is still valid, only less tight).
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.simplefilter("ignore", UserWarning)
            eps = float(acc.get_epsilon(delta=delta, **_epsilon_kwargs(accountant)))
    except (ValueError, FloatingPointError, OverflowError, ZeroDivisionError, RuntimeError,
            MemoryError) as err:  # e.g. a noise of 1e-300 or 10**9 steps: no usable bound
        raise AccountingError(f"{accountant} accountant failed for history {list(history)} "
                              f"at delta={delta}: {err}") from err
    if not math.isfinite(eps) or eps < 0:
        raise AccountingError(f"{accountant} accountant returned epsilon={eps} for history "
                              f"{list(history)} at delta={delta}")
    return eps


def epsilon_for_events(events: Iterable[GaussianEvent | Sequence[float]], delta: float,
                       accountant: str = "prv") -> float:
    """Epsilon at ``delta`` of a heterogeneous composition of subsampled Gaussians.

    Use it for several phases with their own ``(sigma, q, steps)``, e.g. a DP-SGD phase on the
    personal adapter followed by one on the shared adapter, repeated every round.
    """
    name = check_accountant(accountant)
    delta = check_delta(delta)
    history = tuple(e.as_tuple() for e in compose(events))
    return _epsilon_cached(history, delta, name)


def epsilon_for(noise_multiplier: float, sample_rate: float, steps: int, delta: float,
                accountant: str = "prv") -> float:
    """Epsilon at ``delta`` after ``steps`` Poisson-subsampled Gaussian steps."""
    event = GaussianEvent(noise_multiplier, sample_rate, steps)
    return epsilon_for_events([event], delta, accountant)


def _check_reachable(target: float, history: tuple[tuple[float, float, int], ...],
                     delta: float, accountant: str) -> None:
    """Refuse at once a target so loose that it needs less noise than the search covers.

    Below ``MIN_NOISE`` the accountants slow down sharply (the search for epsilon = 1e9 did
    not finish in minutes); such a target protects nothing useful anyway.
    """
    try:
        floor = _epsilon_cached(history, delta, accountant)
    except AccountingError:  # no finite bound at the floor: the target needs more noise
        return
    if floor <= target:
        raise AccountingError(
            f"epsilon = {target:g} is looser than noise multiplier {MIN_NOISE:g} already gives "
            f"(epsilon {floor:.4g} at delta {delta:g}); such a target protects nearly nothing: "
            "lower the target or set privacy.noise_multiplier directly")


@lru_cache(maxsize=1024)
def _noise_single(target: float, rate: float, steps: int, delta: float, accountant: str,
                  tolerance: float) -> float:
    from opacus.accountants.utils import get_noise_multiplier

    _check_reachable(target, ((MIN_NOISE, rate, steps),), delta, accountant)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.simplefilter("ignore", UserWarning)
            sigma = get_noise_multiplier(
                target_epsilon=target, target_delta=delta, sample_rate=rate, steps=steps,
                accountant=accountant, epsilon_tolerance=tolerance,
                **_epsilon_kwargs(accountant))
    except (ValueError, ZeroDivisionError, OverflowError, MemoryError) as err:
        raise AccountingError(f"no noise multiplier <= {_MAX_NOISE:g} reaches epsilon={target} "
                              f"at delta={delta} (q={rate}, steps={steps}): {err}") from err
    return float(sigma)


@lru_cache(maxsize=1024)
def _noise_phases(target: float, phases: tuple[tuple[float, int], ...], delta: float,
                  accountant: str, tolerance: float) -> float:
    """The bisection of Opacus's ``get_noise_multiplier``, over a multi-phase history."""

    def eps(sigma: float) -> float:
        return _epsilon_cached(tuple((sigma, q, n) for q, n in phases), delta, accountant)

    _check_reachable(target, tuple((MIN_NOISE, q, n) for q, n in phases), delta, accountant)
    low, high, eps_high = MIN_NOISE, 10.0, math.inf
    while eps_high > target:
        high *= 2
        if high > _MAX_NOISE:
            raise AccountingError(f"no noise multiplier <= {_MAX_NOISE:g} reaches "
                                  f"epsilon={target} at delta={delta} for phases {phases}")
        eps_high = eps(high)
    while target - eps_high > tolerance:
        mid = (low + high) / 2
        e = eps(mid)
        if e < target:
            high, eps_high = mid, e
        else:
            low = mid
    return high


def noise_for_epsilon(target_epsilon: float, sample_rate: float, steps: int, delta: float,
                      accountant: str = "prv", tolerance: float = NOISE_TOLERANCE) -> float:
    """The noise multiplier whose epsilon after ``steps`` steps is in ``[target - tol, target]``.

    Delegates to Opacus's ``get_noise_multiplier`` and caches the answer: compute it once per
    plan, never per round.
    """
    name = check_accountant(accountant)
    return _noise_single(check_epsilon(target_epsilon, "target_epsilon"),
                         check_sample_rate(sample_rate), check_steps(steps), check_delta(delta),
                         name, check_epsilon(tolerance, "tolerance"))


def noise_for_epsilon_phases(target_epsilon: float, phases: Sequence[tuple[float, int]],
                             delta: float, accountant: str = "prv",
                             tolerance: float = NOISE_TOLERANCE) -> float:
    """One noise multiplier shared by several phases ``(sample_rate, steps)`` meeting a target.

    With a single phase this is :func:`noise_for_epsilon`; with several (personal-adapter and
    shared-part DP-SGD in the same round) it bisects the composed epsilon the same way.
    """
    name = check_accountant(accountant)
    target = check_epsilon(target_epsilon, "target_epsilon")
    delta = check_delta(delta)
    tolerance = check_epsilon(tolerance, "tolerance")
    merged: dict[float, int] = {}
    for rate, steps in phases:
        r = check_sample_rate(rate)
        merged[r] = merged.get(r, 0) + check_steps(steps)
    if not merged:
        raise AccountingError("noise search needs at least one phase (sample_rate, steps)")
    if len(merged) == 1:
        (rate, steps), = merged.items()
        return _noise_single(target, rate, steps, delta, name, tolerance)
    return _noise_phases(target, tuple(merged.items()), delta, name, tolerance)


def clear_caches() -> None:
    """Forget cached epsilons and noise searches (for timing measurements)."""
    _epsilon_cached.cache_clear()
    _noise_single.cache_clear()
    _noise_phases.cache_clear()


__all__ = [
    "ACCOUNTANTS",
    "NOISE_TOLERANCE",
    "PRV_EPS_ERROR",
    "RDP_ORDERS",
    "GaussianEvent",
    "check_accountant",
    "check_delta",
    "check_epsilon",
    "check_noise",
    "check_sample_rate",
    "check_steps",
    "clear_caches",
    "compose",
    "epsilon_for",
    "epsilon_for_events",
    "noise_for_epsilon",
    "noise_for_epsilon_phases",
]
