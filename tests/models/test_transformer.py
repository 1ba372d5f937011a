"""The transformer FFM: partition on the wire, exact FFA-LoRA aggregation, DP-SGD gradients."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from ffm_private.client import ClientData, LocalTrainingConfig, train_client
from ffm_private.config import ModelConfig
from ffm_private.models import (
    FROZEN,
    PERSONAL,
    SHARED,
    FFMRecommender,
    SharedSpec,
    TransformerFFM,
    build_model,
    params_of,
    state_of,
)
from ffm_private.models.lora import weight_update
from ffm_private.privacy.dpsgd import DPStepper, RowBatch, make_rows, row_losses
from ffm_private.server import Server
from protocols import Channel, create

N_ITEMS = 40


class RecordingChannel(Channel):
    """Keeps every byte a client uploads."""

    def __init__(self):
        super().__init__()
        self.payloads = []

    def _alter(self, stage, client_id, payload):
        self.payloads.append(payload)
        return payload


def _model(ffa: bool, personal_rank: int = 3, seed: int = 0, **kw) -> TransformerFFM:
    torch.manual_seed(seed)
    cfg = ModelConfig(kind="ffm-transformer", dim=16, history_length=6, layers=2, heads=2,
                      global_rank=4, personal_rank=personal_rank, ffa_lora=ffa, **kw)
    return build_model(cfg, N_ITEMS, 1)


def _train(model, message, personal, cid, rng, epochs=1):
    data = ClientData(cid, rng.choice(N_ITEMS, size=15, replace=False))
    return train_client(model, message, personal, data,
                        LocalTrainingConfig(personal_epochs=epochs, local_epochs=epochs,
                                            lr=0.05), seed=0)


def test_ffm_is_an_alias_of_ffm_pool():
    torch.manual_seed(0)
    a = build_model(ModelConfig(kind="ffm", dim=8), N_ITEMS)
    torch.manual_seed(0)
    b = build_model(ModelConfig(kind="ffm-pool", dim=8), N_ITEMS)
    assert type(a) is type(b) is FFMRecommender
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert na == nb and torch.equal(pa, pb)


@pytest.mark.parametrize("ffa", [False, True])
def test_groups(ffa):
    model = _model(ffa)
    names = {g: set(params_of(model, g)) for g in (FROZEN, SHARED, PERSONAL)}
    assert all(".lora_" in n for n in names[SHARED])
    assert any(".lora_b." in n for n in names[SHARED])
    # FFA-LoRA: A is frozen (backbone), only B is shared; plain LoRA shares both
    assert any(".lora_a." in n for n in names[SHARED]) is not ffa
    assert any(".lora_a." in n for n in names[FROZEN]) is ffa
    assert {"personal.user_emb", "personal.gate", "personal.down", "personal.up"} == names[PERSONAL]
    lora = _model(False)
    assert SharedSpec.of(model).size == (SharedSpec.of(lora).size // 2 if ffa
                                         else SharedSpec.of(lora).size)


def test_fresh_adapters_leave_the_backbone_unchanged_and_empty_histories_are_defined():
    model = _model(False).eval()
    with torch.no_grad():
        hist = torch.full((3, 6), N_ITEMS)
        hist[1, -2:] = torch.tensor([3, 4])
        items = torch.arange(5).expand(3, -1)
        owner = torch.zeros(3, dtype=torch.long)
        before = model(hist, items, owner)
        assert torch.isfinite(before).all()
        for p in params_of(model, SHARED).values():  # a different A changes nothing while B = 0
            if p.ndim == 2 and p.abs().sum() > 0:
                p.normal_()
        assert torch.allclose(model(hist, items, owner), before)


def test_earlier_items_of_the_window_shape_the_representation():
    """Attention reads the whole window, not only the latest item."""
    model = _model(True, personal_rank=0).eval()
    with torch.no_grad():
        for p in params_of(model, SHARED).values():
            p.normal_(0.0, 0.3)
        a = torch.tensor([[N_ITEMS, N_ITEMS, 1, 2, 3, 4]])
        h = model.encode(a)
        b = a.clone()
        b[0, 2] = 7
        assert not torch.allclose(model.encode(b), h)  # earlier items matter


@pytest.mark.parametrize("ffa", [False, True])
def test_no_personal_or_frozen_tensor_in_a_message_by_bytes(ffa):
    rng = np.random.default_rng(0)
    model = _model(ffa)
    for p in model.parameters():
        p.requires_grad_(False)
    spec = SharedSpec.of(model)
    assert all(n.startswith("shared.") for n in spec.names)
    frozen = state_of(model, FROZEN)
    personal_states = model.init_personal_states(3, seed=1)
    server = Server(spec, state_of(model, SHARED), create("plaintext"))
    message = server.broadcast(1)
    updates, personals = {}, {}
    for cid in range(3):
        personal = {k: v[cid] for k, v in personal_states.items()}
        res = _train(model, message, personal, cid, rng, epochs=2)
        updates[cid], personals[cid] = res.update, res.personal
        assert any(not np.allclose(res.personal[k], personal[k]) for k in personal)
        assert np.abs(res.update.delta).max() > 0
    channel = RecordingChannel()
    server.aggregate(1, updates, channel=channel)
    assert len(channel.payloads) == 3
    secrets = [*personals.values(), frozen]
    checked = 0
    for payload in channel.payloads:
        assert len(payload) - spec.size * 8 < 64  # header + exactly the shared vector
        for state in secrets:
            for name, value in state.items():
                flat = np.asarray(value, dtype=np.float64).ravel()
                flat = flat[flat != 0]
                for window in (flat[:3], flat[-3:]):
                    if len(window) == 3:
                        checked += 1
                        assert window.astype("<f8").tobytes() not in payload, name
                        assert window.astype("<f4").tobytes() not in payload, name
    assert checked > 50
    # the check can fail: the payload does hold the bytes of what is shared
    first = updates[0].delta[np.flatnonzero(updates[0].delta)[:3]]
    assert first.astype("<f8").tobytes() in channel.payloads[0]


def _effective_updates(model_state_before, model_state_after, a_of):
    """Dense weight change of every adapted projection: B' A' - B A."""
    out = {}
    for name, b_after in model_state_after.items():
        if ".lora_b." not in name:
            continue
        a_name = a_of(name)
        out[name] = (weight_update(torch.as_tensor(a_name[1]), torch.as_tensor(b_after))
                     - weight_update(torch.as_tensor(a_name[0]),
                                     torch.as_tensor(model_state_before[name])))
    return out


@pytest.mark.parametrize("ffa", [True, False])
def test_ffa_lora_aggregation_is_exact_and_plain_lora_is_not(ffa):
    """The server's mean of the sent B's changes every weight by the mean client change."""
    rng = np.random.default_rng(3)
    model = _model(ffa)
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.no_grad():  # start away from B = 0 so plain LoRA's cross terms show
        for name, p in params_of(model, SHARED).items():
            if ".lora_b." in name:
                p.normal_(0.0, 0.2)
    spec = SharedSpec.of(model)
    frozen = state_of(model, FROZEN)
    start = state_of(model, SHARED)
    server = Server(spec, start, create("plaintext"))
    message = server.broadcast(1)
    personal0 = {k: v[0] for k, v in model.init_personal_states(1, 0).items()}
    results = [_train(model, message, personal0, cid, rng) for cid in range(4)]
    server.aggregate(1, {r.update.client_id: r.update for r in results})
    new = server.shared

    def a_pair(state_before, state_after):
        def a_of(b_name):
            a_name = b_name.replace(".lora_b.", ".lora_a.")
            if ffa:
                key = a_name.replace("shared.", "backbone.", 1)
                return frozen[key], frozen[key]
            return state_before[a_name], state_after[a_name]
        return a_of

    client_changes = []
    for r in results:
        after = spec.unflatten(spec.flatten(start) + r.update.delta)
        client_changes.append(_effective_updates(start, after, a_pair(start, after)))
    agg = _effective_updates(start, new, a_pair(start, new))
    gap = max(float((agg[n] - torch.stack([c[n] for c in client_changes]).mean(0)).abs().max())
              for n in agg)
    scale = max(float(v.abs().max()) for v in agg.values())
    assert scale > 1e-3
    if ffa:
        assert gap < 1e-6 * max(1.0, scale)
    else:
        assert gap > 1e-4  # mean(B) mean(A) is not mean(B A)


def _rows(seed: int, n: int = 10) -> RowBatch:
    gen = torch.Generator().manual_seed(seed)
    positives = torch.randint(0, N_ITEMS, (n,), generator=gen)
    rows = make_rows(positives, N_ITEMS, 6, 4, gen)
    hist = torch.randint(0, N_ITEMS + 1, rows.history.shape, generator=gen)
    hist[0] = N_ITEMS  # one empty history
    return dataclasses.replace(rows, history=hist)


def _oracle_clipped_sum(model, names, rows, clip):
    """Micro-batches of one row with plain autograd, clipped one by one, summed."""
    params = [dict(model.named_parameters())[n] for n in names]
    total = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    norms = []
    for j in range(len(rows)):
        one = RowBatch(rows.history[j:j + 1], rows.items[j:j + 1], rows.owner[j:j + 1],
                       rows.labels[j:j + 1])
        grads = torch.autograd.grad(row_losses(model, one).sum(), params)
        norm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))
        norms.append(norm)
        for t, g in zip(total, grads, strict=True):
            t += min(1.0, clip / norm) * g.double()
    return total, np.array(norms)


@pytest.mark.parametrize(("ffa", "group", "engine"), [
    (False, SHARED, "hooks"), (True, SHARED, "hooks"), (False, SHARED, "functorch"),
    (True, SHARED, "ghost"), (False, PERSONAL, "functorch"),
])
def test_dp_sgd_per_example_gradients_equal_micro_batch_gradients(ffa, group, engine):
    model = _model(ffa).train()
    with torch.no_grad():  # non-trivial weights everywhere, so every gradient is non-zero
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    for p in model.parameters():
        p.requires_grad_(False)
    params = params_of(model, group)
    for p in params.values():
        p.requires_grad_(True)
    rows = _rows(1)
    reference = copy.deepcopy(model)
    names = list(params)
    _, norms = _oracle_clipped_sum(reference, names, rows, 1e9)
    clip = float(np.median(norms))
    expected, _ = _oracle_clipped_sum(reference, names, rows, clip)
    before = {k: p.detach().clone() for k, p in params.items()}
    with DPStepper(model, params, noise_multiplier=0.0, clipping_norm=clip,
                   expected_batch_size=1.0, lr=1.0, generator=torch.Generator().manual_seed(0),
                   engine=engine, optimizer="sgd") as stepper:
        stepper.step(rows)
    assert (norms > clip).sum() >= 2 and (norms < clip).sum() >= 2
    for (name, p), want in zip(params.items(), expected, strict=True):
        got = (before[name] - p.detach()).double()
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-6,
                                   err_msg=f"{engine}: {name}")


def test_pretraining_keeps_ffa_a_factors_at_their_seed(tiny_data_dir):
    from ffm_private.config import PretrainConfig
    from ffm_private.data import leave_one_out, load_dataset
    from ffm_private.pretrain import pretrain_backbone, public_users

    split = leave_one_out(load_dataset("synthetic", tiny_data_dir), seed=0, protocol="pfedrec")
    cfg = ModelConfig(kind="ffm-transformer", dim=8, history_length=4, layers=1,
                      global_rank=2, ffa_lora=True)
    torch.manual_seed(0)
    init = state_of(build_model(cfg, split.n_items, 1), FROZEN)
    state = pretrain_backbone(cfg, PretrainConfig(epochs=2, batch_size=256), split,
                              public_users(split.n_users, 0.2, 0), progress=False)
    a_names = [n for n in state if ".lora_a." in n]
    assert a_names and all(np.array_equal(state[n], init[n]) for n in a_names)
    assert not np.array_equal(state["backbone.item_emb"], init["backbone.item_emb"])



@pytest.mark.slow
def test_a_transformer_run_resumes_to_the_uninterrupted_result(tiny_config, tmp_path,
                                                               monkeypatch):
    """No hidden randomness (no dropout): a resumed run ends bit for bit where one run ends."""
    from ffm_private.simulation import Simulation
    from ffm_private.storage import load_arrays

    over = {"model.kind": "ffm-transformer", "model.ffa_lora": True, "model.global_rank": 2,
            "model.history_length": 4, "pretrain.epochs": 1, "federated.rounds": 2,
            "federated.client_fraction": 0.25, "evaluation.full_ranking": False,
            "observation.enabled": False}
    reference = tiny_config.replace(run_dir=str(tmp_path / "reference"), **over)
    summary = Simulation(reference, progress=False).run()
    spec = SharedSpec.of(build_model(reference.model, 150, 1))
    assert summary["shared_parameters"] == spec.size
    assert all(".lora_b." in n for n in spec.names)

    cfg = tiny_config.replace(run_dir=str(tmp_path / "run"), **over)
    original = Simulation.run_round

    def crash_in_round_2(self, state, round_id):
        if round_id == 2:
            raise KeyboardInterrupt
        return original(self, state, round_id)

    monkeypatch.setattr(Simulation, "run_round", crash_in_round_2)
    with pytest.raises(KeyboardInterrupt):
        Simulation(cfg, progress=False).run()
    monkeypatch.setattr(Simulation, "run_round", original)
    Simulation(cfg, resume=True, progress=False).run()

    def last(run_dir):
        latest = (run_dir / "checkpoints" / "LATEST").read_text().strip()
        ckpt = run_dir / "checkpoints" / latest
        return load_arrays(ckpt / "global.npz"), load_arrays(ckpt / "personal.npz")

    for a, b in zip(last(tmp_path / "reference"), last(tmp_path / "run"), strict=True):
        assert set(a) == set(b)
        for k in a:
            assert np.array_equal(a[k], b[k]), k
