"""The distributed discrete Gaussian end to end: mechanism, protocols' integer path, plan, run.

Attack first: an adversary holding the server's view of a round sees the exact sum of the
clients' integer shares modulo ``M`` and nothing else (no float codec that clamps or rounds);
the released epsilon is the plan's, which the shares' zCDP bound supports.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from ffm_private.config import ConfigError
from ffm_private.privacy import discrete_gaussian as ddg
from ffm_private.privacy.client_secrets import SecretStore
from ffm_private.privacy.errors import InsufficientNoiseError, UnsupportedClaimError
from ffm_private.privacy.mechanism import DistributedDiscreteGaussian
from ffm_private.privacy.run import RunPrivacy
from ffm_private.server import Server
from ffm_private.simulation import Simulation, run_training
from protocols import registry
from protocols.base import centred_lift
from tests.run_records import ledger_spends, round_metrics

DDG = {"mode": "user", "target_epsilon": 4.0, "clipping_norm": 0.5, "noise_seed": 3,
       "noise_placement": "distributed", "min_survivors": 10, "accountant": "rdp",
       "distributed_noise": "discrete_gaussian"}


def _privacy(tmp_path, protocol: str, dim: int, options=None, users: int = 40,
             **raw) -> RunPrivacy:
    cfg = {**DDG, **raw}
    privacy = RunPrivacy.prepare(cfg, tmp_path, user_ids=range(users), rounds=5,
                                 client_fraction=0.5, protocol=protocol)
    assert privacy is not None
    proto = registry.create(protocol, options or {})
    return privacy.bind_protocol(proto, dim).start(SecretStore(tmp_path, test_seed=cfg["noise_seed"]))


def _exact_sum(shares, modulus):
    acc = np.zeros(len(next(iter(shares.values()))), dtype=object)
    for v in shares.values():
        acc = (acc + np.asarray(v, dtype=object)) % modulus
    return centred_lift(acc.astype(np.int64), modulus)


def _round(privacy, protocol, updates, round_id=1):
    shares = {c: privacy.release(round_id, c, u) for c, u in updates.items()}
    secrets = {c: bytes([c]) * 32 for c in shares}
    res = protocol.aggregate(round_id, shares, secrets=secrets,
                             encoding=privacy.mechanism.encoding)
    return shares, res


# -- (a) what the server's view holds --------------------------------------------------------
@pytest.mark.parametrize("name,options", [("secagg", {"min_clients": 10}),
                                          ("he", {"min_clients": 10})])
def test_server_view_is_exactly_the_modular_sum_of_the_integer_shares(tmp_path, name, options):
    dim = 64
    privacy = _privacy(tmp_path, name, dim, options)
    mech = privacy.mechanism
    assert isinstance(mech, DistributedDiscreteGaussian) and mech.encoding == "integer"
    protocol = registry.create(name, options)
    assert mech.modulus == protocol.integer_modulus
    rng = np.random.default_rng(0)
    updates = {c: rng.normal(0, 1, dim) for c in range(12)}
    shares, res = _round(privacy, protocol, updates)
    for s in shares.values():  # what each client sends: int64 residues, clipped and noised
        assert s.dtype == np.int64 and s.min() >= 0 and s.max() < mech.modulus
    assert res.contributors == tuple(range(12))
    assert np.array_equal(res.total, _exact_sum(shares, mech.modulus))  # bit for bit
    # the release: the centred lift x gamma / contributors, nothing else added or clamped
    released = privacy.average(1, res.total, len(res.contributors), 40, dim)
    np.testing.assert_array_equal(released, res.total * mech.gamma / 12)


def test_the_share_is_the_production_rounding_plus_discrete_gaussian(tmp_path):
    """Replaying the client's own stream gives its share: rounding within the norm bound,
    then the noise; the server can decode a share only if it has the client's secret."""
    privacy = _privacy(tmp_path, "secagg", 50, {"min_clients": 10})
    mech = privacy.mechanism
    x = np.full(50, 10.0)  # norm 70.7: clipped to 0.5
    share = privacy.release(2, 4, x)
    rng = privacy.secrets.noise(4).generator(2, 4, purpose=0)
    clipped = x * (0.5 / np.linalg.norm(x))
    rounded = ddg.conditional_rounding(clipped, 0.5, mech.gamma, rng)
    noise = ddg.sample_discrete_gaussian(Fraction(mech.local_sigma / mech.gamma) ** 2, 50,
                                         rng)
    np.testing.assert_array_equal(share, np.mod(rounded + noise, mech.modulus))
    bound = ddg.rounded_norm_bound(0.5, mech.gamma, 50)
    assert float(np.linalg.norm(rounded.astype(np.float64))) <= bound


# -- (b) no clamp ---------------------------------------------------------------------------
def test_noisy_shares_beyond_the_float_clip_wrap_and_decode_exactly(tmp_path):
    """SecAgg+'s float codec clips at 1.0; the integer shares here carry noise of std ~3 (in
    original units) and wrap modulo 2**32 individually: the sum still decodes exactly."""
    dim = 200
    privacy = _privacy(tmp_path, "secagg", dim, {"min_clients": 10, "clip": 1.0},
                       target_epsilon=0.0, noise_multiplier=20.0, min_survivors=10)
    mech = privacy.mechanism
    assert mech.local_sigma > 3.0  # far beyond the float codec's clip of 1.0
    protocol = registry.create("secagg", {"min_clients": 10, "clip": 1.0})
    updates = {c: np.zeros(dim) for c in range(10)}
    shares, res = _round(privacy, protocol, updates)
    values = {c: centred_lift(s, mech.modulus) * mech.gamma for c, s in shares.items()}
    assert max(np.abs(v).max() for v in values.values()) > 1.0  # a float path would clamp
    assert any((s >= mech.modulus // 2).any() for s in shares.values())  # negatives wrap
    signed = np.sum([centred_lift(s, mech.modulus) for s in shares.values()], axis=0)
    np.testing.assert_array_equal(res.total, signed)  # exact: no clamp, no codec


def test_too_few_shares_are_refused_before_release(tmp_path):
    privacy = _privacy(tmp_path, "secagg", 8, {"min_clients": 10})
    with pytest.raises(InsufficientNoiseError):
        privacy.average(1, np.zeros(8), contributors=9, pool_size=40, dim=8)


# -- (c) the released epsilon is the plan's ------------------------------------------------------
def test_plan_accounts_the_ddg_bound_and_the_statement_states_the_plan(tmp_path):
    dim = 1000
    privacy = _privacy(tmp_path, "secagg", dim, {"min_clients": 10})
    plan, mech = privacy.plan, privacy.mechanism
    assert plan.distributed_noise == "discrete_gaussian" and plan.accountant == "rdp"
    z = plan.noise_multiplier
    # the shares' zCDP bound (KLS Theorem 1) is at most the planned Gaussian's, and tight
    assert mech.rho <= 1 / (2 * z * z)
    assert mech.rho == pytest.approx(1 / (2 * z * z), rel=1e-6)
    assert ddg.gaussian_event_for_zcdp(mech.rho, "rdp").noise_multiplier >= z
    assert plan.charge_events() == mech.events()
    assert plan.epsilon <= 4.0
    text = privacy.statement()
    assert f"epsilon = {plan.epsilon:.3f}" in text and "RDP accountant" in text
    assert "discrete Gaussian" in text and f"{z:.4f}" in text
    assert "continuous Gaussian" not in text
    saved = json.loads((tmp_path / "privacy" / "plan.json").read_text())
    assert saved["distributed_noise"] == "discrete_gaussian"
    assert saved["epsilon"] == pytest.approx(plan.epsilon)


def test_default_gamma_keeps_every_sum_inside_the_modulus():
    z, c, n, dim, m, modulus = 1.2, 0.5, 10, 500, 40, 2**32
    gamma = ddg.default_gamma(z, c, n, dim, m, modulus)
    sigma = ddg.calibrate_local_sigma(z, c, gamma, n, dim)
    reach = m * (c / gamma + 1) + ddg.WRAP_SIGMAS * np.sqrt(m) * sigma / gamma
    assert reach <= (modulus - 1) // 2
    assert reach > 0.9 * (modulus - 1) // 2  # and it is the finest such step, not far off


def test_refusals_name_the_setting(tmp_path):
    with pytest.raises(ConfigError, match="privacy.accountant"):
        RunPrivacy.prepare({**DDG, "accountant": "prv"}, tmp_path, user_ids=range(40),
                           rounds=5, client_fraction=0.5, protocol="secagg")
    with pytest.raises(ConfigError, match="privacy.distributed_noise"):
        RunPrivacy.prepare({**DDG, "noise_placement": "central", "min_survivors": 0,
                            "expected_clients_per_round": 20.0}, tmp_path,
                           user_ids=range(40), rounds=5, client_fraction=0.5,
                           protocol="secagg")
    with pytest.raises(UnsupportedClaimError):
        _privacy(tmp_path, "plaintext", 8)
    with pytest.raises(UnsupportedClaimError):
        _privacy(tmp_path, "he", 8, {"scheme": "ckks", "ckks_key_risk_accepted": True})


# -- (d) a run trains and resumes ------------------------------------------------------------
@pytest.mark.slow
def test_a_secagg_ddg_run_trains_and_resumes(tiny_config, monkeypatch):
    cfg = tiny_config.replace(**{"federated.client_fraction": 0.5, "privacy": DDG,
                                 "protocol.name": "secagg",
                                 "protocol.options": {"min_clients": 10}})
    original = Server.aggregate

    def crash_in_round_2(self, round_id, updates, **kwargs):
        if round_id == 2:
            raise KeyboardInterrupt
        return original(self, round_id, updates, **kwargs)

    monkeypatch.setattr(Server, "aggregate", crash_in_round_2)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, progress=False)
    monkeypatch.undo()
    summary = run_training(cfg, resume=True, progress=False)
    run = Path(cfg.run_dir)
    plan = json.loads((run / "privacy" / "plan.json").read_text())
    rows = round_metrics(run)
    assert [r["round"] for r in rows] == [1, 2, 3]
    assert all(r["contributors"] >= 10 and not r["aborted"] for r in rows)
    assert rows[-1]["epsilon"] == pytest.approx(plan["epsilon"])
    assert f"epsilon = {plan['epsilon']:.3f}" in summary["privacy"]
    assert summary["privacy_details"]["mechanism"].startswith("clip to 0.5, conditional")
    spends = ledger_spends(run)
    assert spends and max(e for _, _, e, _ in spends) <= plan["epsilon"] + 1e-9
    sim = Simulation(cfg, resume=True, progress=False)
    assert sim.privacy.mechanism.encoding == "integer"


def test_config_keys_are_checked_with_their_names(tmp_path):
    from ffm_private.privacy.config import PrivacyConfig

    with pytest.raises(ConfigError, match="privacy.distributed_noise = 'binomial'"):
        PrivacyConfig.from_dict({**DDG, "distributed_noise": "binomial"})
    with pytest.raises(ConfigError, match="privacy.ddg_gamma applies"):
        PrivacyConfig.from_dict({**DDG, "distributed_noise": "gaussian", "ddg_gamma": 0.1})
    with pytest.raises(ConfigError, match="privacy.ddg_gamma"):
        PrivacyConfig.from_dict({**DDG, "ddg_gamma": -1.0})
    privacy = _privacy(tmp_path, "secagg", 16, {"min_clients": 10}, ddg_gamma=1e-4)
    assert privacy.mechanism.gamma == 1e-4  # a configured step is used as given


def test_a_gaussian_plan_is_not_resumed_as_a_discrete_one(tmp_path):
    _privacy(tmp_path, "secagg", 16, {"min_clients": 10, "clip": 100.0},
             distributed_noise="gaussian")
    with pytest.raises(UnsupportedClaimError, match="planned for other settings"):
        RunPrivacy.prepare(DDG, tmp_path, user_ids=range(40), rounds=5, client_fraction=0.5,
                           protocol="secagg", resume=True)


# -- (d) the default: read from the protocol's capabilities -----------------------------------------
DEFAULT_DISTRIBUTED = {"mode": "user", "target_epsilon": 4.0, "clipping_norm": 0.5,
                       "noise_seed": 3, "noise_placement": "distributed", "min_survivors": 10}


@pytest.mark.parametrize("name,options", [("secagg", {"min_clients": 10}),
                                          ("he", {"min_clients": 10})])
def test_distributed_noise_defaults_to_the_discrete_gaussian_on_integer_protocols(
        tmp_path, name, options):
    privacy = RunPrivacy.prepare(DEFAULT_DISTRIBUTED, tmp_path, user_ids=range(40), rounds=3,
                                 client_fraction=0.5, protocol=name, protocol_options=options)
    assert (privacy.plan.distributed_noise, privacy.plan.accountant) == ("discrete_gaussian",
                                                                         "rdp")
    privacy.bind_protocol(registry.create(name, options), 16)
    assert isinstance(privacy.mechanism, DistributedDiscreteGaussian)
    assert privacy.requested.accountant == "auto"  # as written; cfg holds the resolution


def test_protocols_without_an_integer_path_keep_the_float_gaussian_or_refuse(tmp_path):
    """Capabilities, not names: a protocol that hides updates but has no integer path gets
    the float Gaussian (PRV); an explicit discrete Gaussian there is refused, and so is
    distributed noise of either kind with plaintext or CKKS (they do not hide updates)."""
    class FloatOnly:  # an extension protocol: hides updates, float sums only
        name, reveals_individual_updates, supports_distributed_noise = "float-only", False, True
        integer_modulus, value_range, min_clients = None, None, 10

        def rounding_bound(self, length, max_clients):
            return 0.0

    cfg = ffm_privacy_config(DEFAULT_DISTRIBUTED)
    assert cfg.for_protocol(FloatOnly()).distributed_noise == "gaussian"
    assert cfg.for_protocol(FloatOnly()).accountant == "prv"
    with pytest.raises(UnsupportedClaimError, match="no exact integer path"):
        ffm_privacy_config({**DEFAULT_DISTRIBUTED,
                            "distributed_noise": "discrete_gaussian"}).for_protocol(FloatOnly())
    # planned for secagg's integer path, bound to a float-only protocol: refused, not mixed
    privacy = RunPrivacy.prepare(DEFAULT_DISTRIBUTED, tmp_path, user_ids=range(40), rounds=3,
                                 client_fraction=0.5, protocol="secagg")
    with pytest.raises(UnsupportedClaimError, match="as built calls for 'prv' and 'gaussian'"):
        privacy.bind_protocol(FloatOnly(), 16)
    for name, options in [("plaintext", {}), ("he", {"scheme": "ckks",
                                                     "ckks_key_risk_accepted": True})]:
        privacy = RunPrivacy.prepare(DEFAULT_DISTRIBUTED, tmp_path / name, user_ids=range(40),
                                     rounds=3, client_fraction=0.5, protocol=name,
                                     protocol_options=options)
        protocol = registry.create(name, options)  # plaintext sums integers too (mod 2^32)
        assert privacy.plan.distributed_noise == ("gaussian" if protocol.integer_modulus is None
                                                  else "discrete_gaussian")
        with pytest.raises(UnsupportedClaimError, match="does not hide individual updates"):
            privacy.bind_protocol(protocol, 16)
    with pytest.raises(ConfigError, match="only RDP composes soundly"):
        RunPrivacy.prepare({**DEFAULT_DISTRIBUTED, "accountant": "prv"}, tmp_path / "p",
                           user_ids=range(40), rounds=3, client_fraction=0.5,
                           protocol="secagg")


def ffm_privacy_config(raw):
    from ffm_private.privacy.config import PrivacyConfig

    return PrivacyConfig.from_dict(raw)
