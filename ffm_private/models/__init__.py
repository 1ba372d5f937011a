"""Recommenders and the frozen/shared/personal partition of their parameters."""

from __future__ import annotations

from ffm_private.config import ModelConfig
from ffm_private.models.base import Recommender
from ffm_private.models.fedmf import FedMFRecommender
from ffm_private.models.ffm import FFMRecommender
from ffm_private.models.partition import (
    FROZEN,
    PERSONAL,
    SHARED,
    PartitionError,
    SharedSpec,
    load_group,
    params_of,
    state_of,
)


def build_model(cfg: ModelConfig, n_items: int, num_personal: int = 1) -> Recommender:
    """The recommender a config describes, with ``num_personal`` rows of personal state."""
    if cfg.kind == "ffm":
        return FFMRecommender(n_items, num_personal, dim=cfg.dim,
                              history_length=cfg.history_length, global_rank=cfg.global_rank,
                              personal_rank=cfg.personal_rank,
                              personalization=cfg.personalization)
    if cfg.kind == "fedmf":
        return FedMFRecommender(n_items, num_personal, dim=cfg.dim)
    raise ValueError(f"unknown model kind {cfg.kind!r}")


__all__ = [
    "FROZEN", "PERSONAL", "SHARED", "FFMRecommender", "FedMFRecommender", "PartitionError",
    "Recommender", "SharedSpec", "build_model", "load_group", "params_of", "state_of",
]
