"""The distributed discrete Gaussian against independent oracles.

- the sampler's frequencies against ``exp(-x^2 / 2 s^2)`` normalised by brute force (chi-square);
- conditional rounding's norm bound, which plain randomized rounding would break;
- the Renyi bound against the divergence of the sum of n discrete Gaussians, computed
  numerically by convolution (the adversary's best distinguisher is bounded by it);
- accounting helpers against known closed forms, and the modular domain's wrap-around.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special, stats

from ffm_private.privacy.accounting import epsilon_for_events
from ffm_private.privacy.discrete_gaussian import (
    _bernoulli,
    _bernoulli_exp,
    client_share,
    conditional_rounding,
    ddg_epsilon_for,
    ddg_rdp,
    ddg_tau,
    ddg_zcdp_epsilon,
    decode_modular,
    decode_sum,
    encode_modular,
    equivalent_noise_multiplier,
    gaussian_event_for_zcdp,
    modular_sum,
    rounded_norm_bound,
    sample_discrete_gaussian,
)
from ffm_private.privacy.errors import AccountingError
from ffm_private.privacy.secure_random import SecureGenerator


def _rng(label: str) -> SecureGenerator:
    return SecureGenerator.from_secret(bytes(range(32)), label.encode())


def _brute_pmf(sigma_sq: float, reach: int = 400) -> tuple[np.ndarray, np.ndarray]:
    xs = np.arange(-reach, reach + 1)
    w = np.array([math.exp(-float(x) ** 2 / (2 * sigma_sq)) for x in xs])
    return xs, w / math.fsum(w)


# -- exact Bernoulli building blocks ------------------------------------------------------------
def test_exact_bernoulli_rates():
    rng = _rng("bernoulli")
    n = 20_000
    for num, den in [(1, 3), (2, 7), (7, 7), (0, 5)]:
        hits = int(_bernoulli(np.array([num] * n, dtype=object),
                              np.array([den] * n, dtype=object), rng).sum())
        p = num / den
        assert abs(hits - n * p) <= 5 * math.sqrt(n * p * (1 - p)) + 1e-9, (num, den, hits)
    for num, den in [(3, 10), (1, 1), (27, 10), (0, 1)]:
        hits = int(_bernoulli_exp(np.array([num] * n, dtype=object),
                                  np.array([den] * n, dtype=object), rng).sum())
        p = math.exp(-num / den)
        assert abs(hits - n * p) <= 5 * math.sqrt(n * p * (1 - p)) + 1e-9, (num, den, hits)


# -- the sampler --------------------------------------------------------------------------------
@pytest.mark.parametrize("sigma_sq", [0.7, 4, Fraction(5, 2), 30.0])
def test_sampler_matches_the_normalised_pmf_by_chi_square(sigma_sq):
    n = 20_000
    x = sample_discrete_gaussian(sigma_sq, n, _rng(f"pmf-{sigma_sq}"))
    assert x.dtype == np.int64 and x.shape == (n,)
    xs, p = _brute_pmf(float(sigma_sq))
    expected = n * p
    inner = expected >= 5  # a central window; the two tails pooled into one bin each
    lo, hi = xs[inner].min(), xs[inner].max()
    observed = [np.sum(x < lo)] + [np.sum(x == v) for v in range(lo, hi + 1)] + [np.sum(x > hi)]
    want = [expected[xs < lo].sum()] + list(expected[inner]) + [expected[xs > hi].sum()]
    obs, exp_ = np.array(observed, float), np.array(want)
    keep = exp_ > 0
    chi2 = float(((obs[keep] - exp_[keep]) ** 2 / exp_[keep]).sum())
    dof = int(keep.sum()) - 1
    assert stats.chi2.sf(chi2, dof) > 1e-3, (chi2, dof)
    # variance against the exact pmf's (slightly below sigma^2 when sigma is small)
    var = float((p * xs * xs).sum())
    assert x.var() == pytest.approx(var, rel=6 * math.sqrt(2 / n) + 0.01)


def test_sampler_is_a_replayable_function_of_the_stream():
    a = sample_discrete_gaussian(9, (3, 50), _rng("replay"))
    b = sample_discrete_gaussian(9, (3, 50), _rng("replay"))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (3, 50)
    assert not np.array_equal(a, sample_discrete_gaussian(9, (3, 50), _rng("other")))
    with pytest.raises(ValueError, match="sigma_sq"):
        sample_discrete_gaussian(0, 3, _rng("x"))


# -- conditional rounding -------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(dim=st.integers(1, 300), clip=st.floats(0.01, 10.0), ratio=st.floats(0.005, 2.0),
       beta=st.sampled_from([0.0, 0.1, math.exp(-0.5), 0.9, 0.99]), seed=st.integers(0, 2**16),
       on_sphere=st.booleans())
def test_rounding_never_exceeds_the_norm_bound(dim, clip, ratio, beta, seed, on_sphere):
    rng = np.random.default_rng(seed)  # the test's data, not DP noise
    x = rng.normal(size=dim)
    x *= (clip if on_sphere else clip * rng.random()) / np.linalg.norm(x)
    gamma = clip * ratio
    out = conditional_rounding(x, clip, gamma, _rng(f"round-{seed}"), beta)
    bound = rounded_norm_bound(clip, gamma, dim, beta)
    assert out.dtype == np.int64
    assert sum(int(v) ** 2 for v in out) <= bound * bound
    scaled = x / gamma
    assert np.all((out == np.floor(scaled)) | (out == np.ceil(scaled)))


def test_plain_randomized_rounding_would_break_the_bound():
    """Every coordinate halfway between two grid points is the worst case: unconditioned
    rounding lands above the bound in about 18% of tries at beta = 0.9; conditioned never."""
    dim, gamma, beta = 400, 1.0, 0.9
    x = np.full(dim, 0.5)
    clip = float(np.linalg.norm(x))
    bound_sq = rounded_norm_bound(clip, gamma, dim, beta) ** 2
    rng = _rng("plain")
    plain = [float(((rng.random(dim) < 0.5).astype(int) ** 2).sum()) for _ in range(300)]
    assert np.mean(np.array(plain) > bound_sq) > 0.05
    for _ in range(100):
        assert (conditional_rounding(x, clip, gamma, rng, beta) ** 2).sum() <= bound_sq


def test_rounding_refuses_unclipped_input_and_bad_parameters():
    rng = _rng("bad")
    with pytest.raises(ValueError, match="clip it first"):
        conditional_rounding(np.ones(4), 1.0, 0.1, rng)
    with pytest.raises(ValueError, match="beta"):
        rounded_norm_bound(1.0, 0.1, 4, 1.0)
    with pytest.raises(ValueError, match="gamma"):
        rounded_norm_bound(1.0, 0.0, 4)
    assert rounded_norm_bound(1.0, 0.5, 9, 0.0) == pytest.approx(2 + 3)


# -- accounting ------------------------------------------------------------------------------------
def _sum_pmf(s: float, n: int, reach: int = 60) -> np.ndarray:
    xs = np.arange(-reach, reach + 1)
    one = np.exp(-xs.astype(float) ** 2 / (2 * s * s))
    one /= one.sum()
    total = one
    for _ in range(n - 1):
        total = np.convolve(total, one)
    return total


def _renyi(p: np.ndarray, q: np.ndarray, alpha: float) -> float:
    keep = (p > 1e-300) & (q > 1e-300)
    logs = alpha * np.log(p[keep]) + (1 - alpha) * np.log(q[keep])
    return float(special.logsumexp(logs)) / (alpha - 1)


@pytest.mark.parametrize(("s", "n"), [(0.5, 2), (0.5, 5), (0.6, 3), (1.0, 4), (2.0, 3)])
def test_renyi_bound_holds_for_the_exact_sum_of_shares(s, n):
    """The adversary's Renyi divergence between the sum of ``n`` shares and the sum shifted by
    one grid step, computed exactly by convolution, never exceeds Proposition 14's bound."""
    z = _sum_pmf(s, n)
    shifted = np.concatenate([[0.0], z[:-1]])
    for alpha in (1.5, 2, 3, 5, 10, 20):
        assert _renyi(z, shifted, alpha) <= ddg_rdp(alpha, 1.0, s, n, 1) * (1 + 1e-9)
    eps = ddg_zcdp_epsilon(1.0, s, n, 1)
    for alpha in (1.5, 2, 5, 20):
        assert _renyi(z, shifted, alpha) <= alpha * eps * eps / 2 * (1 + 1e-9)


def test_the_tau_term_is_needed():
    """Without tau the continuous-Gaussian formula alpha / (2 n s^2) is broken by the exact
    divergence at s = 1/2, n = 5: the sum of discrete Gaussians is not a discrete Gaussian."""
    s, n = 0.5, 5
    z = _sum_pmf(s, n)
    shifted = np.concatenate([[0.0], z[:-1]])
    assert max(_renyi(z, shifted, a) / (a / (2 * n * s * s)) for a in (2, 5, 10, 20)) > 1.05
    assert ddg_tau(s, n) > 0.5 and ddg_tau(s, 1) == 0.0
    assert ddg_tau(10.0, 1000) < 1e-300


def test_epsilon_closed_forms():
    # n = 1: one discrete Gaussian, Delta^2 / (2 s^2)-zCDP (CKS): eps = Delta / s exactly
    assert ddg_zcdp_epsilon(3.0, 2.0, 1, 100) == pytest.approx(1.5)
    # large s: tau vanishes and eps is the continuous sum's Delta / (sqrt(n) s)
    assert ddg_zcdp_epsilon(5.0, 40.0, 16, 10_000) == pytest.approx(5.0 / (4 * 40.0), rel=1e-12)
    # small s: the first form, sqrt(Delta^2 / (n s^2) + 2 tau d), is the minimum
    s, n, d = 0.6, 3, 1
    tau = ddg_tau(s, n)
    want = min(math.sqrt(1 / (n * s * s) + 2 * tau * d), 1 / (math.sqrt(n) * s) + tau)
    assert ddg_zcdp_epsilon(1.0, s, n, d) == pytest.approx(want)
    with pytest.raises(ValueError, match="1/2"):
        ddg_zcdp_epsilon(1.0, 0.4, 3, 1)
    # from original units: Delta from the rounding bound, s = sigma / gamma
    c, gamma, sigma, n, d = 1.0, 0.01, 0.5, 10, 1000
    delta = rounded_norm_bound(c, gamma, d)
    assert ddg_epsilon_for(c, gamma, sigma, n, d) == pytest.approx(
        delta / (math.sqrt(n) * sigma / gamma), rel=1e-9)
    assert delta > c / gamma  # rounding inflates the sensitivity


def test_gaussian_event_is_for_rdp_only():
    rho = 0.02
    assert equivalent_noise_multiplier(rho) == pytest.approx(5.0)
    event = gaussian_event_for_zcdp(rho, "rdp", steps=3)
    assert (event.noise_multiplier, event.sample_rate, event.steps) == (5.0, 1.0, 3)
    # RDP of that Gaussian is 3 alpha rho: the (eps, delta) conversion can be no worse than the
    # classic zCDP one, rho' + 2 sqrt(rho' ln(1/delta)) with rho' = 3 rho (Bun & Steinke 2016)
    delta = 1e-5
    eps = epsilon_for_events([event], delta, "rdp")
    assert 0 < eps <= 3 * rho + 2 * math.sqrt(3 * rho * math.log(1 / delta))
    for name in ("prv", "gdp"):
        with pytest.raises(AccountingError):
            gaussian_event_for_zcdp(rho, name)


# -- the modular domain --------------------------------------------------------------------------
def test_modular_domain_wraps_instead_of_clamping():
    big = np.array([2**31 + 5, -(2**31) - 7, 3, -3], dtype=np.int64)
    enc = encode_modular(big)
    assert enc.min() >= 0 and enc.max() < 2**32
    np.testing.assert_array_equal(decode_modular(enc), [-(2**31) + 5, 2**31 - 7, 3, -3])
    # partial sums overflow, the true sum is in range: the decoded sum is exact
    shares = [np.array([2**31 - 1, -5]), np.array([2**31 - 1, -(2**31) + 10]),
              np.array([-(2**32) + 10, 2**31 - 1])]
    true = sum(s.astype(object) for s in shares)
    np.testing.assert_array_equal(decode_modular(modular_sum(shares)), np.array(true, np.int64))
    with pytest.raises(ValueError, match="integers"):
        encode_modular(np.array([0.5]))
    with pytest.raises(ValueError, match="bits"):
        encode_modular(np.array([1]), bits=64)


def test_client_shares_sum_to_the_rounded_sum_plus_integer_noise():
    n, d, c, gamma, sigma = 8, 64, 1.0, 1e-3, 0.02
    data = np.random.default_rng(0).normal(size=(n, d))
    data *= c / np.linalg.norm(data, axis=1, keepdims=True)
    shares = [client_share(x, clip_norm=c, gamma=gamma, local_sigma=sigma, rng=_rng(f"c{i}"))
              for i, x in enumerate(data)]
    assert all(s.dtype == np.int64 and s.min() >= 0 and s.max() < 2**32 for s in shares)
    total = decode_sum(modular_sum(shares), gamma)
    err = total - data.sum(axis=0)
    # noise std sqrt(n) sigma (+ rounding, at most gamma per client and coordinate)
    assert abs(err.std() - math.sqrt(n) * sigma) < 0.25 * math.sqrt(n) * sigma
    assert np.all(np.abs(err) < 8 * math.sqrt(n) * sigma + n * gamma)
