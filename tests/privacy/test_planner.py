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
