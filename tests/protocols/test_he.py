"""HE aggregation: sums against numpy oracles, key roles, every bad input kind, options.

Vectors stay small (a few ciphertexts) so the file runs in seconds.
"""

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import tenseal as ts

from protocols import Channel, FaultyChannel, create
from protocols.errors import (
    ContextMismatch,
    DuplicateMessage,
    MalformedMessage,
    ReplayedMessage,
    TamperedMessage,
    TooFewClients,
    WrongLength,
    WrongRound,
)
from protocols.he import (
    KEY_HOLDER,
    PRESETS,
    HEProtocol,
    KeyHolder,
    PublicContext,
    parse_options,
    wire,
)
from protocols.he.codec import encode_fixed_point, encrypt_chunks, fixed_point
from protocols.he.parties import HEClient, HEServer
from protocols.quantize import FixedPointCodec

STAGE = "encrypted_update"


def _updates(n, length, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return {cid: rng.uniform(-scale, scale, size=length) for cid in range(n)}


def _fixed_point_oracle(proto, updates, round_id, seed):
    """The exact BFV result, computed with Python integers from the codec's own residues."""
    codec = proto.codec(len(updates))
    t = proto.params.plain_modulus
    total = [0] * len(next(iter(updates.values())))
    for cid in sorted(updates):
        rng = np.random.default_rng(np.random.SeedSequence([seed, round_id, cid]))
        for i, r in enumerate(codec.encode(updates[cid], rng).tolist()):
            total[i] = (total[i] + int(r)) % t
    centred = [r - t if r > t // 2 else r for r in total]
    return np.array(centred, dtype=np.float64) / codec.scale, codec


@pytest.fixture(scope="module")
def ckks():
    return create("he", {"preset": "ckks-8192", "min_clients": 2})


@pytest.fixture(scope="module")
def bfv():
    return create("he", {"scheme": "bfv", "clip": 1.0, "min_clients": 2})


# -- sums --------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [2, 10, 50])
def test_ckks_sum_within_documented_error(ckks, n):
    ups = _updates(n, 300, seed=n)
    res = ckks.aggregate(n, ups)
    expected = np.sum([ups[c] for c in sorted(ups)], axis=0)
    err = np.abs(res.total - expected).max()
    assert err <= ckks.params.error_bound(n)
    assert err > 0  # it really went through CKKS
    assert res.contributors == tuple(range(n)) and res.individual is None


@pytest.mark.parametrize("n", [2, 10, 50])
def test_bfv_sum_is_exact_in_fixed_point(bfv, n):
    ups = _updates(n, 300, seed=100 + n)
    ups[0][:3] = [1.0, -1.0, 1.0]  # the codec's extremes must not wrap
    ups[1][:3] = [1.0, -1.0, 1.0]
    res = bfv.aggregate(n, ups, seed=7)
    exact, codec = _fixed_point_oracle(bfv, ups, n, seed=7)
    np.testing.assert_array_equal(res.total, exact)
    expected = np.sum([ups[c] for c in sorted(ups)], axis=0)
    assert np.abs(res.total - expected).max() <= codec.error_bound(n)


@pytest.mark.parametrize("clip, n", [(1.0, 2), (0.01, 50), (37.5, 1000)])
def test_fast_fixed_point_matches_the_shared_codec(clip, n):
    codec = FixedPointCodec(clip=clip, max_clients=n, modulus=PRESETS["bfv-4096"].plain_modulus)
    x = np.random.default_rng(n).uniform(-2 * clip, 2 * clip, size=5000)
    x[:2] = [clip, -clip]
    reference = codec.encode(x, np.random.default_rng(9))
    for fast in (fixed_point(codec, x, np.random.default_rng(9)),
                 encode_fixed_point(codec, x, np.random.default_rng(9), block=777)):
        assert fast.dtype == np.int64
        np.testing.assert_array_equal(np.mod(fast, codec.modulus).astype(np.uint64), reference)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_multi_chunk(preset):
    proto = create("he", {"preset": preset})
    length = int(2.5 * proto.params.slots)  # two full ciphertexts and a partial one
    ups = _updates(3, length, seed=1)
    res = proto.aggregate(0, ups, seed=3)
    if proto.params.scheme == "ckks":
        expected = ups[0] + ups[1] + ups[2]
        assert np.abs(res.total - expected).max() <= proto.params.error_bound(3)
    else:
        np.testing.assert_array_equal(res.total, _fixed_point_oracle(proto, ups, 0, 3)[0])
    # bytes: three ciphertexts per client, the aggregate down, the plain sum back
    assert res.bytes_up > 3 * 3 * 0.9 * len(encrypt_chunks(
        proto.client.public.context, proto.params, np.zeros(proto.params.slots))[0])


def test_bfv_max_clients_at_the_clip_do_not_wrap():
    proto = create("he", {"scheme": "bfv", "clip": 0.5, "max_clients": 4})
    ups = {c: np.array([0.5, -0.5, 0.25]) for c in range(4)}
    res = proto.aggregate(0, ups)
    np.testing.assert_allclose(res.total, [2.0, -2.0, 1.0], atol=4 / proto.codec(4).scale)
    with pytest.raises(ValueError, match="max_clients"):
        proto.aggregate(1, {c: np.zeros(3) for c in range(5)})


def test_bfv_warns_when_clipping():
    proto = create("he", {"scheme": "bfv", "clip": 1.0})
    with pytest.warns(RuntimeWarning, match="client 1.*clipped"):
        res = proto.aggregate(0, {0: np.array([0.5]), 1: np.array([3.0])})
    assert res.total[0] == pytest.approx(1.5, abs=1e-6)


def test_ckks_refuses_values_beyond_its_range():
    proto = create("he", {"preset": "ckks-4096"})
    with pytest.raises(ValueError, match="client 1"):
        proto.aggregate(0, {0: np.zeros(2), 1: np.array([0.0, 2.0**17])})


# -- key roles ---------------------------------------------------------------------------------

def test_server_and_clients_hold_no_secret_key(ckks):
    for ctx in (ckks.server.public.context, ckks.client.public.context):
        assert not ctx.is_private() and not ctx.has_secret_key()
        with pytest.raises(ValueError):
            ctx.secret_key()
    # the server's own running sum cannot be decrypted with what the server holds
    round_sum = ckks.server.open_round(0, 4, ckks.params.scale)
    round_sum.add(0, ckks.client.encrypt_update(0, 0, np.ones(4)))
    with pytest.raises(ValueError, match="secret"):
        round_sum._sum[0].decrypt()
    # nor can a vector loaded from a client's bytes
    chunk = wire.decode(ckks.client.encrypt_update(0, 1, np.ones(4)),
                        dataclasses.replace(round_sum.expect, party=1),
                        client_id=1, stage=STAGE).chunks[0]
    with pytest.raises(ValueError, match="secret"):
        ts.ckks_vector_from(ckks.server.public.context, chunk).decrypt()
    assert ckks.key_holder._context.is_private()


def test_key_material_round_trips_as_bytes():
    params = PRESETS["bfv-4096"]
    holder = KeyHolder.generate(params, min_contributors=2)
    public, secret = holder.public_context_bytes(), holder.secret_context_bytes()
    assert len(secret) > len(public)
    with pytest.raises(ValueError, match="secret key"):
        PublicContext(secret, params)
    with pytest.raises(ValueError, match="public context"):
        KeyHolder.from_secret_bytes(public, params)
    with pytest.raises(ValueError, match="does not parse"):
        PublicContext(b"not a context", params)
    # deployment: the key holder restarts from its secret bytes, parties from the public ones
    restored = KeyHolder.from_secret_bytes(secret, params, min_contributors=2)
    assert restored.fingerprint == holder.fingerprint
    proto = HEProtocol(parse_options({"scheme": "bfv", "min_clients": 2}), key_holder=restored)
    ups = _updates(3, 50)
    exact, _ = _fixed_point_oracle(proto, ups, 4, 0)
    np.testing.assert_array_equal(proto.aggregate(4, ups).total, exact)
    with pytest.raises(ValueError, match="preset"):
        HEProtocol(parse_options({"preset": "bfv-8192"}), key_holder=restored)


def test_key_holder_decrypts_only_aggregates_once_per_round(ckks):
    holder = ckks.key_holder
    server = HEServer(ckks.server.public)
    client = HEClient(ckks.client.public)
    update = client.encrypt_update(20, 0, np.ones(5))
    with pytest.raises(MalformedMessage, match="expected an encrypted aggregate"):
        holder.decrypt_aggregate(update, round_id=20)
    single = server.open_round(20, 5, ckks.params.scale)
    single.add(0, update)
    with pytest.raises(TooFewClients, match="at least 2"):
        holder.decrypt_aggregate(single.aggregate_message(), round_id=20)
    pair = server.open_round(21, 5, ckks.params.scale)
    for cid in (0, 1):
        pair.add(cid, client.encrypt_update(21, cid, np.full(5, cid + 1.0)))
    message = pair.aggregate_message()
    with pytest.raises(WrongRound):
        holder.decrypt_aggregate(message, round_id=22)
    total = pair.read_sum(holder.decrypt_aggregate(message, round_id=21), stage="decrypted_sum")
    np.testing.assert_allclose(total, 3.0, atol=ckks.params.error_bound(2))
    with pytest.raises(ReplayedMessage, match="already decrypted"):
        holder.decrypt_aggregate(message, round_id=21)
    assert KEY_HOLDER == -1


# -- bad input: each kind is rejected with its type, naming the client; the round completes ----

def _flip(offset_from_end):
    def tamper(payload):
        b = bytearray(payload)
        b[len(b) - offset_from_end] ^= 0x10
        return bytes(b)
    return tamper


def test_every_bad_input_kind_is_rejected_and_the_round_completes(ckks):
    rnd, length = 30, 5000  # two ciphertexts per client under ckks-8192
    ups = _updates(15, length, seed=5)  # 0 and 14 are honest
    params, client = ckks.params, ckks.client
    other_keys = create("he", {"preset": "ckks-8192"})  # same parameters, other key pair
    smaller = create("he", {"preset": "ckks-4096"})
    bfv = create("he", {"scheme": "bfv"})
    sent = {}

    def record(payload):  # client 0 is honest; keep what it sent
        sent[0] = payload
        return payload

    def framed(cid, chunks):
        """A well-formed frame (valid checksums, our fingerprint) around arbitrary chunks."""
        return wire.encode(wire.UPDATE, scheme="ckks", round_id=rnd, party=cid, length=length,
                           scale=params.scale, fingerprint=client.public.fingerprint,
                           chunks=chunks)

    def chunks_of(ctx_params, context, values):
        return encrypt_chunks(context, ctx_params, values)

    def copied_from_0(b):
        expect = wire.Expect(wire.UPDATE, "ckks", rnd, length, 2, params.scale,
                             client.public.fingerprint, 0)
        return framed(8, wire.decode(sent[0], expect, client_id=0, stage=STAGE).chunks)

    ours = client.public.context
    lower = ts.ckks_vector(ckks.key_holder._context, ups[13][:4096].tolist()) * 0.5
    tamper = {
        (STAGE, 0): record,
        (STAGE, 1): _flip(1000),                                    # corrupted ciphertext
        (STAGE, 2): lambda b: b[:-100],                             # truncated
        (STAGE, 3): lambda b: other_keys.client.encrypt_update(rnd, 3, ups[3]),  # other keys
        (STAGE, 4): lambda b: client.encrypt_update(rnd - 1, 4, ups[4]),  # an old round's
        (STAGE, 5): lambda b: framed(5, chunks_of(params, ours, ups[5][:4096])),  # chunk missing
        (STAGE, 6): lambda b: bfv.client.encrypt_update(           # wrong scheme
            rnd, 6, ups[6], codec=bfv.codec(14), rng=np.random.default_rng(0)),
        (STAGE, 7): lambda b: framed(7, chunks_of(                  # other parameters, forged
            smaller.params, smaller.client.public.context, ups[7][:4096])),
        (STAGE, 8): copied_from_0,                                  # client 0's ciphertexts
        (STAGE, 9): lambda b: b"GARBAGE" * 20,                      # not our format
        (STAGE, 10): lambda b: sent[0],                             # client 0's message
        (STAGE, 11): lambda b: b[:20] + bytes([b[20] ^ 1]) + b[21:],  # header bit flip
        (STAGE, 12): lambda b: framed(12, chunks_of(params, ours, ups[12][:4096])
                                      + chunks_of(params, ours, ups[12][:10])),  # short chunk
        (STAGE, 13): lambda b: framed(13, [lower.serialize()]       # not a fresh ciphertext
                                      + chunks_of(params, ours, ups[13][4096:])),
    }
    res = ckks.aggregate(rnd, ups, channel=FaultyChannel(tamper=tamper))
    expected_types = {1: TamperedMessage, 2: WrongLength, 3: ContextMismatch, 4: WrongRound,
                      5: WrongLength, 6: ContextMismatch, 7: ContextMismatch,
                      8: DuplicateMessage, 9: MalformedMessage, 10: MalformedMessage,
                      11: TamperedMessage, 12: WrongLength, 13: MalformedMessage}
    assert {cid: type(err) for cid, err in res.rejected.items()} == expected_types
    for cid, err in res.rejected.items():
        assert err.client_id == cid and f"client {cid}" in str(err) and err.stage == STAGE
    assert "client 0" in str(res.rejected[8]) and "client 0" in str(res.rejected[10])
    assert res.contributors == (0, 14)
    np.testing.assert_allclose(res.total, ups[0] + ups[14], atol=params.error_bound(2))


def test_rejections_and_dropouts_keep_the_round_going(bfv):
    ups = _updates(6, 700, seed=9)
    channel = FaultyChannel(drop={STAGE: {1}}, tamper={(STAGE, 2): _flip(50),
                                                       (STAGE, 3): lambda b: b[:-1]})
    res = bfv.aggregate(40, ups, channel=channel, seed=1)
    assert res.dropped == (1,) and set(res.rejected) == {2, 3}
    assert res.contributors == (0, 4, 5)
    # the codec leaves room for all 6 sampled clients; the sum is exact for the 3 that remain
    kept = {c: ups[c] for c in (0, 4, 5)}
    codec = bfv.codec(6)
    t = bfv.params.plain_modulus
    total = np.zeros(700, dtype=object)
    for cid in (0, 4, 5):
        rng = np.random.default_rng(np.random.SeedSequence([1, 40, cid]))
        total = (total + codec.encode(kept[cid], rng).astype(object)) % t
    np.testing.assert_array_equal(res.total, codec.decode_sum(total.astype(np.uint64)))


def test_too_few_clients_and_key_holder_failures_abort(bfv):
    ups = _updates(3, 20)
    with pytest.raises(TooFewClients, match="valid encrypted updates"):
        bfv.aggregate(50, ups, channel=FaultyChannel(drop={STAGE: {0, 1}}))
    with pytest.raises(TooFewClients, match="answer was lost"):
        bfv.aggregate(51, ups, channel=FaultyChannel(drop={"decrypted_sum": {KEY_HOLDER}}))
    with pytest.raises(TooFewClients, match="unusable.*checksum"):
        bfv.aggregate(52, ups, channel=FaultyChannel(
            tamper={("decrypted_sum", KEY_HOLDER): _flip(3)}))
    with pytest.raises(TooFewClients, match="already decrypted"):
        bfv.aggregate(52, ups)  # the key holder decrypted round 52 once already


# -- options and plumbing ----------------------------------------------------------------------

@pytest.mark.parametrize("options, match", [
    ({"scheme": "paillier"}, "scheme must be one of"),
    ({"preset": "ckks-1024"}, "preset must be one of"),
    ({"scheme": "bfv", "preset": "ckks-8192"}, "is a ckks preset"),
    ({"scheme": "ckks", "clip": 1.0}, "BFV only"),
    ({"scheme": "ckks", "max_clients": 10}, "BFV only"),
    ({"scheme": "bfv", "clip": -1.0}, "clip must be a positive"),
    ({"scheme": "bfv", "clip": "1"}, "clip must be a positive"),
    ({"min_clients": 0}, "min_clients must be an integer >= 1"),
    ({"scheme": "bfv", "min_clients": 5, "max_clients": 3}, "max_clients must be an integer >= 5"),
    ({"scheme": "bfv", "max_clients": 20_000}, "exceeds the 10000 summands"),
    ({"scheme": "bfv", "clip": 1e7, "max_clients": 1000}, "no precision"),
    ({"neighbours": 8}, "takes no option 'neighbours'"),
])
def test_options_are_validated(options, match):
    with pytest.raises(ValueError, match=match):
        parse_options(options)


def test_defaults_and_describe():
    opts = parse_options({})
    assert opts.params.name == "bfv-4096" and opts.min_clients == 1 and opts.clip == 1.0
    assert parse_options({"scheme": "ckks"}).params.name == "ckks-8192"
    assert "only the sum" in create("he").describe()
    with pytest.raises(ValueError, match="empty"):
        create("he").aggregate(0, {0: np.zeros(0)})
    with pytest.raises(ValueError, match="key holder"):
        create("he").aggregate(0, {-1: np.zeros(2), 0: np.zeros(2)})


def test_presets_plain_moduli_allow_batching():
    for p in PRESETS.values():
        assert sum(p.coeff_mod_bit_sizes) <= {4096: 109, 8192: 218, 16384: 438}[
            p.poly_modulus_degree]  # SEAL's 128-bit security bound
        if p.scheme == "bfv":
            t = p.plain_modulus
            assert t % (2 * p.poly_modulus_degree) == 1
            assert all(pow(a, t - 1, t) == 1 for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37))


def test_channel_counts_bytes_and_no_stdout_warning(capfd):
    proto = create("he", {"preset": "ckks-4096"})
    channel = Channel()
    res = proto.aggregate(0, _updates(2, 5000), channel=channel)  # 3 chunks, no TenSEAL warning
    assert capfd.readouterr().out == ""
    assert res.bytes_up == channel.bytes_up > 2 * 3 * 60_000
    assert res.bytes_down > 3 * 60_000  # the aggregate to the key holder


def test_core_imports_without_tenseal():
    code = ("import sys, protocols, ffm_private.simulation, protocols.he.params, "
            "protocols.he.wire; print('tenseal' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["False"]


def test_composes_with_distributed_dp_noise():
    """Clients clip to C and add their noise share before encrypting; BFV's clip covers both."""
    import warnings

    from ffm_private.privacy.mechanisms import (
        add_distributed_noise,
        clip_to_norm,
        distributed_noise_std,
    )

    n, sigma, c = 10, 1.0, 1.0
    share = distributed_noise_std(sigma, c, n)
    clip = c + 6 * share  # docs/he.md: the range the fixed point must cover
    proto = create("he", {"scheme": "bfv", "clip": clip})
    rng = np.random.default_rng(3)
    raw = _updates(n, 400, seed=11, scale=0.5)
    noisy = {cid: add_distributed_noise(clip_to_norm(u, c), sigma, c, n, rng)
             for cid, u in raw.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may be clipped by the codec
        res = proto.aggregate(0, noisy, seed=2)
    exact, codec = _fixed_point_oracle(proto, noisy, 0, 2)
    np.testing.assert_array_equal(res.total, exact)
    assert codec.error_bound(n) < 1e-6 * share


def test_bfv_sums_do_not_depend_on_the_keys():
    """A resumed run (fresh keys) reproduces an uninterrupted one bit for bit under BFV."""
    ups = _updates(4, 300, seed=21)
    a = create("he", {"scheme": "bfv"}).aggregate(6, ups, seed=5)
    b = create("he", {"scheme": "bfv"}).aggregate(6, ups, seed=5)
    assert a.total.tobytes() == b.total.tobytes()
    c = create("he", {"scheme": "bfv"}).aggregate(6, ups, seed=6)
    assert c.total.tobytes() != a.total.tobytes()  # the rounding really depends on the seed
