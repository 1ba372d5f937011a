"""SecAgg+ end to end: the unmasked sum, dropouts at every stage, aborts, bad messages,
what a masked vector looks like, where key material comes from, and a training run."""

import os
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from protocols import FaultyChannel, create
from protocols.errors import (
    DuplicateMessage,
    MalformedMessage,
    ReplayedMessage,
    TamperedMessage,
    TooFewClients,
    UnexpectedStage,
    WrongLength,
    WrongRound,
)
from protocols.quantize import FixedPointCodec
from protocols.secagg import SecAggOptions, SecAggPlusProtocol
from protocols.secagg import primitives as cr
from protocols.secagg.client import SecAggClient
from protocols.secagg.graph import circle_order
from protocols.secagg.messages import HEADER
from protocols.secagg.server import SecAggServer
from protocols.secagg.transcript import RoundView
from tests.protocols.secagg_helpers import DeterministicEntropy, plain_sum, updates
from tests.run_records import round_metrics


def _proto(seed: int = 0, **options) -> SecAggPlusProtocol:
    return SecAggPlusProtocol(SecAggOptions(**options), entropy=DeterministicEntropy(seed))


def _check_sum(res, ups, clip: float = 1.0):
    """The total equals the contributors' plaintext sum within the codec's bound."""
    codec = FixedPointCodec(clip=clip, max_clients=len(ups))
    err = np.abs(res.total - plain_sum(ups, res.contributors)).max()
    assert err <= codec.error_bound(len(res.contributors))
    return err


class RecordingChannel(FaultyChannel):
    """Remembers every download stage it carried, and every upload by (stage, client)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.down_stages: list[str] = []
        self.uploads: dict[tuple[str, int], bytes] = {}

    def download(self, stage, client_id, payload):
        got = super().download(stage, client_id, payload)
        if got is not None:
            self.down_stages.append(stage)
        return got

    def upload(self, stage, client_id, payload):
        self.uploads[(stage, client_id)] = payload
        return super().upload(stage, client_id, payload)


# -- the sum --------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [3, 10, 100])
def test_sum_equals_plaintext_within_quantization_bound(n):
    ups = updates(n, length=50, seed=n)
    res = _proto(n).aggregate(1, ups, seed=5)
    assert res.contributors == tuple(range(n))
    assert res.dropped == () and not res.rejected and res.individual is None
    _check_sum(res, ups)
    assert res.neighbours == min(n - 1, SecAggOptions().degree(n))
    assert res.threshold == res.neighbours // 2 + 1
    assert res.clipped == 0


def test_two_clients_float32_and_a_lone_client():
    ups = {4: np.array([0.1, 0.2], dtype=np.float32), 9: np.array([0.3, -0.5], dtype=np.float32)}
    res = _proto().aggregate(0, ups)
    assert res.contributors == (4, 9) and res.neighbours == 1 and res.threshold == 1
    np.testing.assert_allclose(res.total, [0.4, -0.3], atol=1e-6)
    with pytest.raises(TooFewClients, match="min_clients"):
        _proto().aggregate(0, {0: np.zeros(3)})


def test_registry_and_interface():
    proto = create("secagg", {"clip": 2.0, "neighbours": 4, "threshold": 0.75})
    assert isinstance(proto, SecAggPlusProtocol)
    assert proto.stages == ("advertise_keys", "share_keys", "masked_input", "unmask")
    assert not proto.reveals_individual_updates
    assert "only the sum" in proto.describe()
    res = proto.aggregate(0, updates(12, 20))
    assert res.neighbours == 4 and res.threshold == 3
    strict = create("secagg", {"malicious_server": True})
    assert strict.stages == ("advertise_keys", "share_keys", "masked_input", "consistency",
                             "unmask")


def test_total_is_reproducible_from_the_client_secrets_whatever_the_keys():
    """Rounding comes from each client's secret, masks cancel exactly: fresh keys (and any
    public seed), same total."""
    ups = updates(8, 40)
    secrets = {c: bytes([7, c]) * 16 for c in ups}
    a = _proto(1).aggregate(3, ups, seed=9, secrets=secrets)
    b = _proto(2).aggregate(3, ups, seed=10, secrets=secrets)
    c = SecAggPlusProtocol().aggregate(3, ups, seed=9, secrets=secrets)  # os.urandom keys
    np.testing.assert_array_equal(a.total, b.total)
    np.testing.assert_array_equal(a.total, c.total)
    other = {c: bytes([8, c]) * 16 for c in ups}
    assert not np.array_equal(a.total, _proto(1).aggregate(3, ups, seed=9, secrets=other).total)


def test_clipping_is_counted_and_bounded():
    ups = updates(6, 30, scale=0.5)
    ups[2][:4] = [3.0, -3.0, 1.5, -1.2]
    ups[4][0] = 9.0
    res = _proto().aggregate(1, ups)
    assert res.clipped == 5
    expected = plain_sum({c: np.clip(u, -1, 1) for c, u in ups.items()}, range(6))
    codec = FixedPointCodec(clip=1.0, max_clients=6)
    assert np.abs(res.total - expected).max() <= codec.error_bound(6)


@pytest.mark.parametrize("length", [1, 65535, 65536, 65537, 140_000])
def test_lengths_around_the_mask_block(length):
    ups = updates(4, length, seed=length)
    _check_sum(_proto().aggregate(1, ups), ups)


def test_bytes_per_parameter_on_the_wire():
    length = 10_000
    channel = RecordingChannel()
    _proto().aggregate(1, updates(10, length), channel=channel)
    masked = channel.uploads[("masked_input", 0)]
    assert len(masked) == HEADER.size + 4 * (length + 1) + cr.TAG_BYTES
    assert len(masked) / length < 4.01


# -- dropouts ---------------------------------------------------------------------------------
@pytest.mark.parametrize("stage", SecAggPlusProtocol.stages)
def test_dropout_at_each_stage(stage):
    ups = updates(10, 40, seed=1)
    res = _proto().aggregate(2, ups, channel=FaultyChannel(drop={stage: {3, 7}}))
    assert res.dropped == (3, 7)
    if stage == "unmask":  # their masked inputs had arrived: they are in the sum
        assert res.contributors == tuple(range(10))
    else:
        assert res.contributors == tuple(c for c in range(10) if c not in (3, 7))
    _check_sum(res, ups)


def test_dropouts_at_every_stage_at_once_on_a_sparse_graph():
    ups = updates(100, 30, seed=2)
    drop = {"advertise_keys": {1, 50}, "share_keys": {2, 60, 61}, "masked_input": {3, 70, 71, 72},
            "unmask": {4, 80}}
    res = _proto(neighbours=12).aggregate(4, ups, channel=FaultyChannel(drop=drop))
    assert res.neighbours == 12
    gone_early = {1, 50, 2, 60, 61, 3, 70, 71, 72}
    assert set(res.contributors) == set(range(100)) - gone_early
    assert set(res.dropped) == gone_early | {4, 80}
    _check_sum(res, ups)


def test_dropouts_down_to_the_threshold_then_abort():
    """Complete graph on 10, t = 5: dropping one client at each stage leaves exactly t
    shares for some secrets; one more unmask dropout is one too many."""
    ups = updates(10, 20, seed=3)
    drop = {"advertise_keys": {0}, "share_keys": {1}, "masked_input": {2}, "unmask": {3}}
    res = _proto(threshold=5).aggregate(1, ups, channel=FaultyChannel(drop=drop))
    assert res.contributors == (3, 4, 5, 6, 7, 8, 9) and res.threshold == 5
    _check_sum(res, ups)
    drop["unmask"] = {3, 4}
    with pytest.raises(TooFewClients, match="threshold is 5") as err:
        _proto(threshold=5).aggregate(1, ups, channel=FaultyChannel(drop=drop))
    assert err.value.stage == "unmask"


def test_dropout_during_key_sharing_does_not_abort():
    """Flower's SecAgg+ fails here; a client that never shares its keys is simply left out."""
    ups = updates(20, 20, seed=4)
    res = _proto(neighbours=8).aggregate(1, ups, channel=FaultyChannel(
        drop={"share_keys": {5, 6, 7}}))
    assert set(res.contributors) == set(range(20)) - {5, 6, 7}
    _check_sum(res, ups)


def test_clients_left_with_too_few_neighbours_are_excluded_before_masking():
    """k = 4, t = 3 on a circle of 12: when both neighbours on each side of a client drop
    during key sharing, it keeps none that could hold its shares, so it cannot be unmasked
    later and takes no further part. With t > k / 2 that leaves its own neighbours with too
    few in turn, the exclusion spreads round the circle, and the round aborts before anyone
    masks (a threshold at most k / 2, which let it stop at one client, is refused)."""
    ups = updates(12, 10, seed=5)
    participants = list(range(12))
    view = RoundView.derive(SecAggOptions(neighbours=4, threshold=3), 1, 0, 10, participants)
    order = circle_order(participants, view.graph_seed)
    gone = {order[0], order[1], order[3], order[4]}
    channel = RecordingChannel(drop={"share_keys": gone})
    with pytest.raises(TooFewClients, match="min_clients") as err:
        _proto(neighbours=4, threshold=3).aggregate(1, ups, channel=channel)
    assert err.value.stage == "share_keys"
    assert not any(s == "masked_input" for s, _ in channel.uploads)


@pytest.mark.parametrize("stage,drop,match", [
    ("advertise_keys", set(range(9)), "at least min_clients"),
    ("share_keys", set(range(8)), "min_clients"),
    ("masked_input", {0, 1, 2, 3, 4, 5}, "fewer than the threshold"),
])
def test_abort_below_threshold_reveals_nothing(stage, drop, match):
    ups = updates(10, 20, seed=6)
    channel = RecordingChannel(drop={stage: drop})
    with pytest.raises(TooFewClients, match=match) as err:
        _proto().aggregate(1, ups, channel=channel)
    assert err.value.stage == stage
    assert "unmask_request" not in channel.down_stages  # no share of any secret was asked for
    assert not any(s == "unmask" for s, _ in channel.uploads)


def test_threshold_larger_than_the_neighbourhood_aborts():
    with pytest.raises(TooFewClients, match="fewer than the threshold 8"):
        _proto(threshold=8).aggregate(1, updates(10, 5), channel=FaultyChannel(
            drop={"advertise_keys": {0, 1, 2}}))


def test_disconnected_survivors_abort():
    """With k = 2 the graph is a ring: two drops split it, and unmasking would reveal the
    sum of each arc separately. With t = 2 > k / 2 the clients beside each cut have too few
    surviving neighbours, so the round aborts before any unmasking share is asked for."""
    ups = updates(8, 5)
    proto = _proto(neighbours=2, threshold=2)
    view = RoundView.derive(proto.options, 1, 0, 5, list(range(8)))
    order = circle_order(range(8), view.graph_seed)
    cut = {order[0], order[4]}
    channel = RecordingChannel(drop={"masked_input": cut})
    with pytest.raises(TooFewClients, match="fewer than the threshold"):
        proto.aggregate(1, ups, channel=channel)
    assert "unmask_request" not in channel.down_stages


# -- bad messages -------------------------------------------------------------------------------
def _flip(index: int):
    def tamper(b: bytes) -> bytes:
        return b[:index] + bytes([b[index] ^ 0x01]) + b[index + 1:]
    return tamper


def _set_round(new_round: int):
    def tamper(b: bytes) -> bytes:
        return b[:6] + new_round.to_bytes(8, "little", signed=True) + b[14:]
    return tamper


def test_each_bad_message_kind_is_rejected_and_the_round_completes():
    ups = updates(20, 30, seed=7)
    proto = _proto()
    # round 1: record client 9's masked input for a replay in round 2
    first = RecordingChannel()
    proto.aggregate(1, ups, channel=first)
    old_masked = first.uploads[("masked_input", 9)]
    recorded = {}

    def keep(stage, cid):
        def tamper(b):
            recorded[(stage, cid)] = b
            return b
        return tamper

    tamper = {
        ("advertise_keys", 1): lambda b: b"XXXX" + b[4:],                  # not our message
        ("advertise_keys", 2): _flip(HEADER.size + 3),                     # key altered
        ("advertise_keys", 4): keep("advertise_keys", 4),
        ("share_keys", 4): lambda b: recorded[("advertise_keys", 4)],       # earlier stage
        ("share_keys", 3): _flip(HEADER.size + 40),                        # ciphertext altered
        ("masked_input", 5): keep("masked_input", 5),
        ("masked_input", 6): lambda b: recorded[("masked_input", 5)],       # copy of 5's
        ("masked_input", 7): lambda b: b[:-4],                             # truncated
        ("masked_input", 8): _set_round(1),                                # wrong round
        ("masked_input", 9): lambda b: old_masked,                         # replay, round 1
        ("masked_input", 10): _flip(HEADER.size + 100),                    # masked vector altered
    }
    res = proto.aggregate(2, ups, channel=FaultyChannel(tamper=tamper))
    expected = {1: MalformedMessage, 2: TamperedMessage, 3: TamperedMessage, 4: ReplayedMessage,
                6: DuplicateMessage, 7: WrongLength, 8: WrongRound, 9: ReplayedMessage,
                10: TamperedMessage}
    assert {c: type(e) for c, e in res.rejected.items()} == expected
    for cid, err in res.rejected.items():
        assert err.client_id == cid and f"client {cid}" in str(err)
    assert res.rejected[4].stage == "share_keys" and "advertise_keys" in str(res.rejected[4])
    assert "round 1" in str(res.rejected[9]) and "client 5" in str(res.rejected[6])
    assert res.contributors == tuple(c for c in range(20) if c not in expected)
    assert res.dropped == ()
    _check_sum(res, ups)


def test_duplicate_upload_from_the_same_client_is_dropped_and_the_first_kept():
    """A copy of an upload (anyone on the network can resend one) is refused as a duplicate
    but does not evict the client: its first message stands."""
    ups = updates(5, 8)
    server = SecAggServer(1, list(ups), 8, SecAggOptions())
    clients = {c: SecAggClient(c, 1, ups[c], entropy=DeterministicEntropy(c)) for c in ups}
    for cid, msg in server.round_start().items():
        up = clients[cid].advertise_keys(msg)
        assert server.receive("advertise_keys", cid, up) is None
        if cid == 2:
            err = server.receive("advertise_keys", cid, up)
            assert isinstance(err, DuplicateMessage) and err.client_id == 2
    downloads = server.neighbour_keys()
    assert set(downloads) == {0, 1, 2, 3, 4} and not server.rejected


def test_clients_check_what_the_server_sends():
    ups = updates(4, 8)
    opts = SecAggOptions(threshold=2)
    server = SecAggServer(1, list(ups), 8, opts)
    clients = {c: SecAggClient(c, 1, ups[c], options=opts) for c in ups}
    start = server.round_start()
    with pytest.raises(WrongRound):
        SecAggClient(0, 2, ups[0], options=opts).advertise_keys(start[0])
    with pytest.raises(MalformedMessage, match="addressed to client 1"):
        SecAggClient(0, 1, ups[0], options=opts).advertise_keys(start[1])
    with pytest.raises(WrongLength):
        SecAggClient(0, 1, np.zeros(9), options=opts).advertise_keys(start[0])
    for cid, msg in start.items():
        server.receive("advertise_keys", cid, clients[cid].advertise_keys(msg))
    for cid, msg in server.neighbour_keys().items():
        server.receive("share_keys", cid, clients[cid].share_keys(msg))
    forwarded = server.forward_shares()
    # a relayed share ciphertext altered on the way: the receiver names its sender
    bad = forwarded[0][:-1] + bytes([forwarded[0][-1] ^ 1])
    with pytest.raises(TamperedMessage) as err:
        clients[0].masked_input(bad)
    assert err.value.client_id == 3 and err.value.stage == "share_keys"
    for cid in (1, 2, 3):
        server.receive("masked_input", cid, clients[cid].masked_input(forwarded[cid]))
    requests = server.unmask_requests()
    assert set(requests) == {1, 2, 3}
    # a request that would reveal both secrets of client 2 is refused
    from protocols.secagg.messages import UnmaskRequest
    greedy = UnmaskRequest([0, 2], [2]).encode(1, 1)
    with pytest.raises(MalformedMessage, match="both"):
        clients[1].unmask(greedy)
    # the client has stopped: nothing more is answered this round
    with pytest.raises(UnexpectedStage, match="stopped"):
        clients[1].unmask(UnmaskRequest([2, 3], [0]).encode(1, 1))
    # a request that claims too few neighbours survived is refused too
    few = UnmaskRequest([1], [0, 3]).encode(1, 2)
    with pytest.raises(TooFewClients):
        clients[2].unmask(few)


def test_a_wrong_unmasking_share_aborts_instead_of_a_wrong_sum(monkeypatch):
    """A client that sends a wrong (but well-formed and authenticated) share when no spare
    share can outvote it (t = k = 4): the reconstructed seed fails its commitment and the
    round aborts. (With spare shares the liar is outvoted: test_secagg_adversarial.)"""
    real_unmask = SecAggClient._unmask

    def lying_unmask(self, request):
        if self.id == 0:
            self._held = {j: (b + 1, sk) for j, (b, sk) in self._held.items()}
        return real_unmask(self, request)

    monkeypatch.setattr(SecAggClient, "_unmask", lying_unmask)
    with pytest.raises(TooFewClients, match="does not match its commitment"):
        _proto(threshold=4).aggregate(1, updates(5, 10))


# -- what the server sees ---------------------------------------------------------------------
def test_masked_vector_is_uniform_whatever_the_input():
    """Chi-square on the words' bytes and top bits of a masked zero vector and of a masked
    constant vector: both uniform over Z_2^32 (fixed entropy, so the test is deterministic)."""
    length = 20_000
    for value in (0.0, 0.5):
        ups = {c: np.full(length, value) for c in range(5)}
        channel = RecordingChannel()
        _proto(11).aggregate(1, ups, channel=channel)
        payload = channel.uploads[("masked_input", 2)]
        words = np.frombuffer(payload, dtype="<u4", count=length, offset=HEADER.size)
        byte_counts = np.bincount(words.view(np.uint8), minlength=256)
        assert stats.chisquare(byte_counts).pvalue > 1e-4
        top = np.bincount((words >> 24).astype(np.int64), minlength=256)
        assert stats.chisquare(top).pvalue > 1e-4
        # and no visible relation to the input: correlation with a ramp input is nil
        assert abs(np.corrcoef(words.astype(np.float64), np.arange(length))[0, 1]) < 0.05


def test_masked_vector_matches_an_independent_recomputation():
    """y = encode(x) + PRG(b) + sum_j +-PRG(s_ij) mod 2^32, recomputed with AES-CTR and
    HKDF straight from ``cryptography`` from the client's secrets."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    def prg(key, n):
        ks = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update(bytes(4 * n))
        return np.frombuffer(ks, dtype="<u4").astype(np.uint64)

    def kdf(secret, purpose, *ctx, bound=b""):
        info = (b"ffm-secagg/v2/" + purpose + b"/"
                + b"".join(v.to_bytes(8, "little") for v in ctx) + bound)
        return HKDF(hashes.SHA256(), 32, None, info).derive(secret)

    ups = updates(6, 25)
    length = 25
    server = SecAggServer(4, list(ups), length, SecAggOptions())
    clients = {c: SecAggClient(c, 4, ups[c], secret=bytes([c]) * 32) for c in ups}
    for cid, msg in server.round_start().items():
        server.receive("advertise_keys", cid, clients[cid].advertise_keys(msg))
    for cid, msg in server.neighbour_keys().items():
        server.receive("share_keys", cid, clients[cid].share_keys(msg))
    forwarded = server.forward_shares()
    me = clients[3]
    y = np.frombuffer(me.masked_input(forwarded[3]), dtype="<u4", count=length + 1,
                      offset=HEADER.size).astype(np.uint64)
    codec = FixedPointCodec(clip=1.0, max_clients=6)
    assert me._rounding_key == kdf(bytes([3]) * 32, b"rounding", 4, 3)
    x = codec.encode_words(ups[3], prg(me._rounding_key, length).astype(np.uint32))
    digest = RoundView.derive(SecAggOptions(), 4, 0, length, list(range(6))).digest
    expect = np.append(x.astype(np.uint64), 0) + prg(kdf(me._b, b"self-mask", 4, 3), length + 1)
    for j, (_, s_pk) in me._neighbour_keys.items():
        shared = me._s_sk.exchange(
            __import__("cryptography.hazmat.primitives.asymmetric.x25519",
                       fromlist=["X25519PublicKey"]).X25519PublicKey.from_public_bytes(s_pk))
        mask = prg(kdf(shared, b"pair-mask", 4, min(3, j), max(3, j), bound=digest), length + 1)
        expect = expect + mask if j > 3 else expect + (2**32 - mask)
    np.testing.assert_array_equal(y, expect % 2**32)


# -- where key material comes from ------------------------------------------------------------
def test_no_key_or_mask_material_from_non_cryptographic_generators(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a non-cryptographic generator was used")

    for name in ("default_rng", "RandomState", "random", "rand", "randint", "bytes", "seed",
                 "Generator", "PCG64", "MT19937", "SeedSequence"):
        monkeypatch.setattr(np.random, name, forbidden)
    for name in ("random", "randint", "randbytes", "getrandbits", "seed", "choice", "Random"):
        monkeypatch.setattr(random, name, forbidden)
    calls = []
    real = os.urandom
    monkeypatch.setattr(os, "urandom", lambda n: calls.append(n) or real(n))

    ups = {c: np.linspace(-0.5, 0.5, 40) * (c + 1) / 10 for c in range(10)}
    res = SecAggPlusProtocol().aggregate(
        1, ups, channel=FaultyChannel(drop={"share_keys": {2}, "masked_input": {5}}))
    _check_sum(res, ups)
    # the server's key pair, two key pairs and a seed per client, and the Shamir
    # coefficients: all of it came from os.urandom
    assert calls.count(32) >= 1 + 3 * 10
    assert len(calls) >= 1 + 3 * 10 + 9


# -- a training run -----------------------------------------------------------------------------
def test_training_with_secagg_matches_plaintext(tiny_config, tmp_path):
    import torch

    from ffm_private.simulation import run_training

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # both runs alike; multi-threaded OpenMP crawls on a busy machine
    try:
        cfg = tiny_config.replace(**{"federated.rounds": 2})
        plain = run_training(cfg.replace(run_dir=str(tmp_path / "plain")), progress=False)
        backbone = str(tmp_path / "plain" / "checkpoints" / "backbone.npz")  # not retrained
        secure = run_training(cfg.replace(**{"run_dir": str(tmp_path / "secagg"),
                                             "pretrain.checkpoint": backbone,
                                             "protocol.name": "secagg"}), progress=False)
    finally:
        torch.set_num_threads(threads)
    assert "only the sum" in secure["protocol"]
    for a, b in zip(round_metrics(tmp_path / "plain"), round_metrics(tmp_path / "secagg"), strict=True):
        assert a["contributors"] == b["contributors"]
        for key in ("train_loss", "update_norm", "valid_hr@10", "valid_ndcg@10", "test_hr@10",
                    "test_ndcg@10"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
    assert plain["selected_round"] == secure["selected_round"]


@settings(max_examples=40)
@given(n=st.integers(2, 30), k=st.integers(1, 12), t=st.floats(0.51, 1.0),
       drops=st.lists(st.sets(st.integers(0, 29), max_size=6), min_size=4, max_size=4),
       seed=st.integers(0, 1000))
def test_any_dropout_pattern_gives_the_right_sum_or_a_clean_abort(n, k, t, drops, seed):
    """Whatever drops where, the round either yields exactly the contributors' sum or
    aborts with TooFewClients; it never returns a wrong total or fails otherwise."""
    ups = updates(n, 6, seed=seed)
    faults = {stage: {c for c in d if c < n} for stage, d in zip(SecAggPlusProtocol.stages,
                                                                 drops, strict=True)}
    try:
        res = _proto(seed, neighbours=k, threshold=t, min_clients=1).aggregate(
            1, ups, channel=FaultyChannel(drop=faults), seed=seed)
    except TooFewClients:
        return
    gone_before_unmask = set().union(*list(faults.values())[:3])
    assert not gone_before_unmask & set(res.contributors)
    assert len(res.contributors) >= 2
    _check_sum(res, ups)
