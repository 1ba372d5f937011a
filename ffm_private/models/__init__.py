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
from ffm_private.registry import MODELS, register_model

#: Model kinds; "ffm" is kept as an alias of "ffm-pool" so that existing configs run unchanged.
MODEL_KINDS = MODELS.names()


def model_class(kind: str) -> type[Recommender]:
    """The registered class of ``model.kind`` (aliases resolved)."""
    return MODELS.get(kind)


def build_model(cfg: ModelConfig, n_items: int, num_personal: int = 1) -> Recommender:
    """The recommender a config describes, with ``num_personal`` rows of personal state."""
    return model_class(cfg.kind).from_config(cfg, n_items, num_personal)


__all__ = [
    "FROZEN", "MODEL_KINDS", "PERSONAL", "SHARED", "FFMRecommender", "FedMFRecommender",
    "PFedRecRecommender", "PartitionError", "Recommender", "SharedSpec", "TransformerFFM",
    "build_model", "load_group", "model_class", "params_of", "register_model", "state_of",
]
