"""The foundation-model recommender's personal parts: with and without a personal item adapter."""

import numpy as np
import pytest
import torch

from ffm_private.config import ModelConfig
from ffm_private.models import PERSONAL, build_model, load_group, params_of, state_of
from ffm_private.models.ffm import FFMRecommender

N_ITEMS = 30


def _inputs(n: int = 3, b: int = 5):
    gen = torch.Generator().manual_seed(0)
    history = torch.randint(0, N_ITEMS + 1, (n, 4), generator=gen)
    items = torch.randint(0, N_ITEMS, (n, b), generator=gen)
    return history, items, torch.arange(n)


def test_rank_zero_keeps_only_the_user_embedding_and_the_gate():
    model = build_model(ModelConfig(dim=8, history_length=4, personal_rank=0), n_items=N_ITEMS,
                        num_personal=3)
    assert sorted(params_of(model, PERSONAL)) == ["personal.gate", "personal.user_emb"]
    assert set(model.init_personal_states(3, seed=0)) == {"personal.gate", "personal.user_emb"}


def test_rank_zero_scores_equal_an_adapter_that_is_still_the_identity():
    """Without the item adapter the personal item view is the backbone's, as for a fresh one."""
    torch.manual_seed(1)
    full = FFMRecommender(N_ITEMS, 3, dim=8, history_length=4, personal_rank=4)
    lean = FFMRecommender(N_ITEMS, 3, dim=8, history_length=4, personal_rank=0)
    with torch.no_grad():
        for p in full.parameters():
            p.normal_()
        full.personal.item_up.zero_()  # the personal adapter is then the identity
    lean.load_state_dict({k: v for k, v in full.state_dict().items()
                          if not k.startswith("personal.item_")})
    history, items, owner = _inputs()
    torch.testing.assert_close(lean(history, items, owner), full(history, items, owner))

    with torch.no_grad():  # a trained personal adapter changes the scores: the check can fail
        full.personal.item_up.normal_()
    assert not torch.allclose(lean(history, items, owner), full(history, items, owner))


@pytest.mark.parametrize("rank", [0, 4])
def test_personal_state_round_trips(rank):
    model = build_model(ModelConfig(dim=8, history_length=4, personal_rank=rank),
                        n_items=N_ITEMS, num_personal=2)
    states = {k: v + 0.5 for k, v in model.init_personal_states(2, seed=5).items()}
    load_group(model, PERSONAL, states)
    out = state_of(model, PERSONAL)
    assert set(out) == set(states)
    for k, v in out.items():
        np.testing.assert_array_equal(v, states[k])
