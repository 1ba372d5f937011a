"""What a client sends contains only shared parameters: checked at the bytes on the wire."""

import numpy as np
import pytest
import torch
from torch import nn

from ffm_private.client import ClientData, LocalTrainingConfig, train_client
from ffm_private.config import ModelConfig
from ffm_private.models import (
    PERSONAL,
    SHARED,
    PartitionError,
    SharedSpec,
    build_model,
    params_of,
    state_of,
)
from ffm_private.models.partition import check_partition
from ffm_private.server import Server
from protocols import Channel, create


class RecordingChannel(Channel):
    """Keeps every byte a client uploads."""

    def __init__(self):
        super().__init__()
        self.payloads = []

    def _alter(self, stage, client_id, payload):
        self.payloads.append(payload)
        return payload


@pytest.mark.parametrize("kind", ["ffm", "fedmf"])
def test_groups_are_declared_once_and_complete(kind):
    model = build_model(ModelConfig(kind=kind, dim=8), n_items=30, num_personal=2)
    names = [n for n, _ in model.named_parameters()]
    assert names and all(n.split(".")[0] in ("backbone", "shared", "personal") for n in names)
    assert params_of(model, SHARED) and params_of(model, PERSONAL)


def test_a_stray_parameter_is_rejected():
    model = build_model(ModelConfig(dim=8), n_items=30)
    model.extra = nn.Parameter(torch.zeros(3))
    with pytest.raises(PartitionError, match="extra"):
        check_partition(model)


def test_flatten_refuses_personal_and_frozen_tensors():
    model = build_model(ModelConfig(dim=8), n_items=30)
    spec = SharedSpec.of(model)
    shared = state_of(model, SHARED)
    assert spec.flatten(shared).shape == (spec.size,)
    leaked = {**shared, "personal.user_emb": np.zeros((1, 8))}
    with pytest.raises(PartitionError, match="non-shared tensor 'personal.user_emb'"):
        spec.flatten(leaked)
    with pytest.raises(PartitionError, match="non-shared"):
        spec.flatten({**shared, "backbone.item_emb": np.zeros((31, 8))})


@pytest.mark.parametrize("kind", ["ffm", "fedmf"])
def test_no_personal_tensor_ever_appears_in_a_message(kind):
    rng = np.random.default_rng(0)
    model = build_model(ModelConfig(kind=kind, dim=8, history_length=4), n_items=40)
    for p in model.parameters():
        p.requires_grad_(False)
    spec = SharedSpec.of(model)
    personal_states = model.init_personal_states(3, seed=1)
    server = Server(spec, state_of(model, SHARED), create("plaintext"))
    message = server.broadcast(1)
    updates, personals = {}, {}
    for cid in range(3):
        data = ClientData(cid, rng.choice(40, size=12, replace=False))
        personal = {k: v[cid] for k, v in personal_states.items()}
        res = train_client(model, message, personal, data,
                           LocalTrainingConfig(personal_epochs=2, local_epochs=1), seed=0)
        updates[cid], personals[cid] = res.update, res.personal
        # personal training really changed the personal state (else the check is vacuous)
        assert any(not np.allclose(res.personal[k], personal[k]) for k in personal)
        assert res.update.delta.shape == (spec.size,)
    channel = RecordingChannel()
    server.aggregate(1, updates, channel=channel)
    assert len(channel.payloads) == 3
    for payload in channel.payloads:
        # header + exactly the shared vector, nothing else
        assert len(payload) - spec.size * 8 < 64
        for state in personals.values():
            for name, value in state.items():
                flat = np.asarray(value, dtype=np.float64).ravel()
                flat = flat[flat != 0]
                for window in (flat[:3], flat[-3:]):
                    if len(window) == 3:
                        assert window.astype("<f8").tobytes() not in payload, name
                        assert window.astype("<f4").tobytes() not in payload, name
