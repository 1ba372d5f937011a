"""The client engines: the batched one against the per-client loop (the reference), client by
client; the thread setting around client training."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from ffm_private import config as config_mod
from ffm_private.client import ClientData, LocalTrainingConfig, train_client
from ffm_private.engine import batched_refusal
from ffm_private.engine.batched import block_size, train_batched
from ffm_private.engine.threads import client_threads
from ffm_private.messages import GlobalModelMessage
from ffm_private.models import FROZEN, SHARED, SharedSpec, build_model, load_group, params_of
from ffm_private.models.partition import state_of
from ffm_private.simulation import Simulation, run_training

ATOL = 1e-5


def _setup(kind: str, *, personal_rank: int = 0, personalization: bool = True, n_users: int = 7,
           n_items: int = 60, seed: int = 3):
    cfg = config_mod.ModelConfig(kind=kind, dim=8, history_length=5, global_rank=4,
                                 personal_rank=personal_rank, personalization=personalization)
    torch.manual_seed(seed)
    model = build_model(cfg, n_items, 1)
    with torch.no_grad():  # a non-trivial backbone and shared state (not the zero adapter)
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape))
    for p in model.parameters():
        p.requires_grad_(False)
    rng = np.random.default_rng(seed)
    # ragged sizes: one client below a batch, some spanning several batches
    sizes = [3, 40, 17, 9, 40, 1, 26][:n_users]
    clients = [ClientData(u, rng.choice(n_items, size=s, replace=False),
                          rng.choice(n_items, size=3, replace=False) if u % 2 else None)
               for u, s in enumerate(sizes)]
    personal = build_model(cfg, n_items, 1).init_personal_states(n_users, seed)
    store = {u: {k: v[u] + 0.1 * rng.standard_normal(v[u].shape).astype(np.float32)
                 for k, v in personal.items()} for u in range(n_users)}
    message = GlobalModelMessage(round_id=2, shared=state_of(model, SHARED))
    return model, message, clients, store


def _loop(model, message, clients, store, cfg, seed=11):
    return {c.user: train_client(model, message, store[c.user], c, cfg, seed) for c in clients}


def _assert_same(loop, batched):
    assert list(loop) == list(batched)
    for cid, a in loop.items():
        b = batched[cid]
        assert b.update.client_id == cid and b.update.round_id == a.update.round_id
        assert b.update.num_examples == a.update.num_examples
        assert b.update.delta.dtype == a.update.delta.dtype
        np.testing.assert_allclose(b.update.delta, a.update.delta, atol=ATOL, rtol=0,
                                   err_msg=f"client {cid} delta")
        assert set(b.personal) == set(a.personal)
        for k in a.personal:
            assert b.personal[k].shape == a.personal[k].shape
            np.testing.assert_allclose(b.personal[k], a.personal[k], atol=ATOL, rtol=0,
                                       err_msg=f"client {cid} {k}")
        for k, v in a.metrics.items():
            np.testing.assert_allclose(b.metrics[k], v, rtol=1e-5, equal_nan=True)
        assert b.update.metrics.keys() == a.update.metrics.keys()
        assert b.dp is None and a.dp is None


@pytest.mark.parametrize("kind", ["ffm-pool", "fedmf"])
@pytest.mark.parametrize("epochs", [1, 2])
def test_per_client_results_equal_the_loop(one_torch_thread, kind, epochs):
    model, message, clients, store = _setup(kind)
    cfg = LocalTrainingConfig(personal_epochs=epochs, local_epochs=epochs, batch_size=8,
                              num_negatives=3, lr=0.05, personal_lr=0.1)
    loop = _loop(model, message, clients, store, cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batched = train_batched(model, message, store.__getitem__, clients, cfg, 11)
    _assert_same(loop, batched)
    # the update is not trivially zero: the comparison can fail
    assert all(np.abs(r.update.delta).max() > 1e-3 for r in loop.values())
    # the workspace is only read (its personal row is the loop's last client, unchanged)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_blocks_of_one_and_variants_equal_the_loop(one_torch_thread):
    """Blocks of one client, a personal item adapter, and no personal phase."""
    cfg = LocalTrainingConfig(personal_epochs=2, local_epochs=1, batch_size=16, num_negatives=2)
    model, message, clients, store = _setup("ffm-pool", personal_rank=3)
    loop = _loop(model, message, clients, store, cfg)
    _assert_same(loop, train_batched(model, message, store.__getitem__, clients, cfg, 11,
                                     memory_budget_mb=1))
    _assert_same(loop, train_batched(model, message, store.__getitem__, clients, cfg, 11))
    model, message, clients, store = _setup("ffm-pool", personalization=False)
    cfg = dataclasses.replace(cfg, personal_epochs=0)
    _assert_same(_loop(model, message, clients, store, cfg),
                 train_batched(model, message, store.__getitem__, clients, cfg, 11))


def test_a_different_seed_changes_the_result(one_torch_thread):
    """The engine uses the round's negative and order streams: another seed differs."""
    model, message, clients, store = _setup("ffm-pool")
    cfg = LocalTrainingConfig(batch_size=8, num_negatives=3)
    a = train_batched(model, message, store.__getitem__, clients, cfg, 11)
    b = train_batched(model, message, store.__getitem__, clients, cfg, 12)
    assert any(np.abs(a[c].update.delta - b[c].update.delta).max() > 1e-4 for c in a)


def test_block_size_follows_the_memory_budget():
    model = build_model(config_mod.ModelConfig(kind="fedmf", dim=64), 1682, 1)
    cfg = LocalTrainingConfig()
    small, large = block_size(model, cfg, 64), block_size(model, cfg, 4096)
    assert 1 <= small < large
    assert block_size(model, cfg, 1) == 1


@pytest.mark.parametrize("kind", ["ffm-transformer", "pfedrec"])
def test_unsupported_models_are_refused_at_config_load(kind):
    with pytest.raises(config_mod.ConfigError, match=kind):
        config_mod.Config().replace(**{"federated.engine": "batched", "model.kind": kind})
    assert batched_refusal("ffm-pool", "user") is None


def test_example_level_dp_is_refused_at_config_load():
    privacy = {"mode": "example", "target_epsilon": 8.0, "clipping_norm": 0.1,
               "allow_large_delta": True}
    with pytest.raises(config_mod.ConfigError, match="example-level"):
        config_mod.Config().replace(**{"federated.engine": "batched", "privacy": privacy})


def test_client_threads_sets_and_restores():
    before = torch.get_num_threads()
    with client_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), client_threads(1):
        raise RuntimeError("restored on error too")
    assert torch.get_num_threads() == before
    with client_threads(0):
        assert torch.get_num_threads() == before


def test_client_threads_is_a_checked_config_field():
    assert config_mod.Config().federated.client_threads == 1
    with pytest.raises(config_mod.ConfigError, match="federated.client_threads"):
        config_mod.Config().replace(**{"federated.client_threads": -1})
    with pytest.raises(config_mod.ConfigError, match="federated.engine"):
        config_mod.Config().replace(**{"federated.engine": "threads"})


def _metrics(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        row.pop("seconds")
    return rows


@pytest.mark.parametrize("privacy", [
    {},
    pytest.param({"mode": "user", "target_epsilon": 4.0, "clipping_norm": 0.5,
                  "expected_clients_per_round": 40.0, "noise_seed": 5},
                 marks=pytest.mark.slow, id="user-dp"),
], ids=["no-dp", "user-dp"])
def test_a_whole_run_equals_the_loop(tiny_config, tmp_path, privacy):
    """Metrics of every round, final shared and personal state: batched == loop."""
    base = tiny_config.replace(**{"federated.rounds": 2, "federated.client_fraction": 0.5,
                                  "privacy": privacy})
    loop_dir, batched_dir = tmp_path / "loop", tmp_path / "batched"
    run_training(base.replace(run_dir=str(loop_dir)), progress=False)
    run_training(base.replace(**{"run_dir": str(batched_dir), "federated.engine": "batched"}),
                 progress=False)
    a, b = _metrics(loop_dir), _metrics(batched_dir)
    assert [r["contributors"] for r in a] == [r["contributors"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        for key, value in ra.items():
            if isinstance(value, float):
                np.testing.assert_allclose(rb[key], value, rtol=1e-4, atol=1e-6, err_msg=key)
            else:
                assert rb[key] == value, key
    sa = Simulation(base.replace(run_dir=str(loop_dir)), resume=True, progress=False)
    sb = Simulation(base.replace(**{"run_dir": str(batched_dir), "federated.engine": "batched"}),
                    resume=True, progress=False)
    try:
        sa.start(), sb.start()
        ka, kb = sa.load_checkpoint(), sb.load_checkpoint()
        for k, v in ka.shared.items():
            np.testing.assert_allclose(kb.shared[k], v, atol=ATOL)
        for k, v in ka.personal.arrays.items():
            np.testing.assert_allclose(kb.personal.arrays[k], v, atol=ATOL)
    finally:
        sa.close()
        sb.close()


def test_backbone_is_not_trained(one_torch_thread):
    model, message, clients, store = _setup("ffm-pool")
    frozen = {k: v.clone() for k, v in params_of(model, FROZEN).items()}
    train_batched(model, message, store.__getitem__, clients, LocalTrainingConfig(), 11)
    load_group(model, SHARED, message.shared)
    for k, v in params_of(model, FROZEN).items():
        assert torch.equal(v, frozen[k])


def test_blocks_fit_the_budget():
    from ffm_private.engine.batched import _blocks

    assert _blocks([5, 4, 3, 3, 9, 1], 8) == [[0], [1, 2], [3], [4], [5]]
    assert _blocks([], 8) == []


def test_a_step_runs_in_chunks_with_bounded_padding():
    from ffm_private.engine.batched import _FILL, _MAX_ROWS, _MIN_ROWS, _chunks

    lengths = [256] * 20 + list(range(255, 0, -1))
    chunks = _chunks(lengths)
    assert chunks[0][0] == 0 and chunks[-1][1] == len(lengths)
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:], strict=False))
    for lo, hi in chunks:
        real = sum(lengths[lo:hi])
        assert real <= max(_MAX_ROWS, lengths[lo])
        # a padded run is mostly real rows, unless it is too small to be worth its own step
        assert real >= _FILL * (hi - lo) * max(lengths[lo:hi]) or real < 2 * _MIN_ROWS
    assert _chunks([]) == [] and _chunks([3]) == [(0, 1)]


def test_the_generic_vmap_formulation_equals_the_loop(one_torch_thread, monkeypatch):
    """A model with only ``forward``: the base class maps it over the clients (torch.func)."""
    from ffm_private.models import FFMRecommender, Recommender

    monkeypatch.setattr(FFMRecommender, "frozen_rows", Recommender.frozen_rows)
    monkeypatch.setattr(FFMRecommender, "stacked_scores", Recommender.stacked_scores)
    model, message, clients, store = _setup("ffm-pool", personal_rank=2)
    cfg = LocalTrainingConfig(personal_epochs=2, local_epochs=1, batch_size=16, num_negatives=2)
    _assert_same(_loop(model, message, clients, store, cfg),
                 train_batched(model, message, store.__getitem__, clients, cfg, 11))


def test_fedmf_rows_a_client_never_touched_are_exactly_unchanged(one_torch_thread):
    """Each client's item table is trained on its own items only: the rest is exactly 0."""
    model, message, clients, store = _setup("fedmf")
    cfg = LocalTrainingConfig(personal_epochs=1, local_epochs=2, batch_size=8, num_negatives=3)
    loop = _loop(model, message, clients, store, cfg)
    batched = train_batched(model, message, store.__getitem__, clients, cfg, 11)
    _assert_same(loop, batched)
    n_rows, dim = model.n_items + 1, model.dim
    for cid in loop:
        rows = np.abs(batched[cid].update.delta[:n_rows * dim].reshape(n_rows, dim)).max(1)
        untouched = np.abs(loop[cid].update.delta[:n_rows * dim].reshape(n_rows, dim)).max(1) == 0
        assert untouched.any() and (rows[untouched] == 0).all()


def test_the_defense_projection_applies_in_the_batched_engine(one_torch_thread):
    model, message, clients, store = _setup("ffm-pool")
    size = SharedSpec.of(model).size
    basis, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((size, 3)))
    message = dataclasses.replace(message, defense_basis=basis)
    cfg = LocalTrainingConfig(batch_size=8, num_negatives=3)
    loop, batched = (_loop(model, message, clients, store, cfg),
                     train_batched(model, message, store.__getitem__, clients, cfg, 11))
    _assert_same(loop, batched)
    for result in batched.values():
        np.testing.assert_allclose(basis.T @ result.update.delta, 0.0, atol=1e-12)


def test_block_examples_are_the_loops_examples_exactly():
    """Negatives (each client's own stream), histories and labels, client by client."""
    from ffm_private.data import DataError
    from ffm_private.engine.batched import _block_examples, _per_client_examples

    model = build_model(config_mod.ModelConfig(kind="ffm-pool", dim=8, history_length=4), 30, 1)
    rng = np.random.default_rng(5)
    clients = [ClientData(u, rng.choice(30, size=s, replace=False),
                          rng.choice(30, size=4, replace=False) if u % 2 else None)
               for u, s in enumerate([12, 0, 1, 5, 25, 3])]
    cfg = LocalTrainingConfig(num_negatives=3)
    block, sizes = _block_examples(model, 4, clients, cfg, 9)
    loop = _per_client_examples(model, 4, clients, cfg, 9)
    assert sizes == [len(e) for e in loop]
    for name in ("history", "items", "labels"):
        expected = np.concatenate([getattr(e, name) for e in loop])
        np.testing.assert_array_equal(getattr(block, name), expected, err_msg=name)
    full = [ClientData(0, np.arange(26), np.arange(26, 30))]  # no item left to draw from
    with pytest.raises(DataError):
        _block_examples(model, 4, full, cfg, 9)
