"""Independent reference accountants, written from the published formulas (no Opacus).

- ``rdp_subsampled_gaussian``: RDP of the Poisson-subsampled Gaussian at integer orders,
  Mironov, Talwar, Zhang (2019), "Renyi differential privacy of the sampled Gaussian
  mechanism", Section 3.3: A_alpha = sum_k C(alpha, k) (1-q)^(alpha-k) q^k exp((k^2-k)/(2 s^2)),
  RDP(alpha) = log(A_alpha) / (alpha - 1); RDP composes additively.
- ``rdp_to_epsilon``: Balle et al. (2020), "Hypothesis testing interpretations and Renyi
  differential privacy", Theorem 21.
- ``gaussian_epsilon``: the exact (analytic) Gaussian mechanism, Balle & Wang (2018), Theorem 8;
  T compositions of a Gaussian with multiplier s are one Gaussian with mu = sqrt(T) / s.
- ``subsampled_gaussian_one_step_epsilon``: exact epsilon of one Poisson-subsampled Gaussian step
  from the closed-form hockey-stick divergence of the dominating pair
  P = (1-q) N(0, s^2) + q N(1, s^2) vs Q = N(0, s^2), maximised over both directions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np

INT_ORDERS = tuple(range(2, 257))


@lru_cache(maxsize=65536)
def rdp_subsampled_gaussian(q: float, sigma: float, alpha: int) -> float:
    """RDP at integer order ``alpha`` of one Poisson-subsampled Gaussian step."""
    if q == 1.0:
        return alpha / (2 * sigma**2)
    k = np.arange(alpha + 1, dtype=np.float64)
    log_binom = (math.lgamma(alpha + 1) - np.array([math.lgamma(x + 1) for x in k])
                 - np.array([math.lgamma(alpha - x + 1) for x in k]))
    terms = log_binom + (alpha - k) * math.log1p(-q) + k * math.log(q) + (k * k - k) / (
        2 * sigma**2)
    top = float(np.max(terms))
    return (top + math.log(math.fsum(np.exp(terms - top)))) / (alpha - 1)


def rdp_to_epsilon(rdp: Sequence[float], orders: Sequence[float], delta: float) -> float:
    """Best (epsilon, delta) conversion over the given orders (Balle et al. 2020, Thm 21)."""
    best = math.inf
    for r, a in zip(rdp, orders, strict=True):
        eps = r - (math.log(delta) + math.log(a)) / (a - 1) + math.log((a - 1) / a)
        best = min(best, eps)
    return best


def rdp_epsilon(events: Iterable[tuple[float, float, int]], delta: float,
                orders: Sequence[int] = INT_ORDERS) -> float:
    """Epsilon of a heterogeneous composition ``[(sigma, q, steps), ...]`` via RDP."""
    events = list(events)
    total = [sum(n * rdp_subsampled_gaussian(q, s, a) for s, q, n in events) for a in orders]
    return rdp_to_epsilon(total, orders, delta)


def gaussian_delta(eps: float, mu: float) -> float:
    """delta(eps) of the Gaussian mechanism with mu = sensitivity / std (Balle & Wang 2018)."""
    from scipy.stats import norm

    return float(norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2))


def gaussian_epsilon(sigma: float, steps: int, delta: float) -> float:
    """Exact epsilon of ``steps`` compositions of a Gaussian with noise multiplier ``sigma``."""
    from scipy.optimize import brentq

    mu = math.sqrt(steps) / sigma
    return float(brentq(lambda e: gaussian_delta(e, mu) - delta, 0.0, 500.0, xtol=1e-12))


def subsampled_gaussian_delta(eps: float, q: float, sigma: float) -> float:
    """Exact delta(eps) of one Poisson-subsampled Gaussian step (both directions)."""
    from scipy.stats import norm

    s = sigma
    # H_eps(P || Q): P(x) > e^eps Q(x) iff x > x1.
    x1 = s * s * math.log((math.exp(eps) - 1 + q) / q) + 0.5
    h1 = ((1 - q) * norm.sf(x1 / s) + q * norm.sf((x1 - 1) / s)
          - math.exp(eps) * norm.sf(x1 / s))
    # H_eps(Q || P): Q(x) > e^eps P(x) iff x < x2 (possible only if e^-eps > 1 - q).
    h2 = 0.0
    if math.exp(-eps) > 1 - q:
        x2 = s * s * math.log((math.exp(-eps) - (1 - q)) / q) + 0.5
        h2 = norm.cdf(x2 / s) - math.exp(eps) * ((1 - q) * norm.cdf(x2 / s)
                                                 + q * norm.cdf((x2 - 1) / s))
    return float(max(h1, h2, 0.0))


def subsampled_gaussian_one_step_epsilon(q: float, sigma: float, delta: float) -> float:
    """Exact epsilon of one Poisson-subsampled Gaussian step at ``delta``."""
    from scipy.optimize import brentq

    if subsampled_gaussian_delta(0.0, q, sigma) <= delta:
        return 0.0
    return float(brentq(lambda e: subsampled_gaussian_delta(e, q, sigma) - delta, 0.0, 200.0,
                        xtol=1e-12))
