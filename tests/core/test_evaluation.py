import math

import numpy as np

from ffm_private.evaluation import hr_ndcg, pessimistic_rank


def test_hr_ndcg_hand_computed():
    ranks = np.array([0, 1, 9, 10, 50])
    hr, ndcg = hr_ndcg(ranks, 10)
    assert hr == 3 / 5
    expected = (1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(11)) / 5
    assert math.isclose(ndcg, expected)


def test_pessimistic_rank_counts_ties_against_the_positive():
    pos = np.array([1.0, 0.5, 2.0])
    others = np.array([[0.0, 1.0, 2.0], [0.1, 0.2, 0.3], [0.0, 0.0, 0.0]])
    assert pessimistic_rank(pos, others).tolist() == [2, 0, 0]
    # a constant scorer ranks every positive last
    assert pessimistic_rank(np.zeros(2), np.zeros((2, 99))).tolist() == [99, 99]


def test_rank_mask_excludes_candidates():
    pos = np.array([0.5])
    others = np.array([[0.9, 0.8, 0.1]])
    assert pessimistic_rank(pos, others, np.array([[False, True, True]])).tolist() == [1]
