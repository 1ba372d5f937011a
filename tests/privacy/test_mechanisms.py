"""Clipping and Gaussian noise: norms against the definition, noise std against sigma * C."""

from __future__ import annotations

import math
import os
import stat

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import stats

from ffm_private.privacy.errors import InsufficientNoiseError
from ffm_private.privacy.mechanisms import (
    NoiseSource,
    add_central_noise,
    add_distributed_noise,
    check_survivors,
    clip_to_norm,
    distributed_noise_std,
    dp_sum,
    poisson_sample,
    surviving_noise_std,
)

# Statistical tests draw n = 40,000 Gaussian coordinates. The sample std of n iid normals has
# relative standard error 1/sqrt(2n) = 0.35%; we allow 5 standard errors (1.8%), and the seeds
# are fixed, so a correct build cannot flake while a noise scale off by sqrt(m) (or 2x) fails.
N = 40_000
STD_TOL = 5 / math.sqrt(2 * N)
finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


def _norm(v) -> float:
    return math.sqrt(math.fsum(float(x) * float(x) for x in np.ravel(v)))


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.integers(1, 50), elements=finite),
       st.floats(1e-3, 1e3, allow_nan=False))
def test_clip_to_norm_matches_the_definition(vec, c):
    out = clip_to_norm(vec, c)
    n = _norm(vec)
    assert _norm(out) <= c * (1 + 1e-15) and np.linalg.norm(out) <= c
    if n <= c:
        np.testing.assert_array_equal(out, vec)
    else:
        # Same direction, norm exactly C (up to rounding): v * C / ||v||.
        np.testing.assert_allclose(out, vec * (c / n), rtol=1e-12, atol=1e-300)
        assert _norm(out) == pytest.approx(c, rel=1e-12)


def test_clip_accepts_torch_and_rejects_bad_input():
    torch = pytest.importorskip("torch")
    out = clip_to_norm(torch.tensor([3.0, 4.0]), 1.0)
    np.testing.assert_allclose(out, [0.6, 0.8], rtol=1e-7)
    assert isinstance(out, np.ndarray)
    with pytest.raises(ValueError, match="NaN or infinite"):
        clip_to_norm(np.array([1.0, np.nan]), 1.0)
    with pytest.raises(ValueError, match="clipping_norm"):
        clip_to_norm(np.ones(3), 0.0)
    with pytest.raises(ValueError, match="clipping_norm"):
        clip_to_norm(np.ones(3), -1.0)
    np.testing.assert_array_equal(clip_to_norm(np.zeros(4), 1.0), np.zeros(4))


def test_clip_does_not_modify_its_input():
    v = np.array([30.0, 40.0])
    clip_to_norm(v, 1.0)
    np.testing.assert_array_equal(v, [30.0, 40.0])


def test_central_noise_has_std_sigma_c():
    sigma, c = 1.3, 0.7
    rng = NoiseSource(test_seed=1).server_generator(0)
    noise = add_central_noise(np.zeros(N), sigma, c, rng)
    assert np.std(noise) == pytest.approx(sigma * c, rel=STD_TOL)
    assert abs(np.mean(noise)) < 5 * sigma * c / math.sqrt(N)
    assert stats.kstest(noise / (sigma * c), "norm").pvalue > 1e-3


@pytest.mark.parametrize(("m", "survivors"), [(8, 8), (8, 12), (1, 1)])
def test_distributed_noise_summed_over_survivors_carries_at_least_sigma_c(m, survivors):
    sigma, c = 1.1, 2.0
    source = NoiseSource(test_seed=7)
    total = np.zeros(N)
    for client in range(survivors):
        total += add_distributed_noise(np.zeros(N), sigma, c, m, source.generator(3, client))
    expected = sigma * c * math.sqrt(survivors / m)
    assert expected == pytest.approx(surviving_noise_std(sigma, c, m, survivors))
    assert np.std(total) == pytest.approx(expected, rel=STD_TOL)
    assert np.std(total) >= sigma * c * (1 - STD_TOL)
    assert distributed_noise_std(sigma, c, m) == pytest.approx(sigma * c / math.sqrt(m))


def test_per_client_streams_are_independent_and_reproducible():
    source = NoiseSource(test_seed=11)
    a = source.generator(0, 1).normal(size=N)
    b = source.generator(0, 2).normal(size=N)
    c = source.generator(1, 1).normal(size=N)
    d = source.generator(0, "alice").normal(size=N)
    for x, y in [(a, b), (a, c), (b, c), (a, d)]:
        assert abs(np.corrcoef(x, y)[0, 1]) < 5 / math.sqrt(N)
    np.testing.assert_array_equal(a, NoiseSource(test_seed=11).generator(0, 1).normal(size=N))
    assert source.is_test_seeded and not NoiseSource().is_test_seeded
    # Without a test seed the root entropy comes from os.urandom: two sources differ.
    assert not np.array_equal(NoiseSource().generator(0, 1).normal(size=8),
                              NoiseSource().generator(0, 1).normal(size=8))
    assert "entropy" not in repr(source)


def test_secret_store_keeps_each_secret_private_and_stable(tmp_path):
    from ffm_private.privacy.client_secrets import MissingSecretError, SecretStore

    store = SecretStore(tmp_path)
    first = store.noise(3).generator(5, 3).normal(size=16)
    path = store.path(3)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.stat().st_size == 32
    again = SecretStore(tmp_path).noise(3).generator(5, 3).normal(size=16)
    np.testing.assert_array_equal(first, again)
    path.write_bytes(b"short")
    with pytest.raises(MissingSecretError, match="32 bytes"):
        SecretStore(tmp_path).noise(3)
    with pytest.raises(MissingSecretError, match="missing"):
        SecretStore(tmp_path).secret("server", must_exist=True)


def test_dp_sum_clips_each_update_then_adds_sigma_c_noise():
    sigma, c = 0.5, 1.0
    rng = np.random.default_rng(0)
    updates = [rng.normal(size=N) * s for s in (0.001, 10.0, 3.0)]
    clipped_sum = sum(clip_to_norm(u, c) for u in updates)
    assert np.linalg.norm(clipped_sum) <= 3 * c
    noisy = dp_sum(updates, sigma, c, NoiseSource(test_seed=2).server_generator(0))
    assert np.std(noisy - clipped_sum) == pytest.approx(sigma * c, rel=STD_TOL)


def test_survivor_check_refuses_too_few_noise_shares():
    check_survivors(5, 5)
    with pytest.raises(InsufficientNoiseError, match="fewer than the 5"):
        check_survivors(4, 5)
    with pytest.raises(ValueError, match="min_survivors"):
        distributed_noise_std(1.0, 1.0, 0)


def test_poisson_sample_rate():
    ids = list(range(20_000))
    chosen = poisson_sample(ids, 0.1, NoiseSource(test_seed=3).generator(0, "sampling"))
    # Binomial(20000, 0.1): std = sqrt(20000 * 0.09) = 42.4; allow 5 std.
    assert abs(len(chosen) - 2000) < 5 * 42.5
    assert chosen == sorted(set(chosen))
    with pytest.raises(ValueError):
        poisson_sample(ids, 0.0, np.random.default_rng(0))


def test_every_noise_stream_is_the_secure_generator():
    """No PCG64 left: client, server and sampling streams are ChaCha20 keystreams."""
    from ffm_private.privacy.secure_random import SecureGenerator

    for source in (NoiseSource(test_seed=0), NoiseSource(),
                   NoiseSource.from_secret(bytes(32))):
        for rng in (source.generator(0, 1), source.generator(2, "sampling", 3),
                    source.server_generator(5)):
            assert isinstance(rng, SecureGenerator)
            assert not isinstance(rng, np.random.Generator)
