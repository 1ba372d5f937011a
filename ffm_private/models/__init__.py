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
from ffm_private.models.pfedrec import PFedRecRecommender
from ffm_private.models.transformer import TransformerFFM

#: Model kinds; "ffm" is kept as an alias of "ffm-pool" so that existing configs run unchanged.
MODEL_KINDS = ("ffm-pool", "ffm", "ffm-transformer", "fedmf", "pfedrec")


def build_model(cfg: ModelConfig, n_items: int, num_personal: int = 1) -> Recommender:
    """The recommender a config describes, with ``num_personal`` rows of personal state."""
    if cfg.kind == "ffm-transformer":
        return TransformerFFM(n_items, num_personal, dim=cfg.dim,
                              history_length=cfg.history_length, layers=cfg.layers,
                              heads=cfg.heads, global_rank=cfg.global_rank,
                              personal_rank=cfg.personal_rank, ffa_lora=cfg.ffa_lora,
                              personalization=cfg.personalization)
    if cfg.kind == "pfedrec":
        return PFedRecRecommender(n_items, num_personal, dim=cfg.dim, lr_eta=cfg.lr_eta)
    if cfg.kind in ("ffm", "ffm-pool"):
        return FFMRecommender(n_items, num_personal, dim=cfg.dim,
                              history_length=cfg.history_length, global_rank=cfg.global_rank,
                              personal_rank=cfg.personal_rank,
                              personalization=cfg.personalization)
    if cfg.kind == "fedmf":
        return FedMFRecommender(n_items, num_personal, dim=cfg.dim)
    raise ValueError(f"unknown model kind {cfg.kind!r}")


__all__ = [
    "FROZEN", "MODEL_KINDS", "PERSONAL", "SHARED", "FFMRecommender", "FedMFRecommender",
    "PFedRecRecommender", "PartitionError", "Recommender", "SharedSpec", "TransformerFFM",
    "build_model", "load_group", "params_of", "state_of",
]
