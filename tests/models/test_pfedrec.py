"""PFedRec as its official code runs it: alternating SGD steps, scaled item learning rate,
post-tuned item embeddings for inference, the score function never sent."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from ffm_private.client import ClientData, LocalTrainingConfig, train_client
from ffm_private.config import ModelConfig
from ffm_private.messages import GlobalModelMessage
from ffm_private.models import (
    PERSONAL,
    SHARED,
    PFedRecRecommender,
    build_model,
    params_of,
    state_of,
)
from ffm_private.simulation import Simulation
from ffm_private.training_data import build_examples

N_ITEMS = 30


def _model(num_personal: int = 1) -> PFedRecRecommender:
    return build_model(ModelConfig(kind="pfedrec", dim=8, lr_eta=2.0), N_ITEMS, num_personal)


def _client(model, train, lr=0.1, personal_lr=0.2, batch_size=256):
    personal = {k: v[0] for k, v in model.init_personal_states(1, 0).items()}
    message = GlobalModelMessage(1, state_of(model, SHARED))
    cfg = LocalTrainingConfig(lr=lr, personal_lr=personal_lr, batch_size=batch_size)
    return message, personal, train_client(model, message, personal, ClientData(0, train), cfg, 0)


def test_groups_and_official_initialisation():
    model = _model(3)
    assert set(params_of(model, SHARED)) == {"shared.item_emb.weight"}
    assert set(params_of(model, PERSONAL)) == {"personal.score_w", "personal.score_b",
                                               "personal.item_delta"}
    states = model.init_personal_states(3, seed=5)
    # every user starts from the same score function, as the official code's single model
    assert np.array_equal(states["personal.score_w"][0], states["personal.score_w"][2])
    assert np.abs(states["personal.score_w"]).max() <= 8 ** -0.5
    assert not states["personal.item_delta"].any()


def test_one_batch_is_an_sgd_step_on_the_score_then_on_the_items():
    """Reference: the two steps of the official client, by autograd on the same forward."""
    model = _model()
    train = np.array([1, 4, 7, 9, 12])
    message, personal, result = _client(model, train)
    # rebuild the exact examples and step by hand
    from ffm_private.client import _batch_seed
    from ffm_private.data import train_negative_rng

    ex = build_examples(train, N_ITEMS, 1, 4, train_negative_rng(0, 1, 0))
    gen = torch.Generator().manual_seed(_batch_seed(0, 1, 0, 2))
    # one batch of (item, label) pairs, shuffled, as the official data loader yields them
    order = torch.randperm(ex.items.size, generator=gen)
    items = torch.from_numpy(ex.items).reshape(-1, 1)[order]
    labels = torch.from_numpy(ex.labels).reshape(-1, 1)[order]
    owner = torch.zeros(len(items), dtype=torch.long)
    w = torch.as_tensor(personal["personal.score_w"])[None].clone().requires_grad_(True)
    b = torch.as_tensor(personal["personal.score_b"]).reshape(1).clone().requires_grad_(True)
    e = torch.as_tensor(message.shared["shared.item_emb.weight"]).clone().requires_grad_(True)

    def loss():
        logits = torch.einsum("nbd,nd->nb", e[items], w[owner]) + b[owner][:, None]
        return F.binary_cross_entropy_with_logits(logits, labels)

    gw, gb = torch.autograd.grad(loss(), [w, b])
    with torch.no_grad():
        w -= 0.2 * gw
        b -= 0.2 * gb
    (ge,) = torch.autograd.grad(loss(), [e])
    with torch.no_grad():
        e -= 0.1 * N_ITEMS * 2.0 * ge
    np.testing.assert_allclose(result.personal["personal.score_w"], w[0].detach().numpy(),
                               rtol=1e-5, atol=1e-6)
    sent = result.update.delta.reshape(N_ITEMS + 1, 8)
    want = (e - torch.as_tensor(message.shared["shared.item_emb.weight"])).detach().numpy()
    np.testing.assert_allclose(sent, want, rtol=1e-4, atol=1e-6)
    assert np.abs(want).max() > 1e-3


def test_post_tuned_items_serve_inference_but_training_starts_from_the_received_table():
    model = _model()
    train = np.array([2, 3, 5, 8, 13, 21])
    message, _, result = _client(model, train)
    delta = result.personal["personal.item_delta"]
    np.testing.assert_allclose(delta.ravel(), result.update.delta, rtol=1e-5, atol=1e-6)
    # a model holding the new global table and this personal state scores with both
    scorer = _model()
    with torch.no_grad():
        new_table = message.shared["shared.item_emb.weight"] + 0.01
        scorer.shared.item_emb.weight.copy_(torch.as_tensor(new_table))
        for k, v in result.personal.items():
            params_of(scorer, PERSONAL)[k].copy_(torch.as_tensor(v)[None])
    items = torch.arange(N_ITEMS)[None]
    hist, owner = torch.full((1, 1), N_ITEMS), torch.zeros(1, dtype=torch.long)
    w, b = result.personal["personal.score_w"], result.personal["personal.score_b"]
    with torch.no_grad():
        got_eval = scorer.eval()(hist, items, owner).numpy()[0]
        got_train = scorer.train()(hist, items, owner).numpy()[0]
    np.testing.assert_allclose(got_eval, (new_table + delta)[:N_ITEMS] @ w + b, rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(got_train, new_table[:N_ITEMS] @ w + b, rtol=1e-4, atol=1e-5)


def test_score_function_never_leaves_the_device():
    model = _model()
    _, _, result = _client(model, np.array([1, 2, 3, 4, 5, 6]))
    payload = np.asarray(result.update.delta, dtype="<f8").tobytes()
    assert result.update.delta.size == (N_ITEMS + 1) * 8
    for name in ("personal.score_w", "personal.score_b"):
        flat = np.atleast_1d(result.personal[name]).astype(np.float64)
        assert flat.astype("<f8").tobytes() not in payload, name


@pytest.mark.parametrize("protocol", ["pfedrec", "isolated"])
def test_a_pfedrec_run_learns(tmp_path, protocol):
    """Mechanics only (synthetic data is no quality claim): the loss falls, test > popularity."""
    from ffm_private.config import Config
    from ffm_private.data import SyntheticConfig, generate_synthetic

    generate_synthetic(tmp_path / "data", SyntheticConfig(n_users=60, n_items=300,
                                                          n_interactions=3000,
                                                          min_per_user=15, seed=1))
    cfg = Config(run_dir=str(tmp_path / "run")).replace(**{
        "data.path": str(tmp_path / "data"), "data.protocol": protocol,
        "model.kind": "pfedrec", "model.dim": 16, "federated.rounds": 6,
        "federated.lr": 0.1, "federated.personal_lr": 0.1, "federated.eval_every": 3,
        "pretrain.epochs": 0, "evaluation.full_ranking": False, "observation.enabled": False})
    summary = Simulation(cfg, progress=False).run()
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] - 0.05
    assert summary["shared_parameters"] == 301 * 16
