"""Adaptive clipping: the quantile estimate converges, and the combined release costs what
the plan charges (an optimal distinguisher gets exactly the Gaussian mechanism's power)."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from ffm_private.privacy.adaptive_clipping import (
    AdaptiveClipper,
    AdaptiveClipSettings,
    clip_indicator,
    combined_noise_multiplier,
    next_clip,
    update_noise_multiplier,
)
from ffm_private.privacy.errors import AccountingError

STD_NORMAL = NormalDist()


def test_update_noise_formula_keeps_the_total_noise():
    z, sigma_b = 1.0, 1.0
    zd = update_noise_multiplier(z, sigma_b)
    assert zd == pytest.approx((1.0 - 0.25) ** -0.5)
    assert zd > z
    assert combined_noise_multiplier(zd, sigma_b) == pytest.approx(z, rel=1e-12)
    for z, sigma_b in [(0.5, 0.3), (2.0, 5.0), (1.3, 0.66)]:
        assert combined_noise_multiplier(update_noise_multiplier(z, sigma_b), sigma_b) == \
            pytest.approx(z, rel=1e-12)


@pytest.mark.parametrize(("z", "sigma_b"), [(1.0, 0.5), (2.0, 0.9), (1.0, 0.1)])
def test_count_noise_too_small_is_refused(z, sigma_b):
    with pytest.raises(AccountingError, match="2 \\* clip_count_noise > noise_multiplier"):
        update_noise_multiplier(z, sigma_b)


def _llr_samples(clipper: AdaptiveClipper, update_std: float, present: bool, n: int,
                 rng: np.random.Generator) -> np.ndarray:
    """Log-likelihood ratio "u present" vs "u absent" of the optimal adversary.

    The adversary knows every other client's contribution (worst case, set to 0 here) and the
    target's clipped update (norm C along the first axis, indicator +1/2) and the noise std
    ``update_std`` of the sum. It sees the noisy sum and the released fraction (production
    code).
    """
    c, dim, m = clipper.clip, 4, clipper.settings.expected_clients
    target = np.zeros(dim)
    target[0] = c
    ind = clipper.indicator(0.5 * c)  # +1/2: the target's norm is below the clip
    sums = rng.normal(0.0, update_std, (n, dim)) + (target if present else 0.0)
    fractions = np.array([clipper.noisy_fraction(ind if present else 0.0, rng)
                          for _ in range(n)])
    counts = (fractions - 0.5) * m  # the noisy sum of indicators, recovered by the adversary
    sb = clipper.settings.count_noise_std
    return ((sums @ target - c * c / 2) / update_std ** 2
            + (counts * ind - ind * ind / 2) / sb ** 2)


def _power(clipper: AdaptiveClipper, update_std: float, n: int = 20000,
           fpr: float = 0.01) -> tuple[float, float]:
    rng = np.random.default_rng(7)
    absent = _llr_samples(clipper, update_std, False, n, rng)
    present = _llr_samples(clipper, update_std, True, n, rng)
    separation = (present.mean() - absent.mean()) / absent.std()
    threshold = np.quantile(absent, 1 - fpr)
    return float(separation), float((present > threshold).mean())


def test_a_distinguisher_gets_no_more_than_the_planned_gaussian():
    z = 1.0
    settings = AdaptiveClipSettings(count_noise_std=1.0, expected_clients=50)
    clipper = AdaptiveClipper(settings, initial_clip=0.7, noise_multiplier=z)
    # The Gaussian mechanism with multiplier z: mu = 1 / z, TPR at FPR a is Phi(Phi^-1(a) + mu).
    bound = STD_NORMAL.cdf(STD_NORMAL.inv_cdf(0.01) + 1.0 / z)
    separation, tpr = _power(clipper, clipper.update_noise_std())
    assert separation == pytest.approx(1.0 / z, abs=0.04)
    assert tpr <= bound + 0.012
    # Planted bug: the update noised with the plan's z (count noise not paid for) gives the
    # adversary measurably more than the plan allows.
    leaky_sep, leaky_tpr = _power(clipper, z * clipper.clip)
    assert leaky_sep == pytest.approx(math.sqrt(1.0 + 0.25), abs=0.04)
    assert leaky_sep > separation + 0.08
    assert leaky_tpr > bound + 0.012


@pytest.mark.parametrize("quantile", [0.5, 0.8])
def test_the_clip_converges_to_the_target_quantile_of_update_norms(quantile):
    rng = np.random.default_rng(0)
    m = 100
    settings = AdaptiveClipSettings(target_quantile=quantile, learning_rate=0.2,
                                    count_noise_std=0.05 * m, expected_clients=m)
    clipper = AdaptiveClipper(settings, initial_clip=0.05, noise_multiplier=1.0)
    clips = []
    for _ in range(400):
        norms = rng.lognormal(mean=0.0, sigma=0.5, size=rng.poisson(m))
        clips.append(clipper.step(norms, rng))
    true_quantile = math.exp(0.5 * STD_NORMAL.inv_cdf(quantile))
    assert clips[0] < 0.2 * true_quantile  # it started far away
    assert np.mean(clips[-100:]) == pytest.approx(true_quantile, rel=0.1)


def test_geometric_step_direction_and_indicator():
    assert next_clip(1.0, 0.9, 0.5, 0.2) == pytest.approx(math.exp(-0.08))  # too many unclipped
    assert next_clip(1.0, 0.1, 0.5, 0.2) == pytest.approx(math.exp(0.08))
    assert next_clip(2.0, 0.5, 0.5, 0.2) == 2.0
    assert clip_indicator(1.0, 1.0) == 0.5 and clip_indicator(1.01, 1.0) == -0.5
    with pytest.raises(AccountingError, match="update norm"):
        clip_indicator(float("nan"), 1.0)


def test_an_empty_round_is_still_noised_and_state_round_trips():
    settings = AdaptiveClipSettings(count_noise_std=2.0, expected_clients=10)
    clipper = AdaptiveClipper(settings, initial_clip=1.0, noise_multiplier=1.0)
    rng = np.random.default_rng(3)
    fractions = {clipper.noisy_fraction(0.0, rng) for _ in range(5)}
    assert len(fractions) == 5  # noise drawn every time, not the bare 1/2
    clipper.step([], rng)
    other = AdaptiveClipper(settings, initial_clip=5.0, noise_multiplier=1.0)
    other.load_state(clipper.state())
    assert other.clip == clipper.clip != 1.0


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"target_quantile": 1.0}, "clip_target_quantile"),
    ({"target_quantile": 0.0}, "clip_target_quantile"),
    ({"learning_rate": 0.0}, "clip_learning_rate"),
    ({"count_noise_std": -1.0}, "clip_count_noise"),
    ({"expected_clients": 0}, "expected clients"),
])
def test_invalid_settings_are_refused(kwargs, message):
    with pytest.raises(AccountingError, match=message):
        AdaptiveClipSettings(**kwargs)
