"""A server that deviates from the HE protocol, against the production key holder and clients.

The server holds what it holds in a deployment: each round's public context, every message
that reaches it, and the key holder's interface (forwarded updates, decryption requests). The
main attack: a ciphertext (c0, c1) = (0, Delta) built from the public parameters decrypts to
the BFV secret key; on the earlier key holder (server-chosen round ids, any ciphertext framed
as an aggregate decrypted, one key pair per run) one request gave the server the key and every
later update. Each test asserts what the server recovers.
"""

import numpy as np
import pytest
import tenseal as ts

from protocols import create
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
from protocols.he import KEY_HOLDER, UnverifiedContribution, wire
from protocols.he.codec import encrypt_chunks
from protocols.he.keys import Opening, decode_opening, encode_opening, fingerprint
from tests.protocols.he_seal import SealAttacker

UPLOAD, RECEIPT = "encrypted_update", "receipt"
N = LENGTH = 4096  # bfv-4096: one ciphertext per update


def _proto(min_clients=2):
    return create("he", {"scheme": "bfv", "min_clients": min_clients})


def _updates(ids, seed=0):
    return {c: np.random.default_rng(seed + c).uniform(-1, 1, LENGTH) for c in ids}


def _open(proto, ids, ups, round_id):
    """The key holder opens a round; honest clients answer; receipts reach the key holder."""
    opening = proto.key_holder.open_round(LENGTH, room=len(ids), clip=proto.options.clip)
    msgs = {}
    for cid in ids:
        msg, receipt = proto.client(cid).encrypt_update(opening, ups[cid], round_id=round_id)
        proto.key_holder.receive_receipt(cid, receipt)
        msgs[cid] = msg
    return opening, msgs


def _request(proto, contributors, length=LENGTH, chunks=()):
    holder = proto.key_holder
    return wire.encode(wire.AGGREGATE, scheme="bfv", round_id=holder.round_id,
                       party=len(contributors), length=length, scale=0.0,
                       fingerprint=holder.fingerprint, chunks=list(chunks),
                       contributors=contributors)


def _framed(proto, cid, chunk, opening):
    op = decode_opening(proto.params, opening, client_id=None, stage="test")
    return wire.encode(wire.UPDATE, scheme="bfv", round_id=op.round_id, party=cid,
                       length=LENGTH, scale=op.scale, fingerprint=op.fingerprint, chunks=[chunk])


def _attacker(proto, opening):
    op = decode_opening(proto.params, opening, client_id=None, stage="test")
    context = ts.context_from(op.public, n_threads=1)
    template = encrypt_chunks(context, proto.params, np.zeros(N, dtype=np.int64))[0]
    return SealAttacker(proto.params, template)


def _chunk(msg, opening, proto, cid):
    op = decode_opening(proto.params, opening, client_id=None, stage="test")
    return wire.decode(msg, wire.Expect(wire.UPDATE, "bfv", op.round_id, LENGTH, 1, None,
                                        op.fingerprint), client_id=cid, stage=UPLOAD).chunk(0)


def _recovered(attacker, proto, residues, n):
    t, scale = attacker.t, proto.codec(n).scale
    r = residues.astype(np.int64)[:LENGTH]
    return np.where(r > t // 2, r - t, r) / scale


def test_key_probe_recovers_the_key_from_any_decryption():
    """Control: whoever obtains the decryption of (0, Delta) decrypts every ciphertext."""
    proto = _proto()
    opening, _ = _open(proto, [0, 1], _updates([0, 1]), round_id=0)
    attacker = _attacker(proto, opening)
    secret = ts.context(ts.SCHEME_TYPE.BFV, N, plain_modulus=proto.params.plain_modulus,
                        coeff_mod_bit_sizes=list(proto.params.coeff_mod_bit_sizes), n_threads=1)
    probe = ts._ts_cpp.BFVVector(secret.data, attacker.key_probe())
    s = attacker.secret_from_slots(np.mod(np.asarray(probe.decrypt(), dtype=np.int64),
                                          attacker.t))
    assert set(np.unique(s)) <= {-1, 0, 1} and np.count_nonzero(s) > N // 2
    values = np.random.default_rng(0).integers(0, attacker.t, N)
    victim = ts._ts_cpp.BFVVector(secret.data, values.tolist()).serialize()
    np.testing.assert_array_equal(attacker.decrypt(victim, s), values)


def test_crafted_aggregate_is_refused_and_yields_no_key():
    proto = _proto(min_clients=2)
    holder = proto.key_holder
    ups = _updates([0, 1])
    opening, msgs = _open(proto, [0, 1], ups, round_id=0)
    attacker = _attacker(proto, opening)
    probe = attacker.key_probe()
    # the probe as an aggregate (the old request format), as client 0's update, as a stranger's
    with pytest.raises(WrongLength):
        holder.decrypt_aggregate(_request(proto, [0, 1], chunks=[probe]))
    with pytest.raises(UnverifiedContribution, match="does not match") as err:
        holder.receive_update(0, _framed(proto, 0, probe, opening))
    assert err.value.client_id == 0
    with pytest.raises(UnverifiedContribution, match="no authenticated receipt"):
        holder.receive_update(7, _framed(proto, 7, probe, opening))
    # a request naming clients whose updates it did not verify
    with pytest.raises(MalformedMessage, match="verified 0"):
        holder.decrypt_aggregate(_request(proto, [0, 1]))
    # only client 0's real update: below min_clients, nothing is decrypted
    holder.receive_update(0, msgs[0])
    with pytest.raises(TooFewClients):
        holder.decrypt_aggregate(_request(proto, [0]))
    # the honest completion: the one thing the server obtains is the sum
    holder.receive_update(1, msgs[1])
    answer = holder.decrypt_aggregate(_request(proto, [0, 1]))
    frame = wire.decode(answer, wire.Expect(wire.SUM, "bfv", holder.round_id, LENGTH, 2, None,
                                            holder.fingerprint), client_id=KEY_HOLDER,
                        stage="decrypted_sum")
    residues = np.frombuffer(frame.chunk(0), dtype="<u8")
    total = _recovered(attacker, proto, residues, 2)
    assert np.abs(total - (ups[0] + ups[1])).max() <= 2 / proto.codec(2).scale
    # treating the sum as a key probe gives no key: client 1's update stays unreadable
    s = attacker.secret_from_slots(residues)
    assert not set(np.unique(s)) <= {-1, 0, 1}
    guess = _recovered(attacker, proto, attacker.decrypt(_chunk(msgs[1], opening, proto, 1),
                                                         np.clip(s, -1, 1)), 2)
    assert np.abs(guess - ups[1]).max() > 0.5


def test_one_decryption_per_round_and_keys_rotate():
    proto = _proto(min_clients=1)
    holder = proto.key_holder
    ups = _updates([0, 1])
    opening, msgs = _open(proto, [0, 1], ups, round_id=0)
    holder.receive_update(0, msgs[0])
    holder.receive_update(1, msgs[1])
    first = holder.decrypt_aggregate(_request(proto, [0, 1]))
    with pytest.raises(ReplayedMessage, match="already decrypted"):
        holder.decrypt_aggregate(_request(proto, [0, 1]))
    with pytest.raises(ReplayedMessage):
        holder.receive_update(2, msgs[1])
    old_fp = holder.fingerprint
    # the next round: a fresh key pair; last round's ciphertexts and receipts are useless
    later, later_msgs = _open(proto, [0, 1], _updates([0, 1], seed=5), round_id=1)
    assert holder.fingerprint != old_fp and holder.round_id == 1
    with pytest.raises(UnverifiedContribution):
        holder.receive_update(0, msgs[0])
    with pytest.raises((WrongRound, ContextMismatch)):
        proto.server.open_round(later, stage=UPLOAD).check(0, msgs[0])
    # a decryption request for the earlier round is refused: the round is gone
    stale = wire.encode(wire.AGGREGATE, scheme="bfv", round_id=0, party=2, length=LENGTH,
                        scale=0.0, fingerprint=old_fp, chunks=[], contributors=[0, 1])
    with pytest.raises((WrongRound, ContextMismatch)):
        holder.decrypt_aggregate(stale)
    assert first != b""


def test_forged_replayed_or_foreign_openings_are_refused_by_clients():
    proto = _proto(min_clients=2)
    holder = proto.key_holder
    client = proto.client(0)
    update = _updates([0])[0]
    genuine = holder.open_round(LENGTH, room=3, clip=1.0)
    op = decode_opening(proto.params, genuine, client_id=None, stage="t")
    # the server swaps in a key pair of its own: it cannot sign the opening
    own = ts.context(ts.SCHEME_TYPE.BFV, N, plain_modulus=proto.params.plain_modulus,
                     coeff_mod_bit_sizes=list(proto.params.coeff_mod_bit_sizes), n_threads=1)
    public = own.serialize(save_public_key=True, save_secret_key=False,
                           save_galois_keys=False, save_relin_keys=False)
    forged = encode_opening(proto.params, Opening(op.round_id, LENGTH, 3, 1.0, 2, public,
                                                  fingerprint(public), op.scale, op.signature))
    with pytest.raises(TamperedMessage, match="not signed"):
        client.encrypt_update(forged, update, round_id=0)
    # parameters changed under the genuine signature: also unsigned
    lowered = encode_opening(proto.params, Opening(op.round_id, LENGTH, 3, 1.0, 1, op.public,
                                                   op.fingerprint, op.scale, op.signature))
    with pytest.raises(TamperedMessage, match="not signed"):
        client.encrypt_update(lowered, update, round_id=0)
    msg, _ = client.encrypt_update(genuine, update, round_id=0)
    assert msg
    # the same opening again, or a second opening for the same training round: refused
    with pytest.raises(ReplayedMessage):
        client.encrypt_update(genuine, update, round_id=1)
    second = holder.open_round(LENGTH, room=3, clip=1.0)
    with pytest.raises(ReplayedMessage, match="already contributed"):
        client.encrypt_update(second, update, round_id=0)


def test_client_refuses_a_round_below_its_own_floor():
    strict = create("he", {"scheme": "bfv", "min_clients": 3})
    lax = create("he", {"scheme": "bfv", "min_clients": 1})
    strict_client = strict.client(0)
    strict_client._holder = lax.key_holder.identity  # same signer, so only the floor differs
    opening = lax.key_holder.open_round(LENGTH, room=3, clip=1.0)
    with pytest.raises(ContextMismatch, match="requires 3"):
        strict_client.encrypt_update(opening, _updates([0])[0], round_id=0)


def test_receipts_authenticate_first():
    proto = _proto(min_clients=1)
    holder = proto.key_holder
    opening = holder.open_round(LENGTH, room=2, clip=1.0)
    msg, receipt = proto.client(0).encrypt_update(opening, _updates([0])[0], round_id=0)
    op = decode_opening(proto.params, opening, client_id=None, stage="t")
    frame = wire.decode(receipt, wire.Expect(wire.RECEIPT, "bfv", op.round_id, LENGTH, 3, None,
                                             op.fingerprint, 0), client_id=0, stage=RECEIPT)
    dig, tag, count = frame.chunks
    forged = bytes([tag[0] ^ 1]) + tag[1:]  # valid CRCs: only the HMAC can tell
    for chunks in ([dig, forged, count],  # another tag
                   [dig, tag, (7).to_bytes(8, "little")]):  # another clipped count
        bad = wire.encode(wire.RECEIPT, scheme="bfv", round_id=op.round_id, party=0,
                          length=LENGTH, scale=0.0, fingerprint=op.fingerprint, chunks=chunks)
        with pytest.raises(UnverifiedContribution, match="authentication"):
            holder.receive_receipt(0, bad)
    with pytest.raises(UnverifiedContribution, match="enrolled"):
        holder.receive_receipt(9, wire.encode(wire.RECEIPT, scheme="bfv", round_id=op.round_id,
                                              party=9, length=LENGTH, scale=0.0,
                                              fingerprint=op.fingerprint,
                                              chunks=[dig, tag, count]))
    holder.receive_receipt(0, receipt)  # the garbage did not lock the genuine client out
    with pytest.raises(DuplicateMessage):
        holder.receive_receipt(0, receipt)
    holder.receive_update(0, msg)
    holder.decrypt_aggregate(_request(proto, [0]))


def test_length_fields_are_bounded_before_allocation():
    proto = _proto(min_clients=1)
    holder = proto.key_holder
    with pytest.raises(WrongLength, match="values"):
        holder.open_round(2**44, room=2, clip=1.0)
    opening, msgs = _open(proto, [0], _updates([0]), round_id=0)
    with pytest.raises(WrongLength, match="request for 17592186044416 values"):
        holder.decrypt_aggregate(_request(proto, [0], length=2**44))
    op = decode_opening(proto.params, opening, client_id=None, stage="t")
    huge = wire.encode(wire.UPDATE, scheme="bfv", round_id=op.round_id, party=0, length=2**44,
                       scale=op.scale, fingerprint=op.fingerprint, chunks=[b"x"])
    with pytest.raises(WrongLength):
        proto.server.open_round(opening, stage=UPLOAD).check(0, huge)
    holder.receive_update(0, msgs[0])
    holder.decrypt_aggregate(_request(proto, [0]))  # the round itself was unharmed


def test_second_update_from_a_client_is_rejected_before_the_sum():
    proto = _proto(min_clients=1)
    holder = proto.key_holder
    ups = _updates([0, 1])
    opening, msgs = _open(proto, [0, 1], ups, round_id=0)
    inbox = proto.server.open_round(opening, stage=UPLOAD)
    for cid in (0, 1):
        keys = inbox.check(cid, msgs[cid])
        holder.receive_update(cid, msgs[cid])
        inbox.accept(cid, keys)
    with pytest.raises(DuplicateMessage, match="second update") as err:
        inbox.check(1, msgs[1])
    assert err.value.client_id == 1
    with pytest.raises(DuplicateMessage, match="second update"):
        holder.receive_update(1, msgs[1])
    values, count = inbox.read_sum(holder.decrypt_aggregate(inbox.aggregate_message()),
                                   stage="decrypted_sum")
    total = proto.codec(2).decode_sum(values)
    assert np.abs(total - ups[0] - ups[1]).max() <= 2 / proto.codec(2).scale  # counted once
    assert count == 0


def test_the_key_holder_sees_individual_ciphertexts():
    """Limitation (docs/he.md): it recomputes the sum, so it could decrypt each update."""
    proto = _proto(min_clients=1)
    ups = _updates([0])
    opening, msgs = _open(proto, [0], ups, round_id=0)
    context = proto.key_holder._round.context
    vec = ts._ts_cpp.BFVVector(context.data, _chunk(msgs[0], opening, proto, 0))
    residues = np.mod(np.asarray(vec.decrypt(), dtype=np.int64), proto.params.plain_modulus)
    codec = proto.codec(1)
    assert np.abs(codec.decode_sum(residues[:LENGTH]) - ups[0]).max() <= 1 / codec.scale
    assert len(residues) == LENGTH


def test_a_colluding_client_can_weight_another_clients_update():
    """Limitation (docs/he.md): no proof of plaintext knowledge. A client colluding with the
    server re-randomizes client 0's ciphertext (adds an encryption of zero): it passes the
    copy check, and the sum becomes twice client 0's update."""
    from protocols.he import crypto

    proto = _proto(min_clients=2)
    holder = proto.key_holder
    ups = _updates([0, 1])
    opening = holder.open_round(LENGTH, room=2, clip=1.0)
    victim, receipt = proto.client(0).encrypt_update(opening, ups[0], round_id=0)
    holder.receive_receipt(0, receipt)
    proto.client(1)  # enrolled; its receipt key is the colluder's
    op = decode_opening(proto.params, opening, client_id=None, stage="t")
    public = ts.context_from(op.public, n_threads=1)
    copy = ts._ts_cpp.BFVVector(public.data, _chunk(victim, opening, proto, 0))
    copy.add_(ts._ts_cpp.BFVVector(public.data, [0] * N))
    forged = _framed(proto, 1, copy.serialize(), opening)
    dig, count = crypto.digest(forged), bytes(8)
    tag = crypto.receipt_tag(proto.clients[1]._key, op.round_id, 1, op.fingerprint, dig + count)
    holder.receive_receipt(1, wire.encode(wire.RECEIPT, scheme="bfv", round_id=op.round_id,
                                          party=1, length=LENGTH, scale=0.0,
                                          fingerprint=op.fingerprint, chunks=[dig, tag, count]))
    inbox = proto.server.open_round(opening, stage=UPLOAD)
    for cid, msg in ((0, victim), (1, forged)):
        keys = inbox.check(cid, msg)
        holder.receive_update(cid, msg)
        inbox.accept(cid, keys)
    values, _ = inbox.read_sum(holder.decrypt_aggregate(inbox.aggregate_message()),
                               stage="decrypted_sum")
    codec = proto.codec(2)
    assert np.abs(codec.decode_sum(values) / 2 - ups[0]).max() <= 1 / codec.scale
