"""The exact integer path of the protocols: residues summed modulo ``M``, nothing else.

Attack first: an adversary with the server's view of an integer round (every upload it
receives, and the unmasked / decrypted result) learns the sum of the clients' integer shares
modulo ``M`` bit for bit, and nothing that singles out one client's share. No clamp: residues
that stand for values far beyond the float codec's clip range wrap and decode exactly.
"""

from __future__ import annotations

import numpy as np
import pytest

from protocols.base import centred_lift
from protocols.channel import Channel, FaultyChannel
from protocols.errors import ContextMismatch, ProtocolError
from protocols.he.params import parse_options
from protocols.he.protocol import HEProtocol
from protocols.plaintext import PlaintextProtocol
from protocols.secagg.options import SecAggOptions
from protocols.secagg.protocol import SecAggPlusProtocol
from protocols.secagg.transcript import RoundView
from tests.protocols.secagg_helpers import DeterministicEntropy

M32 = 2**32


class RecordingChannel(Channel):
    """The server's view: every upload it receives, by stage and client."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[tuple[str, int], bytes] = {}

    def upload(self, stage: str, client_id: int, payload: bytes) -> bytes | None:
        out = super().upload(stage, client_id, payload)
        if out is not None:
            self.seen[(stage, client_id)] = out
        return out


def _signed(n: int, length: int, seed: int, reach: int) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {c: rng.integers(-reach, reach, length, dtype=np.int64) for c in range(n)}


def _residues(signed: dict[int, np.ndarray], modulus: int) -> dict[int, np.ndarray]:
    return {c: np.mod(v, modulus).astype(np.int64) for c, v in signed.items()}


def _exact(shares: dict[int, np.ndarray], ids, modulus: int) -> np.ndarray:
    acc = 0
    for c in ids:  # Python ints: no overflow, the reference is exact
        acc = (np.asarray(shares[c], dtype=object) + acc) % modulus
    return centred_lift(np.asarray(acc, dtype=np.int64), modulus)


def _secagg(**kw) -> SecAggPlusProtocol:
    return SecAggPlusProtocol(SecAggOptions(min_clients=2, **kw), entropy=DeterministicEntropy(3))


def _he() -> HEProtocol:
    return HEProtocol(parse_options({"min_clients": 2}))


# -- (a) the server's view ----------------------------------------------------------------------
def test_secagg_server_learns_exactly_the_modular_sum_and_no_single_share():
    shares = {c: np.random.default_rng(c).integers(0, M32, 300, dtype=np.int64)
              for c in range(6)}
    channel = RecordingChannel()
    res = _secagg().aggregate(7, shares, channel=channel, encoding="integer")
    assert res.contributors == tuple(range(6))
    assert np.array_equal(res.total, _exact(shares, range(6), M32))  # bit for bit
    assert res.clipped is None  # no codec, so no clipped count is sent at all
    # the adversary reads each masked upload as the client's share: it matches nowhere
    for c in range(6):
        body = channel.seen[("masked_input", c)]
        words = np.frombuffer(body[-(4 * 300 + 16):-16], dtype="<u4").astype(np.int64)
        assert words.size == 300  # exactly the coordinates: nothing appended
        assert np.count_nonzero(words == shares[c]) <= 1


def test_secagg_integer_round_keeps_dropout_behaviour():
    shares = _residues(_signed(8, 40, 1, 2**20), M32)
    res = _secagg().aggregate(2, shares, channel=FaultyChannel(drop={"masked_input": {3}}),
                              encoding="integer")
    assert 3 not in res.contributors and 3 in res.dropped
    assert np.array_equal(res.total, _exact(shares, res.contributors, M32))
    # a dropout after its masked input is unmasked through its neighbours' shares
    res = _secagg().aggregate(3, shares, channel=FaultyChannel(drop={"unmask": {5}}),
                              encoding="integer")
    assert 5 in res.contributors
    assert np.array_equal(res.total, _exact(shares, res.contributors, M32))


def test_bfv_key_holder_decrypts_exactly_the_modular_sum():
    he = _he()
    t = he.integer_modulus
    assert t == he.params.plain_modulus
    shares = {c: np.random.default_rng(10 + c).integers(0, t, 50, dtype=np.int64)
              for c in range(3)}
    channel = RecordingChannel()
    res = he.aggregate(0, shares, channel=channel, encoding="integer")
    assert np.array_equal(res.total, _exact(shares, range(3), t))
    assert res.clipped == 0


def test_bfv_client_refuses_an_opening_of_the_other_encoding():
    """A server that relays an integer-path opening to a float client (or the reverse) gets
    no ciphertext: the client checks the encoding against its own before it encrypts."""
    he = _he()
    client = he.client(0)
    opening = he.key_holder.open_round(4, room=2, clip=he.options.clip, integer=True)
    with pytest.raises(ContextMismatch, match="scale"):
        client.encrypt_update(opening, np.zeros(4), round_id=0)
    opening = he.key_holder.open_round(4, room=2, clip=he.options.clip)
    with pytest.raises(ContextMismatch, match="integer path"):
        client.encrypt_update(opening, np.zeros(4, dtype=np.int64), round_id=1, integer=True)


def test_secagg_transcript_binds_the_encoding():
    """A client on the float path and one on the integer path derive unrelated pairwise
    masks (different transcripts), so a mixed round cannot unmask anything."""
    opts = SecAggOptions()
    a = RoundView.derive(opts, 1, 0, 10, [0, 1, 2])
    b = RoundView.derive(opts, 1, 0, 10, [0, 1, 2], integer=True)
    assert a.digest != b.digest
    assert b.words == 10 and a.words == 11


# -- (b) no clamping ------------------------------------------------------------------------
@pytest.mark.parametrize("proto", ["secagg", "plaintext"])
def test_values_beyond_the_clip_range_wrap_and_decode_exactly(proto):
    """Residues standing for values far outside the float codec's clip (here +-2**31 - 1)
    are summed as they are: the individual terms wrap, the sum decodes exactly."""
    big = {0: np.array([2**31 - 1, -(2**31), 5], dtype=np.int64),
           1: np.array([-(2**31 - 10), 2**31 - 3, -7], dtype=np.int64),
           2: np.array([3, 1, 0], dtype=np.int64)}
    expected = np.sum(list(big.values()), axis=0).astype(np.float64)  # fits: no wrap overall
    p = _secagg(clip=1.0) if proto == "secagg" else PlaintextProtocol()
    res = p.aggregate(0, _residues(big, M32), encoding="integer")
    assert np.array_equal(res.total, expected)


# -- (e) the same sums everywhere -------------------------------------------------------------
def test_plaintext_secagg_and_bfv_integer_sums_agree():
    signed = _signed(4, 80, 5, 2**28)
    expected = np.sum(list(signed.values()), axis=0).astype(np.float64)
    plain = PlaintextProtocol().aggregate(1, _residues(signed, M32), encoding="integer")
    sec = _secagg().aggregate(1, _residues(signed, M32), encoding="integer")
    he = _he()
    bfv = he.aggregate(1, _residues(signed, he.integer_modulus), encoding="integer")
    for res in (plain, sec, bfv):
        assert np.array_equal(res.total, expected)


def test_plaintext_and_secagg_integer_sums_agree():
    signed = _signed(5, 64, 6, 2**28)  # 5 x 2**28 < 2**31: the sum never wraps
    expected = np.sum(list(signed.values()), axis=0).astype(np.float64)
    plain = PlaintextProtocol().aggregate(1, _residues(signed, M32), encoding="integer")
    sec = _secagg().aggregate(1, _residues(signed, M32), encoding="integer")
    assert np.array_equal(plain.total, expected) and np.array_equal(sec.total, expected)


# -- refusals ---------------------------------------------------------------------------------
def test_integer_path_refusals_name_the_problem():
    good = {0: np.zeros(3, dtype=np.int64), 1: np.ones(3, dtype=np.int64)}
    with pytest.raises(ValueError, match="encoding"):
        PlaintextProtocol().aggregate(0, good, encoding="fixed")
    with pytest.raises(ValueError, match="client 1: an integer-path update must be int64"):
        _secagg().aggregate(0, {0: good[0], 1: np.ones(3)}, encoding="integer")
    with pytest.raises(ValueError, match=r"client 0: .*\[0, 4294967296\)"):
        PlaintextProtocol().aggregate(0, {0: np.array([-1, 0, 0]), 1: good[1]},
                                      encoding="integer")
    ckks = HEProtocol(parse_options({"scheme": "ckks", "ckks_key_risk_accepted": True}))
    assert ckks.integer_modulus is None
    with pytest.raises(ValueError, match="no exact integer path"):
        ckks.aggregate(0, good, encoding="integer")


def test_plaintext_rejects_an_upload_outside_the_modulus():
    def forge(payload: bytes) -> bytes:
        return payload[:-8] + (2**40).to_bytes(8, "little")

    ups = {0: np.zeros(3, dtype=np.int64), 1: np.ones(3, dtype=np.int64),
           2: np.ones(3, dtype=np.int64)}
    res = PlaintextProtocol().aggregate(
        0, ups, channel=FaultyChannel(tamper={("update", 2): forge}), encoding="integer")
    assert isinstance(res.rejected[2], ProtocolError) and res.contributors == (0, 1)
    assert np.array_equal(res.total, np.ones(3))
