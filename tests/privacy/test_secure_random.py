"""The secure generator: keystream against ``cryptography`` itself, distributions against scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from scipy import stats

from ffm_private.privacy.mechanisms import NoiseSource
from ffm_private.privacy.secure_random import (
    HKDF_SALT,
    SecureGenerator,
    context_label,
    derive_key,
)

SECRET = bytes(range(32))
N = 40_000

# RFC 8439, appendix A.1, test vector 1: ChaCha20 block, all-zero key, nonce and counter.
RFC8439_A1 = bytes.fromhex(
    "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7"
    "da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586")


def _direct_keystream(secret: bytes, label: bytes, n: int) -> bytes:
    """The oracle: HKDF-SHA256 and ChaCha20 called on ``cryptography`` directly."""
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=HKDF_SALT, info=label).derive(secret)
    return Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor().update(bytes(n))


# -- known answers ----------------------------------------------------------------------------
def test_keystream_is_rfc8439_chacha20():
    assert SecureGenerator(bytes(32)).bytes(64) == RFC8439_A1


def test_stream_is_chacha20_under_the_hkdf_key_and_continues_across_calls():
    label = context_label("round", 3, "client", 7)
    want = _direct_keystream(SECRET, label, 1000)
    g = SecureGenerator.from_secret(SECRET, label)
    got = g.bytes(10) + g.bytes(0) + g.bytes(590) + g.bytes(400)
    assert got == want
    assert derive_key(SECRET, label) != derive_key(SECRET, context_label("round", 3))


def test_uniforms_are_the_top_53_bits_of_little_endian_words():
    label = b"uniform"
    words = np.frombuffer(_direct_keystream(SECRET, label, 8 * 100), dtype="<u8")
    want = (words >> np.uint64(11)).astype(np.float64) / 2.0**53
    np.testing.assert_array_equal(SecureGenerator.from_secret(SECRET, label).random(100), want)


# -- reproducibility and separation ------------------------------------------------------------
def test_same_secret_and_label_replay_the_same_draws():
    def draws(g: SecureGenerator) -> list:
        return [g.random(5), g.normal(1.0, 2.0, (3, 4)), g.integers(0, 10, 7), g.bytes(9),
                g.random(), g.normal()]

    a = draws(SecureGenerator.from_secret(SECRET, b"x"))
    b = draws(SecureGenerator.from_secret(SECRET, b"x"))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert isinstance(a[4], float) and isinstance(a[5], float)
    assert a[1].shape == (3, 4) and a[2].dtype == np.int64


def test_labels_and_secrets_give_independent_streams():
    base = SecureGenerator.from_secret(SECRET, b"a").normal(size=N)
    others = [SecureGenerator.from_secret(SECRET, b"b").normal(size=N),
              SecureGenerator.from_secret(bytes(32), b"a").normal(size=N)]
    for other in others:
        assert abs(np.corrcoef(base, other)[0, 1]) < 5 / math.sqrt(N)


def test_labels_are_unambiguous():
    labels = [context_label(1, 23), context_label(12, 3), context_label("1", 23),
              context_label(b"1", 23), context_label(123), context_label("1", "23")]
    assert len(set(labels)) == len(labels)
    with pytest.raises(TypeError):
        context_label(True)


def test_a_client_named_server_does_not_get_the_central_noise_stream():
    """The adversary is a client whose id is the string "server" (or an int that would hash
    next to it): it must not be able to read, and so subtract, the server's central noise."""
    source = NoiseSource(test_seed=1)
    central = source.server_generator(4).normal(size=64)
    for client, purpose in [("server", 1), ("server", 0), (1, 1), ("1", 1)]:
        assert not np.array_equal(source.generator(4, client, purpose).normal(size=64), central)
    assert not np.array_equal(source.generator(4, 7).normal(size=64),
                              source.generator(4, "7").normal(size=64))
    np.testing.assert_array_equal(source.generator(4, np.int64(7)).normal(size=8),
                                  source.generator(4, 7).normal(size=8))


def test_noise_source_streams_are_the_documented_keystream():
    secret = bytes(range(100, 132))
    source = NoiseSource.from_secret(secret)
    label = context_label("ffm-private/noise-source/v1", "round", 2, "client-int", 5,
                          "purpose", 0)
    assert source.generator(2, 5).bytes(256) == _direct_keystream(secret, label, 256)
    assert not source.is_test_seeded
    # entropy=int and from_secret agree (the key file stores the same 32 bytes)
    same = NoiseSource(entropy=int.from_bytes(secret, "big"))
    assert same.generator(2, 5).bytes(32) == source.generator(2, 5).bytes(32)


def test_noise_source_rejects_bad_secrets():
    with pytest.raises(ValueError, match="32 bytes"):
        NoiseSource.from_secret(b"short")
    with pytest.raises(ValueError, match="32 bytes"):
        NoiseSource.from_secret("x" * 32)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2\\*\\*256"):
        NoiseSource(entropy=1 << 256)
    with pytest.raises(ValueError):
        NoiseSource(entropy=-1)
    with pytest.raises(ValueError, match="round_id"):
        NoiseSource(test_seed=0).generator(-1, 0)
    with pytest.raises(TypeError):
        NoiseSource(test_seed=0).generator(0, 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="32 bytes"):
        SecureGenerator.from_secret(b"\x00" * 31, b"x")


# -- distributions ----------------------------------------------------------------------------
def test_uniforms_pass_ks_and_lie_on_the_53_bit_grid():
    u = SecureGenerator.from_secret(SECRET, b"ks-uniform").random(N)
    assert u.min() >= 0.0 and u.max() < 1.0
    k = u * 2.0**53
    np.testing.assert_array_equal(k, np.floor(k))
    assert stats.kstest(u, "uniform").pvalue > 1e-3


def test_normals_pass_ks_and_have_the_requested_moments():
    g = SecureGenerator.from_secret(SECRET, b"ks-normal")
    z = g.standard_normal(N + 1)  # odd size: the second half of the last pair is dropped
    assert z.shape == (N + 1,)
    assert stats.kstest(z, "norm").pvalue > 1e-3
    x = g.normal(3.0, 0.5, N)
    assert abs(x.mean() - 3.0) < 5 * 0.5 / math.sqrt(N)
    assert x.std() == pytest.approx(0.5, rel=5 / math.sqrt(2 * N))
    # Box-Muller on 53-bit uniforms: |z| <= sqrt(-2 ln 2^-53), never inf or nan.
    assert np.all(np.isfinite(z)) and np.abs(z).max() <= math.sqrt(106 * math.log(2)) + 1e-12
    np.testing.assert_array_equal(g.normal(2.0, 0.0, 4), np.full(4, 2.0))
    with pytest.raises(ValueError, match="scale"):
        g.normal(0.0, -1.0, 3)


@pytest.mark.parametrize(("low", "high"), [(0, 6), (-3, 4), (10, 11)])
def test_small_integers_are_uniform_by_chi_square(low, high):
    x = SecureGenerator.from_secret(SECRET, b"chi2").integers(low, high, N)
    assert x.min() >= low and x.max() < high
    counts = np.bincount(x - low, minlength=high - low)
    if high - low > 1:
        assert stats.chisquare(counts).pvalue > 1e-3


def test_wide_integers_are_unbiased():
    """Span 3 * 2^61: reducing a 64-bit word modulo the span would put mass 3/8 on each of the
    first two thirds and 2/8 on the last; rejection gives 1/3 each."""
    span = 3 * 2**61
    g = SecureGenerator.from_secret(SECRET, b"wide")
    x = g.integers(0, span, 30_000)
    thirds = np.bincount((x // 2**61).astype(np.int64), minlength=3)
    assert stats.chisquare(thirds).pvalue > 1e-3
    assert 0 <= int(g.integers(0, 2**63)) < 2**63
    full = g.integers(-(2**63), 2**63, 1000)
    assert (full < 0).mean() == pytest.approx(0.5, abs=0.07)
    assert int(g.integers(5, 5, endpoint=True)) == 5
    with pytest.raises(ValueError):
        g.integers(3, 3)
    with pytest.raises(ValueError, match="int64"):
        g.integers(0, 2**64)
