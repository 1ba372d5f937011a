"""Training negatives and the evaluation protocol.

The adversary here is the evaluation itself: a client that trains on its own evaluation
negatives as negatives learns to rank them low, and sampled metrics overstate quality. The
tests count how many of a user's evaluation candidates its training ever sees as negatives.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from ffm_private import client as client_mod
from ffm_private import pretrain as pretrain_mod
from ffm_private import simulation as simulation_mod
from ffm_private.client import ClientData, LocalTrainingConfig, train_client
from ffm_private.config import Config, ConfigError, ModelConfig
from ffm_private.data import (
    SyntheticConfig,
    generate_synthetic,
    leave_one_out,
    load_dataset,
    train_negative_rng,
)
from ffm_private.data.split import sample_train_negatives
from ffm_private.messages import GlobalModelMessage
from ffm_private.models import SHARED, build_model, state_of
from ffm_private.training_data import build_examples

# sha256 of the negatives (and histories) the sampling produced before the isolated protocol
# existed, on the tiny dataset for rounds 1, 2, 7 (history length 8, 4 negatives, seed 0),
# and of the pretraining stream (seed 3, epoch 2): the pfedrec protocol must reproduce them.
GOLDEN_ROUNDS = "554eb0b9a4673993f2b7782d5f019fc37e71be5773b8ae25404d4d8129058858"
GOLDEN_PRETRAIN = "4904c13d0820581328891f4631d86da00fd2739fdbd247a9ae20abb0c3b90c20"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """60 users, 300 items: every user keeps items outside its training set and candidates."""
    path = tmp_path_factory.mktemp("negatives-data")
    generate_synthetic(path, SyntheticConfig(n_users=60, n_items=300, n_interactions=3000,
                                             min_per_user=15, seed=1))
    return path


@pytest.fixture(scope="module")
def splits(data_dir):
    data = load_dataset("synthetic", data_dir)
    return {p: leave_one_out(data, seed=0, protocol=p)
            for p in ("isolated", "pfedrec", "pfedrec-official")}


def test_pfedrec_protocol_reproduces_the_previous_sampling_bit_for_bit(tiny_data_dir):
    split = leave_one_out(load_dataset("synthetic", tiny_data_dir), seed=0, protocol="pfedrec")
    h = hashlib.sha256()
    for r in (1, 2, 7):
        for u in range(split.n_users):
            ex = build_examples(split.train[u], split.n_items, 8, 4, train_negative_rng(0, r, u),
                                exclude=split.negative_exclusions(u))
            h.update(ex.items.tobytes())
            h.update(ex.history.tobytes())
    assert h.hexdigest() == GOLDEN_ROUNDS
    h = hashlib.sha256()
    for u in range(split.n_users):
        ex = build_examples(split.train[u], split.n_items, 8, 4, train_negative_rng(3, -3, u),
                            exclude=split.negative_exclusions(u))
        h.update(ex.items.tobytes())
    assert h.hexdigest() == GOLDEN_PRETRAIN


def test_the_split_does_not_depend_on_the_protocol(splits):
    a, b = splits["isolated"], splits["pfedrec"]
    assert np.array_equal(a.valid, b.valid) and np.array_equal(a.test, b.test)
    assert np.array_equal(a.eval_negatives, b.eval_negatives)
    assert all(np.array_equal(x, y) for x, y in zip(a.train, b.train, strict=True))


def _client_negatives(split, rounds, monkeypatch) -> dict[tuple[int, int], np.ndarray]:
    """Run the production client for every user and round; record the negatives it trained on."""
    seen: dict[tuple[int, int], np.ndarray] = {}
    current: list[tuple[int, int]] = []
    real = client_mod.build_examples

    def spy(*args, **kwargs):
        ex = real(*args, **kwargs)
        seen[current[-1]] = ex.items[:, 1:].copy()
        return ex

    monkeypatch.setattr(client_mod, "build_examples", spy)
    model = build_model(ModelConfig(dim=8, history_length=4), split.n_items, 1)
    shared = state_of(model, SHARED)
    cfg = LocalTrainingConfig(personal_epochs=0, local_epochs=0)
    personal = {k: v[0] for k, v in model.init_personal_states(1, 0).items()}
    for r in rounds:
        for u in range(split.n_users):
            current.append((r, u))
            train_client(model, GlobalModelMessage(r, shared), personal,
                         ClientData(u, split.train[u], split.negative_exclusions(u)), cfg, 0)
    return seen


def _leaks(split, negatives) -> int:
    return sum(int(np.isin(negs, split.evaluation_candidates(u)).sum())
               for (_, u), negs in negatives.items())


def test_isolated_protocol_no_training_negative_is_an_evaluation_candidate(splits, monkeypatch):
    split = splits["isolated"]
    negatives = _client_negatives(split, range(1, 6), monkeypatch)
    assert len(negatives) == 5 * split.n_users
    assert _leaks(split, negatives) == 0
    for (_, u), negs in negatives.items():  # and still never a training item
        assert not np.isin(negs, split.train[u]).any()


def test_pfedrec_protocol_leaks_evaluation_negatives_into_training(splits, monkeypatch):
    """The same count finds the leak when it is there: the test above can fail."""
    split = splits["pfedrec"]
    negatives = _client_negatives(split, range(1, 3), monkeypatch)
    eval_negs_hit = sum(int(np.isin(negs, split.eval_negatives[u]).sum())
                        for (_, u), negs in negatives.items())
    # uniform draws over the ~250 items outside a training set hit the 99 negatives ~40% of the time
    assert eval_negs_hit > 0.3 * sum(n.size for n in negatives.values())


def test_pfedrec_official_protocol_spares_the_held_out_items_only(splits, monkeypatch):
    """As the official PFedRec code: evaluation negatives leak, held-out items never do."""
    split = splits["pfedrec-official"]
    negatives = _client_negatives(split, range(1, 3), monkeypatch)
    held_out = sum(int(np.isin(negs, [split.valid[u], split.test[u]]).sum())
                   for (_, u), negs in negatives.items())
    eval_negs_hit = sum(int(np.isin(negs, split.eval_negatives[u]).sum())
                        for (_, u), negs in negatives.items())
    assert held_out == 0
    assert eval_negs_hit > 0.3 * sum(n.size for n in negatives.values())
    # whereas the previous sampling pushes the held-out items down too
    leaky = _client_negatives(splits["pfedrec"], range(1, 3), monkeypatch)
    assert sum(int(np.isin(negs, [splits["pfedrec"].valid[u], splits["pfedrec"].test[u]]).sum())
               for (_, u), negs in leaky.items()) > 0


def test_isolated_protocol_refuses_data_it_cannot_serve(tiny_data_dir):
    """150 items, users at the 51-interaction cap: no item is left; a typed error names the user."""
    from ffm_private.data import DataError

    with pytest.raises(DataError, match=r"user \S+ interacted with .*data.protocol = 'isolated'"):
        leave_one_out(load_dataset("synthetic", tiny_data_dir), seed=0)


def test_simulation_and_pretraining_use_the_isolated_protocol(tiny_config, data_dir,
                                                              monkeypatch):
    """End to end: every negative the run draws (pretraining and rounds) avoids the candidates."""
    draws: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
    for mod in (client_mod, pretrain_mod):
        real = mod.build_examples

        def spy(train_items, *args, _real=real, **kwargs):
            ex = _real(train_items, *args, **kwargs)
            draws.append((np.asarray(train_items), ex.items[:, 1:], kwargs.get("exclude")))
            return ex

        monkeypatch.setattr(mod, "build_examples", spy)
    cfg = tiny_config.replace(**{"data.path": str(data_dir), "data.protocol": "isolated",
                                 "pretrain.epochs": 1, "federated.rounds": 1,
                                 "observation.enabled": False, "evaluation.full_ranking": False})
    sim = simulation_mod.Simulation(cfg, progress=False)
    sim.run()
    split = sim.split
    assert split.protocol == "isolated"
    by_train = {split.train[u].tobytes(): u for u in range(split.n_users)}
    users = set()
    for train_items, negs, _ in draws:
        u = by_train[train_items.astype(np.int64).tobytes()]
        users.add(u)
        assert not np.isin(negs, split.evaluation_candidates(u)).any(), f"user {u}"
    assert users == set(range(split.n_users))


def test_exclusions_are_checked():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="exclude"):
        sample_train_negatives(np.array([0, 1]), 5, 2, rng, exclude=np.array([7]))
    from ffm_private.data import DataError

    with pytest.raises(DataError, match="no training negative"):
        sample_train_negatives(np.array([0, 1]), 4, 2, rng, exclude=np.array([2, 3]))


def test_protocol_in_the_config():
    assert Config().data.protocol == "isolated"
    for p in ("pfedrec", "pfedrec-official"):
        assert Config().replace(**{"data.protocol": p}).data.protocol == p
    with pytest.raises(ConfigError, match="data.protocol"):
        Config().replace(**{"data.protocol": "leaky"})


def test_unknown_protocol_is_refused(data_dir):
    with pytest.raises(ValueError, match="protocol"):
        leave_one_out(load_dataset("synthetic", data_dir), protocol="leaky")
