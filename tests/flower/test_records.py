"""The wire format: plain requests <-> Flower records and message types (needs flwr)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flwr")


def test_every_request_kind_is_a_valid_flower_message_type():
    from flwr.app import metadata

    from ffm_private.flower.server_app import MESSAGE_TYPES

    assert not metadata.validate_message_type("secagg")  # the check can fail
    for kind in ("query", "train", "evaluate", "secagg"):
        assert metadata.validate_message_type(MESSAGE_TYPES[kind]), kind


def test_records_round_trip_arrays_and_values_exactly():
    from ffm_private.flower.records import from_record, to_record

    arrays = {"shared": {"a": np.arange(6, dtype=np.float32).reshape(2, 3)},
              "update": {"delta": np.linspace(-1, 1, 5)}}
    values = {"config": "x = 1\n", "round": 3, "loss": 0.25, "secagg": b"\x00\xffbytes"}
    back_arrays, back_values = from_record(to_record(arrays, values))
    assert back_values == values
    for group, named in arrays.items():
        for k, v in named.items():
            assert back_arrays[group][k].dtype == v.dtype
            np.testing.assert_array_equal(back_arrays[group][k], v)
