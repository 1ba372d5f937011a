"""The batched and memoised SecAgg+ paths against their one-at-a-time definitions.

Key sharing is vectorised (Shamir evaluation as one matrix product, one share buffer for all
neighbours, the X25519 agreements and HKDF derivations of all neighbours in one call, the
share checks of ``receive_shares`` at once) and the neighbour graph is memoised per round.
Each test recomputes the result the slow, obvious way and checks the two agree, and that the
error a client or the server reports for a bad message is still the typed one, naming the
same client, in the same order as a message-by-message check would.
"""

import numpy as np
import pytest

from protocols.errors import DuplicateMessage, MalformedMessage, TamperedMessage
from protocols.secagg import SecAggOptions, shamir
from protocols.secagg import primitives as cr
from protocols.secagg.client import SecAggClient
from protocols.secagg.graph import circle_order, effective_degree, neighbour_graph
from protocols.secagg.messages import (
    SHARE_PLAIN,
    ForwardedShares,
    Kind,
    NeighbourKeys,
    Reader,
    ShareKeys,
    share_associated_data,
)
from protocols.secagg.server import SecAggServer
from tests.protocols.secagg_helpers import DeterministicEntropy, updates

P = shamir.PRIME


# -- graph ----------------------------------------------------------------------------------
def _reference_graph(ids, k, seed):
    """The circulant graph spelled out: each client and the k / 2 on either side of it."""
    order = circle_order(ids, seed)
    m = len(order)
    if k >= m - 1:
        return {c: tuple(sorted(x for x in order if x != c)) for c in order}
    half = k // 2
    return {c: tuple(sorted({order[(pos + d) % m] for d in range(1, half + 1)}
                            | {order[(pos - d) % m] for d in range(1, half + 1)}))
            for pos, c in enumerate(order)}


@pytest.mark.parametrize("m,k", [(3, 2), (9, 4), (10, 8), (37, 12), (300, 36), (301, 64)])
def test_graph_equals_the_circulant_definition_and_is_read_only(m, k):
    ids = [7 * i + 3 for i in range(m)]
    keff = effective_degree(k, m)
    g = neighbour_graph(ids, keff, b"seed-%d" % m)
    assert dict(g) == _reference_graph(ids, keff, b"seed-%d" % m)
    assert all(type(c) is int and all(type(j) is int for j in g[c]) for c in g)
    with pytest.raises(TypeError):
        g[ids[0]] = ()  # memoised, so shared: nobody may change it
    # memoised on the participant set, whatever order it is given in
    assert neighbour_graph(reversed(ids), keff, b"seed-%d" % m) is g
    if keff < m - 1:  # a complete graph is the same whatever the seed
        assert neighbour_graph(ids, keff, b"another seed") != g


def test_circle_order_is_sha256_of_seed_and_id():
    import hashlib
    import struct

    ids = list(range(50))
    expect = sorted(ids, key=lambda c: hashlib.sha256(b"s" + struct.pack("<q", c)).digest())
    assert circle_order(ids, b"s") == expect == circle_order(reversed(ids), b"s")


# -- Shamir ---------------------------------------------------------------------------------
@pytest.mark.parametrize("t", [1, 2, 5, 19, 40])
def test_split_is_the_polynomial_evaluated_with_python_integers(t, monkeypatch):
    """split(secret) at x is secret + sum_d c_d x^d mod p, with the c_d the entropy gives;
    a small block size exercises the partial sums that keep uint64 from wrapping."""
    monkeypatch.setattr(shamir, "_TERMS", 3)
    secrets = shamir.secrets_to_field([bytes(range(32)), b"\xff" * 32])
    xs = np.array([1, 2, 3, 300, 2**31 - 1, P - 1], dtype=np.uint64)
    shares = shamir.split(secrets, xs, t, DeterministicEntropy(t))
    coeffs = shamir.random_field((t - 1, *secrets.shape), DeterministicEntropy(t))
    for i, x in enumerate(xs.tolist()):
        for s in range(2):
            for c in range(shamir.CHUNKS):
                value = int(secrets[s, c]) + sum(int(coeffs[d, s, c]) * x ** (d + 1)
                                                 for d in range(t - 1))
                assert int(shares[i, s, c]) == value % P
    assert shares.dtype == np.uint64 and shares.shape == (len(xs), 2, shamir.CHUNKS)


# -- keys of all neighbours in one call ---------------------------------------------------
def test_neighbour_keys_equal_the_one_at_a_time_derivations():
    entropy = DeterministicEntropy(5)
    c_sk, _ = cr.new_key_pair(entropy)
    s_sk, _ = cr.new_key_pair(entropy)
    me, others = 40, [3, 41, 1000]
    keys = [(cr.new_key_pair(entropy)[1], cr.new_key_pair(entropy)[1]) for _ in others]
    digest = b"t" * 32
    aeads, masks = cr.neighbour_keys(c_sk, s_sk, me, others, keys, digest, 9)
    for j, (c_pk, s_pk), aead, mask in zip(others, keys, aeads, masks, strict=True):
        assert mask == cr.pair_mask_key(cr.agree(s_sk, s_pk), digest, 9, me, j)
        ref = cr.share_key(cr.agree(c_sk, c_pk), 9, j, me)
        sealed = aead.encrypt(b"n" * 12, b"plain", b"ad")
        assert ref.decrypt(b"n" * 12, sealed, b"ad") == b"plain"


def test_neighbour_keys_name_the_first_unusable_key():
    entropy = DeterministicEntropy(6)
    c_sk, _ = cr.new_key_pair(entropy)
    s_sk, _ = cr.new_key_pair(entropy)
    good = [(cr.new_key_pair(entropy)[1], cr.new_key_pair(entropy)[1]) for _ in range(4)]
    low_order = bytes(32)  # the point of order 1 (u = 0): the agreement is all zeros
    keys = good[:2] + [(good[2][0], low_order)] + [(low_order, good[3][1])]
    with pytest.raises(cr.InvalidPeerKey) as err:
        cr.neighbour_keys(c_sk, s_sk, 0, [1, 2, 3, 4], keys, b"t" * 32, 1)
    assert err.value.index == 2 and isinstance(err.value, ValueError)


def test_a_degenerate_neighbour_key_stops_the_client_naming_that_neighbour():
    server, clients = _round(6)
    server.neighbour_keys()
    me = 0
    nbrs = server.graph[me]
    bad = nbrs[1]
    keys = {j: (server._keys[j].c_pk, server._keys[j].s_pk) for j in nbrs}
    keys[bad] = (keys[bad][0], bytes(32))
    msg = NeighbourKeys(server.k, server.t, server.participants, keys).encode(1, me)
    with pytest.raises(MalformedMessage, match=f"neighbour {bad}'s public key is invalid"):
        clients[me].share_keys(msg)


# -- wire format: repeated entries ---------------------------------------------------------
def _reader(body: bytes) -> Reader:
    return Reader(body, client_id=0, stage="test")


def test_repeated_entries_are_refused_naming_the_first_repeat():
    ct = bytes(ShareKeys.ENTRY.size - 8)
    body = ShareKeys(b"c" * 32, {}).body()[:32] + (3).to_bytes(4, "little")
    body += b"".join(ShareKeys.ENTRY.pack(j, ct) for j in (4, 9, 4))
    with pytest.raises(DuplicateMessage, match="for client 4"):
        ShareKeys.decode(_reader(body), lambda p: DuplicateMessage(p, client_id=0, stage="x"))
    fwd = (3).to_bytes(4, "little") + b"".join(ShareKeys.ENTRY.pack(j, ct) for j in (5, 5, 6))
    with pytest.raises(MalformedMessage, match="from client 5"):
        ForwardedShares.decode(_reader(fwd))
    entry = NeighbourKeys.ENTRY
    keys = (2).to_bytes(4, "little") + entry.pack(8, b"a" * 32, b"b" * 32) * 2
    nk = NeighbourKeys.LAYOUT.pack(4, 3, 0) + (0).to_bytes(4, "little") + keys
    with pytest.raises(MalformedMessage, match="client 8 listed twice"):
        NeighbourKeys.decode(_reader(nk))
    # and a truncated list is still a truncation, whatever its count says
    with pytest.raises(MalformedMessage, match="truncated share ciphertext"):
        ForwardedShares.decode(_reader(fwd[:-1]))


def test_share_records_match_the_struct_layout():
    from protocols.secagg.messages import SHARE_RECORD

    shares = np.arange(2 * shamir.CHUNKS, dtype="<u4").reshape(2, shamir.CHUNKS)
    packed = SHARE_PLAIN.pack(7, -2, shares[0].tobytes(), shares[1].tobytes())
    rec = np.frombuffer(packed, dtype=SHARE_RECORD)[0]
    assert (int(rec["sender"]), int(rec["receiver"])) == (7, -2)
    np.testing.assert_array_equal(rec["shares"], shares)


# -- receive_shares: checks at once, errors in arrival order -------------------------------
def _round(n: int, seed: int = 0):
    """A round up to the forwarded shares: (server, clients), shares collected."""
    ups = updates(n, 12, seed=seed)
    options = SecAggOptions(neighbours=4, threshold=3)
    server = SecAggServer(1, list(ups), 12, options)
    entropy = DeterministicEntropy(seed)
    clients = {c: SecAggClient(c, 1, ups[c], options=options, entropy=entropy) for c in ups}
    for cid, msg in server.round_start().items():
        server.receive("advertise_keys", cid, clients[cid].advertise_keys(msg))
    return server, clients


def _forwarded(server, clients):
    for cid, msg in server.neighbour_keys().items():
        assert server.receive("share_keys", cid, clients[cid].share_keys(msg)) is None
    return server.forward_shares()


def _reseal(sender: SecAggClient, receiver: SecAggClient, first_word: int) -> bytes:
    """``sender``'s share ciphertext to ``receiver`` with its first share element replaced,
    sealed under their genuine key: what a malicious neighbour can send."""
    j, me = sender.id, receiver.id
    ad = share_associated_data(1, j, me, sender._my_keys, receiver._my_keys,
                               sender._view.digest)
    nonce = cr.nonce(Kind.SHARE_KEYS, j)
    return sender._aeads[me].encrypt(nonce, SHARE_PLAIN.pack(
        j, me, first_word.to_bytes(4, "little") + bytes(shamir.SHARE_BYTES - 4),
        bytes(shamir.SHARE_BYTES)), ad)


def _rebuild(forwarded: bytes, me: int, cts: dict[int, bytes]) -> bytes:
    body = ForwardedShares(cts).encode(1, me)
    assert len(body) == len(forwarded)
    return body


def test_held_shares_are_the_decrypted_plaintexts():
    server, clients = _round(6)
    forwarded = _forwarded(server, clients)
    me = clients[2]
    cts = ForwardedShares.decode(Reader(forwarded[2][26:], client_id=2, stage="x")).ciphertexts
    me.receive_shares(forwarded[2])
    assert set(me._held) == set(cts)
    for j, ct in cts.items():
        ad = share_associated_data(1, j, 2, clients[j]._my_keys, me._my_keys,
                                   me._view.digest)
        plain = me._aeads[j].decrypt(cr.nonce(Kind.SHARE_KEYS, j), ct, ad)
        _, _, b_raw, sk_raw = SHARE_PLAIN.unpack(plain)
        np.testing.assert_array_equal(me._held[j][0], np.frombuffer(b_raw, "<u4"))
        np.testing.assert_array_equal(me._held[j][1], np.frombuffer(sk_raw, "<u4"))
        assert me._held[j][0].dtype == np.uint64


def test_a_share_outside_the_field_names_its_sender_before_a_later_bad_ciphertext():
    server, clients = _round(6)
    forwarded = _forwarded(server, clients)
    me = 3
    cts = ForwardedShares.decode(Reader(forwarded[me][26:], client_id=me,
                                        stage="x")).ciphertexts
    first, second = list(cts)[:2]
    # a share element >= p from the first sender, sealed under the genuine key
    outside = dict(cts)
    outside[first] = _reseal(clients[first], clients[me], P)
    with pytest.raises(MalformedMessage, match=f"from client {first} is inconsistent") as err:
        clients[me].receive_shares(_rebuild(forwarded[me], me, outside))
    assert err.value.client_id == first
    # the same, and the second sender's ciphertext altered: the first problem is reported
    server, clients = _round(6)
    forwarded = _forwarded(server, clients)
    both = dict(ForwardedShares.decode(Reader(forwarded[me][26:], client_id=me,
                                              stage="x")).ciphertexts)
    both[first] = _reseal(clients[first], clients[me], 2**32 - 1)
    both[second] = bytes([both[second][0] ^ 1]) + both[second][1:]
    with pytest.raises(MalformedMessage) as err:
        clients[me].receive_shares(_rebuild(forwarded[me], me, both))
    assert err.value.client_id == first
    # an altered ciphertext alone is a TamperedMessage naming its sender
    server, clients = _round(6)
    forwarded = _forwarded(server, clients)
    alone = dict(ForwardedShares.decode(Reader(forwarded[me][26:], client_id=me,
                                               stage="x")).ciphertexts)
    alone[second] = bytes([alone[second][0] ^ 1]) + alone[second][1:]
    with pytest.raises(TamperedMessage) as err:
        clients[me].receive_shares(_rebuild(forwarded[me], me, alone))
    assert err.value.client_id == second


def test_a_share_with_the_largest_field_element_is_accepted():
    server, clients = _round(6, seed=1)
    forwarded = _forwarded(server, clients)
    me = 1
    cts = dict(ForwardedShares.decode(Reader(forwarded[me][26:], client_id=me,
                                             stage="x")).ciphertexts)
    first = next(iter(cts))
    cts[first] = _reseal(clients[first], clients[me], P - 1)
    clients[me].receive_shares(_rebuild(forwarded[me], me, cts))
    assert int(clients[me]._held[first][0][0]) == P - 1


def test_share_plaintexts_carry_the_right_ids_and_shares():
    """The one buffer the shares are cut from holds, per neighbour, that neighbour's share
    of b and of the mask key, in neighbour order: b is recovered from any t of them."""
    server, clients = _round(7, seed=2)
    forwarded = _forwarded(server, clients)
    for cid, msg in forwarded.items():
        clients[cid].receive_shares(msg)
    owner = 4
    holders = [j for j in server.graph[owner] if owner in clients[j]._held][:server.t]
    xs = np.array([[server.x[h] for h in holders]], dtype=np.uint64)
    rows = np.array([[clients[h]._held[owner][0] for h in holders]])
    assert shamir.field_to_secret(shamir.reconstruct(xs, rows)[0]) == clients[owner]._b
    rows = np.array([[clients[h]._held[owner][1] for h in holders]])
    assert (shamir.field_to_secret(shamir.reconstruct(xs, rows)[0])
            == cr.private_bytes(clients[owner]._s_sk))
