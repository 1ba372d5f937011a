"""HE aggregation: sums against numpy oracles, key roles, every bad input kind, options.

Vectors stay small (a few ciphertexts) so the file runs in seconds.
"""

import dataclasses
import hashlib
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
    PublicContext,
    parse_options,
    wire,
)
from protocols.he.codec import encode_fixed_point, encrypt_chunks, fixed_point
from protocols.he.crypto import KeystreamUniform, rounding_key
from protocols.he.keys import decode_opening
from protocols.quantize import FixedPointCodec

STAGE = "encrypted_update"
CKKS = {"ckks_key_risk_accepted": True}


def _updates(n, length, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return {cid: rng.uniform(-scale, scale, size=length) for cid in range(n)}


def _secrets(ids, tag=0):
    """Per-client 32-byte round secrets (what the caller derives from each client's own)."""
    return {cid: hashlib.sha256(f"{tag}/{cid}".encode()).digest() for cid in ids}


def _rounding(secrets, round_id, cid):
    return KeystreamUniform(rounding_key(secrets[cid], round_id))


def _fixed_point_oracle(proto, updates, round_id, secrets):
    """The exact BFV result, computed with Python integers from the codec's own residues."""
    codec = proto.codec(len(updates))
    t = proto.params.plain_modulus
    total = [0] * len(next(iter(updates.values())))
    for cid in sorted(updates):
        rng = _rounding(secrets, round_id, cid)
        for i, r in enumerate(codec.encode(updates[cid], rng).tolist()):
            total[i] = (total[i] + int(r)) % t
    centred = [r - t if r > t // 2 else r for r in total]
    return np.array(centred, dtype=np.float64) / codec.scale, codec


@pytest.fixture(scope="module")
def ckks():
    return create("he", {"preset": "ckks-8192", "min_clients": 2, **CKKS})


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
    secrets = _secrets(ups, 7)
    res = bfv.aggregate(n, ups, secrets=secrets)
    exact, codec = _fixed_point_oracle(bfv, ups, n, secrets)
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
    proto = create("he", {"preset": preset, **(CKKS if preset.startswith("ckks") else {})})
    length = int(2.5 * proto.params.slots)  # two full ciphertexts and a partial one
    ups = _updates(3, length, seed=1)
    secrets = _secrets(ups, 3)
    res = proto.aggregate(0, ups, secrets=secrets)
    if proto.params.scheme == "ckks":
        expected = ups[0] + ups[1] + ups[2]
        assert np.abs(res.total - expected).max() <= proto.params.error_bound(3)
    else:
        np.testing.assert_array_equal(res.total, _fixed_point_oracle(proto, ups, 0, secrets)[0])
    assert res.clipped == 0
    # bytes: three ciphertexts per client, the aggregate down, the plain sum back
    assert res.bytes_up > 3 * 3 * 0.9 * len(encrypt_chunks(
        proto.public.context, proto.params, np.zeros(proto.params.slots))[0])


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
    assert res.clipped == 1  # the encrypted count: the server learns only the round's total


def test_ckks_clips_and_counts_a_large_update_instead_of_crashing():
    proto = create("he", {"preset": "ckks-4096", **CKKS})
    ups = {0: np.zeros(3), 1: np.array([0.0, 2.0**17, -5.0]), 2: np.array([0.5, 2.0, 0.0])}
    with pytest.warns(RuntimeWarning) as caught:
        res = proto.aggregate(0, ups)
    assert sorted(str(w.message).split(":")[0] for w in caught) == ["client 1", "client 2"]
    np.testing.assert_allclose(res.total, [0.5, 2.0, -1.0], atol=proto.params.error_bound(3))
    assert res.clipped == 3 and res.contributors == (0, 1, 2)
    # a clip whose sum could leave the preset's exact range is a configuration error
    wide = create("he", {"preset": "ckks-4096", "clip": 2.0**16, **CKKS})
    with pytest.raises(ValueError, match="clip"):
        wide.aggregate(0, {c: np.zeros(2) for c in range(4)})
    with pytest.raises(ValueError, match="clip"):
        parse_options({"preset": "ckks-4096", "clip": 2.0**16, "max_clients": 4, **CKKS})


# -- key roles ---------------------------------------------------------------------------------

def test_server_and_clients_hold_no_secret_key(ckks):
    holder = ckks.key_holder
    opening = holder.open_round(4, room=2, clip=1.0)
    inbox = ckks.server.open_round(opening, stage=STAGE)
    client = ckks.client(0)
    _, client_public = client.read_opening(opening)
    for ctx in (ckks.server.public.context, client_public.context):
        assert not ctx.is_private() and not ctx.has_secret_key()
        with pytest.raises(ValueError):
            ctx.secret_key()
    # a vector loaded from a client's bytes cannot be decrypted with what the server holds
    message, _ = client.encrypt_update(opening, np.ones(4), round_id=0)
    chunk = wire.decode(message, dataclasses.replace(inbox.expect, party=0),
                        client_id=0, stage=STAGE).chunks[0]
    with pytest.raises(ValueError, match="secret"):
        ts.ckks_vector_from(ckks.server.public.context, chunk).decrypt()
    assert holder._round.context.is_private()


def test_public_context_refuses_secret_bytes():
    params = PRESETS["bfv-4096"]
    proto = create("he", {"scheme": "bfv"})
    opening = proto.key_holder.open_round(10, room=2, clip=1.0)
    public = decode_opening(params, opening, client_id=None, stage=STAGE).public
    secret = proto.key_holder._round.context.serialize(save_secret_key=True)
    assert len(secret) > len(public)
    assert PublicContext(public, params).size == len(public)
    with pytest.raises(ValueError, match="secret key"):
        PublicContext(secret, params)
    with pytest.raises(ValueError, match="does not parse"):
        PublicContext(b"not a context", params)
    with pytest.raises(ValueError, match="preset"):
        HEProtocol(parse_options({"preset": "bfv-8192"}), key_holder=proto.key_holder)


def test_key_holder_decrypts_only_its_verified_sum_once(ckks):
    """The short version; tests/protocols/test_he_adversarial.py drives the attacks."""
    holder = ckks.key_holder
    opening = holder.open_round(5, room=2, clip=1.0)
    inbox = ckks.server.open_round(opening, stage=STAGE)
    sent = {}
    for cid in (0, 1):
        message, receipt = ckks.client(cid).encrypt_update(opening, np.full(5, 0.25 * (cid + 1)),
                                                           round_id=100)
        holder.receive_receipt(cid, receipt)
        sent[cid] = message
    with pytest.raises(MalformedMessage, match="expected an aggregate request"):
        holder.decrypt_aggregate(sent[0])
    holder.receive_update(0, sent[0])
    inbox.accept(0, inbox.check(0, sent[0]))
    with pytest.raises(TooFewClients, match="at least 2"):
        holder.decrypt_aggregate(inbox.aggregate_message())
    holder.receive_update(1, sent[1])
    inbox.accept(1, inbox.check(1, sent[1]))
    total, count = inbox.read_sum(holder.decrypt_aggregate(inbox.aggregate_message()),
                                  stage="decrypted_sum")
    np.testing.assert_allclose(total, 0.75, atol=ckks.params.error_bound(2))
    assert round(count) == 0
    with pytest.raises(ReplayedMessage, match="already decrypted"):
        holder.decrypt_aggregate(inbox.aggregate_message())
    assert KEY_HOLDER == -1


# -- bad input: each kind is rejected with its type, naming the client; the round completes ----

def _flip(offset_from_end):
    def tamper(payload):
        b = bytearray(payload)
        b[len(b) - offset_from_end] ^= 0x10
        return bytes(b)
    return tamper


def _reframe(proto, payload, cid, length, **changes):
    """Client ``cid``'s update of the current round, re-framed with valid checksums."""
    params, public = proto.params, proto.public
    expect = wire.Expect(wire.UPDATE, params.scheme, proto.key_holder.round_id, length, None,
                         None, public.fingerprint, cid)
    frame = wire.decode(payload, expect, client_id=cid, stage=STAGE)
    fields = dict(scheme=params.scheme, round_id=proto.key_holder.round_id, party=cid,
                  length=length, scale=frame.scale, fingerprint=public.fingerprint,
                  chunks=frame.chunks)
    fields.update(changes)
    return wire.encode(wire.UPDATE, **fields)


def test_every_bad_input_kind_is_rejected_and_the_round_completes(ckks):
    rnd, length = 30, 5000  # two ciphertexts per client under ckks-8192
    ups = _updates(15, length, seed=5)  # 0 and 14 are honest
    params = ckks.params
    smaller = ts.context(ts.SCHEME_TYPE.CKKS, 4096, coeff_mod_bit_sizes=[60, 49], n_threads=1)
    smaller.global_scale = 2.0**40
    sent = {}

    def record(payload):  # client 0 is honest; keep what it sent
        sent[0] = payload
        return payload

    def framed(cid, chunks):
        """A well-formed frame (valid checksums, this round's fingerprint) around any chunks."""
        return wire.encode(wire.UPDATE, scheme="ckks", round_id=ckks.key_holder.round_id,
                           party=cid, length=length, scale=params.scale,
                           fingerprint=ckks.public.fingerprint, chunks=chunks)

    def ours(values):
        return encrypt_chunks(ckks.public.context, params, values)

    def lower(b):  # a multiplied, rescaled ciphertext: not at the top level
        vec = ts.ckks_vector(ckks.public.context, ups[13][:4096].tolist()) * 0.5
        return framed(13, [vec.serialize()] + ours(ups[13][4096:]))

    def copied_from_0(b):
        return framed(8, wire.decode(
            sent[0], wire.Expect(wire.UPDATE, "ckks", ckks.key_holder.round_id, length, 2,
                                 params.scale, ckks.public.fingerprint, 0),
            client_id=0, stage=STAGE).chunks)

    tamper = {
        (STAGE, 0): record,
        (STAGE, 1): _flip(1000),                                    # corrupted ciphertext
        (STAGE, 2): lambda b: b[:-100],                             # truncated
        (STAGE, 3): lambda b: _reframe(ckks, b, 3, length, fingerprint=bytes(16)),  # other keys
        (STAGE, 4): lambda b: _reframe(ckks, b, 4, length,          # an old round's
                                       round_id=ckks.key_holder.round_id - 1),
        (STAGE, 5): lambda b: framed(5, ours(ups[5][:4096])),       # chunk missing
        (STAGE, 6): lambda b: _reframe(ckks, b, 6, length, scheme="bfv"),  # wrong scheme
        (STAGE, 7): lambda b: framed(7, encrypt_chunks(             # other parameters, forged
            smaller, PRESETS["ckks-4096"], ups[7][:4096])),
        (STAGE, 8): copied_from_0,                                  # client 0's ciphertexts
        (STAGE, 9): lambda b: b"GARBAGE" * 20,                      # not our format
        (STAGE, 10): lambda b: sent[0],                             # client 0's message
        (STAGE, 11): lambda b: b[:20] + bytes([b[20] ^ 1]) + b[21:],  # header bit flip
        (STAGE, 12): lambda b: framed(12, ours(ups[12][:4096]) + ours(ups[12][:10])),  # short
        (STAGE, 13): lower,                                         # not a fresh ciphertext
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
    ups = _updates(8, 700, seed=9)
    secrets = _secrets(ups, 1)
    channel = FaultyChannel(drop={STAGE: {1}, "receipt": {6}},
                            tamper={(STAGE, 2): _flip(50), (STAGE, 3): lambda b: b[:-1],
                                    ("receipt", 7): _flip(5)})
    res = bfv.aggregate(40, ups, channel=channel, secrets=secrets)
    assert res.dropped == (1, 6) and set(res.rejected) == {2, 3, 7}
    assert isinstance(res.rejected[7], TamperedMessage) and res.rejected[7].client_id == 7
    assert res.rejected[7].stage == "receipt"
    assert res.contributors == (0, 4, 5)
    # the codec leaves room for all 8 sampled clients; the sum is exact for the 3 that remain
    codec = bfv.codec(8)
    t = bfv.params.plain_modulus
    total = np.zeros(700, dtype=object)
    for cid in (0, 4, 5):
        total = (total + codec.encode(ups[cid], _rounding(secrets, 40, cid)).astype(object)) % t
    np.testing.assert_array_equal(res.total, codec.decode_sum(total.astype(np.uint64)))


def test_too_few_clients_and_key_holder_failures_abort(bfv):
    ups = _updates(3, 20)
    with pytest.raises(TooFewClients, match="2 clients sampled, at least 3"):
        create("he", {"min_clients": 3}).aggregate(59, _updates(2, 20))
    with pytest.raises(TooFewClients, match="valid encrypted updates"):
        bfv.aggregate(60, ups, channel=FaultyChannel(drop={STAGE: {0, 1}}))
    with pytest.raises(TooFewClients, match="valid encrypted updates"):
        bfv.aggregate(61, ups, channel=FaultyChannel(drop={"receipt": {0, 1}}))
    with pytest.raises(TooFewClients, match="answer was lost"):
        bfv.aggregate(62, ups, channel=FaultyChannel(drop={"decrypted_sum": {KEY_HOLDER}}))
    with pytest.raises(TooFewClients, match="unusable.*checksum"):
        bfv.aggregate(63, ups, channel=FaultyChannel(
            tamper={("decrypted_sum", KEY_HOLDER): _flip(3)}))


# -- options and plumbing ----------------------------------------------------------------------

@pytest.mark.parametrize("options, match", [
    ({"scheme": "paillier"}, "scheme must be one of"),
    ({"preset": "ckks-1024"}, "preset must be one of"),
    ({"scheme": "bfv", "preset": "ckks-8192"}, "is a ckks preset"),
    ({"scheme": "ckks"}, "ckks_key_risk_accepted = true is required"),
    ({"scheme": "ckks", "ckks_key_risk_accepted": 1}, "ckks_key_risk_accepted must be true or"),
    ({"scheme": "ckks", "ckks_key_risk_accepted": "yes"}, "ckks_key_risk_accepted must be"),
    ({"scheme": "bfv", "ckks_key_risk_accepted": True}, "applies to CKKS only"),
    ({"scheme": ["bfv"]}, "scheme must be one of"),
    ({"preset": None, "scheme": 3}, "scheme must be one of"),
    ({"scheme": "bfv", "clip": -1.0}, "clip must be a positive"),
    ({"scheme": "bfv", "clip": "1"}, "clip must be a positive"),
    ({"clip": True}, "clip must be a positive"),
    ({"clip": float("inf")}, "clip must be a positive"),
    ({"clip": float("nan")}, "clip must be a positive"),
    ({"clip": [1.0]}, "clip must be a positive"),
    ({"min_clients": 0}, "min_clients must be an integer >= 1"),
    ({"min_clients": 2.9}, "min_clients must be an integer >= 1, got 2.9"),
    ({"min_clients": 2.0}, "min_clients must be an integer"),
    ({"min_clients": True}, "min_clients must be an integer"),
    ({"min_clients": float("nan")}, "min_clients must be an integer"),
    ({"min_clients": [2]}, "min_clients must be an integer"),
    ({"max_clients": 10.0}, "max_clients must be an integer"),
    ({"scheme": "bfv", "min_clients": 5, "max_clients": 3}, "max_clients must be an integer >= 5"),
    ({"scheme": "bfv", "max_clients": 20_000}, "exceeds the 10000 summands"),
    ({"scheme": "bfv", "clip": 1e7, "max_clients": 1000}, "no precision"),
    ({"preset": "ckks-4096", "clip": 2.0**15, "max_clients": 8, **CKKS}, "decrypts correctly"),
    ({"neighbours": 8}, "takes no option 'neighbours'"),
])
def test_options_are_validated(options, match):
    with pytest.raises(ValueError, match=match):
        parse_options(options)


def test_defaults_and_describe():
    opts = parse_options({})
    assert opts.params.name == "bfv-4096" and opts.min_clients == 1 and opts.clip == 1.0
    ckks = parse_options({"scheme": "ckks", **CKKS})
    assert ckks.params.name == "ckks-8192" and ckks.clip == 1.0 and ckks.ckks_key_risk_accepted
    assert "only the sum" in create("he").describe()
    described = create("he", {"scheme": "ckks", **CKKS}).describe()
    assert "Li-Micciancio" in described and "individual updates" in described
    assert "only the sum" not in described


def test_capabilities():
    bfv = create("he", {"scheme": "bfv", "min_clients": 3, "clip": 0.5})
    assert bfv.supports_distributed_noise and bfv.min_clients == 3 and bfv.value_range == 0.5
    assert not bfv.reveals_individual_updates
    ckks = create("he", {"scheme": "ckks", "clip": 2.0, **CKKS})
    assert ckks.value_range == 2.0 and ckks.min_clients == 1
    assert not ckks.supports_distributed_noise  # the server can recover the round's key
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
    proto = create("he", {"preset": "ckks-4096", **CKKS})
    channel = Channel()
    res = proto.aggregate(0, _updates(2, 5000), channel=channel)  # 3 chunks, no TenSEAL warning
    assert capfd.readouterr().out == ""
    assert res.bytes_up == channel.bytes_up > 2 * 3 * 60_000
    # the round's public context to both clients, their updates forwarded to the key holder
    assert res.bytes_down > 2 * res.round_keys_bytes + 2 * 3 * 60_000


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
        res = proto.aggregate(0, noisy, secrets=_secrets(noisy, 2))
    exact, codec = _fixed_point_oracle(proto, noisy, 0, _secrets(noisy, 2))
    np.testing.assert_array_equal(res.total, exact)
    assert codec.error_bound(n) < 1e-6 * share


def test_bfv_sums_do_not_depend_on_the_keys():
    """A resumed run (fresh keys, same client secrets) reproduces an uninterrupted one."""
    ups = _updates(4, 300, seed=21)
    secrets = _secrets(ups, 5)
    a = create("he", {"scheme": "bfv"}).aggregate(6, ups, secrets=secrets)
    b = create("he", {"scheme": "bfv"}).aggregate(6, ups, secrets=secrets, seed=99)
    assert a.total.tobytes() == b.total.tobytes()  # the public seed fixes nothing
    c = create("he", {"scheme": "bfv"}).aggregate(6, ups, secrets=_secrets(ups, 6))
    assert c.total.tobytes() != a.total.tobytes()  # the rounding depends on the secrets


def test_rounding_is_keyed_from_the_client_secret_not_the_public_seed():
    """Without secrets every call draws fresh OS randomness; with them, only the holder of
    client 0's secret can reproduce its rounding (same seed, other secret: other residues)."""
    ups = {0: np.full(64, 0.3 / 2**31), 1: np.zeros(64)}  # a fraction of one step
    runs = [create("he", {"scheme": "bfv"}).aggregate(2, ups, seed=1) for _ in range(2)]
    assert runs[0].total.tobytes() != runs[1].total.tobytes()
    base = _secrets(ups, 0)
    other = {**base, 0: hashlib.sha256(b"another").digest()}
    p = create("he", {"scheme": "bfv"})
    same = [p.aggregate(r, ups, secrets=base).total for r in (3, 4)]
    assert same[0].tobytes() != same[1].tobytes()  # bound to the round
    q = create("he", {"scheme": "bfv"})
    assert q.aggregate(3, ups, secrets=other).total.tobytes() != same[0].tobytes()
    assert create("he", {"scheme": "bfv"}).aggregate(3, ups, secrets=base).total.tobytes() == \
        same[0].tobytes()
    with pytest.raises(ValueError, match="client 1"):
        p.aggregate(5, ups, secrets={0: base[0]})
    with pytest.raises(ValueError, match="client 1: the round secret must be 32 bytes"):
        p.aggregate(5, ups, secrets={0: base[0], 1: b"short"})


# -- what the server learns besides the sum: the clipped count ---------------------------------
class _ServerView(Channel):
    """Records every message the server receives (uploads, and the key holder's answer)."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[tuple[str, int, bytes]] = []

    def upload(self, stage, client_id, payload):
        out = super().upload(stage, client_id, payload)
        if out is not None:
            self.received.append((stage, client_id, out))
        return out


def _count(payload: bytes) -> int:
    """The 8-byte count, the frame's last chunk (sums and receipts end with it)."""
    return int.from_bytes(payload[-8:], "little")


def _answer_count(view: _ServerView) -> int:
    (answer,) = [p for stage, _, p in view.received if stage == "decrypted_sum"]
    return _count(answer)


def _clipping_round(options):
    """Three clients, of which two exceed the clip on 1 and 2 coordinates: the exact count is
    a statistic of their un-noised updates."""
    proto = create("he", {"scheme": "bfv", "clip": 1.0, **options})
    view = _ServerView()
    ups = {0: np.array([0.5, 0.0, 0.0]), 1: np.array([3.0, 0.0, 0.0]),
           2: np.array([0.0, -4.0, 9.0])}
    with pytest.warns(RuntimeWarning) if options.get("report_clipped", True) else _no_warning():
        res = proto.aggregate(0, ups, channel=view)
    return proto, view, res


class _no_warning:  # noqa: N801 - a context manager used like pytest.warns
    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def test_the_server_learns_the_exact_clipped_count_unless_report_clipped_is_false():
    """Adversary: the server (untrusted under distributed DP). Before: the key holder's answer
    hands it the exact number of clipped coordinates (3), an un-noised statistic of the
    clients' data. With report_clipped = false (what the privacy layer sets under distributed
    noise) every client reports 0, so the answer and the key holder's receipts carry nothing
    about the data, and the result has no count; the sum itself is unchanged."""
    _, view, res = _clipping_round({})
    assert _answer_count(view) == 3 and res.clipped == 3  # recovered: the exact count
    proto, view, res = _clipping_round({"report_clipped": False})
    assert _answer_count(view) == 0  # nothing to recover
    assert res.clipped is None
    receipts = [p for stage, _, p in view.received if stage == "receipt"]
    assert len(receipts) == 3 and all(_count(r) == 0 for r in receipts)
    np.testing.assert_allclose(res.total, [1.5, -1.0, 1.0], atol=1e-5)
    assert HEProtocol.private_statistics_option == "report_clipped"
    with pytest.raises(ValueError, match="report_clipped"):
        parse_options({"report_clipped": "no"})


def test_distributed_dp_withholds_the_clipped_count_from_the_he_server():
    """The privacy layer finds the option through the protocol's capability (not its name)
    and sets it false under distributed noise: the protocol the run builds reports no count."""
    from types import SimpleNamespace

    from ffm_private.privacy.run import RunPrivacy
    from protocols import registry

    def options_for(placement):
        priv = SimpleNamespace(plan=SimpleNamespace(noise_placement=placement),
                               cfg=SimpleNamespace(min_survivors=3))
        statistics = registry.protocol_class("he").private_statistics_option
        return RunPrivacy.protocol_options(priv, {"clip": 4.0}, statistics)

    assert options_for("distributed")["report_clipped"] is False
    assert "report_clipped" not in options_for("central")  # the trusted server may see it
    proto = create("he", options_for("distributed"))
    with _no_warning():
        res = proto.aggregate(0, {c: np.array([9.0, 0.0]) for c in range(3)})
    assert res.clipped is None
