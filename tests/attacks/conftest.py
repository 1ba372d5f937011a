"""Shared fixtures: one small unprotected FedMF run (item embeddings shared) per session."""

from __future__ import annotations

import pytest
import torch

from ffm_private.config import Config
from ffm_private.data import SyntheticConfig, generate_synthetic


@pytest.fixture(scope="session")
def audit_data_dir(tmp_path_factory):
    """200 users, 300 items, planted traits and attributes."""
    path = tmp_path_factory.mktemp("audit-data")
    generate_synthetic(path, SyntheticConfig(n_users=200, n_items=300, n_interactions=12_000,
                                             seed=3))
    return path


def fedmf_config(data_dir, run_dir, **overrides) -> Config:
    return Config(run_dir=str(run_dir)).replace(**{
        # the attacks are calibrated on PFedRec's (leaky) negative sampling, the setting of
        # the published federated recommenders they are meant to audit
        "data.path": str(data_dir), "data.protocol": "pfedrec", "data.public_fraction": 0.3,
        "model.kind": "fedmf",
        "model.dim": 32, "pretrain.epochs": 0, "federated.rounds": 2,
        "evaluation.full_ranking": False, "observation.rounds": [1, 2],
        "observation.max_clients": 1000, **overrides})


@pytest.fixture(scope="session")
def fedmf_run(audit_data_dir, tmp_path_factory):
    """An unprotected FedMF baseline (plaintext: the server sees every update)."""
    from ffm_private.simulation import run_training

    run_dir = tmp_path_factory.mktemp("fedmf") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_training(fedmf_config(audit_data_dir, run_dir), progress=False)
    finally:
        torch.set_num_threads(threads)
    return run_dir


@pytest.fixture(scope="session")
def fedmf_context(fedmf_run):
    from attacks.context import AuditContext

    return AuditContext.from_run(fedmf_run, seed=0)


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """The attacks run many tiny kernels; extra threads only spin on a shared 2-core box."""
