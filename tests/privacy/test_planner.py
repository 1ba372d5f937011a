"""The budget planner: noise once per plan, reverse planning, curves, table, plot, CLI."""

from __future__ import annotations

import argparse

import pytest

from ffm_private.privacy import planner as planner_mod
from ffm_private.privacy.accounting import (
    GaussianEvent,
    epsilon_for,
    epsilon_for_events,
    noise_for_epsilon,
    noise_for_epsilon_phases,
)
from ffm_private.privacy.errors import AccountingError
from ffm_private.privacy.planner import (
    PrivacyPlan,
    add_budget_command,
    budget_curves,
    budget_table,
    curve_points,
    epsilon_curve,
    plot_epsilon_curves,
)

DELTA = 1e-5
USER = dict(mode="user", delta=DELTA, rounds=50, client_rate=0.1, accountant="rdp")


def test_user_level_central_plan_is_the_subsampled_accountant_over_rounds():
    plan = PrivacyPlan.for_target(target_epsilon=3.0, **USER)
    assert plan.noise_multiplier == noise_for_epsilon(3.0, 0.1, 50, DELTA, "rdp")
    assert plan.epsilon == epsilon_for(plan.noise_multiplier, 0.1, 50, DELTA, "rdp")
    assert 3.0 - 0.01 <= plan.epsilon <= 3.0
    assert plan.charge_basis == "eligibility"
    assert plan.charge_events() == (GaussianEvent(plan.noise_multiplier, 0.1, 1),)
    # Ledger consistency: 50 charges of the per-round event give exactly the plan's epsilon.
    assert epsilon_for_events([plan.charge_events()[0].times(50)], DELTA, "rdp") == plan.epsilon
    assert plan.expected_participations == pytest.approx(5.0)


def test_reverse_plan_gives_the_epsilon_of_a_noise():
    plan = PrivacyPlan.for_noise(1.5, **USER)
    assert plan.epsilon == epsilon_for(1.5, 0.1, 50, DELTA, "rdp")
    assert plan.target_epsilon == plan.epsilon
    forward = PrivacyPlan.for_target(target_epsilon=plan.epsilon + 1e-9, **USER)
    assert forward.noise_multiplier <= 1.5 * 1.02


def test_distributed_plan_has_no_amplification_and_counts_participations():
    plan = PrivacyPlan.for_target(target_epsilon=4.0, mode="user", delta=DELTA, rounds=100,
                                  client_rate=0.1, noise_placement="distributed",
                                  max_participations=10, accountant="rdp")
    assert plan.charge_basis == "participation" and plan.planned_charges == 10
    assert plan.noise_multiplier == noise_for_epsilon(4.0, 1.0, 10, DELTA, "rdp")
    assert plan.charge_events() == (GaussianEvent(plan.noise_multiplier, 1.0, 1),)
    assert plan.epsilon_after_rounds(100) == plan.epsilon == plan.epsilon_after(10)
    assert plan.epsilon_after_rounds(5) < plan.epsilon


def test_example_plan_composes_personal_and_shared_phases():
    plan = PrivacyPlan.for_target(target_epsilon=8.0, mode="example", delta=DELTA, rounds=10,
                                  client_rate=0.5, local_steps=20, example_rate=0.05,
                                  personal_steps=10, personal_rate=0.1, accountant="rdp")
    assert plan.noise_multiplier == noise_for_epsilon_phases(
        8.0, [(0.05, 200), (0.1, 100)], DELTA, "rdp")
    events = plan.charge_events()
    assert [e.as_tuple() for e in events] == [(plan.noise_multiplier, 0.05, 20),
                                             (plan.noise_multiplier, 0.1, 10)]
    assert plan.epsilon == epsilon_for_events([e.times(10) for e in events], DELTA, "rdp")
    plan.check_client(0.04, 20, 0.1, 10)
    with pytest.raises(AccountingError, match="plan covers"):
        plan.check_client(0.06, 20)
    with pytest.raises(AccountingError, match="plan covers"):
        plan.check_client(0.05, 21)
    with pytest.raises(AccountingError, match="personal"):
        plan.check_client(0.05, 20, 0.2, 10)


def test_saved_plan_is_restored_without_a_new_search(monkeypatch):
    plan = PrivacyPlan.for_target(target_epsilon=2.0, **USER)

    def boom(*args, **kwargs):
        raise AssertionError("noise searched again")

    monkeypatch.setattr(planner_mod, "noise_for_epsilon_phases", boom)
    again = PrivacyPlan.from_dict(plan.to_dict())
    assert again == plan and again.epsilon == plan.epsilon
    with pytest.raises(AccountingError, match="noise_multiplier"):
        PrivacyPlan.from_dict({**plan.to_dict(), "noise_multiplier": 0.0})
    with pytest.raises(AccountingError, match="unknown plan field"):
        PrivacyPlan.from_dict({**plan.to_dict(), "colour": "red"})


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(mode="none"), "mode"),
    (dict(mode="example"), "local_steps"),
    (dict(local_steps=3), "leave them 0"),
    (dict(max_participations=60), "exceeds rounds"),
    (dict(max_participations=5), "does not apply"),
    (dict(noise_placement="edge"), "noise_placement"),
    (dict(client_rate=0.0), "client_rate"),
    (dict(rounds=0), "rounds"),
    (dict(accountant="gdp"), "refused"),
    (dict(noise_multiplier=0.2), "> target"),
    (dict(target_epsilon=-1.0), "target_epsilon"),
])
def test_invalid_plans_are_refused(kwargs, message):
    args = {**USER, "target_epsilon": 3.0, **kwargs}
    with pytest.raises(AccountingError, match=message):
        PrivacyPlan(**args)


def test_curve_is_monotone_and_ends_at_the_plans_epsilon():
    plan = PrivacyPlan.for_target(target_epsilon=3.0, **USER)
    curve = epsilon_curve(plan, curve_points(50, 6))
    assert [r for r, _ in curve][-1] == 50
    eps = [e for _, e in curve]
    assert eps == sorted(eps) and eps[-1] == plan.epsilon
    assert curve[0][1] == epsilon_for(plan.noise_multiplier, 0.1, curve[0][0], DELTA, "rdp")
    assert len(epsilon_curve(plan, 3)) == 3


def test_budget_table_and_plot(tmp_path):
    curves = budget_curves(noise_multipliers=[1.0, 2.0], targets=[3.0], points=[10, 50], **USER)
    text = budget_table(curves, "user-level")
    lines = text.splitlines()
    assert lines[0] == "user-level" and "sigma=1" in lines[1] and "target 3" in lines[1]
    assert lines[-1].split("|")[0].strip() == "50"
    # Cells are the accountant's values.
    sigma1_at_50 = float(lines[-1].split("|")[2])
    assert sigma1_at_50 == pytest.approx(epsilon_for(1.0, 0.1, 50, DELTA, "rdp"), abs=5e-4)
    png = plot_epsilon_curves(curves, tmp_path / "eps.png", "test")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(AccountingError, match="at least one"):
        budget_curves(**USER)


def test_budget_command_prints_a_table_and_saves_a_plot(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_budget_command(parser.add_subparsers())
    png = tmp_path / "b.png"
    args = parser.parse_args(["budget", "--noise", "1.0", "--rounds", "20", "--client-rate",
                              "0.2", "--accountant", "rdp", "--points", "4", "--plot", str(png)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "rounds" in out and "sigma=1" in out and png.exists()
    assert f"{epsilon_for(1.0, 0.2, 20, DELTA, 'rdp'):.3f}" in out
    bad = parser.parse_args(["budget", "--noise", "1.0", "--rounds", "20", "--accountant", "gdp"])
    assert bad.func(bad) == 2


# -- example-level sizing comes from public settings, not from the users' data --------------
def _prepared_example_plan(tmp_path, train_sizes, **privacy):
    from ffm_private.client import LocalTrainingConfig
    from ffm_private.privacy.run import RunPrivacy

    raw = {"mode": "example", "noise_multiplier": 1.1, "noise_seed": 0, **privacy}
    run = RunPrivacy.prepare(raw, tmp_path, user_ids=range(len(train_sizes)), rounds=5,
                             client_fraction=0.5, protocol="plaintext",
                             train_sizes=train_sizes,
                             local_cfg=LocalTrainingConfig(batch_size=16, personal_epochs=1))
    return run.plan, run.example_dp


def test_changing_one_users_data_does_not_change_the_plan(tmp_path):
    """An observer of plan.json (or of any client's rate) learns nothing about one user."""
    sizes = [20, 30, 40, 50, 60]
    neighbour = [20, 30, 41, 50, 60]  # one interaction added to the median user
    far = [20, 30, 400, 500, 600]  # three users' data changed a lot
    plans = [_prepared_example_plan(tmp_path / str(i), s) for i, s in
             enumerate((sizes, neighbour, far))]
    assert plans[0] == plans[1] == plans[2]
    plan, dp = plans[0]
    # what the plan publishes is the public reference size (100 by default), nothing else
    assert plan.example_rate == 16 / 100 and plan.local_steps == 7 == plan.personal_steps
    assert dp.expected_batch_size == pytest.approx(16.0)


def test_reference_size_is_a_validated_public_setting():
    from ffm_private.config import ConfigError
    from ffm_private.privacy.config import DEFAULT_REFERENCE_SIZE, PrivacyConfig

    base = {"mode": "example", "target_epsilon": 4.0}
    assert PrivacyConfig.from_dict(base).reference_size == DEFAULT_REFERENCE_SIZE == 100
    assert PrivacyConfig.from_dict({**base, "reference_size": 40}).reference_size == 40
    for bad, message in [(0, ">= 1"), (2.5, "must be an integer"), (True, "must be an integer")]:
        with pytest.raises(ConfigError, match=f"privacy.reference_size.*{message}"):
            PrivacyConfig.from_dict({**base, "reference_size": bad})
    with pytest.raises(ConfigError, match="reference_size applies to mode = 'example'"):
        PrivacyConfig.from_dict({"mode": "user", "target_epsilon": 4.0, "reference_size": 40,
                                 "expected_clients_per_round": 10.0})


def test_clients_of_any_size_are_covered_by_the_plan():
    """More or fewer interactions than the reference: same rate and steps, admitted."""
    import numpy as np
    import torch

    from ffm_private.client import ClientData, LocalTrainingConfig, train_client
    from ffm_private.messages import GlobalModelMessage
    from ffm_private.models import PERSONAL, SHARED, FFMRecommender, state_of
    from ffm_private.privacy.config import PrivacyConfig
    from ffm_private.privacy.dpsgd import ExampleDP

    cfg = PrivacyConfig.from_dict({"mode": "example", "noise_multiplier": 1.0,
                                   "reference_size": 20})
    local = LocalTrainingConfig(batch_size=8, personal_epochs=1)
    inputs, example = cfg.run_inputs(rounds=3, client_rate=1.0, local_cfg=local)
    plan = cfg.plan(**inputs)
    dp = ExampleDP.from_plan(plan, clipping_norm=0.5,
                             expected_batch_size=example.expected_batch_size)
    torch.manual_seed(0)
    model = FFMRecommender(60, 1, dim=8, history_length=4, global_rank=2).train()
    message = GlobalModelMessage(1, state_of(model, SHARED))
    personal = {k: v[0] for k, v in state_of(model, PERSONAL).items()}
    for n_user in (3, 20, 59):
        result = train_client(model, message, personal, ClientData(0, np.arange(n_user)),
                              LocalTrainingConfig(batch_size=8, personal_epochs=1,
                                                  example_dp=dp), 0,
                              generator=torch.Generator().manual_seed(n_user))
        plan.check_client(**result.dp.check_kwargs())
        assert result.dp.events() == plan.charge_events()


# -- adaptive clipping in the plan -----------------------------------------------------------
ADAPTIVE = {"mode": "user", "target_epsilon": 4.0, "accountant": "rdp",
            "adaptive_clipping": True, "clip_count_noise": 2.5,
            "expected_clients_per_round": 50.0}


def test_adaptive_clipping_keeps_the_plans_epsilon_and_is_recorded():
    from ffm_private.privacy.adaptive_clipping import combined_noise_multiplier
    from ffm_private.privacy.config import PrivacyConfig

    fixed = PrivacyConfig.from_dict({"mode": "user", "target_epsilon": 4.0,
                                     "accountant": "rdp", "expected_clients_per_round": 50.0}
                                    ).plan(rounds=50, client_rate=0.1)
    plan = PrivacyConfig.from_dict(ADAPTIVE).plan(rounds=50, client_rate=0.1)
    assert plan.noise_multiplier == fixed.noise_multiplier and plan.epsilon == fixed.epsilon
    assert plan.charge_events() == fixed.charge_events()  # the ledger charges the same
    assert plan.update_noise_multiplier > plan.noise_multiplier
    assert combined_noise_multiplier(plan.update_noise_multiplier, 2.5) == \
        pytest.approx(plan.noise_multiplier, rel=1e-12)
    saved = plan.to_dict()
    assert saved["adaptive_clipping"] is True and saved["clip_count_noise"] == 2.5
    assert PrivacyPlan.from_dict(saved) == plan
    assert "adaptive clipping" in plan.describe()
    assert fixed.update_noise_multiplier == fixed.noise_multiplier


@pytest.mark.parametrize(("extra", "message"), [
    ({"clip_count_noise": 0.0}, "clip_count_noise \\(> 0\\) is required"),
    ({"expected_clients_per_round": 0.0}, "expected_clients_per_round"),
    ({"clip_target_quantile": 1.0}, "clip_target_quantile"),
    ({"clip_learning_rate": 0.0}, "clip_learning_rate"),
    ({"noise_placement": "distributed", "min_survivors": 3, "expected_clients_per_round": 0.0},
     "central' only"),
    ({"adaptive_clipping": False}, "clip_count_noise is set but privacy.adaptive_clipping"),
])
def test_adaptive_clipping_settings_are_validated(extra, message):
    from ffm_private.config import ConfigError
    from ffm_private.privacy.config import PrivacyConfig

    with pytest.raises(ConfigError, match=message):
        PrivacyConfig.from_dict({**ADAPTIVE, **extra})


def test_adaptive_clipping_with_too_little_count_noise_is_refused_by_the_plan():
    from ffm_private.config import ConfigError
    from ffm_private.privacy.config import PrivacyConfig

    cfg = PrivacyConfig.from_dict({**ADAPTIVE, "target_epsilon": 0.0, "noise_multiplier": 3.0,
                                   "clip_count_noise": 1.4})
    with pytest.raises(ConfigError, match="2 \\* clip_count_noise > noise_multiplier"):
        cfg.plan(rounds=10, client_rate=0.1)
    with pytest.raises(AccountingError, match="central noise only"):
        PrivacyPlan.for_noise(1.0, mode="example", delta=DELTA, rounds=2, client_rate=1.0,
                              local_steps=1, example_rate=0.5, adaptive_clipping=True,
                              clip_count_noise=1.0)


def test_budget_command_plans_the_personal_phase(capsys):
    parser = argparse.ArgumentParser()
    add_budget_command(parser.add_subparsers())
    args = parser.parse_args(["budget", "--mode", "example", "--noise", "1.0", "--rounds", "10",
                              "--local-steps", "5", "--example-rate", "0.1",
                              "--personal-steps", "5", "--personal-rate", "0.1",
                              "--accountant", "rdp", "--points", "1"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    both = epsilon_for_events([(1.0, 0.1, 100)], DELTA, "rdp")  # 10 x (5 + 5) steps
    assert f"{both:.3f}" in out and "5 personal steps" in out
    assert f"{epsilon_for(1.0, 0.1, 50, DELTA, 'rdp'):.3f}" not in out
    helptext = parser._subparsers._group_actions[0].choices["budget"].format_help()
    assert "N_user" not in helptext and "--personal-steps" in helptext


def test_a_target_looser_than_the_search_range_is_refused_at_once(capsys):
    """`budget --epsilon 1e9` used to search for minutes (and ignore SIGTERM)."""
    import time

    from ffm_private.cli import main

    start = time.perf_counter()
    code = main(["budget", "--epsilon", "1e9", "--rounds", "100", "--client-rate", "0.1"])
    assert code == 2 and time.perf_counter() - start < 30
    assert "looser than noise multiplier 0.3" in capsys.readouterr().err


def test_a_floor_without_a_finite_bound_does_not_block_the_search():
    """At noise 0.3, rate 1 and 200 steps PRV has no finite epsilon: the target needs more
    noise, and the search must go on (it did raise once, breaking example-level plans)."""
    from ffm_private.privacy.accounting import noise_for_epsilon

    sigma = noise_for_epsilon(8.0, 1.0, 200, 1e-5, "prv")
    assert 0.3 < sigma < 20
