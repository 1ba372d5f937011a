"""The batched engine's formulation of each model: scores and gradients equal ``forward``,
client by client, in either phase (shared parameters trained, or only personal ones)."""

from __future__ import annotations

import pytest
import torch

from ffm_private.config import ModelConfig
from ffm_private.models import FROZEN, PERSONAL, SHARED, Recommender, build_model, params_of

N_ITEMS, CLIENTS, ROWS, CANDIDATES = 40, 3, 6, 4


def _model(kind: str, **fields) -> Recommender:
    torch.manual_seed(1)
    model = build_model(ModelConfig(kind=kind, dim=8, history_length=5, global_rank=3,
                                    **fields), N_ITEMS, 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape))
    return model


def _per_client(model: Recommender, stacked: dict[str, torch.Tensor], client: int,
                history, items) -> torch.Tensor:
    """``forward`` with client ``client``'s parameters loaded into the module."""
    with torch.no_grad():
        for name, p in list(params_of(model, SHARED).items()) + list(
                params_of(model, PERSONAL).items()):
            p.copy_(stacked[name][client])
    return model(history[client], items[client], torch.zeros(ROWS, dtype=torch.long))


@pytest.mark.parametrize("kind,fields", [
    ("ffm-pool", {}), ("ffm-pool", {"personal_rank": 2}),
    ("ffm-pool", {"personalization": False}), ("fedmf", {}),
])
@pytest.mark.parametrize("trained", [SHARED, PERSONAL])
def test_stacked_scores_and_gradients_equal_forward(kind, fields, trained):
    model = _model(kind, **fields)
    if trained == PERSONAL and not params_of(model, PERSONAL):
        pytest.skip("no personal parameters")
    gen = torch.Generator().manual_seed(2)
    history = torch.randint(0, N_ITEMS + 1, (CLIENTS, ROWS, 5), generator=gen)
    items = torch.randint(0, N_ITEMS, (CLIENTS, ROWS, CANDIDATES), generator=gen)
    stacked = {}
    for group in (SHARED, PERSONAL):
        for name, p in params_of(model, group).items():
            value = p.detach() + 0.2 * torch.randn(CLIENTS, *p.shape, generator=gen)
            stacked[name] = value.requires_grad_(group == trained)
    rows = model.frozen_rows(history, items)
    scores = model.stacked_scores(rows, items, stacked)
    weights = torch.randn(scores.shape, generator=gen)  # a loss that weighs every score
    names = [k for k, v in stacked.items() if v.requires_grad]
    grads = torch.autograd.grad((scores * weights).sum(), [stacked[k] for k in names])
    frozen = set(params_of(model, FROZEN))
    for name, p in model.named_parameters():
        p.requires_grad_(name not in frozen)
    for c in range(CLIENTS):
        model.zero_grad(set_to_none=True)
        own = _per_client(model, stacked, c, history, items)
        torch.testing.assert_close(scores[c], own, rtol=0, atol=1e-5)
        (own * weights[c]).sum().backward()
        all_params = dict(model.named_parameters())
        for name, grad in zip(names, grads, strict=True):
            torch.testing.assert_close(grad[c], all_params[name].grad, rtol=1e-4, atol=1e-5,
                                       msg=f"client {c} {name}")


def test_pooled_history_encoding_equals_the_gathered_one():
    model = _model("ffm-pool")
    history = torch.randint(0, N_ITEMS + 1, (7, 5))
    history[0] = model.pad  # an empty history encodes to zero in both
    torch.testing.assert_close(model.backbone.encode_history_bags(history[None], model.pad)[0],
                               model.backbone.encode_history(history, model.pad),
                               rtol=0, atol=1e-6)
