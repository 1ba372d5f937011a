"""User-level DP in the federated loop: charges, caps, noise on the applied step, resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from ffm_private.config import ConfigError
from ffm_private.privacy.client_secrets import SecretStore
from ffm_private.privacy.errors import (
    InsufficientNoiseError,
    LedgerConflictError,
    UnsupportedClaimError,
)
from ffm_private.privacy.run import RunPrivacy
from ffm_private.server import Server
from ffm_private.simulation import Simulation, run_training
from protocols import registry
from tests.run_records import assert_same_run, ledger_spends, round_metrics

CENTRAL = {"mode": "user", "target_epsilon": 4.0, "clipping_norm": 0.5, "noise_seed": 3,
           "expected_clients_per_round": 40.0}


def _dp_config(tiny_config, **privacy):
    raw = {**CENTRAL, **privacy}
    if raw.get("noise_placement") == "distributed":
        del raw["expected_clients_per_round"]
    return tiny_config.replace(**{"federated.client_fraction": 0.5, "privacy": raw})


def test_central_run_charges_every_user_in_the_pool_each_round(tiny_config):
    cfg = _dp_config(tiny_config)
    summary = run_training(cfg, progress=False)
    run = Path(cfg.run_dir)
    details = summary["privacy_details"]
    plan = json.loads((run / "privacy" / "plan.json").read_text())
    # Eligibility charging: 3 rounds x every protected user, whether sampled or not; the
    # public pretraining users are outside the claim and never charged.
    spends = ledger_spends(run)
    protected = details["protected_users"]
    assert protected + details["public_users_not_protected"] == summary["dataset"]["users"]
    assert details["public_users_not_protected"] > 0
    assert len(spends) == 3 * protected
    assert {r for _, r, _, _ in spends} == {1, 2, 3}
    eps = [r["epsilon"] for r in round_metrics(run)]
    assert eps == sorted(eps) and eps[-1] == pytest.approx(plan["epsilon"])
    assert max(e for _, _, e, _ in spends) == pytest.approx(plan["epsilon"])
    assert plan["epsilon"] <= 4.0
    assert details["max_user_epsilon"] == pytest.approx(plan["epsilon"])
    # The statement states the plan's figures, and warns about the fixed test seed.
    assert f"epsilon = {plan['epsilon']:.3f}" in summary["privacy"]
    assert f"{plan['noise_multiplier']:.4f} x 0.5" in summary["privacy"]
    assert "NO privacy guarantee" in summary["privacy"]
    # Poisson sampling at q = 0.5: not a fixed-size sample.
    assert len({r["sampled"] for r in round_metrics(run)}) > 1


def test_applied_step_carries_noise_of_std_sigma_c_over_the_public_constant(tiny_config):
    """With a negligible clipping norm the global step is the central noise alone."""
    c = 1e-9
    cfg = _dp_config(tiny_config, clipping_norm=c).replace(**{"federated.rounds": 1})
    sim = Simulation(cfg, progress=False).start()
    state = sim.initial_state()
    before = sim.spec.flatten(state.shared)
    sim.run_round(state, 1)
    step = sim.spec.flatten(state.shared) - before
    expected = sim.privacy.plan.noise_multiplier * c / CENTRAL["expected_clients_per_round"]
    # n coordinates: the sample std has relative standard error 1/sqrt(2n).
    tol = 5 / math.sqrt(2 * step.size)
    assert np.std(step) == pytest.approx(expected, rel=tol)
    assert abs(np.mean(step)) < 5 * expected / math.sqrt(step.size)


def test_user_caps_file_makes_users_decline_and_is_never_exceeded(tiny_config, tmp_path):
    cfg = _dp_config(tiny_config)
    probe = Simulation(cfg.replace(run_dir=str(tmp_path / "probe")), progress=False)
    ids = [u for c, u in enumerate(probe.user_ids()) if probe.privacy.protected(c)]
    one_round = probe.privacy.plan.epsilon_after(1)
    caps = tmp_path / "caps.csv"
    caps.write_text(f"user,cap\n{ids[0]},{one_round * 1.001}\n{ids[1]},{one_round / 2}\n")
    run_training(cfg.replace(**{"privacy.per_user_caps_file": str(caps)}), progress=False)
    spends = ledger_spends(Path(cfg.run_dir))
    by_user: dict[str, list] = {}
    for user, rnd, eps, _ in spends:
        by_user.setdefault(user, []).append((rnd, eps))
    assert by_user[ids[0]] == [(1, pytest.approx(one_round))]   # one round, then declines
    assert ids[1] not in by_user                                   # never admitted
    assert [r["declined"] for r in round_metrics(Path(cfg.run_dir))] == [1, 2, 2]
    summary = json.loads((Path(cfg.run_dir) / "summary.json").read_text())
    assert "2 users declined at least one round" in summary["privacy"]


def test_unknown_user_in_caps_file_is_refused(tiny_config, tmp_path):
    caps = tmp_path / "caps.toml"
    caps.write_text('[caps]\n"no-such-user" = 1.0\n')
    with pytest.raises(ConfigError, match="not in the dataset"):
        Simulation(_dp_config(tiny_config, per_user_caps_file=str(caps)), progress=False)


def test_resume_mid_round_replays_the_same_charges_and_noise(tiny_config, tmp_path,
                                                             monkeypatch):
    cfg = _dp_config(tiny_config)
    reference = cfg.replace(run_dir=str(tmp_path / "reference"))
    run_training(reference, progress=False)

    original = Simulation.run_round

    def crash_after_charging_round_3(self, state, round_id):
        if round_id == 3:
            self.privacy.select(round_id, list(range(self.split.n_users)), lambda p: p)
            raise KeyboardInterrupt
        return original(self, state, round_id)

    monkeypatch.setattr(Simulation, "run_round", crash_after_charging_round_3)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, progress=False)
    monkeypatch.setattr(Simulation, "run_round", original)
    run_training(cfg, resume=True, progress=False)
    run, ref = Path(cfg.run_dir), Path(reference.run_dir)
    assert_same_run(run, ref)
    assert [s[:2] + s[3:] for s in ledger_spends(run)] == [s[:2] + s[3:] for s in ledger_spends(ref)]


def test_secret_noise_root_is_kept_private_and_reused(tiny_config):
    cfg = _dp_config(tiny_config, noise_seed=-1).replace(**{"federated.rounds": 1})
    summary = run_training(cfg, progress=False)
    key = Path(cfg.run_dir) / "server" / "secret.key"
    assert key.stat().st_mode & 0o777 == 0o600 and len(key.read_bytes()) == 32
    assert not (Path(cfg.run_dir) / "privacy" / "noise.key").exists()
    assert "NO privacy" not in summary["privacy"]
    first = key.read_bytes()
    Simulation(cfg, resume=True, progress=False)
    assert key.read_bytes() == first


def _privacy(tmp_path, protocol="secagg", dim=100, **raw) -> RunPrivacy:
    base = {"mode": "user", "target_epsilon": 2.0, "noise_seed": 0, **raw}
    if base.get("noise_placement", "central") == "central":
        base.setdefault("expected_clients_per_round", 50.0)
    privacy = RunPrivacy.prepare(base, tmp_path, user_ids=range(500), rounds=10,
                                 client_fraction=0.1, protocol=protocol)
    assert privacy is not None
    options = {"clip": 1000.0} if protocol == "secagg" else {}
    return privacy.bind_protocol(registry.create(protocol, options), dim).start(
        SecretStore(tmp_path, test_seed=base["noise_seed"]))


def test_release_clips_and_adds_the_distributed_share(tmp_path):
    # the float Gaussian share (secagg's default is the discrete Gaussian: test_ddg_run.py)
    privacy = _privacy(tmp_path, noise_placement="distributed", min_survivors=25,
                       clipping_norm=2.0, dim=40_000, distributed_noise="gaussian")
    clip = 2.0 - privacy.mechanism.rounding_margin  # room for the protocol's rounding
    assert 0 < privacy.mechanism.rounding_margin < 0.1  # clip 1000 over 500 clients: coarse
    big = np.full(40_000, 10.0)
    zero = np.zeros(40_000)
    out = privacy.release(1, 7, zero)
    share = privacy.plan.noise_multiplier * 2.0 / math.sqrt(25)
    assert np.std(out) == pytest.approx(share, rel=5 / math.sqrt(2 * 40_000))
    noisy_big = privacy.release(1, 8, big)
    noise = privacy.secrets.noise(8).generator(1, 8).normal(0.0, share, big.shape)
    np.testing.assert_allclose(noisy_big - noise, np.full(40_000, clip / 200.0), rtol=1e-9)
    # Each participation is charged once, before release; replaying it is free...
    assert privacy.ledger.participations("7") == 1
    np.testing.assert_array_equal(privacy.release(1, 7, zero), out)
    assert privacy.ledger.participations("7") == 1
    # ... but releasing other content for the same round would be an uncharged release.
    with pytest.raises(LedgerConflictError):
        privacy.release(1, 7, big)


def test_distributed_average_refuses_too_few_noise_shares(tmp_path):
    privacy = _privacy(tmp_path, noise_placement="distributed", min_survivors=5,
                       distributed_noise="gaussian")
    with pytest.raises(InsufficientNoiseError):
        privacy.average(1, np.zeros(4), contributors=4, pool_size=500, dim=4)
    np.testing.assert_allclose(privacy.average(1, np.full(4, 10.0), 5, 500, 4), 2.0)


def test_central_release_only_clips(tmp_path):
    privacy = _privacy(tmp_path, clipping_norm=1.5, protocol="plaintext")
    out = privacy.release(1, 3, np.full(100, 4.0))
    assert np.linalg.norm(out) == pytest.approx(1.5)
    np.testing.assert_allclose(out, np.full(100, 0.15))


def test_claims_that_cannot_hold_are_refused(tiny_config):
    with pytest.raises(UnsupportedClaimError, match="distributed noise with protocol"):
        Simulation(_dp_config(tiny_config, noise_placement="distributed", min_survivors=5),
                   progress=False)
    with pytest.raises(ConfigError, match="not well below 1/n"):
        Simulation(_dp_config(tiny_config, delta=0.01), progress=False)
    with pytest.raises(ConfigError, match="privacy.target_epsilon"):
        tiny_config.replace(**{"privacy": {"mode": "user"}})
    with pytest.raises(ConfigError, match="unknown key privacy.epsilon"):
        tiny_config.replace(**{"privacy": {"mode": "user", "epsilon": 1.0}})


DISTRIBUTED = {"noise_placement": "distributed", "min_survivors": 10}


def test_distributed_noise_through_secagg_charges_participations(tiny_config, tmp_path,
                                                                 monkeypatch):
    """Participation charging with digests, and a crash between charge and aggregation."""
    cfg = _dp_config(tiny_config, noise_seed=-1, **DISTRIBUTED).replace(**{
        "protocol.name": "secagg", "protocol.options": {"clip": 4.0}})
    original = Server.aggregate

    def crash_in_round_2(self, round_id, updates, **kwargs):
        if round_id == 2:  # every sampled client was charged; the process dies before the sum
            raise KeyboardInterrupt
        return original(self, round_id, updates, **kwargs)

    monkeypatch.setattr(Server, "aggregate", crash_in_round_2)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, progress=False)
    monkeypatch.undo()
    charged = ledger_spends(Path(cfg.run_dir))
    assert any(r == 2 for _, r, _, _ in charged)  # round 2 was charged before the crash
    summary = run_training(cfg, resume=True, progress=False)  # same digests: no conflict
    spends = ledger_spends(Path(cfg.run_dir))
    assert set(charged) <= set(spends)  # nothing recorded before the crash was lost
    # Participation basis: exactly the protected contributors of each round were charged,
    # once; public pretraining users take part uncharged.
    from ffm_private.observation import ObservationLog
    from ffm_private.pretrain import public_users

    public = set(public_users(80, cfg.data.public_fraction, cfg.federated.seed))
    ids = Simulation(cfg, resume=True, progress=False).user_ids()
    logged = list(ObservationLog.open(cfg.run_dir))
    assert [obs.round_id for obs in logged] == [r["round"] for r in round_metrics(Path(cfg.run_dir))]
    for obs in logged:
        expected = {ids[int(c)] for c in obs.contributors if int(c) not in public}
        assert {u for u, r, _, _ in spends if r == obs.round_id} == expected
    assert "User-level differential privacy against the server" in summary["privacy"]
    assert "at least 10 surviving clients" in summary["privacy"]


def test_distributed_noise_needs_the_protocol_to_abort_below_min_survivors(tiny_config):
    cfg = _dp_config(tiny_config, **DISTRIBUTED).replace(**{
        "protocol.name": "secagg", "protocol.options": {"min_clients": 3}})
    with pytest.raises(ConfigError, match="below privacy.min_survivors"):
        Simulation(cfg, progress=False)


EXAMPLE = {"mode": "example", "target_epsilon": 8.0, "clipping_norm": 0.1, "noise_seed": 5}


def test_example_level_run_charges_what_each_client_ran(tiny_config):
    cfg = tiny_config.replace(**{"federated.rounds": 2, "federated.batch_size": 16,
                                 "privacy": EXAMPLE})
    summary = run_training(cfg, progress=False)
    run = Path(cfg.run_dir)
    plan = json.loads((run / "privacy" / "plan.json").read_text())
    spends = ledger_spends(run)
    protected = summary["privacy_details"]["protected_users"]
    # every client took part in both rounds; the public pretraining users are not charged
    assert len(spends) == 2 * protected < 2 * summary["dataset"]["users"]
    events = {ev for _, _, _, ev in spends}
    sigma = plan["noise_multiplier"]
    # One charge = the shared and the personal DP-SGD phases the plan sized.
    assert events == {json.dumps([[sigma, plan["example_rate"], plan["local_steps"]],
                                  [sigma, plan["personal_rate"], plan["personal_steps"]]])}
    assert max(e for _, _, e, _ in spends) == pytest.approx(plan["epsilon"])
    assert plan["epsilon"] <= 8.0
    assert "Example-level differential privacy" in summary["privacy"]
    assert f"epsilon = {plan['epsilon']:.3f}" in summary["privacy"]


def test_example_level_without_shared_training_is_refused(tiny_config):
    cfg = tiny_config.replace(**{"federated.local_epochs": 0, "privacy": EXAMPLE})
    with pytest.raises(UnsupportedClaimError, match="local_epochs"):
        Simulation(cfg, progress=False)
