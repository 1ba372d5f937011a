import math

import numpy as np
import pytest
import torch

from ffm_private.evaluation import evaluate_model, hr_ndcg, pessimistic_rank


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


@pytest.mark.parametrize("personal_rank", [0, 2])
def test_the_fast_scorer_gives_the_forward_metrics(tiny_config, monkeypatch, personal_rank):
    """FFM's evaluation scorer (global item view computed once per item) == forward, exactly."""
    from ffm_private.models import FFMRecommender, build_model
    from ffm_private.simulation import load_split

    cfg = tiny_config.replace(**{"model.personal_rank": personal_rank})
    split = load_split(cfg, tiny_config.run_dir)
    torch.manual_seed(0)
    model = build_model(cfg.model, split.n_items, split.n_users)
    with torch.no_grad():  # trained-looking adapters, gates and user embeddings
        for name, p in model.named_parameters():
            if not name.startswith("backbone"):
                p.add_(0.3 * torch.randn(p.shape))
    users = torch.arange(split.n_users)
    history = torch.randint(0, split.n_items + 1, (split.n_users, cfg.model.history_length))
    items = torch.randint(0, split.n_items, (split.n_users, 30))
    with torch.no_grad():
        torch.testing.assert_close(model.eval_scorer()(history, items, users),
                                   model(history, items, users), rtol=0, atol=1e-6)
    fast = evaluate_model(model, split)
    assert fast == evaluate_model(model, split, chunk=5) == evaluate_model(model, split,
                                                                           chunk=64)
    monkeypatch.delattr(FFMRecommender, "eval_scorer")
    assert evaluate_model(model, split, chunk=64) == fast
    assert 0 < fast["test_hr@10"] < 1


def test_evaluation_runs_with_one_thread_and_restores_the_setting(tiny_config, monkeypatch):
    from ffm_private import evaluation
    from ffm_private.models import build_model
    from ffm_private.simulation import load_split

    split = load_split(tiny_config, tiny_config.run_dir)
    model = build_model(tiny_config.model, split.n_items, split.n_users)
    seen = []
    inner = evaluation._evaluate
    monkeypatch.setattr(evaluation, "_evaluate",
                        lambda *a, **k: seen.append(torch.get_num_threads()) or inner(*a, **k))
    before = torch.get_num_threads()
    evaluate_model(model, split, full_ranking=False)
    evaluate_model(model, split, full_ranking=False, threads=0)
    assert seen == [1, before] and torch.get_num_threads() == before
