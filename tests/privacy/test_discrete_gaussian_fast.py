"""The 64-bit discrete Gaussian sampler against the exact pmf, the Python-integer path, and itself.

- both paths' frequencies against ``exp(-x^2 / 2 s^2)`` normalised (chi-square and total
  variation on fixed seeds), at sigma 0.5, 0.6, 2, 30 and the first run's 1.08e6 grid steps;
- the same check fails for planted bugs (the acceptance test's integer part skipped, a
  variance 10% off, the raw discrete Laplace proposals): it can tell;
- the plan: the variance actually sampled is the requested one or above it (never below),
  every product fits in 64 bits, and the path switches where the plan stops fitting;
- the building blocks (uniforms by rejection, Bernoulli(exp(-x)), the geometric) by rate.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats

from ffm_private.privacy import discrete_gaussian as ddg
from ffm_private.privacy.secure_random import SecureGenerator

QUICKSTART_S = 1084498.364685804
"""The first run's per-client std in grid steps (``ffm-private train``: local_sigma / gamma =
0.0329309681 / 3.03651616e-08, from DistributedDiscreteGaussian.calibrated(2.0166015625, 0.2,
150, modulus=2**32, dim=4096, max_clients=300))."""

N = 20_000


def _rng(label: str) -> SecureGenerator:
    return SecureGenerator.from_secret(bytes(range(32)), label.encode())


# -- the oracle: exact bin probabilities --------------------------------------------------------
def _weight_sum(s2: float, lo: int, hi: int) -> float:
    """``sum_{x=lo}^{hi} exp(-x^2 / (2 s2))`` for ``0 <= lo <= hi``, in chunks."""
    total = []
    for start in range(lo, hi + 1, 1 << 20):
        xs = np.arange(start, min(hi, start + (1 << 20) - 1) + 1, dtype=np.float64)
        total.append(float(np.exp(-xs * xs / (2 * s2)).sum()))
    return math.fsum(total)


@functools.cache
def _bins(s2: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer bin edges ``e`` (bin i is ``e[i] <= x < e[i+1]``, outer bins open) and the exact
    probabilities of ``N_Z(0, s2)`` on them."""
    sigma = math.sqrt(s2)
    if sigma <= 60:  # one bin per integer where n p >= 5, the two tails pooled
        reach = int(40 * sigma + 40)
        xs = np.arange(-reach, reach + 1)
        p = ddg.discrete_gaussian_pmf(s2, xs)
        lo, hi = xs[n * p >= 5].min(), xs[n * p >= 5].max()
        edges = np.concatenate([[-np.inf], np.arange(lo, hi + 2), [np.inf]])
        probs = [p[xs < lo].sum(), *p[(xs >= lo) & (xs <= hi)], p[xs > hi].sum()]
        return edges, np.array(probs)
    # large sigma: 39 bins of about equal mass, each summed exactly over its integers; by
    # symmetry a bin [a, b) below 0 has the mass of the integers -b + 1 .. -a
    cuts = np.unique(np.round(sigma * stats.norm.ppf(np.arange(1, 20) / 40)).astype(np.int64))
    reach = int(12 * sigma)  # the mass beyond 12 sigma is below 1e-31
    neg = [_weight_sum(s2, -int(cuts[0]) + 1, reach)]  # (-inf, cuts[0])
    neg += [_weight_sum(s2, -int(b) + 1, -int(a)) for a, b in itertools.pairwise(cuts)]
    mid = 1 + 2 * _weight_sum(s2, 1, -int(cuts[-1]))  # [cuts[-1], -cuts[-1]]
    total = 1 + 2 * _weight_sum(s2, 1, reach)
    probs = np.array(neg + [mid] + neg[::-1]) / total
    edges = np.concatenate([[-np.inf], cuts, -cuts[::-1] + 1, [np.inf]])
    return edges, probs


def _check(x: np.ndarray, sigma_sq: Fraction) -> tuple[float, float, float]:
    """The draws ``x`` against ``N_Z(0, sigma_sq)`` on the bins of :func:`_bins`: the
    chi-square p-value, the total variation, and the total variation an exact sampler has on
    average, ``sum_i sqrt(p_i (1 - p_i) / (2 pi n))`` (the mean of ``|Binomial - n p| / n``)."""
    edges, p = _bins(float(sigma_sq), x.size)
    assert p.sum() == pytest.approx(1.0, abs=1e-9)
    idx = np.searchsorted(edges, x, side="right") - 1
    obs = np.bincount(idx, minlength=p.size).astype(float)
    want = x.size * p
    chi2 = float(((obs - want) ** 2 / want).sum())
    tv = 0.5 * float(np.abs(obs / x.size - p).sum())
    tv_null = float(np.sqrt(p * (1 - p) / (2 * math.pi * x.size)).sum())
    return float(stats.chi2.sf(chi2, p.size - 1)), tv, tv_null


def _exact_moments(sigma_sq: Fraction) -> tuple[float, float]:
    """Variance and fourth moment of ``N_Z(0, sigma_sq)`` (float64)."""
    s2 = float(sigma_sq)
    if s2 > 3600:  # within 1e-300 of the continuous Gaussian's (Poisson summation)
        return s2, 3 * s2 * s2
    reach = int(40 * math.sqrt(s2) + 40)
    xs = np.arange(-reach, reach + 1).astype(np.float64)
    p = ddg.discrete_gaussian_pmf(s2, xs)
    return float((p * xs**2).sum()), float((p * xs**4).sum())


SIGMAS = [0.5, 0.6, 2.0, 30.0, QUICKSTART_S]


# -- the distribution, both paths ---------------------------------------------------------------
@pytest.mark.parametrize("method", ["fast", "bigint"])
@pytest.mark.parametrize("sigma", SIGMAS)
def test_both_paths_match_the_exact_pmf(sigma, method):
    sigma_sq = Fraction(sigma) ** 2  # as the mechanism asks: the float std's exact square
    x = ddg.sample_discrete_gaussian(sigma_sq, N, _rng(f"pmf-{method}-{sigma}"), method=method)
    assert x.dtype == np.int64 and x.shape == (N,)
    sampled = ddg.sampled_sigma_sq(sigma_sq) if method == "fast" else sigma_sq
    p_value, tv, tv_null = _check(x, sampled)
    assert p_value > 1e-4, (p_value, tv)
    assert tv < 3 * tv_null, (tv, tv_null)  # chi-square is the sharp test; TV a sanity bound
    # mean 0, variance the exact pmf's (below sigma^2, visibly so at sigma = 0.5)
    var, m4 = _exact_moments(sampled)
    assert var <= float(sampled) * (1 + 1e-12)  # equal to float precision from sigma = 2
    assert abs(x.mean()) <= 5 * math.sqrt(var / N)
    assert abs(x.var() - var) <= 5 * math.sqrt((m4 - var * var) / N)
    if sigma == 0.5:
        assert x.var() < 0.25 - 0.02  # var 0.215: the discrete Gaussian's is below sigma^2


def test_the_check_catches_planted_bugs(monkeypatch):
    """The same check fails a sampler that is subtly wrong, so its passes above mean something."""
    for sigma in (2.0, QUICKSTART_S):
        s2 = Fraction(sigma) ** 2
        # (a) a variance 10% too large
        x = ddg.sample_discrete_gaussian(s2 * Fraction(11, 10), N, _rng(f"bug-a-{sigma}"))
        assert _check(x, s2)[0] < 1e-6
        # (b) the raw discrete Laplace proposals, never accepted or rejected
        plan = ddg.fast_plan(s2)
        y = ddg._fast_discrete_laplace(plan.t, 3 * N, _rng(f"bug-b-{sigma}"))[:N]
        assert _check(y, s2)[0] < 1e-6
    # (c) the acceptance test's integer part skipped (exp(-x) tested on x mod 1 only)
    with monkeypatch.context() as m:
        m.setattr(ddg, "_fast_bernoulli_exp_whole", lambda w, rng: np.ones(w.size, dtype=bool))
        for sigma in (2.0, QUICKSTART_S):
            s2 = Fraction(sigma) ** 2
            x = ddg.sample_discrete_gaussian(s2, N, _rng(f"bug-c-{sigma}"), method="fast")
            assert _check(x, s2)[0] < 1e-6


def test_far_proposals_take_the_python_integer_test_and_stay_exact():
    """Proposals beyond ``y_fast`` (in production: probability < e^-47) are tested on Python
    integers; with ``y_fast`` forced down to 1, most proposals take that branch."""
    s2 = Fraction(4)
    plan = dataclasses.replace(ddg.fast_plan(s2), y_fast=1)
    x = ddg._fast_sample(plan, N, _rng("far"))
    assert _check(x, s2)[0] > 1e-4
    assert np.mean(np.abs(x) > 1) > 0.4  # the far branch was exercised


def test_the_fast_path_is_a_replayable_function_of_the_stream():
    s2 = Fraction(QUICKSTART_S) ** 2
    a = ddg.sample_discrete_gaussian(s2, (4, 64), _rng("replay"), method="fast")
    b = ddg.sample_discrete_gaussian(s2, (4, 64), _rng("replay"))
    np.testing.assert_array_equal(a, b)  # auto takes the fast path here
    assert a.shape == (4, 64) and a.dtype == np.int64
    assert not np.array_equal(a, ddg.sample_discrete_gaussian(s2, (4, 64), _rng("other")))
    assert ddg.sample_discrete_gaussian(s2, 0, _rng("empty")).shape == (0,)


# -- the plan: what is sampled, and which path ----------------------------------------------------
PLAN_VALUES = [Fraction(1, 4), 0.25, 0.36, 0.49, 0.5, 0.7, 1, 2.25, 4, Fraction(5, 2), 30.0,
               900, 12345.678, Fraction(10**9 + 7, 3), 1e10, Fraction(QUICKSTART_S) ** 2,
               QUICKSTART_S**2, 2.0**50, 0.01, 0.003, 1e-3, 1e-6, 9.2e7**2, 1e20]


@pytest.mark.parametrize("value", PLAN_VALUES)
def test_the_plan_samples_at_least_the_requested_variance_in_64_bits(value):
    requested = Fraction(value)
    plan = ddg.fast_plan(value)
    if plan is None:
        assert ddg.sampled_sigma_sq(value) == requested  # the Python-integer path: exact
        return
    s2 = plan.sigma_sq
    assert requested <= s2 <= requested * (1 + Fraction(1, 1 << 20))  # up, never down
    if math.sqrt(float(requested)) >= 0.5:
        assert float(s2 / requested - 1) < 1e-7
    assert plan.t == math.isqrt(requested.numerator // requested.denominator) + 1
    assert Fraction(plan.mu_num, plan.mu_den) == s2 / plan.t
    assert plan.den == 2 * s2 * plan.mu_den**2 and plan.den < 2**62
    # |g| = |mu_den |y| - mu_num| < 2^32 for every |y| <= y_fast, so g^2 < 2^64
    assert plan.mu_num < 2**32 and plan.mu_den * plan.y_fast - plan.mu_num < 2**32
    assert plan.y_fast >= 48 * plan.t
    assert ddg.sampled_sigma_sq(value) == s2


def test_a_variance_that_fits_is_sampled_exactly():
    for value in (Fraction(1, 4), 0.5, 4, Fraction(5, 2), 900, 10**6, Fraction(10**6 + 1, 8)):
        assert ddg.sampled_sigma_sq(value) == Fraction(value)
    # exact only while mu = sigma_sq / t has a small denominator: here it is 54774, rounded
    value = Fraction(10**9 + 7, 3)
    assert 0 < ddg.sampled_sigma_sq(value) - value < value * Fraction(1, 10**7)
    # a float std squared (~100-bit numerator) is rounded up, by under 1e-8 relative here
    s2 = Fraction(QUICKSTART_S) ** 2
    assert s2.denominator >= 2**64
    assert 0 < ddg.sampled_sigma_sq(s2) - s2 < s2 * Fraction(1, 10**8)


def _boundary() -> tuple[float, float]:
    """Adjacent float stds: the largest with a fast plan, and the next one (none)."""
    lo, hi = 6e7, 1.2e8
    assert ddg.fast_plan(lo * lo) is not None and ddg.fast_plan(hi * hi) is None
    while math.nextafter(lo, hi) < hi:
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if ddg.fast_plan(Fraction(mid) ** 2) is not None else (lo, mid)
    return lo, hi


def test_the_path_switches_where_the_plan_stops_fitting():
    lo, hi = _boundary()
    assert 9e7 < lo < 9.2e7  # 48 t <= 2^32 - 1 + ceil(s^2 / t): s about 2^32 / 47
    t = math.floor(lo) + 1
    assert 48 * t <= 2**32 - 1 + math.ceil(Fraction(lo) ** 2 / t)
    t = math.floor(hi) + 1
    assert 48 * t > 2**32 - 1 + math.ceil(Fraction(hi) ** 2 / t)
    for s, fast in ((lo, True), (hi, False)):
        s2 = Fraction(s) ** 2
        auto = ddg.sample_discrete_gaussian(s2, 40, _rng(f"edge-{s}"))
        ref = ddg.sample_discrete_gaussian(s2, 40, _rng(f"edge-{s}"),
                                           method="fast" if fast else "bigint")
        np.testing.assert_array_equal(auto, ref)
    with pytest.raises(ValueError, match="fast-path plan"):
        ddg.sample_discrete_gaussian(Fraction(hi) ** 2, 4, _rng("x"), method="fast")
    # below: a variance that would need more than 2^-20 of rounding goes to Python integers;
    # every std from 0.2 on (KLS needs 1/2) has a plan
    assert all(ddg.fast_plan(float(s) ** 2) is not None for s in np.linspace(0.2, 3, 400))
    assert ddg.fast_plan(0.01) is not None and ddg.fast_plan(1e-3) is None
    auto = ddg.sample_discrete_gaussian(1e-3, 40, _rng("tiny"))
    np.testing.assert_array_equal(auto, ddg.sample_discrete_gaussian(1e-3, 40, _rng("tiny"),
                                                                     method="bigint"))


def test_the_rounding_only_lowers_the_true_zcdp_below_the_accounted():
    """The accounting uses the planned std; the sampled one is larger, and KLS's bound falls
    in ``s``: the claim holds for the noise actually drawn (first run's parameters)."""
    z, c, n, dim, gamma = 2.0166015625, 0.2, 150, 4096, 3.036516163113133e-08
    local_sigma = ddg.calibrate_local_sigma(z, c, gamma, n, dim)
    s = local_sigma / gamma
    assert s == pytest.approx(QUICKSTART_S, rel=1e-6)
    sampled = ddg.sampled_sigma_sq(Fraction(s) ** 2)
    assert sampled > Fraction(s) ** 2
    eps_planned = ddg.ddg_epsilon_for(c, gamma, local_sigma, n, dim)
    eps_sampled = ddg.ddg_epsilon_for(c, gamma, math.sqrt(sampled) * gamma, n, dim)
    assert eps_sampled <= eps_planned <= 1 / z


@pytest.mark.parametrize("method", ddg.SAMPLING_METHODS)
def test_bad_input_is_refused_on_every_path(method):
    rng = _rng("bad")
    for bad in (0, -1.0, Fraction(-1, 3), float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="sigma_sq"):
            ddg.sample_discrete_gaussian(bad, 3, rng, method=method)
    with pytest.raises(ValueError, match="size"):
        ddg.sample_discrete_gaussian(4, -1, rng, method=method)
    with pytest.raises(ValueError, match="method"):
        ddg.sample_discrete_gaussian(4, 3, rng, method="float")


# -- building blocks -------------------------------------------------------------------------
def _rate_ok(hits: int, n: int, p: float) -> bool:
    return abs(hits - n * p) <= 5 * math.sqrt(n * p * (1 - p)) + 1e-9


def test_uniforms_below_a_span_are_exact_and_in_range():
    rng = _rng("below")
    assert np.array_equal(ddg._uniform_below(rng, 1, 5), np.zeros(5))
    u = ddg._uniform_below(rng, 3, 30_000)  # 2-bit words: 1 in 4 rejected
    assert u.dtype == np.int64 and set(np.unique(u)) == {0, 1, 2}
    assert stats.chisquare(np.bincount(u)).pvalue > 1e-4
    for span in (2**32, 2**32 + 1, 3 * 2**40 + 1, 2**63):
        u = ddg._uniform_below(rng, span, 20_000)
        assert u.min() >= 0 and u.max() < span
        # the top half and the bottom bit are fair (a modulo or a mask bug would skew them)
        assert _rate_ok(int((u >= span // 2).sum()), u.size, (span - span // 2) / span)
        assert _rate_ok(int((u % 2).sum()), u.size, 0.5)
    u = ddg._uniform_below(rng, 3 * 2**61 + 1, 20_000)  # 63-bit mask, 1 in 4 rejected
    assert _rate_ok(int((u >= 2**62).sum()), u.size, (3 * 2**61 + 1 - 2**62) / (3 * 2**61 + 1))


def test_fast_bernoulli_exp_rates():
    rng = _rng("bexp")
    n = 20_000
    for r, d in [(0, 5), (1, 3), (5, 5), (7, 10), (1, 1), (2**61, 2**62 + 1)]:  # last: d k > 2^63
        hits = int(ddg._fast_bernoulli_exp_frac(np.full(n, r, dtype=np.int64), d, rng).sum())
        assert _rate_ok(hits, n, math.exp(-r / d)), (r, d, hits)
    for w in (0, 1, 2, 3, 40):
        hits = int(ddg._fast_bernoulli_exp_whole(np.full(n, w, dtype=np.int64), rng).sum())
        assert _rate_ok(hits, n, math.exp(-w)), (w, hits)
    assert not ddg._fast_bernoulli_exp_whole(np.full(50, 10**15), rng).any()  # fast: dies early


def test_fast_geometric_has_the_geometric_pmf():
    v = ddg._fast_geometric(30_000, _rng("geom"))
    q = math.exp(-1)
    counts = np.bincount(np.minimum(v, 8), minlength=9).astype(float)
    want = np.array([(1 - q) * q**k for k in range(8)] + [q**8]) * v.size
    assert stats.chisquare(counts, want).pvalue > 1e-4


def test_squared_norm_is_exact_at_any_size():
    rng = np.random.default_rng(1)  # test data, not noise
    for scale in (10, 2**20, 2**31, 2**40, 2**62):
        v = rng.integers(-scale, scale, 4096)
        assert ddg._squared_norm(v) == sum(int(a) ** 2 for a in v)
    v = np.array([-(2**63), 2**63 - 1])
    assert ddg._squared_norm(v) == 2**126 + (2**63 - 1) ** 2
    assert ddg._squared_norm(np.zeros(0, dtype=np.int64)) == 0
