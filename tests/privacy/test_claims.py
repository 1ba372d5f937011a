"""Adversaries against the DP claims: neighbouring datasets, the party running the server, replays.

Each test states what the adversary tries and asserts what it recovers.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from ffm_private.privacy.client_secrets import SERVER, SecretStore
from ffm_private.privacy.run import RunPrivacy
from ffm_private.server import Server
from ffm_private.simulation import Simulation, run_training
from protocols import registry

CENTRAL = {"mode": "user", "target_epsilon": 2.0, "clipping_norm": 1.0,
           "expected_clients_per_round": 50.0}
DISTRIBUTED = {"mode": "user", "target_epsilon": 2.0, "clipping_norm": 1.0,
               "noise_placement": "distributed", "min_survivors": 5}
# the float Gaussian share (an explicit choice; secagg's default is the discrete Gaussian)
DISTRIBUTED_FLOAT = {**DISTRIBUTED, "distributed_noise": "gaussian"}


def _privacy(tmp_path, raw, *, users=500, protocol="plaintext", dim=64, rounds=10,
             public=()) -> RunPrivacy:
    privacy = RunPrivacy.prepare(raw, tmp_path, user_ids=range(users), rounds=rounds,
                                 client_fraction=0.1, protocol=protocol, public=public)
    options = {"clip": 1000.0} if protocol == "secagg" else {}
    return privacy.bind_protocol(registry.create(protocol, options), dim).start(
        SecretStore(tmp_path, test_seed=raw.get("noise_seed")))


# -- 1. the released noise's scale does not depend on how many users exist -------------------
def test_central_release_scale_is_the_same_for_neighbouring_datasets(tmp_path):
    """Adversary: tell D (n users) from D' (n + 1) by the norm of the released step.

    All updates are zero, so the release is the noise alone. Under a correct mechanism the
    release is the same function of the server's secret whatever n is: the adversary's
    likelihood ratio is exactly 1 (identical outputs for identical randomness).
    """
    raw = {**CENTRAL, "noise_seed": 1}
    d = _privacy(tmp_path / "d", raw, users=500)
    d_prime = _privacy(tmp_path / "dp", raw, users=501)
    steps = [(d.average(r, np.zeros(64), 0, pool_size=500, dim=64),
              d_prime.average(r, np.zeros(64), 0, pool_size=501, dim=64)) for r in range(1, 6)]
    for a, b in steps:
        np.testing.assert_array_equal(a, b)
    # and the scale is sigma * C / the public constant, not / (q * n)
    norms = np.concatenate([a for a, _ in steps])
    expected = d.plan.noise_multiplier * 1.0 / 50.0
    assert np.std(norms) == pytest.approx(expected, rel=5 / math.sqrt(2 * norms.size))


def test_central_dp_needs_a_public_divisor(tiny_config):
    from ffm_private.config import ConfigError

    raw = {k: v for k, v in CENTRAL.items() if k != "expected_clients_per_round"}
    with pytest.raises(ConfigError, match="expected_clients_per_round"):
        tiny_config.replace(**{"privacy": raw})


# -- 2. the party running the server cannot regenerate a client's noise ----------------------
def test_server_side_secrets_cannot_regenerate_a_clients_noise_share(tmp_path):
    """Adversary: the operator of the server, holding every server-side file (the server's
    secret, plan, ledger), tries to regenerate client 7's distributed noise share and subtract
    it from what client 7 sent, to recover the clipped update."""
    privacy = _privacy(tmp_path, DISTRIBUTED_FLOAT, protocol="secagg", dim=20_000)
    update = np.zeros(20_000)
    update[:4] = 0.5  # the secret the adversary wants: a sparse update of norm 1
    sent = privacy.release(1, 7, update)
    run = Path(tmp_path)
    assert (run / "clients" / "7" / "secret.key").exists()
    assert not (run / "privacy" / "noise.key").exists()  # no shared root of all noise
    # The adversary knows the mechanism and the server's secret, and derives client 7's
    # stream the way the old shared root allowed.
    server_side = SecretStore(run)
    share = privacy.mechanism.client_noise(np.zeros(20_000),
                                           server_side.noise(SERVER).generator(1, 7, purpose=0))
    recovered = sent - share
    assert (run / "server" / "secret.key").exists()
    # Nothing recovered: the residual is the full noise (std sigma C / sqrt(m) * sqrt 2).
    std = privacy.plan.noise_multiplier / math.sqrt(5)
    assert np.std(recovered - update) == pytest.approx(std * math.sqrt(2), rel=0.05)
    assert np.linalg.norm(recovered[:4] - update[:4]) > 0.1
    # The client itself (its own secret) regenerates its release exactly: a replay is the same.
    own = privacy.mechanism.client_transform(update, SecretStore(run).noise(7).generator(1, 7, 0))
    np.testing.assert_array_equal(own, sent)


def test_secrets_are_not_recreated_on_resume(tiny_config):
    from ffm_private.privacy.client_secrets import MissingSecretError

    cfg = tiny_config.replace(**{"federated.rounds": 1, "federated.client_fraction": 0.5,
                                 "privacy": CENTRAL})
    run_training(cfg, progress=False)
    (Path(cfg.run_dir) / "server" / "secret.key").unlink()
    with pytest.raises(MissingSecretError, match="cannot be recreated"):
        Simulation(cfg, resume=True, progress=False)


# -- 4. a round with nobody sampled still releases noise under central DP --------------------
def test_empty_central_round_releases_a_noise_only_step(tiny_config, monkeypatch):
    """Adversary: watch the released models; an unchanged model reveals an empty sample."""
    cfg = tiny_config.replace(**{"federated.rounds": 1, "federated.client_fraction": 0.5,
                                 "privacy": {**CENTRAL, "noise_seed": 2}})
    sim = Simulation(cfg, progress=False).start()
    monkeypatch.setattr("ffm_private.privacy.run.poisson_sample", lambda pool, q, rng: [])
    state = sim.initial_state()
    before = sim.spec.flatten(state.shared)
    row = sim.run_round(state, 1).row
    step = sim.spec.flatten(state.shared) - before
    assert row["sampled"] == 0 and row["noise_only"]
    expected = sim.privacy.plan.noise_multiplier * 1.0 / 50.0 * cfg.federated.server_lr
    assert np.std(step) == pytest.approx(expected, rel=5 / math.sqrt(2 * step.size))


# -- 6. public pretraining users are outside the protected set -------------------------------
def test_public_users_are_never_charged_and_the_statement_says_so(tmp_path):
    privacy = _privacy(tmp_path, {**CENTRAL, "noise_seed": 0}, users=100, public=range(10))
    sel = privacy.select(1, list(range(100)), lambda p: p)
    charged = {u for u, *_ in privacy.ledger._db.execute("SELECT user FROM spends")}
    assert charged == {str(u) for u in range(10, 100)}
    assert set(range(10)) <= set(range(100)) - set(sel.declined)  # public users stay eligible
    assert "10 users of the public pretraining split are outside the claim" in privacy.statement()


# -- 8. a replayed round selects exactly as the original did ---------------------------------
def test_replayed_participation_round_keeps_its_pool(tmp_path):
    """Crash after three clients were charged in round 1; the replay must see the same pool
    (the old code recomputed eligibility from a ledger already holding round 1's charges)."""
    raw = {**DISTRIBUTED, "noise_seed": 0, "max_participations": 1}
    privacy = _privacy(tmp_path, raw, users=40, protocol="secagg")
    first = privacy.select(1, list(range(40)), lambda p: p)
    for cid in (3, 4, 5):
        privacy.release(1, cid, np.zeros(64))
    replay = privacy.select(1, list(range(40)), lambda p: p)
    assert replay == first and replay.pool_size == 40
    # and round 2 sees the round-1 charges: those users used their one participation
    assert {3, 4, 5} <= set(privacy.select(2, list(range(40)), lambda p: p).declined)


# -- 10, 12: what leaves a client, and what a declining client keeps --------------------------
def test_user_level_updates_carry_no_example_counts_or_losses(tiny_config, monkeypatch):
    seen = []
    original = Server.aggregate

    def spy(self, round_id, updates, **kwargs):
        seen.extend(updates.values())
        return original(self, round_id, updates, **kwargs)

    monkeypatch.setattr(Server, "aggregate", spy)
    cfg = tiny_config.replace(**{"federated.rounds": 1, "federated.client_fraction": 0.5,
                                 "privacy": {**CENTRAL, "noise_seed": 0}})
    run_training(cfg, progress=False)
    assert seen and all(u.num_examples == 0 and u.metrics == {} for u in seen)


def test_a_client_that_declines_keeps_its_old_personal_state(tiny_config, monkeypatch):
    from ffm_private.privacy.ledger import PrivacyLedger, SpendDecision

    cfg = tiny_config.replace(**{"federated.rounds": 1, "federated.client_fraction": 0.5,
                                 "privacy": {"mode": "example", "target_epsilon": 8.0,
                                             "clipping_norm": 0.1, "noise_seed": 5}})
    sim = Simulation(cfg, progress=False).start()
    state = sim.initial_state()
    before = {k: v.copy() for k, v in state.personal.arrays.items()}

    def decline(self, user, round_id, events, digest=None):  # the user lowered their cap
        return SpendDecision(str(user), round_id, False, 1.0, 0.5)

    monkeypatch.setattr(PrivacyLedger, "charge", decline)
    row = sim.run_round(state, 1).row
    # every protected client declined; public pretraining users are never charged
    changed = {c for k, v in state.personal.arrays.items()
               for c in np.flatnonzero((v != before[k]).reshape(len(v), -1).any(axis=1))}
    assert row["declined"] > 0 and row["contributors"] == row["sampled"] - row["declined"]
    assert changed and all(not sim.privacy.protected(int(c)) for c in changed)


# -- 13: the summary says what is outside the claim -------------------------------------------
def test_statement_puts_evaluation_metrics_outside_the_claim(tmp_path):
    text = _privacy(tmp_path, {**CENTRAL, "noise_seed": 0}).statement()
    assert "Evaluation metrics computed on held-out items" in text
    assert "outside the claim" in text
    assert "every party's secret" in text  # the in-process simulation holds all secrets


# -- 11: encoding cannot lift a clipped norm above C; the clip range carries the noise --------
def test_distributed_clip_leaves_room_for_the_protocols_rounding(tmp_path):
    """Adversary's hope: stochastic rounding pushes a client at norm C slightly above C (more
    than the sensitivity the noise is sized for). The clip is lowered by the rounding bound."""
    from protocols.quantize import FixedPointCodec

    dim, users = 4096, 500
    privacy = _privacy(tmp_path, {**DISTRIBUTED_FLOAT, "noise_seed": 0}, users=users,
                       protocol="secagg", dim=dim)
    protocol = registry.create("secagg", {"clip": 1000.0})
    margin = protocol.rounding_bound(dim, users)
    assert privacy.mechanism.rounding_margin == margin > 0
    update = np.random.default_rng(0).normal(size=dim)
    clipped = privacy.mechanism.clip(update)
    assert np.linalg.norm(clipped) <= 1.0 - margin + 1e-12
    codec = FixedPointCodec(clip=1000.0, max_clients=users)
    rng = np.random.default_rng(1)
    for _ in range(20):  # the worst a rounding can do stays within the margin
        moved = codec.decode_sum(codec.encode(clipped, rng)) - clipped
        assert np.linalg.norm(moved) <= margin
        assert np.linalg.norm(clipped + moved) <= 1.0


def test_protocol_clip_range_too_narrow_for_distributed_noise_is_refused(tmp_path):
    from ffm_private.config import ConfigError

    privacy = RunPrivacy.prepare({**DISTRIBUTED_FLOAT, "noise_seed": 0}, tmp_path,
                                 user_ids=range(500), rounds=10, client_fraction=0.1,
                                 protocol="secagg")
    with pytest.raises(ConfigError, match="protocol.options.clip"):
        privacy.bind_protocol(registry.create("secagg", {"clip": 1.0}), 64)
