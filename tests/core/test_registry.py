"""Registries for models, datasets and attacks: a decorator adds a kind, the config reads them."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

from attacks.audit import AuditOptions
from attacks.registry import attack, attack_names, register_attack
from ffm_private.config import Config, ConfigError
from ffm_private.data import DATASET_KINDS, interactions_from_arrays, load_dataset
from ffm_private.models import MODEL_KINDS, build_model, model_class
from ffm_private.models.fedmf import FedMFRecommender
from ffm_private.registry import DATASETS, MODELS, RegistryError, register_dataset, register_model


def test_the_builtin_kinds_register_themselves():
    assert set(MODEL_KINDS) == {"ffm-pool", "ffm", "ffm-transformer", "fedmf", "pfedrec"}
    assert set(DATASET_KINDS) == {"synthetic", "movielens-100k", "movielens-1m", "csv"}
    assert attack_names() == ("a1", "a2", "a3", "a4", "a5", "a6")
    assert model_class("ffm") is model_class("ffm-pool")  # the old name stays an alias


@pytest.mark.parametrize("section,registry", [("model", MODELS), ("data", DATASETS)])
def test_an_unknown_kind_is_a_config_error_listing_the_registered_ones(section, registry):
    with pytest.raises(ConfigError, match=rf"{section}.kind = 'netflix' is not one of") as err:
        Config().replace(**{f"{section}.kind": "netflix", "data.path": "x"})
    for name in registry.names():
        assert repr(name) in str(err.value)


def test_a_kind_cannot_be_registered_twice():
    with pytest.raises(RegistryError, match="'fedmf' is already registered"):
        register_model("fedmf")(type("Other", (FedMFRecommender,), {}))
    with pytest.raises(RegistryError, match="registered: "):
        MODELS.get("nope")


@pytest.fixture
def renamed_model():
    """A model in one decorator: FedMF whose item table has a name no heuristic recognises."""

    class _Shared(nn.Module):
        def __init__(self, n_items: int, dim: int) -> None:
            super().__init__()
            self.table = nn.Embedding(n_items + 1, dim)
            self.offset = nn.Embedding(n_items + 1, 1)

    @register_model("renamed-mf")
    class RenamedMF(FedMFRecommender):
        item_embedding = "shared.table.weight"
        item_rows = ("shared.table.weight", "shared.offset.weight")

        def __init__(self, n_items: int, num_personal: int = 1, *, dim: int = 8) -> None:
            super().__init__(n_items, num_personal, dim=dim)
            self.shared = _Shared(n_items, dim)
            self.shared.item_emb, self.shared.item_bias = self.shared.table, self.shared.offset

    yield RenamedMF
    MODELS.unregister("renamed-mf")


def test_a_registered_model_is_accepted_by_the_config_and_built(renamed_model):
    cfg = Config().replace(**{"model.kind": "renamed-mf", "model.dim": 8})
    model = build_model(cfg.model, n_items=20)
    assert isinstance(model, renamed_model)


def test_attacks_find_item_rows_the_model_declares_not_by_their_names(renamed_model):
    """Item inference reads the rows the model declares; a name without "item" is found."""
    from attacks.context import AuditContext
    from attacks.features import item_tables
    from ffm_private.models import SharedSpec
    from ffm_private.observation import ObservationLog

    cfg = Config().replace(**{"model.kind": "renamed-mf", "model.dim": 8})
    model = build_model(cfg.model, n_items=20)
    spec = SharedSpec.of(model)
    log = ObservationLog({"spec": {"names": list(spec.names),
                                   "shapes": [list(s) for s in spec.shapes]}}, rounds={})
    split = type("Split", (), {"n_items": 20})()
    ctx = AuditContext(cfg=cfg, split=split, truth=None, log=log, backbone={},
                       public=np.zeros(0, dtype=int))
    tables = item_tables(ctx)
    assert set(tables) == {"shared.table.weight", "shared.offset.weight"}
    table = np.arange(21 * 8, dtype=np.float32).reshape(21, 8)
    state = {"shared.table.weight": table, "shared.offset.weight": np.zeros((21, 1))}
    released = spec.flatten(state)
    ctx = AuditContext(cfg=cfg, split=split, truth=None, log=ObservationLog(
        log.manifest, {}, released=released), backbone={}, public=np.zeros(0, dtype=int))
    np.testing.assert_array_equal(ctx.item_embeddings(), table[:20])  # what the attacker reads


def test_a_registered_dataset_is_loaded_by_its_kind(tmp_path):
    @register_dataset("two-users")
    def load_two_users(data, path):
        return interactions_from_arrays(np.repeat([0, 1], 8), np.tile(np.arange(8), 2),
                                        np.arange(16))

    try:
        cfg = Config().replace(**{"data.kind": "two-users", "data.path": str(tmp_path)})
        loaded = load_dataset(cfg.data.kind, cfg.data.path, cfg.data)
        assert loaded.n_users == 2 and loaded.n_items == 8
    finally:
        DATASETS.unregister("two-users")
    with pytest.raises(ConfigError, match="two-users"):
        Config().replace(**{"data.kind": "two-users", "data.path": str(tmp_path)})


def test_a_registered_attack_is_offered_by_the_audit():
    @register_attack("a9", title="always nothing")
    def audit_nothing(ctx, view, options):
        return []

    from attacks.registry import ATTACKS

    try:
        assert AuditOptions(attacks=("a1", "a9")).attacks == ("a1", "a9")
        assert attack("A9").run is audit_nothing and attack("a9").per_view
    finally:
        ATTACKS.unregister("a9")
    with pytest.raises(ValueError, match="unknown attack"):
        AuditOptions(attacks=("a9",))
