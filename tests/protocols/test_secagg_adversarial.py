"""SecAgg+ against a server that deviates: each attack drives real clients through the
adversarial harness and asserts what the adversary recovers (nothing), and the typed refusal
of the honest clients. Each of attacks 1-3 recovered the target's update before clients kept
stage state, applied their own parameters and bound the transcript into their keys."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import FaultyChannel
from protocols.errors import (
    DuplicateMessage,
    InconsistentView,
    InvalidShare,
    MalformedMessage,
    TamperedMessage,
    TooFewClients,
    UnexpectedStage,
    UnsafeParameters,
)
from protocols.quantize import FixedPointCodec
from protocols.secagg import SecAggOptions, SecAggPlusProtocol
from protocols.secagg import primitives as cr
from protocols.secagg.client import SecAggClient
from protocols.secagg.messages import HEADER, RoundStart
from protocols.secagg.server import SecAggServer
from tests.protocols.adversarial_server import B_SHARE, SK_SHARE, AdversarialServer
from tests.protocols.secagg_helpers import DeterministicEntropy, plain_sum, updates

N, L = 7, 16  # complete graph: k = 6, t = 4 (the default majority)
TARGET = 0


def _far(recovered, truth) -> bool:
    """The adversary learnt nothing useful: no recovery, or a value nowhere near the truth."""
    return recovered is None or float(np.abs(recovered - truth).max()) > 0.05


# -- attack 1: ask twice, get both secrets ---------------------------------------------------
@pytest.mark.parametrize("first", ["survived", "dropped"])
def test_asking_each_holder_twice_yields_one_answer_and_recovers_nothing(first):
    ups = updates(N, L, seed=1)
    adv = AdversarialServer(ups)
    adv.run_to_masked()
    holders = sorted(adv.views[TARGET].graph[TARGET])
    assert len(holders) == 6 and adv.views[TARGET].t == 4
    for h in holders:
        claims = [set(), {TARGET}] if first == "survived" else [{TARGET}, set()]
        assert adv.ask_honestly(h, dropped=claims[0]) is not None
        assert adv.ask_honestly(h, dropped=claims[1]) is None
        assert isinstance(adv.last_error, UnexpectedStage)
        assert "already answered" in str(adv.last_error)
    # the adversary holds only one kind of share of the target: six of one, none of the other
    kinds = {k: adv.share_count(TARGET, k) for k in (B_SHARE, SK_SHARE)}
    assert sorted(kinds.values()) == [0, 6]
    assert _far(adv.recover(TARGET), ups[TARGET])
    assert (adv.secret(TARGET, B_SHARE) is None) or (adv.secret(TARGET, SK_SHARE) is None)


def test_no_stage_runs_twice_so_no_gcm_nonce_is_reused():
    """Re-invoking share_keys (which would seal a second share ciphertext under the same
    AES-GCM key and nonce) or any earlier stage is refused; the client then stops."""
    ups = updates(N, L, seed=2)
    adv = AdversarialServer(ups)
    adv.run_to_masked()
    client = adv.clients[TARGET]
    with pytest.raises(UnexpectedStage, match="already answered"):
        client.share_keys(b"")
    with pytest.raises(UnexpectedStage, match="stopped"):
        client.advertise_keys(RoundStart(adv.public_key, L).encode(adv.round_id, TARGET))
    with pytest.raises(UnexpectedStage):
        client.unmask(b"")
    assert client.next_step is None


def test_stages_out_of_order_are_refused():
    client = SecAggClient(0, 1, np.zeros(4), entropy=DeterministicEntropy(0))
    with pytest.raises(UnexpectedStage, match="comes before 'advertise_keys'"):
        client.unmask(b"")
    with pytest.raises(UnexpectedStage, match="stopped"):
        client.advertise_keys(b"")


# -- attack 2: the server decides the threshold -------------------------------------------
@pytest.mark.parametrize("t", [1, 2, 3])
def test_a_threshold_chosen_by_the_server_is_refused_and_recovers_nothing(t):
    """t = 1 makes each share the secret itself; t = k/2 = 3 lets a split view (half the
    holders told the target survived, half that it dropped) collect both secrets."""
    ups = updates(N, L, seed=3)
    adv = AdversarialServer(ups)
    adv.start()
    adv.share(t={c: t for c in range(N)})
    assert set(adv.errors) == set(range(N))
    assert all(isinstance(e, UnsafeParameters) and f"threshold {t}" in str(e)
               for e in adv.errors.values())
    assert not adv.share_msgs  # no share of any secret left any client
    adv.forward_and_mask()
    assert not adv.masked
    assert _far(adv.recover(TARGET), ups[TARGET])


def test_a_degree_chosen_by_the_server_is_refused():
    adv = AdversarialServer(updates(N, L, seed=4))
    adv.start()
    adv.share(k={TARGET: 4}, t={TARGET: 3})
    assert isinstance(adv.errors[TARGET], UnsafeParameters)
    assert "degree 4" in str(adv.errors[TARGET]) and TARGET not in adv.share_msgs


def test_a_split_view_with_the_clients_threshold_recovers_nothing():
    """With t = 4 > k / 2 and one answer per holder, half the holders can give one kind of
    share and half the other: three of each, fewer than t of either."""
    ups = updates(N, L, seed=5)
    adv = AdversarialServer(ups)
    adv.run_to_masked()
    holders = sorted(adv.views[TARGET].graph[TARGET])
    for i, h in enumerate(holders):
        adv.ask_honestly(h, dropped={TARGET} if i % 2 else set())
    assert adv.share_count(TARGET, B_SHARE) == 3 and adv.share_count(TARGET, SK_SHARE) == 3
    assert adv.secret(TARGET, B_SHARE) is None and adv.secret(TARGET, SK_SHARE) is None
    assert _far(adv.recover(TARGET), ups[TARGET])


def test_a_round_below_the_clients_floor_is_refused():
    """A server that isolates the target with one other client (a two-party 'round', where
    the sum is the partner's knowledge of the target's update) meets the target's own
    ``min_clients``."""
    ups = updates(N, L, seed=6)
    adv = AdversarialServer(ups, options=SecAggOptions(min_clients=3))
    adv.start()
    adv.share(participants={TARGET: [TARGET, 1], 1: [TARGET, 1]})
    for c in (TARGET, 1):
        assert isinstance(adv.errors[c], UnsafeParameters) and "min_clients = 3" in str(
            adv.errors[c])


# -- attack 3: per-client codec parameters --------------------------------------------------
def test_the_round_start_carries_no_codec_parameters():
    """The old round start carried clip and client count, and a target given scale ~2**31
    while the others got ~2**11 made the honest 'sum' equal its update. Those fields are gone:
    a message carrying them is refused, and the codec is the client's own."""
    client = SecAggClient(0, 1, np.zeros(4), entropy=DeterministicEntropy(0))
    old = RoundStart(bytes(32), 4).encode(1, 0)
    with_codec = old[:HEADER.size - 4] + (len(old) - HEADER.size + 16).to_bytes(4, "little") \
        + old[HEADER.size:] + np.float64(1.0).tobytes() + np.int64(1).tobytes()
    with pytest.raises(MalformedMessage, match="trailing"):
        client.advertise_keys(with_codec)


def test_a_different_view_for_the_target_gives_no_weighted_sum():
    """The one lever left to change a client's scale is the participant set. Shown a small
    set (a scale 7/3 of the others') while the others see all seven, the target's transcript differs: its
    share ciphertexts fail authentication at the others, its pairwise masks do not cancel,
    and no decoding of the total is near its update."""
    ups = updates(N, L, seed=7)
    adv = AdversarialServer(ups)
    adv.start()
    adv.share(participants={TARGET: [0, 1, 2]})
    assert adv.views[TARGET].codec.scale > 2 * adv.views[1].codec.scale
    adv.forward_and_mask()
    refused = {c for c, e in adv.errors.items() if isinstance(e, TamperedMessage)}
    assert refused and all(adv.errors[c].client_id == TARGET for c in refused - {TARGET})
    for c in adv.masked:
        adv.ask_honestly(c)
    for codec in (adv.views[TARGET].codec, adv.views[1].codec):
        assert _far(adv.honest_total(codec), ups[TARGET])


# -- the transcript ------------------------------------------------------------------------
def test_the_transcript_binds_every_round_parameter():
    base = dict(options=SecAggOptions(), round_id=1, run_seed=0, length=10,
                participants=[1, 2, 3, 4])
    from protocols.secagg.transcript import RoundView
    ref = RoundView.derive(**base)
    variants = [dict(round_id=2), dict(run_seed=1), dict(length=11),
                dict(participants=[1, 2, 3, 5]), dict(options=SecAggOptions(clip=2.0)),
                dict(options=SecAggOptions(report_clipped=False)),
                dict(options=SecAggOptions(threshold=1.0)),
                dict(options=SecAggOptions(neighbours=2, threshold=2))]
    digests = {ref.digest} | {RoundView.derive(**{**base, **v}).digest for v in variants}
    assert len(digests) == len(variants) + 1
    assert ref.graph_seed == RoundView.derive(**base).graph_seed
    shared = bytes(32)
    assert (cr.pair_mask_key(shared, ref.digest, 1, 1, 2)
            != cr.pair_mask_key(shared, RoundView.derive(**{**base, "length": 11}).digest, 1, 1, 2))


# -- robustness at the server --------------------------------------------------------------
def _server_round(n=5, **options):
    ups = updates(n, 8)
    opts = SecAggOptions(**options)
    server = SecAggServer(1, list(ups), 8, opts)
    clients = {c: SecAggClient(c, 1, ups[c], options=opts, entropy=DeterministicEntropy(c))
               for c in ups}
    return ups, server, clients


def test_an_unauthenticated_second_upload_does_not_evict_the_genuine_first():
    ups, server, clients = _server_round()
    start = server.round_start()
    first = {c: clients[c].advertise_keys(start[c]) for c in ups}
    for c, up in first.items():
        assert server.receive("advertise_keys", c, up) is None
    forged = first[2][:-1] + bytes([first[2][-1] ^ 1])
    assert isinstance(server.receive("advertise_keys", 2, forged), DuplicateMessage | TamperedMessage)
    assert isinstance(server.receive("advertise_keys", 2, first[2]), DuplicateMessage)
    assert 2 in server.neighbour_keys() and not server.rejected


def test_a_first_garbage_message_does_not_lock_the_genuine_client_out():
    ups, server, clients = _server_round()
    start = server.round_start()
    err = server.receive("advertise_keys", 3, b"garbage" * 10)
    assert isinstance(err, MalformedMessage) and err.client_id == 3
    for c in ups:
        assert server.receive("advertise_keys", c, clients[c].advertise_keys(start[c])) is None
    assert 3 in server.neighbour_keys() and not server.rejected


def test_a_late_upload_for_a_closed_stage_is_a_typed_error():
    ups, server, clients = _server_round()
    start = server.round_start()
    ads = {c: clients[c].advertise_keys(start[c]) for c in ups}
    for c in (0, 1, 2, 3):
        server.receive("advertise_keys", c, ads[c])
    server.neighbour_keys()
    err = server.receive("advertise_keys", 4, ads[4])
    assert isinstance(err, UnexpectedStage) and err.client_id == 4
    assert "closed" in str(err) and 4 not in server.rejected


def test_one_wrong_share_is_outvoted_by_spare_shares_and_the_liar_is_named(monkeypatch):
    """Five clients, t = 3, four holders per secret: client 0 lies about every share of a
    self-mask seed; the round still yields the exact sum, and 0 is rejected with InvalidShare."""
    real = SecAggClient._unmask

    def lying(self, request):
        if self.id == 0:
            self._held = {j: ((b + 1) % 4294967291, sk) for j, (b, sk) in self._held.items()}
        return real(self, request)

    monkeypatch.setattr(SecAggClient, "_unmask", lying)
    ups = updates(5, 10)
    res = SecAggPlusProtocol(entropy=DeterministicEntropy(1)).aggregate(1, ups)
    assert isinstance(res.rejected[0], InvalidShare) and res.rejected[0].client_id == 0
    assert set(res.rejected) == {0} and res.contributors == tuple(range(5))
    codec = FixedPointCodec(clip=1.0, max_clients=5)
    assert np.abs(res.total - plain_sum(ups, range(5))).max() <= codec.error_bound(5)
    # twenty clients (t = 10 of 19 holders), the liar holding the lowest share point of
    # every secret: found by leaving out one share, not by trying the subsets in order
    many = updates(20, 10)
    res = SecAggPlusProtocol(entropy=DeterministicEntropy(2)).aggregate(1, many)
    assert set(res.rejected) == {0} and isinstance(res.rejected[0], InvalidShare)
    codec = FixedPointCodec(clip=1.0, max_clients=20)
    assert np.abs(res.total - plain_sum(many, range(20))).max() <= codec.error_bound(20)
    # no spare share (t = k = 4): the liar cannot be outvoted and the round aborts
    with pytest.raises(TooFewClients, match="does not match its commitment"):
        SecAggPlusProtocol(SecAggOptions(threshold=4),
                           entropy=DeterministicEntropy(1)).aggregate(1, ups)


@pytest.mark.parametrize("options,match", [
    ({"threshold": 1}, "threshold: a count must be >= 2"),
    ({"threshold": 0.5}, r"threshold: a fraction must be in \(0.5, 1\]"),
    ({"threshold": 0.01}, r"threshold: a fraction must be in \(0.5, 1\]"),
    ({"threshold": 1_000_000}, "threshold: 1000000 exceeds"),
    ({"threshold": 9, "neighbours": 8}, "threshold: 9 exceeds neighbours = 8"),
    ({"threshold": 4, "neighbours": 8}, "threshold: 4 is at most half of neighbours = 8"),
    ({"report_clipped": 1}, "report_clipped: must be true or false"),
    ({"malicious_server": "yes"}, "malicious_server: must be true or false"),
])
def test_unsafe_or_impossible_options_are_refused_naming_the_option(options, match):
    with pytest.raises(ValueError, match="protocol.options." + match):
        SecAggOptions.from_mapping(options)


def test_a_server_whose_own_options_are_unsafe_for_the_round_stops_before_any_share():
    """A count threshold fits some round sizes only: t = 5 with 'auto' degree at 100 clients
    (k = 28) would be at most half; the server refuses before asking for keys' shares."""
    with pytest.raises(UnsafeParameters, match="own options are unsafe"):
        SecAggPlusProtocol(SecAggOptions(threshold=5)).aggregate(1, updates(100, 4))


# -- stochastic rounding keyed from the client's secret --------------------------------------
def test_rounding_is_keyed_from_the_clients_secret_not_from_public_values():
    """Before, rounding came from the public run seed: the server could recompute every
    client's rounding and tell apart inputs less than one step apart. Now equal secrets give
    equal totals (a replayed round), other secrets or none give other roundings."""
    ups = updates(8, 300)
    secrets = {c: bytes([c]) * 32 for c in ups}
    other = {c: bytes([c + 100]) * 32 for c in ups}

    def total(sec, entropy_seed):
        proto = SecAggPlusProtocol(entropy=DeterministicEntropy(entropy_seed))
        return proto.aggregate(3, ups, seed=9, secrets=sec).total

    np.testing.assert_array_equal(total(secrets, 1), total(secrets, 2))
    assert not np.array_equal(total(secrets, 1), total(other, 1))
    assert not np.array_equal(SecAggPlusProtocol().aggregate(3, ups, seed=9).total,
                              SecAggPlusProtocol().aggregate(3, ups, seed=9).total)
    with pytest.raises(ValueError, match="client 3"):
        SecAggPlusProtocol().aggregate(3, ups, secrets={**secrets, 3: b"short"})


# -- capabilities and report_clipped ---------------------------------------------------------
def test_capabilities_come_from_the_options():
    proto = SecAggPlusProtocol(SecAggOptions(clip=2.5, min_clients=4))
    assert proto.supports_distributed_noise and not proto.reveals_individual_updates
    assert proto.min_clients == 4 and proto.value_range == 2.5


def test_report_clipped_false_sends_no_count_and_reports_none():
    ups = updates(6, 20)
    ups[2][:3] = 5.0
    adv = AdversarialServer(ups, options=SecAggOptions(report_clipped=False))
    adv.run_to_masked()
    assert all(len(v) == 20 for v in adv.masked.values())  # no extra word at all
    res = SecAggPlusProtocol(SecAggOptions(report_clipped=False)).aggregate(1, ups)
    assert res.clipped is None
    assert SecAggPlusProtocol().aggregate(1, ups).clipped == 3


# -- contradictory survivor sets (what malicious-server mode adds) --------------------------
def _isolation_plan(graph, target: int, t: int, k: int) -> dict[int, set[int]] | None:
    """A 'dropped' claim per holder such that every neighbour j of the target is claimed
    dropped to t of j's holders, no holder is told more than k - t dropped (so each still
    sees t survivors) and nobody is told the target dropped: a max-flow assignment."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_flow

    nbrs = sorted(graph[target])
    holders = sorted({h for j in nbrs for h in graph[j]})
    idx = {("h", h): 1 + i for i, h in enumerate(holders)}
    idx |= {("j", j): 1 + len(holders) + i for i, j in enumerate(nbrs)}
    sink = 1 + len(holders) + len(nbrs)
    rows, cols, caps = [], [], []
    for h in holders:
        rows.append(0), cols.append(idx[("h", h)]), caps.append(k - t)
        for j in nbrs:
            if h in graph[j]:
                rows.append(idx[("h", h)]), cols.append(idx[("j", j)]), caps.append(1)
    for j in nbrs:
        rows.append(idx[("j", j)]), cols.append(sink), caps.append(t)
    cap = csr_matrix((caps, (rows, cols)), shape=(sink + 1, sink + 1), dtype=np.int32)
    flow = maximum_flow(cap, 0, sink)
    if flow.flow_value < t * len(nbrs):
        return None
    f = flow.flow.tocoo()
    plan: dict[int, set[int]] = {}
    back = {v: key for key, v in idx.items()}
    for r, c, v in zip(f.row, f.col, f.data, strict=True):
        if v > 0 and back.get(r, ("", 0))[0] == "h" and back.get(c, ("", 0))[0] == "j":
            plan.setdefault(back[r][1], set()).add(back[c][1])
    return plan


SPARSE = dict(neighbours=8)  # k = 8, t = 5 among 24 clients


def test_default_mode_contradictory_survivor_sets_expose_a_client():
    """What the default mode does not stop (docs/secagg.md, threat model): a server that
    tells each holder a different story about *different* clients. The target is 'alive' to
    its holders (its self-mask seed), each of its neighbours 'dropped' to enough of their
    other holders (their mask keys), every honest rule is kept, and its update comes out."""
    ups = updates(24, L, seed=8)
    adv = AdversarialServer(ups, options=SecAggOptions(**SPARSE))
    adv.run_to_masked()
    view = adv.views[TARGET]
    plan = _isolation_plan(view.graph, TARGET, view.t, view.k)
    assert plan is not None
    for h in sorted(adv.masked):
        assert adv.ask_honestly(h, dropped=plan.get(h, set())) is not None
    got = adv.recover(TARGET)
    assert got is not None and np.abs(got - ups[TARGET]).max() < 1e-6


def test_malicious_server_mode_refuses_contradictory_survivor_sets():
    """The same attack with ``malicious_server = true``: each holder must first sign the
    survivor set its request follows, and sees the other survivors' signatures on it. Shown
    its own set, no holder finds a majority of signatures; shown the common set, a request
    that contradicts it is refused. Either way the adversary recovers nothing."""
    ups = updates(24, L, seed=8)
    options = SecAggOptions(malicious_server=True, **SPARSE)
    for variant in ("per-holder sets", "common set, contradicting requests"):
        adv = AdversarialServer(ups, options=options)
        adv.run_to_masked()
        view = adv.views[TARGET]
        plan = _isolation_plan(view.graph, TARGET, view.t, view.k)
        everyone = sorted(adv.masked)
        for h in everyone:
            shown = everyone if variant.startswith("common") else \
                sorted(set(everyone) - plan.get(h, set()))
            assert adv.survivor_set(h, shown) is not None
        for h in everyone:
            adv.ask_honestly(h, dropped=plan.get(h, set()))
            assert adv.errors.get(h) is None or isinstance(adv.errors[h], InconsistentView)
        refused = {h for h, e in adv.errors.items() if isinstance(e, InconsistentView)}
        assert set(plan) <= refused  # everyone told a contradicting story refused it
        assert adv.recover(TARGET) is None, variant
        assert all(adv.secret(j, SK_SHARE) is None for j in view.graph[TARGET])


def test_malicious_server_mode_refuses_keys_without_the_registered_signature():
    ups = updates(6, L, seed=9)
    adv = AdversarialServer(ups, options=SecAggOptions(malicious_server=True))
    adv.start()
    # the server substitutes client 1's advertised keys with keys of its own
    _, c_pk = cr.new_key_pair(DeterministicEntropy(77))
    adv.adverts[1] = type(adv.adverts[1])(c_pk, adv.adverts[1].s_pk, adv.adverts[1].signature)
    adv.share()
    victims = {c for c, e in adv.errors.items() if isinstance(e, TamperedMessage)}
    assert victims == set(range(6)) - {1}
    assert all(adv.errors[c].client_id == 1 for c in victims)
    assert set(adv.share_msgs) == {1}


def test_malicious_server_mode_honest_round_and_dropouts():
    ups = updates(30, 20, seed=10)
    proto = SecAggPlusProtocol(SecAggOptions(malicious_server=True),
                               entropy=DeterministicEntropy(3))
    drop = {"masked_input": {3, 4}, "consistency": {5}, "unmask": {6}}
    res = proto.aggregate(1, ups, channel=FaultyChannel(drop=drop))
    assert set(res.contributors) == set(range(30)) - {3, 4}
    assert set(res.dropped) == {3, 4, 5, 6} and not res.client_errors
    codec = FixedPointCodec(clip=1.0, max_clients=30)
    assert np.abs(res.total - plain_sum(ups, res.contributors)).max() <= codec.error_bound(28)
    assert set(proto.registry) == set(range(30))


@settings(max_examples=20, deadline=None)
@given(n=st.integers(3, 16), drops=st.lists(st.sets(st.integers(0, 15), max_size=4),
                                            min_size=5, max_size=5), seed=st.integers(0, 100))
def test_malicious_mode_any_dropout_pattern_gives_the_right_sum_or_a_clean_abort(n, drops, seed):
    stages = SecAggPlusProtocol(SecAggOptions(malicious_server=True)).stages
    faults = {s: {c for c in d if c < n} for s, d in zip(stages, drops, strict=True)}
    ups = updates(n, 6, seed=seed)
    proto = SecAggPlusProtocol(SecAggOptions(malicious_server=True, min_clients=1),
                               entropy=DeterministicEntropy(seed))
    try:
        res = proto.aggregate(1, ups, channel=FaultyChannel(drop=faults), seed=seed)
    except TooFewClients:
        return
    assert not set().union(*list(faults.values())[:3]) & set(res.contributors)
    assert not res.client_errors
    codec = FixedPointCodec(clip=1.0, max_clients=n)
    assert np.abs(res.total - plain_sum(ups, res.contributors)).max() <= codec.error_bound(
        len(res.contributors))


def test_the_server_cannot_choose_a_clients_neighbours():
    """The graph seed is derived by each client from its transcript: keys for neighbours of
    the server's choosing (here: k clients that are not its neighbours) are refused."""
    from protocols.secagg.messages import NeighbourKeys

    ups = updates(24, L, seed=11)
    adv = AdversarialServer(ups, options=SecAggOptions(**SPARSE))
    adv.start()
    view = adv.view_for(adv.ids)
    chosen = [j for j in adv.ids if j != TARGET and j not in view.graph[TARGET]][:view.k]
    keys = {j: (adv.adverts[j].c_pk, adv.adverts[j].s_pk) for j in chosen}
    msg = NeighbourKeys(view.k, view.t, list(view.participants), keys)
    assert adv.call(TARGET, "share_keys", msg.encode(adv.round_id, TARGET)) is None
    assert isinstance(adv.errors[TARGET], MalformedMessage)
    assert "neighbours in the graph" in str(adv.errors[TARGET])


def test_malicious_mode_server_drops_an_unsigned_advertisement_without_locking_out():
    """An advertisement that does not carry the registered signature is not authenticated:
    dropped without touching state, and the genuine one is accepted after it."""
    ups = updates(5, 8)
    proto = SecAggPlusProtocol(SecAggOptions(malicious_server=True))
    for c in ups:
        proto.enrol(c)
    opts = proto.options
    server = SecAggServer(1, list(ups), 8, opts, registry=proto.registry)
    impostor = SecAggClient(2, 1, ups[2], options=opts, identity=cr.new_identity(
        DeterministicEntropy(1)), registry=proto.registry)
    genuine = SecAggClient(2, 1, ups[2], options=opts, identity=proto._identities[2],
                           registry=proto.registry)
    start = server.round_start()
    err = server.receive("advertise_keys", 2, impostor.advertise_keys(start[2]))
    assert isinstance(err, TamperedMessage) and "registered" in str(err)
    assert server.receive("advertise_keys", 2, genuine.advertise_keys(start[2])) is None
    assert not server.rejected


def test_malicious_mode_aborts_before_unmasking_without_a_majority_of_signers():
    class Recording(FaultyChannel):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.down: list[str] = []

        def download(self, stage, client_id, payload):
            self.down.append(stage)
            return super().download(stage, client_id, payload)

    ups = updates(10, 8)
    proto = SecAggPlusProtocol(SecAggOptions(malicious_server=True))
    channel = Recording(drop={"consistency": {0, 1, 2, 3, 4}})
    with pytest.raises(TooFewClients, match="5 survivors signed") as err:
        proto.aggregate(1, ups, channel=channel)
    assert err.value.stage == "consistency" and "unmask_request" not in channel.down
    res = SecAggPlusProtocol(SecAggOptions(malicious_server=True)).aggregate(
        1, ups, channel=FaultyChannel(drop={"consistency": {0, 1, 2, 3}}))
    assert res.contributors == tuple(range(10))
