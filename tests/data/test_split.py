"""The leave-one-out split and its negatives, on hand-built interaction logs."""

from __future__ import annotations

import numpy as np
import pytest

from ffm_private.data import (
    DataError,
    interactions_from_arrays,
    leave_one_out,
    popularity,
    sample_train_negatives,
    train_negative_rng,
)


def _log(rows, **kwargs):
    user, item, ts = (np.array(c) for c in zip(*rows, strict=True))
    return interactions_from_arrays(user, item, ts, **kwargs)


# user "a": items 5, 6, 7, 8 at times 4, 1, 3, 2; "b": 1, 2, 3 with a tie at time 9
ROWS = [("a", 5, 4), ("a", 6, 1), ("a", 7, 3), ("a", 8, 2),
        ("b", 1, 9), ("b", 2, 9), ("b", 3, 1)] + [("c", i, i) for i in range(20, 40)]


def _raw(data, split, user, items):
    return [int(data.raw_item_ids[i]) for i in np.atleast_1d(items)]


def test_latest_is_test_second_latest_valid_the_rest_trains_in_time_order():
    data = _log(ROWS)
    split = leave_one_out(data, num_eval_negatives=5, seed=0)
    users = [str(u) for u in split.raw_user_ids]
    a, b = users.index("a"), users.index("b")
    assert _raw(data, split, a, split.train[a]) == [6, 8]
    assert _raw(data, split, a, split.valid[a]) == [7] and _raw(data, split, a, split.test[a]) == [5]
    # a tie in time keeps the file order: 1 before 2
    assert _raw(data, split, b, split.train[b]) == [3]
    assert _raw(data, split, b, split.valid[b]) == [1] and _raw(data, split, b, split.test[b]) == [2]


def test_evaluation_negatives_are_distinct_never_interacted_and_seeded():
    data = _log(ROWS)
    first = leave_one_out(data, num_eval_negatives=5, seed=0)
    again = leave_one_out(data, num_eval_negatives=5, seed=0)
    other = leave_one_out(data, num_eval_negatives=5, seed=1)
    np.testing.assert_array_equal(first.eval_negatives, again.eval_negatives)
    assert not np.array_equal(first.eval_negatives, other.eval_negatives)
    for u in range(first.n_users):
        neg = first.eval_negatives[u]
        seen = set(first.train[u]) | {first.valid[u], first.test[u]}
        assert len(set(neg)) == len(neg) == 5 and not set(neg) & seen
        cands = first.evaluation_candidates(u)
        assert set(cands) == set(neg) | {first.valid[u], first.test[u]}


def test_users_with_fewer_than_three_interactions_are_dropped_with_a_warning():
    with pytest.warns(UserWarning, match="dropped 1 user"):  # when the log is read
        assert "d" not in {str(u) for u in _log([*ROWS, ("d", 5, 1)]).raw_user_ids}
    data = _log([*ROWS, ("d", 5, 1), ("d", 6, 2)], min_interactions=1)
    with pytest.warns(UserWarning, match="dropped 1 user"):  # and by the split itself
        split = leave_one_out(data, num_eval_negatives=5)
    assert "d" not in {str(u) for u in split.raw_user_ids}
    assert split.n_users == 3 and len(split.source_users) == 3


def test_too_few_items_left_for_negatives_is_a_data_error_naming_the_user():
    with pytest.raises(DataError, match="user c interacted with 20 of"):
        leave_one_out(_log(ROWS), num_eval_negatives=10)


@pytest.mark.parametrize("protocol", ["isolated", "pfedrec", "pfedrec-official"])
def test_training_negatives_avoid_what_the_protocol_excludes(protocol):
    data = _log(ROWS)
    split = leave_one_out(data, num_eval_negatives=5, seed=0, protocol=protocol)
    for u in range(split.n_users):
        train = split.train[u]
        drawn = sample_train_negatives(train, split.n_items, 50, train_negative_rng(0, 1, u),
                                       exclude=split.negative_exclusions(u))
        assert len(drawn) == 50 * len(train)
        assert not set(drawn) & set(train)
        if protocol == "isolated":
            assert not set(drawn) & set(split.evaluation_candidates(u))
        elif protocol == "pfedrec-official":
            assert not set(drawn) & {split.valid[u], split.test[u]}


def test_training_negatives_are_keyed_by_seed_round_and_user():
    draw = lambda s, r, u: sample_train_negatives(  # noqa: E731
        np.array([0, 1]), 50, 4, train_negative_rng(s, r, u))
    np.testing.assert_array_equal(draw(0, 1, 2), draw(0, 1, 2))
    assert len({draw(0, 1, 2).tobytes(), draw(1, 1, 2).tobytes(), draw(0, 2, 2).tobytes(),
                draw(0, 1, 3).tobytes()}) == 4
    with pytest.raises(DataError, match="no training negative"):
        sample_train_negatives(np.array([0, 1]), 3, 1, train_negative_rng(0, 0, 0),
                               exclude=np.array([2]))


def test_popularity_counts_training_interactions_only():
    data = _log(ROWS)
    split = leave_one_out(data, num_eval_negatives=5, seed=0)
    counts = popularity(split)
    assert counts.sum() == sum(len(t) for t in split.train)
    for u in range(split.n_users):
        assert counts[split.test[u]] == sum(split.test[u] in t for t in split.train)
