"""SecAgg+ building blocks against independent oracles: Shamir (Python integers), the mask
generator (AES-CTR straight from ``cryptography``), the neighbour graph, the codec's
word-driven rounding, the options and the wire format."""

import hashlib
import math
import os
from fractions import Fraction

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.errors import MalformedMessage, TamperedMessage, WrongLength
from protocols.quantize import FixedPointCodec
from protocols.secagg import SecAggOptions, shamir
from protocols.secagg import primitives as cr
from protocols.secagg.graph import effective_degree, is_connected, neighbour_graph
from protocols.secagg.messages import HEADER, Kind, read_header, seal, unseal
from tests.protocols.secagg_helpers import DeterministicEntropy

P = shamir.PRIME


# -- Shamir -----------------------------------------------------------------------------------
def _oracle_interpolate_at_zero(points: list[tuple[int, int]]) -> int:
    """Lagrange interpolation at 0 with exact rationals, reduced mod p at the end."""
    total = Fraction(0)
    for a, (xa, ya) in enumerate(points):
        term = Fraction(ya)
        for b, (xb, _) in enumerate(points):
            if a != b:
                term *= Fraction(xb, xb - xa)
        total += term
    return total.numerator * pow(total.denominator, -1, P) % P


def test_prime_is_prime():
    assert P == 2**32 - 5
    assert all(P % d for d in range(2, math.isqrt(P) + 1))


@settings(max_examples=30)
@given(t=st.integers(1, 12), extra=st.integers(0, 5), seed=st.integers(0, 2**32))
def test_shamir_round_trip_and_oracle(t, extra, seed):
    entropy = DeterministicEntropy(seed)
    secrets = [entropy(32), entropy(32)]
    field = shamir.secrets_to_field(secrets)
    xs = np.arange(1, t + extra + 1, dtype=np.uint64) * 7 + 3
    shares = shamir.split(field, xs, t, entropy)  # (holders, 2, CHUNKS)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(xs), size=t, replace=False))
    got = shamir.reconstruct(np.tile(xs[pick], (2, 1)), shares[pick].transpose(1, 0, 2))
    assert [shamir.field_to_secret(g) for g in got] == secrets
    # the independent oracle recovers every chunk from the same shares
    for s in range(2):
        for c in (0, shamir.CHUNKS - 1):
            pts = [(int(xs[i]), int(shares[i, s, c])) for i in pick]
            assert _oracle_interpolate_at_zero(pts) == int(field[s, c])


def test_shamir_needs_t_shares_and_detects_bad_ones():
    entropy = DeterministicEntropy(1)
    secret = entropy(32)
    xs = np.arange(1, 8, dtype=np.uint64)
    shares = shamir.split(shamir.secrets_to_field([secret]), xs, 4, entropy)[:, 0]
    # t - 1 shares interpolate to something else (almost surely not even 16-bit chunks)
    wrong = shamir.reconstruct(xs[None, :3], shares[None, :3])[0]
    assert shamir.field_to_secret(wrong) != secret
    tampered = shares.copy()
    tampered[1, 0] = (tampered[1, 0] + 1) % P
    bad = shamir.reconstruct(xs[None, :4], tampered[None, :4])[0]
    assert shamir.field_to_secret(bad) != secret


def test_shamir_shares_look_uniform():
    """Any t - 1 shares are uniform whatever the secret: two very different secrets give
    share values with the same (uniform) distribution."""
    entropy = DeterministicEntropy(2)
    xs = np.array([5, 9], dtype=np.uint64)
    for secret in (bytes(32), b"\xff" * 32):
        field = shamir.secrets_to_field([secret] * 400)
        shares = shamir.split(field, xs, 3, entropy)  # 2 shares, t = 3
        top = (shares >> np.uint64(28)).ravel()  # top 4 bits of values in [0, p)
        counts = np.bincount(top.astype(np.int64), minlength=16)
        expected = len(top) / 16
        chi2 = ((counts - expected) ** 2 / expected).sum()
        assert chi2 < 50  # 15 degrees of freedom: p ~ 1e-5


def test_lagrange_coefficients_are_shared_per_point_set():
    xs = np.array([[1, 2, 3], [4, 5, 6], [1, 2, 3]], dtype=np.uint64)
    lam = shamir.lagrange_at_zero(xs)
    np.testing.assert_array_equal(lam[0], lam[2])
    for row, coeff in zip(xs, lam, strict=True):  # they reproduce a constant polynomial
        assert int(coeff.sum()) % P == 1
        pts = [(int(x), 1) for x in row]
        assert _oracle_interpolate_at_zero(pts) == 1


def test_random_field_uses_only_the_entropy_given():
    calls = []

    def entropy(n):
        calls.append(n)
        return os.urandom(n)

    vals = shamir.random_field((1000,), entropy)
    assert calls and vals.max() < P and vals.dtype == np.uint64


# -- masks --------------------------------------------------------------------------------------
def test_mask_is_aes256_ctr_keystream_as_little_endian_words():
    key = bytes(range(32))
    ref = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update(bytes(4 * 1000))
    np.testing.assert_array_equal(cr.mask_words(key, 1000), np.frombuffer(ref, dtype="<u4"))
    stream = cr.MaskStream(1000)
    acc = np.zeros(1000, dtype=np.uint32)
    stream.add(acc, key)
    stream.add(acc, key, -1)
    assert not acc.any()


def test_key_derivations_are_separated():
    secret = bytes(32)
    view = b"v" * 32
    keys = {cr.pair_mask_key(secret, view, 1, 2, 3), cr.pair_mask_key(secret, view, 2, 2, 3),
            cr.pair_mask_key(secret, view, 1, 2, 4), cr.pair_mask_key(secret, b"w" * 32, 1, 2, 3),
            cr.self_mask_key(secret, 1, 2), cr.upload_key(secret, 1, 2),
            cr.rounding_key(secret, 1, 2), cr.hkdf(secret, b"graph", 1)}
    assert len(keys) == 8
    assert cr.pair_mask_key(secret, view, 1, 2, 3) == cr.pair_mask_key(secret, view, 1, 3, 2)


def test_x25519_agreement_is_symmetric():
    a, a_pk = cr.new_key_pair(DeterministicEntropy(3))
    b, b_pk = cr.new_key_pair(DeterministicEntropy(4))
    assert cr.agree(a, b_pk) == cr.agree(b, a_pk)
    assert cr.public_bytes(cr.load_private(cr.private_bytes(a))) == a_pk


# -- graph ----------------------------------------------------------------------------------
@pytest.mark.parametrize("m,k", [(5, 2), (10, 4), (100, 28), (201, 32), (7, 6), (7, 10)])
def test_graph_is_regular_symmetric_and_deterministic(m, k):
    ids = list(range(100, 100 + m))
    keff = effective_degree(k, m)
    g = neighbour_graph(ids, keff, b"seed")
    assert g == neighbour_graph(list(reversed(ids)), keff, b"seed")
    for c, nbrs in g.items():
        assert len(nbrs) == keff and c not in nbrs
        assert all(c in g[j] for j in nbrs)
    assert is_connected(ids, g)
    if keff < m - 1:
        assert g != neighbour_graph(ids, keff, b"other seed")


def test_effective_degree():
    assert effective_degree(5, 100) == 6
    assert effective_degree(8, 5) == 4
    assert effective_degree(3, 2) == 1
    assert effective_degree(4, 1) == 0


def test_connectivity_detects_split():
    g = {1: (2,), 2: (1,), 3: (4,), 4: (3,)}
    assert not is_connected({1, 2, 3, 4}, g)
    assert is_connected({1, 2}, g)


# -- codec ----------------------------------------------------------------------------------
@settings(max_examples=40)
@given(n=st.integers(1, 200), clip=st.floats(0.01, 100.0), seed=st.integers(0, 2**31))
def test_encode_words_sum_within_bound(n, clip, seed):
    codec = FixedPointCodec(clip=clip, max_clients=n)
    rng = np.random.default_rng(seed)
    xs = rng.uniform(-clip, clip, size=(n, 16))
    xs[0, 0], xs[-1, 1] = clip, -clip  # the extremes must not wrap
    total = np.zeros(16, dtype=np.uint32)
    for x in xs:
        words = rng.integers(0, 2**32, size=16, dtype=np.uint32)
        total += codec.encode_words(x, words)
    err = np.abs(codec.decode_sum(total) - xs.sum(axis=0))
    assert err.max() <= codec.error_bound(n)


def test_encode_words_is_unbiased_and_clips():
    codec = FixedPointCodec(clip=1.0, max_clients=1)
    x = np.full(200_000, 0.3 / codec.scale)
    words = np.frombuffer(DeterministicEntropy(5)(4 * x.size), dtype="<u4")
    assert codec.decode_sum(codec.encode_words(x, words)).mean() * codec.scale == pytest.approx(
        0.3, abs=0.01)
    out = codec.decode_sum(codec.encode_words(np.array([7.0, -7.0, 0.25]), np.zeros(3, np.uint32)))
    np.testing.assert_allclose(out, [1.0, -1.0, 0.25], atol=1 / codec.scale)
    assert codec.count_clipped(np.array([7.0, -7.0, 0.25, 1.0])) == 2
    with pytest.raises(ValueError, match="2\\*\\*32"):
        FixedPointCodec(clip=1.0, max_clients=1, modulus=2**16).encode_words(x[:2], words[:2])


# -- options --------------------------------------------------------------------------------
@pytest.mark.parametrize("options,match", [
    ({"clip": 0}, "protocol.options.clip"),
    ({"clip": float("inf")}, "protocol.options.clip"),
    ({"clip": "big"}, "protocol.options.clip"),
    ({"neighbours": 0}, "protocol.options.neighbours"),
    ({"neighbours": "many"}, "protocol.options.neighbours"),
    ({"threshold": 0}, "protocol.options.threshold"),
    ({"threshold": 1}, "protocol.options.threshold"),
    ({"threshold": 0.2}, "protocol.options.threshold"),
    ({"report_clipped": "no"}, "protocol.options.report_clipped"),
    ({"threshold": 1.5}, "protocol.options.threshold"),
    ({"threshold": "all"}, "protocol.options.threshold"),
    ({"min_clients": 0}, "protocol.options.min_clients"),
    ({"min_clients": True}, "protocol.options.min_clients"),
    ({"sparsity": 2}, "takes no option 'sparsity'"),
])
def test_options_are_validated_with_the_key_name(options, match):
    with pytest.raises(ValueError, match=match):
        SecAggOptions.from_mapping(options)


def test_option_defaults_and_resolution():
    o = SecAggOptions()
    assert (o.clip, o.neighbours, o.threshold, o.min_clients) == (1.0, "auto", "majority", 2)
    assert (o.report_clipped, o.malicious_server) == (True, False)
    assert o.degree(200) == 32 and o.shares_needed(32) == 17
    assert o.degree(10) == 9 and o.degree(3) == 2
    assert SecAggOptions(threshold=0.6).shares_needed(9) == 6
    assert SecAggOptions(threshold=3).shares_needed(20) == 3
    assert SecAggOptions(neighbours=7).degree(100) == 8


# -- wire format ------------------------------------------------------------------------------
def test_sealed_upload_round_trip_and_failures():
    key = bytes(32)
    msg = seal(Kind.SHARE_KEYS, 3, 7, key, b"secret body", clear=b"pub")
    header = read_header(msg, client_id=7, stage="share_keys")
    assert (header.kind, header.round_id, header.client_id) == (Kind.SHARE_KEYS, 3, 7)
    assert unseal(msg, header, key, clear_len=3, stage="share_keys") == b"secret body"
    assert b"secret body" not in msg and b"pub" in msg
    flipped = msg[:HEADER.size] + bytes([msg[HEADER.size] ^ 1]) + msg[HEADER.size + 1:]
    with pytest.raises(TamperedMessage, match="client 7"):
        unseal(flipped, header, key, clear_len=3, stage="share_keys")
    with pytest.raises(TamperedMessage):
        unseal(msg, header, bytes([1]) * 32, clear_len=3, stage="share_keys")
    with pytest.raises(WrongLength):
        read_header(msg[:-1], client_id=7, stage="share_keys")
    with pytest.raises(MalformedMessage, match="magic"):
        read_header(b"XXXX" + msg[4:], client_id=7, stage="share_keys")
    with pytest.raises(MalformedMessage, match="version"):
        read_header(msg[:4] + b"\x09" + msg[5:], client_id=7, stage="share_keys")
    with pytest.raises(MalformedMessage, match="shorter"):
        read_header(msg[:10], client_id=7, stage="share_keys")


def test_commitment_hides_nothing_it_should_not():
    seed = bytes(32)
    c = cr.commit_seed(seed, 1, 2)
    assert c == hashlib.sha256(b"ffm-secagg/v2/commit-b/" + (1).to_bytes(8, "little")
                               + (2).to_bytes(8, "little") + seed).digest()
    assert c != cr.commit_seed(seed, 2, 2)


def test_spare_share_subsets_leave_out_fewest_first():
    from math import comb

    from protocols.secagg.server import _fewest_exclusions

    subsets = list(_fewest_exclusions(list(range(6)), 3))
    assert len(subsets) == comb(6, 3) and len({tuple(s) for s in subsets}) == comb(6, 3)
    assert subsets[0] == [0, 1, 2] and all(len(s) == 3 for s in subsets)
    assert [1, 2, 3] in subsets[:4]  # the lowest point left out within the first t + 1 tries
