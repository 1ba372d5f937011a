"""The client engines: the thread setting around client training, set then restored."""

from __future__ import annotations

import pytest
import torch

from ffm_private import config as config_mod
from ffm_private.engine.threads import client_threads


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
