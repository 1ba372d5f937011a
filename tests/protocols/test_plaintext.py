"""The reference protocol, the channel's fault injection and the shared fixed-point codec."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import FaultyChannel, create
from protocols.errors import MalformedMessage, TooFewClients, WrongLength, WrongRound
from protocols.plaintext import encode_update
from protocols.quantize import FixedPointCodec


def _updates(n, length=50, seed=0):
    rng = np.random.default_rng(seed)
    return {cid: rng.normal(size=length) for cid in range(n)}


def test_sum_and_view():
    ups = _updates(5)
    res = create("plaintext").aggregate(3, ups)
    np.testing.assert_allclose(res.total, sum(ups.values()))
    assert res.contributors == (0, 1, 2, 3, 4)
    assert set(res.individual) == set(ups)
    assert res.bytes_up > 5 * 50 * 8


def test_dropouts_and_bad_messages_exclude_only_that_client():
    ups = _updates(6)
    other_round = encode_update(2, 4, ups[4])
    channel = FaultyChannel(drop={"update": {1}}, tamper={
        ("update", 2): lambda b: b[:-3],                 # truncated
        ("update", 3): lambda b: b"XXXX" + b[4:],        # not our message type
        ("update", 4): lambda b: other_round,            # replay from another round
    })
    res = create("plaintext").aggregate(7, ups, channel=channel)
    assert res.contributors == (0, 5)
    assert res.dropped == (1,)
    assert isinstance(res.rejected[2], WrongLength)
    assert isinstance(res.rejected[3], MalformedMessage)
    assert isinstance(res.rejected[4], WrongRound)
    assert "client 4" in str(res.rejected[4])
    np.testing.assert_allclose(res.total, ups[0] + ups[5])


def test_too_few_clients_aborts():
    proto = create("plaintext", {"min_clients": 3})
    with pytest.raises(TooFewClients):
        proto.aggregate(0, _updates(3), channel=FaultyChannel(drop={"update": {0}}))


def test_bad_inputs_and_options():
    with pytest.raises(WrongLength):
        create("plaintext").aggregate(0, {0: np.zeros(3), 1: np.zeros(4)})
    with pytest.raises(ValueError, match="NaN"):
        create("plaintext").aggregate(0, {0: np.array([np.nan])})
    with pytest.raises(ValueError, match="takes no option 'clip'"):
        create("plaintext", {"clip": 1.0})
    with pytest.raises(ValueError, match="unknown protocol"):
        create("rot13")


@pytest.mark.parametrize("value", [2.9, 2.0, True, 0, -1, "2", [2], float("inf"), float("nan"),
                                   None])
def test_min_clients_must_be_an_integer(value):
    """2.9 used to become 2 silently; every non-integer is now refused by name."""
    with pytest.raises(ValueError, match="protocol.options.min_clients must be an integer"):
        create("plaintext", {"min_clients": value})


def test_capabilities():
    proto = create("plaintext", {"min_clients": 3})
    assert proto.min_clients == 3 and proto.reveals_individual_updates
    assert not proto.supports_distributed_noise and proto.value_range is None
    assert "sees every client's" in proto.describe()


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 200), clip=st.floats(0.01, 100.0), seed=st.integers(0, 2**31))
def test_codec_sum_within_bound(n, clip, seed):
    codec = FixedPointCodec(clip=clip, max_clients=n)
    rng = np.random.default_rng(seed)
    xs = rng.uniform(-clip, clip, size=(n, 16))
    xs[0, 0] = clip  # the extremes must not wrap
    xs[-1, 1] = -clip
    total = np.zeros(16, dtype=np.uint64)
    for x in xs:
        total = (total + codec.encode(x, rng)) % np.uint64(2**32)
    err = np.abs(codec.decode_sum(total) - xs.sum(axis=0))
    assert err.max() <= codec.error_bound(n)


def test_codec_rounding_is_unbiased_and_clips():
    codec = FixedPointCodec(clip=1.0, max_clients=1, modulus=2**8)
    rng = np.random.default_rng(0)
    x = np.full(20000, 0.3 / codec.scale)  # 0.3 of one step
    mean = codec.decode_sum(codec.encode(x, rng)).mean()
    assert abs(mean - x[0]) < 0.02 / codec.scale
    assert codec.decode_sum(codec.encode(np.array([5.0, -5.0]), rng)).tolist() == pytest.approx(
        [1.0, -1.0], abs=1 / codec.scale)
    with pytest.raises(ValueError):
        FixedPointCodec(clip=0.0, max_clients=1)
    with pytest.raises(ValueError, match="no precision"):
        FixedPointCodec(clip=1.0, max_clients=1000, modulus=2**8)
