"""Fast run configurations for the reliability tests (seconds per run)."""

from __future__ import annotations

import pytest

from ffm_private.config import Config


@pytest.fixture
def fast_config(tiny_config, one_torch_thread) -> Config:
    """Two rounds on the tiny dataset, one pretraining epoch, sampled evaluation only."""
    return tiny_config.replace(**{"pretrain.epochs": 1, "federated.rounds": 2,
                                  "evaluation.full_ranking": False, "model.dim": 8})
