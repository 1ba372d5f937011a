"""Shared fixtures: small synthetic datasets generated once per session; one torch thread."""

from __future__ import annotations

import pytest
import torch
from hypothesis import settings

from ffm_private.config import Config
from ffm_private.data import SyntheticConfig, generate_synthetic


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    """~80 users, 150 items: seconds per run, for mechanics (resume, CLI, partition)."""
    path = tmp_path_factory.mktemp("tiny-data")
    generate_synthetic(path, SyntheticConfig(n_users=80, n_items=150, n_interactions=4000,
                                             min_per_user=20, seed=0))
    return path


@pytest.fixture
def tiny_config(tiny_data_dir, tmp_path) -> Config:
    """A fast run on the tiny dataset, writing into a fresh directory."""
    return Config(run_dir=str(tmp_path / "run")).replace(**{
        # 150 items: users near the 51-interaction cap keep no item outside their training set
        # and evaluation candidates, so the isolated protocol cannot serve this dataset
        "data.path": str(tiny_data_dir), "data.protocol": "pfedrec",
        "model.dim": 16, "model.history_length": 8,
        "pretrain.epochs": 3, "federated.rounds": 3, "evaluation.full_ranking": True,
    })


# Property tests draw the same examples on every run: a correct build never flakes in CI.
settings.register_profile("deterministic", derandomize=True, deadline=None)
settings.load_profile("deterministic")


@pytest.fixture
def one_torch_thread():
    """Tiny tensors: one thread avoids contention on a shared 2-core machine (restored)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
