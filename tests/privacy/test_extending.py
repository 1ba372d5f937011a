"""The worked examples of docs/extending.md run as written."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from ffm_private.config import ConfigError
from ffm_private.privacy.config import PrivacyConfig
from ffm_private.privacy.errors import UnsupportedClaimError
from ffm_private.registry import MECHANISMS, register_mechanism

DOC = Path(__file__).resolve().parents[2] / "docs" / "extending.md"


def _mechanism_example() -> dict:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert blocks, "docs/extending.md has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], str(DOC), "exec"), namespace)  # noqa: S102 - our own doc
    return namespace


@pytest.fixture
def gridded():
    yield _mechanism_example()["GriddedCentralGaussian"]
    MECHANISMS.unregister("user-central-gridded")


def test_mechanism_example_runs(gridded):
    assert gridded.name == "user-central-gridded"
    assert MECHANISMS.get("user-central-gridded") is gridded


def test_a_registered_mechanism_is_the_one_the_run_and_the_audit_use(gridded, tiny_config):
    from attacks.canaries import production_mechanism
    from ffm_private.privacy.config import resolved_privacy
    from ffm_private.simulation import Simulation

    cfg = tiny_config.replace(**{"federated.rounds": 1, "privacy": {
        "mode": "user", "noise_multiplier": 1.0, "delta": 1e-3, "clipping_norm": 0.5,
        "expected_clients_per_round": 20.0, "mechanism_kind": "user-central-gridded"}})
    sim = Simulation(cfg, progress=False)
    try:
        assert type(sim.privacy.mechanism) is gridded
        plan = sim.privacy.plan
    finally:
        sim.close()
    assert type(production_mechanism(cfg, plan, dim=8, max_clients=80)) is gridded
    summary = Simulation(cfg, progress=False).run()
    assert "N(0, (1 x 0.5)^2)" in summary["privacy_details"]["mechanism"]
    # the released step (server_lr 1) lies on the mechanism's public grid
    with np.load(Path(cfg.run_dir) / "observations" / "round-0001.npz") as seen:
        step = (seen["after"] - seen["broadcast"]) / 1e-6
    # float32 storage: within 0.1 grid step (an ungridded step is off by up to 0.5)
    assert np.abs(step - np.round(step)).max() < 0.1 and np.abs(step).max() > 1
    assert resolved_privacy(cfg).mechanism_kind == "user-central-gridded"


def test_a_registered_mechanism_must_serve_the_plan(gridded):
    with pytest.raises(ConfigError, match="serves"):
        PrivacyConfig.from_dict({"mode": "user", "noise_placement": "distributed",
                                 "noise_multiplier": 1.0, "min_survivors": 2,
                                 "mechanism_kind": "user-central-gridded"})
    with pytest.raises(ConfigError, match="unknown DP mechanism kind 'nope'"):
        PrivacyConfig.from_dict({"mode": "user", "noise_multiplier": 1.0,
                                 "expected_clients_per_round": 5.0, "mechanism_kind": "nope"})


def test_a_registered_mechanism_that_charges_other_events_is_refused(gridded):
    from ffm_private.privacy.accounting import GaussianEvent
    from ffm_private.privacy.mechanism import mechanism_for

    cfg = PrivacyConfig.from_dict({"mode": "user", "noise_multiplier": 1.0,
                                   "expected_clients_per_round": 5.0,
                                   "mechanism_kind": "user-central-gridded"})
    plan = cfg.plan(rounds=3, client_rate=0.5)
    ok = mechanism_for(plan, clipping_norm=1.0, expected_clients=5.0,
                       kind="user-central-gridded")
    assert type(ok) is gridded

    class Cheap(gridded):  # claims to be the plan's mechanism, accounts for half the noise
        def events(self):
            return (GaussianEvent(self.noise_multiplier * 2, self.client_rate, 1),)

    MECHANISMS.unregister("user-central-gridded")
    register_mechanism("user-central-gridded")(Cheap)
    with pytest.raises(UnsupportedClaimError, match="the plan accounts for"):
        mechanism_for(plan, clipping_norm=1.0, expected_clients=5.0,
                      kind="user-central-gridded")
