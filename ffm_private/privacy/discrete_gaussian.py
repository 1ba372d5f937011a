"""The distributed discrete Gaussian: integer noise shares for secure aggregation.

References: P. Kairouz, Z. Liu, T. Steinke, "The Distributed Discrete Gaussian Mechanism for
Federated Learning with Secure Aggregation", ICML 2021 (arXiv:2102.06387), called KLS below;
C. Canonne, G. Kamath, T. Steinke, "The Discrete Gaussian for Differential Privacy", NeurIPS
2020 (arXiv:2004.00010), called CKS.

One client's share (KLS, Algorithm 1, without the random rotation):

1. its update, already clipped to L2 norm ``C``, is scaled to the integer grid of step
   ``gamma`` and rounded by :func:`conditional_rounding`, whose output norm never exceeds
   :func:`rounded_norm_bound` (the sensitivity ``Delta`` in grid units);
2. it adds ``d`` independent discrete Gaussians ``N_Z(0, s^2)`` (:func:`sample_discrete_gaussian`,
   exact: integer arithmetic only, on the secure generator), ``s = local_sigma / gamma``; the
   fast path works in 64-bit words and may round ``s^2`` *up* by under 1e-7 relative
   (:func:`sampled_sigma_sq`), which only lowers the true zCDP below the accounted one (every
   bound below decreases in ``s``);
3. it reduces the result modulo ``2^bits`` (:func:`encode_modular`): wrap-around, never a clamp.

The server sums the shares modulo ``2^bits`` and lifts the sum to the centred range
(:func:`decode_modular`, :func:`decode_sum`). Nothing is floating point after step 1, so the
release has no floating-point leakage and no unaccounted clamp.

Privacy (:func:`ddg_rdp`, :func:`ddg_zcdp_epsilon`): with at least ``n`` honest shares in the
sum and a neighbouring input that moves one client's rounded vector by at most ``Delta`` in L2
(that client's rounded vector replaced by zero, its noise share unchanged), KLS Proposition 14
bounds the Renyi divergence of order ``alpha >= 1`` by
``min(alpha Delta^2 / (2 n s^2) + tau d, (alpha / 2) (Delta / (sqrt(n) s) + tau sqrt(d))^2)``
with ``tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 s^2 k / (k + 1))``, which gives ``eps^2 / 2``-zCDP
for ``eps = min(sqrt(Delta^2 / (n s^2) + 2 tau d), Delta / (sqrt(n) s) + tau sqrt(d))``
(KLS Theorem 1). More than ``n`` shares only add independent noise (post-processing).

Calibration (:func:`calibrate_local_sigma`): a run plans an equivalent Gaussian noise
multiplier ``z`` (the RDP accountant composes ``alpha / (2 z^2)`` per participation); the
per-client std is then the smallest whose zCDP ``eps`` is at most ``1 / z``, i.e. whose
``rho = eps^2 / 2`` is at most ``1 / (2 z^2)``, so every Renyi divergence is at most the
planned Gaussian's. The grid step (:func:`default_gamma`) is the finest that keeps the sum of
``max_clients`` shares inside the modulus (true values, plus 8 standard deviations of the
summed noise), so the centred lift of the modular sum is the integer sum.

Not implemented here: the random rotation (flattening) of KLS, which only reduces how often a
coordinate of the true sum wraps around (utility, not privacy).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from ffm_private.privacy.accounting import GaussianEvent, check_accountant, check_steps
from ffm_private.privacy.errors import AccountingError, PrivacyError
from ffm_private.privacy.secure_random import SecureGenerator

DEFAULT_BETA = math.exp(-0.5)
"""The conditional-rounding constant KLS use: each try is accepted with probability >= 1 - beta."""

MODULUS_BITS = 32
"""Shares live in ``Z_{2^32}`` unless told otherwise."""

_MAX_ROUNDING_TRIES = 1000


class RoundingFailedError(PrivacyError):
    """Conditional rounding found no rounding inside the norm bound (input not clipped?)."""


# -- exact Bernoulli draws ---------------------------------------------------------------------
def _as_objects(values: Any) -> np.ndarray:
    return np.array([int(v) for v in np.ravel(values)], dtype=object)


def _bernoulli(num: np.ndarray, den: np.ndarray, rng: SecureGenerator) -> np.ndarray:
    """Exact ``Bernoulli(num / den)`` per element (``0 <= num <= den``, Python ints).

    Compares a uniform ``U = 0.u1 u2 ...`` (64-bit digits from ``rng``) with ``num / den``
    digit by digit: ``u1 < floor(2^64 num / den)`` decides 1, ``>`` decides 0, equality
    (probability ``2^-64``) moves to the next digit with the remainder. No rounding anywhere.
    """
    out = np.zeros(num.size, dtype=bool)
    todo = np.arange(num.size)
    num, den = num.copy(), den.copy()
    while todo.size:
        digits = np.frombuffer(rng.bytes(8 * todo.size), dtype="<u8").astype(object)
        scaled = num[todo] * (1 << 64)
        q = scaled // den[todo]
        less, more = digits < q, digits > q
        out[todo[less.astype(bool)]] = True
        same = ~(less.astype(bool) | more.astype(bool))
        num[todo[same]] = (scaled - q * den[todo])[same]
        todo = todo[same]
    return out


def _bernoulli_exp_small(num: np.ndarray, den: np.ndarray, rng: SecureGenerator) -> np.ndarray:
    """Exact ``Bernoulli(exp(-num / den))`` for ``0 <= num / den <= 1`` (CKS Algorithm 1)."""
    out = np.zeros(num.size, dtype=bool)
    todo = np.arange(num.size)
    k = 1
    while todo.size:
        a = _bernoulli(num[todo], den[todo] * k, rng)
        out[todo[~a]] = k % 2 == 1  # stopped at K = k: exp(-gamma) is P(K odd)
        todo = todo[a]
        k += 1
    return out


def _bernoulli_exp(num: np.ndarray, den: np.ndarray, rng: SecureGenerator) -> np.ndarray:
    """Exact ``Bernoulli(exp(-num / den))`` for any ``num / den >= 0`` (CKS Algorithm 1)."""
    whole = np.array([int(v) for v in num // den], dtype=np.int64)
    alive = np.ones(num.size, dtype=bool)
    one_num, one_den = _as_objects(np.ones(num.size)), _as_objects(np.ones(num.size))
    for j in range(int(whole.max()) if whole.size else 0):
        idx = np.flatnonzero(alive & (whole > j))
        if idx.size == 0:
            break
        alive[idx] = _bernoulli_exp_small(one_num[idx], one_den[idx], rng)  # exp(-1) each
    idx = np.flatnonzero(alive)
    if idx.size:
        alive[idx] = _bernoulli_exp_small(num[idx] % den[idx], den[idx], rng)
    return alive


# -- the discrete Gaussian -----------------------------------------------------------------------
def _sigma_sq_fraction(sigma_sq: int | float | Fraction) -> Fraction:
    if isinstance(sigma_sq, bool | np.bool_) or not isinstance(sigma_sq, numbers.Real):
        raise ValueError(f"sigma_sq = {sigma_sq!r} must be a number")
    if not isinstance(sigma_sq, numbers.Rational) and not math.isfinite(float(sigma_sq)):
        raise ValueError(f"sigma_sq = {sigma_sq!r} must be a finite number > 0")
    value = Fraction(sigma_sq)  # a float is taken exactly (it is a dyadic rational)
    if not value > 0 or not math.isfinite(float(value)):
        raise ValueError(f"sigma_sq = {sigma_sq!r} must be a finite number > 0")
    return value


def _discrete_laplace(t: int, m: int, rng: SecureGenerator) -> np.ndarray:
    """Up to ``m`` exact draws of the discrete Laplace with scale ``t`` (CKS Algorithm 2)."""
    u = rng.integers(0, t, m)
    keep = _bernoulli_exp_small(_as_objects(u), _as_objects(np.full(m, t)), rng)
    u = u[keep]
    v = np.zeros(u.size, dtype=np.int64)
    todo = np.arange(u.size)
    ones = _as_objects(np.ones(u.size))
    while todo.size:  # V geometric: count successes of Bernoulli(exp(-1))
        a = _bernoulli_exp_small(ones[todo], ones[todo], rng)
        v[todo[a]] += 1
        todo = todo[a]
    x = u + t * v
    negative = rng.integers(0, 2, x.size).astype(bool)
    ok = ~(negative & (x == 0))  # -0 would double the mass at 0
    return np.where(negative, -x, x)[ok]


def _shape_of(size: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(size, bool):
        raise ValueError("size must be an integer or a sequence of integers")
    shape = (int(size),) if isinstance(size, int | np.integer) else tuple(int(s) for s in size)
    if any(s < 0 for s in shape):
        raise ValueError(f"size = {size!r} must not be negative")
    return shape


def _bigint_sample(s2: Fraction, n: int, rng: SecureGenerator) -> np.ndarray:
    """CKS Algorithm 3 on Python integers (any exact ``s2``): the reference path."""
    a, b = s2.numerator, s2.denominator
    t = math.isqrt(a // b) + 1  # floor(sigma) + 1, exactly
    den = 2 * a * b * t * t  # (|y| - s2/t)^2 / (2 s2) = (|y| b t - a)^2 / (2 a b t^2)
    parts: list[np.ndarray] = []
    have = 0
    while have < n:
        need = n - have
        y = _discrete_laplace(t, max(2 * need, 16), rng)
        gap = _as_objects(np.abs(y)) * (b * t) - a
        accept = _bernoulli_exp(gap * gap, _as_objects(np.full(y.size, 1)) * den, rng)
        got = y[accept][:need]
        parts.append(got)
        have += got.size
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


# -- the fast path: the same algorithms on 64-bit words ------------------------------------------
_FAST_GAP_LIMIT = 1 << 32
"""``|g| < 2^32`` keeps ``g^2`` (the acceptance test's numerator) inside a uint64."""

_FAST_DEN_LIMIT = 1 << 62
"""The acceptance test's denominator stays below this (uniforms on ``[0, den k)`` in int64)."""

_FAST_REACH = 48
"""Proposals up to ``|y| = 48 t`` must be computable in uint64; further ones (probability
below ``e^-47`` per proposal) take the Python-integer path, which is exact for any ``|y|``."""

_FAST_MAX_EXCESS = Fraction(1, 1 << 20)
"""The fast path rounds ``sigma_sq`` up by at most this relative amount (about 9.5e-7), else
the Python-integer path samples the requested value exactly (it matters only for ``sigma``
below 0.2, where some values need more; every ``sigma >= 1/2`` is rounded by under 1e-7)."""

_BEXP_CHUNK = 32
"""``Bernoulli(exp(-w))`` for an integer ``w``: at most this many ``Bernoulli(exp(-1))`` per try."""


@dataclass(frozen=True)
class FastPlan:
    """How the fast path samples ``N_Z(0, sigma_sq)``: every quantity an integer below 2^63.

    CKS Algorithm 3 with discrete Laplace proposals of scale ``t`` accepts ``y`` with
    probability ``exp(-(|y| - mu)^2 / (2 sigma_sq))``, ``mu = sigma_sq / t``; written over
    integers that is ``exp(-g^2 / den)`` with ``g = mu_den |y| - mu_num`` and
    ``den = 2 sigma_sq mu_den^2`` (an integer). ``sigma_sq`` is the variance parameter that is
    sampled: the requested one when these integers fit, else the requested one rounded *up*
    (see :func:`fast_plan`).
    """

    sigma_sq: Fraction
    t: int
    mu_num: int
    mu_den: int
    den: int
    y_fast: int  # |y| <= y_fast: |g| < 2^32, so g^2 fits in a uint64


def _plan_for(s2: Fraction, t: int) -> FastPlan | None:
    mu = s2 / t
    mn, md = mu.numerator, mu.denominator
    den = 2 * s2 * md * md
    if den.denominator != 1:  # cannot happen (s2's denominator divides md), kept as a guard
        return None
    y_fast = (_FAST_GAP_LIMIT - 1 + mn) // md
    if den.numerator >= _FAST_DEN_LIMIT or mn >= _FAST_GAP_LIMIT or y_fast < _FAST_REACH * t:
        return None
    return FastPlan(s2, t, mn, md, int(den.numerator), int(y_fast))


def fast_plan(sigma_sq: int | float | Fraction) -> FastPlan | None:
    """The fast path's plan for ``sigma_sq``, or ``None`` when only Python integers will do.

    ``t = floor(sigma) + 1`` of the requested value (CKS's choice; any integer ``t >= 1`` keeps
    Algorithm 3 exact, it only sets the acceptance rate). The requested ``sigma_sq`` is kept
    when its integers fit. Otherwise (a float's dyadic rational squared has a ~100-bit
    numerator) it is rounded **up** to ``t c / q`` with ``q`` the largest power of two that
    fits and ``c = ceil(sigma_sq q / t)``: then ``mu = c / q``, and the relative excess is
    below ``t / (q sigma_sq)``, under 1e-7 for every ``sigma >= 1/2`` (more noise, never
    less). ``None`` when the excess would pass :data:`_FAST_MAX_EXCESS` (only for some
    ``sigma`` below 0.2) or when even ``q = 1`` does not fit (``sigma`` beyond about 9.1e7).
    """
    s2 = _sigma_sq_fraction(sigma_sq)
    t = math.isqrt(s2.numerator // s2.denominator) + 1
    exact = _plan_for(s2, t)
    if exact is not None:
        return exact
    if 2 * s2 >= _FAST_DEN_LIMIT:
        return None
    # md = q / gcd(c, q) <= q and md (REACH t) <= 2^32 - 1 + mn: start a little above that q
    top = (_FAST_GAP_LIMIT // (_FAST_REACH * t)).bit_length() + 1
    for j in range(top, -1, -1):
        q = 1 << j
        c = -((-s2.numerator * q) // (s2.denominator * t))  # ceil(s2 q / t)
        plan = _plan_for(Fraction(t * c, q), t)
        if plan is not None:
            return plan if plan.sigma_sq - s2 <= s2 * _FAST_MAX_EXCESS else None
    return None


def sampled_sigma_sq(sigma_sq: int | float | Fraction) -> Fraction:
    """The exact variance parameter :func:`sample_discrete_gaussian` samples for ``sigma_sq``
    (``method = "auto"``): ``>= sigma_sq``, equal when the fast path can keep it exactly or the
    Python-integer path is taken."""
    plan = fast_plan(sigma_sq)
    return plan.sigma_sq if plan is not None else _sigma_sq_fraction(sigma_sq)


def _uniform_below(rng: SecureGenerator, span: int, n: int) -> np.ndarray:
    """``n`` exact uniforms on ``[0, span)`` (``1 <= span <= 2^63``), int64.

    Rejection sampling on words of ``rng.bytes``: 32-bit words when ``span <= 2^32``, else
    64-bit, masked to the bit length of ``span - 1`` (each kept word is exactly uniform:
    no modulo bias); the kept words are taken in stream order.
    """
    if span == 1:
        return np.zeros(n, dtype=np.int64)
    bits = (span - 1).bit_length()
    dtype = "<u4" if bits <= 32 else "<u8"
    width = 4 if bits <= 32 else 8
    mask = np.array((1 << bits) - 1, dtype=dtype)
    limit = np.array(span, dtype=np.uint64)
    parts: list[np.ndarray] = []
    have = 0
    while have < n:
        need = n - have
        m = need * (1 << bits) // span + need // 16 + 16  # acceptance span / 2^bits >= 1/2
        words = np.frombuffer(rng.bytes(width * m), dtype=dtype) & mask
        kept = words[words < limit][:need]
        parts.append(kept)
        have += kept.size
    out = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return out.astype(np.int64)


def _fast_bernoulli_exp_frac(r: np.ndarray, d: int, rng: SecureGenerator) -> np.ndarray:
    """Exact ``Bernoulli(exp(-r / d))`` per element (int64 ``0 <= r <= d``, one int ``d``).

    CKS Algorithm 1: ``K`` is the first ``k`` whose ``Bernoulli(r / (d k))`` is 0, and the
    result is ``K`` odd. The test is ``U < r`` for ``U`` uniform on ``[0, d k)`` from
    :func:`_uniform_below` (rejection on masked words: no modulo bias); when
    ``d k`` passes ``2^63`` it is ``Bernoulli(r / d)`` and ``Bernoulli(1 / k)``, independent.
    """
    out = np.zeros(r.size, dtype=bool)
    todo = np.arange(r.size)
    rest = r
    k = 1
    while todo.size:
        span = d * k
        if span <= 1 << 63:
            a = _uniform_below(rng, span, todo.size) < rest
        else:
            a = (_uniform_below(rng, d, todo.size) < rest) & (
                _uniform_below(rng, k, todo.size) == 0)
        if k % 2:
            out[todo[~a]] = True  # stopped at K = k odd: exp(-gamma) is P(K odd)
        todo, rest = todo[a], rest[a]
        k += 1
    return out


def _fast_bernoulli_exp1(n: int, rng: SecureGenerator) -> np.ndarray:
    """``n`` exact ``Bernoulli(exp(-1))``."""
    return _fast_bernoulli_exp_frac(np.ones(n, dtype=np.int64), 1, rng)


def _fast_bernoulli_exp_whole(w: np.ndarray, rng: SecureGenerator) -> np.ndarray:
    """Exact ``Bernoulli(exp(-w))`` for integers ``w >= 0``: ``w`` independent
    ``Bernoulli(exp(-1))`` all 1, drawn ``_BEXP_CHUNK`` at a time per element."""
    alive = np.ones(w.size, dtype=bool)
    left = w.astype(np.int64)
    idx = np.flatnonzero(left > 0)
    while idx.size:
        take = np.minimum(left[idx], _BEXP_CHUNK)
        draws = _fast_bernoulli_exp1(int(take.sum()), rng)
        starts = np.cumsum(take) - take
        failed = np.logical_or.reduceat(~draws, starts)
        alive[idx[failed]] = False
        left[idx] -= take
        idx = idx[~failed & (left[idx] > 0)]
    return alive


def _fast_geometric(n: int, rng: SecureGenerator) -> np.ndarray:
    """``n`` draws of ``V`` = the number of 1s before the first 0 in a stream of
    ``Bernoulli(exp(-1))``: the stream is drawn in blocks and cut at its zeros, in order."""
    out = np.empty(n, dtype=np.int64)
    filled, carry = 0, 0
    while filled < n:
        need = n - filled
        b = _fast_bernoulli_exp1(need + need * 3 // 5 + 32, rng)  # E[draws per V] = 1.58
        zeros = np.flatnonzero(~b)
        if zeros.size == 0:
            carry += b.size
            continue
        gaps = np.diff(zeros, prepend=-1) - 1
        gaps[0] += carry
        k = min(need, zeros.size)
        out[filled:filled + k] = gaps[:k]
        filled += k
        carry = b.size - 1 - int(zeros[-1])
    return out


def _fast_discrete_laplace(t: int, m: int, rng: SecureGenerator) -> np.ndarray:
    """Up to ``m`` exact draws of the discrete Laplace with scale ``t`` (CKS Algorithm 2)."""
    u = _uniform_below(rng, t, m)
    u = u[_fast_bernoulli_exp_frac(u, t, rng)]
    x = u + t * _fast_geometric(u.size, rng)
    negative = np.unpackbits(np.frombuffer(rng.bytes((x.size + 7) // 8), dtype=np.uint8),
                             count=x.size).astype(bool)
    ok = ~(negative & (x == 0))  # -0 would double the mass at 0
    return np.where(negative, -x, x)[ok]


def _fast_accept(plan: FastPlan, y: np.ndarray, rng: SecureGenerator) -> np.ndarray:
    """CKS Algorithm 3's test: ``Bernoulli(exp(-g^2 / den))``, ``g = mu_den |y| - mu_num``."""
    ay = np.abs(y)
    accept = np.zeros(y.size, dtype=bool)
    fast = np.flatnonzero(ay <= plan.y_fast)
    g = np.abs(ay[fast] * plan.mu_den - plan.mu_num).astype(np.uint64)  # < 2^32
    g2 = g * g
    den = np.uint64(plan.den)
    whole, rem = (g2 // den).astype(np.int64), (g2 % den).astype(np.int64)
    ok = _fast_bernoulli_exp_frac(rem, plan.den, rng)
    idx = np.flatnonzero(ok)
    ok[idx] = _fast_bernoulli_exp_whole(whole[idx], rng)
    accept[fast] = ok
    far = np.flatnonzero(ay > plan.y_fast)  # probability < e^-47 per proposal: exact, slow
    if far.size:
        gap = _as_objects(ay[far]) * plan.mu_den - plan.mu_num
        accept[far] = _bernoulli_exp(gap * gap, _as_objects(np.full(far.size, plan.den)), rng)
    return accept


def _proposals(need: int, t: int) -> int:
    """Proposals for ``need`` draws: the share that becomes draws is 0.35-0.48 (lowest for
    ``t <= 2``, about 0.48 from ``t = 6`` on), plus four standard deviations, so that one batch
    nearly always suffices (each further batch costs as many numpy passes as the first)."""
    expected = need / (0.34 if t < 6 else 0.46)
    return int(expected + 4 * math.sqrt(expected)) + 32


def _fast_sample(plan: FastPlan, n: int, rng: SecureGenerator) -> np.ndarray:
    parts: list[np.ndarray] = []
    have = 0
    while have < n:
        need = n - have
        y = _fast_discrete_laplace(plan.t, _proposals(need, plan.t), rng)
        got = y[_fast_accept(plan, y, rng)][:need]
        parts.append(got)
        have += got.size
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


SAMPLER_VERSION = 2
"""Which draws a stream yields: 1 was the Python-integer sampler alone (``method = "bigint"``
still reads the stream that way); 2 takes the 64-bit path whenever it has a plan. A round
replayed from a secret regenerates its release only under the same version."""

SAMPLING_METHODS = ("auto", "fast", "bigint")
"""``auto``: the fast path when :func:`fast_plan` has a plan, else Python integers."""


def sample_discrete_gaussian(sigma_sq: int | float | Fraction, size: int | Sequence[int],
                             rng: SecureGenerator, *, method: str = "auto") -> np.ndarray:
    """Exact draws of ``N_Z(0, sigma_sq)``: ``P[x] ~ exp(-x^2 / (2 sigma_sq))`` on the integers.

    CKS Algorithm 3 (discrete Laplace proposals with ``t = floor(sigma) + 1``, accepted with
    probability ``exp(-(|y| - sigma^2 / t)^2 / (2 sigma^2))``), vectorised, with every
    Bernoulli drawn exactly from ``rng`` in integer arithmetic: no floating point anywhere.
    The draws are int64.

    ``method``: ``"fast"`` runs Algorithms 1-3 on int64/uint64 words (:class:`FastPlan`; it
    samples :func:`sampled_sigma_sq`, the requested ``sigma_sq`` or, when that does not fit
    in 64-bit products, a value rounded up by at most ~1e-7 relative); ``"bigint"`` runs them
    on Python integers with ``sigma_sq`` taken exactly (a float as the dyadic rational it is);
    ``"auto"`` (default) is ``"fast"`` whenever :func:`fast_plan` has a plan (every ``sigma``
    from 0.2 to about 9.1e7), else ``"bigint"``. Both paths sample the exact discrete Gaussian of their
    variance parameter; they read the stream differently, so their draws differ.
    """
    if method not in SAMPLING_METHODS:
        raise ValueError(f"method = {method!r} is not one of {list(SAMPLING_METHODS)}")
    s2 = _sigma_sq_fraction(sigma_sq)
    shape = _shape_of(size)
    n = math.prod(shape)
    plan = fast_plan(s2) if method != "bigint" else None
    if method == "fast" and plan is None:
        raise ValueError(f"sigma_sq = {sigma_sq!r} has no 64-bit fast-path plan (sigma above "
                         "about 9.1e7 grid steps, or some sigma below 0.2): use "
                         "method = 'auto' or 'bigint'")
    out = _fast_sample(plan, n, rng) if plan is not None else _bigint_sample(s2, n, rng)
    return out.astype(np.int64).reshape(shape)


def discrete_gaussian_pmf(sigma_sq: float, support: np.ndarray, tail: int = 0) -> np.ndarray:
    """``exp(-x^2 / (2 sigma_sq))`` on ``support``, normalised over all integers (float64).

    The normaliser sums ``|x| <= max(|support|) + tail`` plus enough terms that the rest is
    below float precision; for tests and planning, never for sampling.
    """
    sigma = math.sqrt(float(sigma_sq))
    reach = int(max(np.abs(support).max(initial=0) + tail, 40 * sigma + 40))
    xs = np.arange(-reach, reach + 1, dtype=np.float64)
    z = math.fsum(np.exp(-xs * xs / (2 * float(sigma_sq))))
    s = np.asarray(support, dtype=np.float64)
    return np.exp(-s * s / (2 * float(sigma_sq))) / z


# -- rounding to the integer grid ---------------------------------------------------------------
def _check_positive(name: str, value: float) -> float:
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or value <= 0):
        raise ValueError(f"{name} = {value!r} must be a finite number > 0")
    return float(value)


def _check_beta(beta: float) -> float:
    if isinstance(beta, bool) or not isinstance(beta, int | float) or not 0.0 <= beta < 1.0:
        raise ValueError(f"beta = {beta!r} must satisfy 0 <= beta < 1")
    return float(beta)


def rounded_norm_bound(clip_norm: float, gamma: float, dim: int,
                       beta: float = DEFAULT_BETA) -> float:
    """The L2 bound of a conditionally rounded vector, in grid units (KLS, Theorem 1).

    ``min(c + sqrt(d), sqrt(c^2 + d/4 + sqrt(2 ln(1/beta)) (c + sqrt(d)/2)))`` with
    ``c = clip_norm / gamma`` (``beta = 0``: the first term, which any rounding meets). It is
    also the L2 sensitivity ``Delta`` of one client's rounded vector in the sum.
    """
    c = _check_positive("clip_norm", clip_norm) / _check_positive("gamma", gamma)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim = {dim!r} must be an integer >= 1")
    beta = _check_beta(beta)
    first = c + math.sqrt(dim)
    if beta == 0.0:
        return first
    second = math.sqrt(c * c + dim / 4 + math.sqrt(2 * math.log(1 / beta))
                       * (c + math.sqrt(dim) / 2))
    return min(first, second)


def _squared_norm(v: np.ndarray) -> int:
    """The exact ``sum(v_i^2)`` of an int64 vector: in int64 when no square or partial sum can
    overflow (``size * peak^2 < 2^63``), else on Python integers."""
    if v.size == 0:
        return 0
    peak = max(-int(v.min()), int(v.max()))
    if v.size * peak * peak < 1 << 63:
        return int(np.dot(v, v))
    return sum(int(a) * int(a) for a in v)


def conditional_rounding(x: Any, clip_norm: float, gamma: float, rng: SecureGenerator,
                         beta: float = DEFAULT_BETA) -> np.ndarray:
    """Round ``x / gamma`` to integers, unbiasedly per coordinate, inside the norm bound.

    ``x`` must already be clipped to ``clip_norm``. Each coordinate goes to its floor or
    ceiling with the probability that makes it unbiased; the whole rounding is redrawn until
    its exact integer squared norm is at most ``rounded_norm_bound(...)^2`` (KLS, Algorithm
    1). The bound is what privacy rests on, and it is checked in exact integer arithmetic; the
    rounding probabilities (53-bit uniforms against float64 fractions) only affect bias.
    """
    arr = np.asarray(x, dtype=np.float64).ravel()
    if arr.size == 0 or not np.all(np.isfinite(arr)):
        raise ValueError("x must be a non-empty finite vector")
    c = _check_positive("clip_norm", clip_norm)
    norm = float(np.linalg.norm(arr))
    if norm > c * (1 + 1e-9):
        raise ValueError(f"x has L2 norm {norm:.9g} > clip_norm {c:.9g}: clip it first")
    bound = rounded_norm_bound(c, gamma, arr.size, beta)
    limit = math.floor(bound * bound * (1 - 2.0**-40))  # conservative: float error can't lift it
    scaled = arr / float(gamma)
    low = np.floor(scaled)
    frac = scaled - low
    base = low.astype(np.int64)
    for _ in range(_MAX_ROUNDING_TRIES):
        out = base + (rng.random(arr.size) < frac).astype(np.int64)
        if _squared_norm(out) <= limit:
            return out
    raise RoundingFailedError(f"no rounding within norm {bound:.6g} in {_MAX_ROUNDING_TRIES} "
                              f"tries (dim {arr.size}, beta {beta})")


# -- accounting ---------------------------------------------------------------------------------
def _check_clients(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n = {n!r} (honest shares in the sum) must be an integer >= 1")
    return n


def ddg_tau(local_sigma: float, n: int) -> float:
    """KLS's ``tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 s^2 k / (k + 1))`` (``s``: grid units).

    It measures how far a sum of ``n`` discrete Gaussians is from one discrete Gaussian;
    0 for ``n = 1``.
    """
    s = _check_positive("local_sigma", local_sigma)
    k = np.arange(1, _check_clients(n), dtype=np.float64)
    return 10.0 * math.fsum(np.exp(-2.0 * math.pi**2 * s * s * k / (k + 1)))


def ddg_rdp(alpha: float, sensitivity: float, local_sigma: float, n: int, dim: int) -> float:
    """Renyi DP of order ``alpha`` of the sum of ``n`` shares (KLS, Proposition 14).

    ``sensitivity`` (``Delta``) and ``local_sigma`` (``s``) in grid units; requires
    ``s >= 1/2``, as the proposition does.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not alpha >= 1:
        raise ValueError(f"alpha = {alpha!r} must be >= 1")
    delta = _check_positive("sensitivity", sensitivity)
    s = _check_positive("local_sigma", local_sigma)
    if s < 0.5:
        raise ValueError(f"local_sigma = {s} must be >= 1/2 grid steps (KLS Proposition 14)")
    tau, n = ddg_tau(s, n), _check_clients(n)
    scale = delta / (math.sqrt(n) * s)
    return min(alpha * scale * scale / 2 + tau * dim,
               alpha / 2 * (scale + tau * math.sqrt(dim)) ** 2)


def ddg_zcdp_epsilon(sensitivity: float, local_sigma: float, n: int, dim: int) -> float:
    """``eps`` such that the sum of ``n`` shares is ``eps^2 / 2``-zCDP (KLS, Theorem 1).

    ``min(sqrt(Delta^2 / (n s^2) + 2 tau d), Delta / (sqrt(n) s) + tau sqrt(d))``: each term
    is Proposition 14's bound written as ``alpha eps^2 / 2`` (using ``tau d <= alpha tau d``
    for ``alpha >= 1`` in the first).
    """
    delta = _check_positive("sensitivity", sensitivity)
    s = _check_positive("local_sigma", local_sigma)
    if s < 0.5:
        raise ValueError(f"local_sigma = {s} must be >= 1/2 grid steps (KLS Proposition 14)")
    n = _check_clients(n)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim = {dim!r} must be an integer >= 1")
    tau = ddg_tau(s, n)
    scale = delta / (math.sqrt(n) * s)
    return min(math.sqrt(scale * scale + 2 * tau * dim), scale + tau * math.sqrt(dim))


def ddg_epsilon_for(clip_norm: float, gamma: float, local_sigma: float, n: int, dim: int,
                    beta: float = DEFAULT_BETA) -> float:
    """:func:`ddg_zcdp_epsilon` from the original units: ``C``, ``gamma`` and the per-client
    noise std ``local_sigma`` (so ``s = local_sigma / gamma``)."""
    delta = rounded_norm_bound(clip_norm, gamma, dim, beta)
    return ddg_zcdp_epsilon(delta, _check_positive("local_sigma", local_sigma) / gamma, n, dim)


def equivalent_noise_multiplier(rho: float) -> float:
    """The Gaussian noise multiplier with the same zCDP: ``1 / sqrt(2 rho)``.

    A Gaussian with noise multiplier ``z`` has Renyi divergence exactly ``alpha / (2 z^2)`` at
    every order, so a ``rho``-zCDP mechanism's divergences are at most those of this Gaussian.
    """
    return 1.0 / math.sqrt(2.0 * _check_positive("rho", rho))


def gaussian_event_for_zcdp(rho: float, accountant: str, steps: int = 1) -> GaussianEvent:
    """A :class:`GaussianEvent` to record ``steps`` participations of a ``rho``-zCDP release.

    Valid with the RDP accountant only, and without amplification by sampling
    (``sample_rate = 1``): the event stands for a mechanism known through its Renyi
    divergences alone, and only RDP composition uses nothing else. PRV (and PLD) compose the
    Gaussian's full privacy-loss distribution, which the distributed discrete Gaussian does not
    have; Poisson amplification as the accountants compute it is specific to the Gaussian too.
    Both would under-state epsilon, so they are refused.
    """
    name = check_accountant(accountant)
    if name != "rdp":
        raise AccountingError(
            f"a zCDP bound can be recorded as an equivalent Gaussian only for the RDP "
            f"accountant, not {name!r}: {name.upper()} composes the Gaussian's privacy-loss "
            "distribution, which the distributed discrete Gaussian does not have, and would "
            "under-state epsilon")
    return GaussianEvent(equivalent_noise_multiplier(rho), 1.0, check_steps(steps))


# -- calibration for a run ---------------------------------------------------------------------
WRAP_SIGMAS = 8.0
""":func:`default_gamma` leaves room for this many std of the summed noise per coordinate."""


def calibrate_local_sigma(noise_multiplier: float, clip_norm: float, gamma: float, n: int,
                          dim: int, beta: float = DEFAULT_BETA) -> float:
    """The smallest per-client std (original units) whose sum of ``n`` shares is
    ``1 / (2 z^2)``-zCDP (:func:`ddg_epsilon_for` at most ``1 / z``), to 1e-9 relative.

    Then the ``n``-share sum's Renyi divergence at every order ``alpha`` is at most
    ``alpha / (2 z^2)``: that of the Gaussian with noise multiplier ``z``, which is what the
    plan and the ledger record (:func:`gaussian_event_for_zcdp`).
    """
    z = _check_positive("noise_multiplier", noise_multiplier)
    g = _check_positive("gamma", gamma)
    target = 1.0 / z

    def ok(sigma: float) -> bool:
        return ddg_epsilon_for(clip_norm, g, sigma, n, dim, beta) <= target

    lo = g / 2  # KLS Proposition 14 needs s >= 1/2 grid steps
    if ok(lo):
        return lo
    hi = max(2 * lo, z * clip_norm / math.sqrt(_check_clients(n)))
    while not ok(hi):
        lo, hi = hi, 2 * hi
    while hi - lo > 1e-9 * hi:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


def default_gamma(noise_multiplier: float, clip_norm: float, n: int, dim: int,
                  max_clients: int, modulus: int, beta: float = DEFAULT_BETA) -> float:
    """The finest grid step whose sums of ``max_clients`` shares fit in ``modulus``.

    A rounded coordinate is at most ``C / gamma + 1`` in magnitude; the noise sum has std
    ``sqrt(max_clients) s / gamma``. The rule: ``max_clients (C / gamma + 1) + 8 sqrt(max_clients)
    s / gamma <= floor((M - 1) / 2)``, with ``s`` the calibrated std at that ``gamma``
    (iterated to a fixed point, then checked). Larger sums than that wrap around (utility
    only: privacy does not depend on it).
    """
    m = _check_clients(max_clients)
    half = (int(modulus) - 1) // 2
    if half <= m:
        raise ValueError(f"modulus {modulus} has no room for {m} clients")
    sigma = _check_positive("noise_multiplier", noise_multiplier) * clip_norm / math.sqrt(
        _check_clients(n))
    gamma = 0.0
    for _ in range(20):
        gamma = (m * clip_norm + WRAP_SIGMAS * math.sqrt(m) * sigma) / (half - m)
        new = calibrate_local_sigma(noise_multiplier, clip_norm, gamma, n, dim, beta)
        if new <= sigma * (1 + 1e-6):
            break
        sigma = new
    while m * (clip_norm / gamma + 1) + WRAP_SIGMAS * math.sqrt(m) * new / gamma > half:
        gamma *= 1.01  # the last calibration moved: coarser steps restore the room
        new = calibrate_local_sigma(noise_multiplier, clip_norm, gamma, n, dim, beta)
    return gamma


# -- the modular domain -------------------------------------------------------------------------
def _check_bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 62:
        raise ValueError(f"bits = {bits!r} must be an integer in [2, 62]")
    return bits


def encode_modular(values: Any, bits: int = MODULUS_BITS) -> np.ndarray:
    """Integers reduced modulo ``2^bits`` into ``[0, 2^bits)``: wrap-around, never a clamp."""
    m = 1 << _check_bits(bits)
    arr = np.asarray(values)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"encode_modular needs integers, got dtype {arr.dtype}")
    return np.mod(arr.astype(np.int64), m).astype(np.int64)


def modular_sum(shares: Sequence[Any], bits: int = MODULUS_BITS) -> np.ndarray:
    """The sum of encoded shares modulo ``2^bits`` (what secure aggregation reveals)."""
    if not shares:
        raise ValueError("modular_sum needs at least one share")
    m = 1 << _check_bits(bits)
    total = np.zeros(np.shape(shares[0]), dtype=np.int64)
    for share in shares:
        total = np.mod(total + encode_modular(share, bits), m)
    return total


def decode_modular(total: Any, bits: int = MODULUS_BITS) -> np.ndarray:
    """The centred lift of ``total`` into ``[-2^(bits-1), 2^(bits-1))`` (int64).

    It equals the true integer sum when that lies in the range; otherwise the coordinate has
    wrapped around (a utility loss that the release's privacy does not depend on).
    """
    m = 1 << _check_bits(bits)
    arr = np.mod(np.asarray(total, dtype=np.int64), m)
    return np.where(arr >= m // 2, arr - m, arr)


def client_share(x: Any, *, clip_norm: float, gamma: float, local_sigma: float,
                 rng: SecureGenerator, beta: float = DEFAULT_BETA,
                 bits: int = MODULUS_BITS) -> np.ndarray:
    """One client's encoded share: conditional rounding, discrete Gaussian, mod ``2^bits``.

    ``x`` is the clipped update in original units; the noise is ``N_Z(0, (local_sigma /
    gamma)^2)`` per coordinate.
    """
    rounded = conditional_rounding(x, clip_norm, gamma, rng, beta)
    s = _check_positive("local_sigma", local_sigma) / _check_positive("gamma", gamma)
    noise = sample_discrete_gaussian(Fraction(s) ** 2, rounded.size, rng)
    return encode_modular(rounded + noise, bits)


def decode_sum(total: Any, gamma: float, bits: int = MODULUS_BITS) -> np.ndarray:
    """The aggregate in original units: centred lift times ``gamma`` (float64)."""
    return decode_modular(total, bits).astype(np.float64) * _check_positive("gamma", gamma)


__all__ = [
    "DEFAULT_BETA",
    "MODULUS_BITS",
    "WRAP_SIGMAS",
    "SAMPLER_VERSION",
    "SAMPLING_METHODS",
    "FastPlan",
    "RoundingFailedError",
    "client_share",
    "conditional_rounding",
    "ddg_epsilon_for",
    "ddg_rdp",
    "ddg_tau",
    "ddg_zcdp_epsilon",
    "decode_modular",
    "calibrate_local_sigma",
    "decode_sum",
    "default_gamma",
    "discrete_gaussian_pmf",
    "encode_modular",
    "equivalent_noise_multiplier",
    "gaussian_event_for_zcdp",
    "modular_sum",
    "fast_plan",
    "rounded_norm_bound",
    "sample_discrete_gaussian",
    "sampled_sigma_sq",
]
