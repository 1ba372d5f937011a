"""``ffm-private budget --config`` plans exactly what the run of that configuration plans."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from ffm_private import config as config_mod
from ffm_private.privacy.planner import PrivacyPlan, add_budget_command, config_plan
from ffm_private.simulation import Simulation

EXAMPLE = {"mode": "example", "target_epsilon": 8.0, "clipping_norm": 0.1, "noise_seed": 5}
DISTRIBUTED = {"mode": "user", "target_epsilon": 4.0, "noise_seed": 3, "clipping_norm": 0.5,
               "noise_placement": "distributed", "min_survivors": 10}
CASES = {
    # FFM with personal parameters: the personal DP-SGD phase is part of the plan
    "example-ffm": {"federated.batch_size": 16, "federated.client_fraction": 0.5,
                    "privacy": EXAMPLE},
    "example-no-personal-epochs": {"federated.batch_size": 16, "federated.personal_epochs": 0,
                                   "model.personalization": False,
                                   "privacy": {**EXAMPLE, "accountant": "rdp"}},
    "user-central": {"federated.client_fraction": 0.5,
                     "privacy": {"mode": "user", "target_epsilon": 4.0, "accountant": "rdp",
                                 "noise_seed": 3, "expected_clients_per_round": 40.0}},
    "user-noise": {"federated.client_fraction": 0.3,
                   "privacy": {"mode": "user", "noise_multiplier": 1.3, "noise_seed": 3,
                               "expected_clients_per_round": 24.0}},
    # distributed noise over a protocol with an exact integer path: the discrete Gaussian and
    # the RDP accountant by default, read from the protocol's capabilities
    "user-distributed-secagg": {"federated.client_fraction": 0.5, "protocol.name": "secagg",
                                "privacy": DISTRIBUTED},
    "user-distributed-float": {"federated.client_fraction": 0.5, "protocol.name": "secagg",
                               "protocol.options": {"clip": 8.0},
                               "privacy": {**DISTRIBUTED, "distributed_noise": "gaussian"}},
}
DEFAULTS = {  # case -> (distributed_noise, accountant) every planner must agree on
    "user-central": ("gaussian", "rdp"), "user-noise": ("gaussian", "prv"),
    "example-ffm": ("gaussian", "prv"),
    "user-distributed-secagg": ("discrete_gaussian", "rdp"),
    "user-distributed-float": ("gaussian", "prv"),
}


def _write(cfg: config_mod.Config, path: Path) -> Path:
    path.write_text(config_mod.to_toml(cfg))
    return path


def _run_plan(cfg: config_mod.Config, statements: list | None = None) -> dict:
    """The plan the run itself writes to ``<run>/privacy/plan.json``."""
    sim = Simulation(cfg, progress=False).start()
    try:
        if statements is not None:
            statements.append(sim.privacy.statement())
        return json.loads((Path(cfg.run_dir) / "privacy" / "plan.json").read_text())
    finally:
        sim.close()


@pytest.mark.parametrize("case", sorted(CASES))
def test_budget_config_plan_is_the_runs_plan(case, tiny_config, tmp_path, capsys):
    cfg = tiny_config.replace(**CASES[case])
    path = _write(cfg, tmp_path / "run.toml")
    ours = config_plan(path)
    statements: list[str] = []
    run = _run_plan(cfg, statements)
    assert ours.to_dict() == run
    assert PrivacyPlan.from_dict(run).epsilon == ours.epsilon
    if case in DEFAULTS:
        assert (run["distributed_noise"], run["accountant"]) == DEFAULTS[case]
        (text,) = statements
        assert f"epsilon = {run['epsilon']:.3f}" in text
        assert f"({run['accountant'].upper()} accountant" in text
        assert ("discrete Gaussian" in text) == (run["distributed_noise"] != "gaussian")
    # The command prints that plan's noise multiplier and epsilon.
    parser = argparse.ArgumentParser()
    add_budget_command(parser.add_subparsers())
    args = parser.parse_args(["budget", "--config", str(path), "--points", "2"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert f"noise multiplier {run['noise_multiplier']:.4f} -> epsilon {run['epsilon']:.3f}" in out
    if case == "example-ffm":
        assert run["personal_steps"] > 0 and "personal" in out


def test_budget_and_run_agree_on_a_configured_reference_size(tiny_config, tmp_path):
    cfg = tiny_config.replace(**{"federated.batch_size": 16,
                                 "privacy": {**EXAMPLE, "target_epsilon": 0.0,
                                             "noise_multiplier": 1.2, "reference_size": 48}})
    ours = config_plan(_write(cfg, tmp_path / "run.toml"))
    assert ours.example_rate == 16 / 48
    assert _run_plan(cfg) == ours.to_dict()


def test_budget_refuses_mechanism_flags_beside_a_config(tiny_config, tmp_path, capsys):
    path = _write(tiny_config.replace(**CASES["user-central"]), tmp_path / "run.toml")
    parser = argparse.ArgumentParser()
    add_budget_command(parser.add_subparsers())
    args = parser.parse_args(["budget", "--config", str(path), "--rounds", "9"])
    assert args.func(args) == 2
    assert "--rounds comes from --config" in capsys.readouterr().err
    args = parser.parse_args(["budget", "--config", str(path), "--set",
                              "privacy.target_epsilon=6", "--points", "1"])
    assert args.func(args) == 0
    assert "epsilon 5.9" in capsys.readouterr().out  # the override reached the plan
    args = parser.parse_args(["budget", "--noise", "1.0"])
    assert args.func(args) == 2
    assert "--rounds is required" in capsys.readouterr().err


def test_prv_with_the_default_discrete_gaussian_is_refused_everywhere(tiny_config, tmp_path,
                                                                      capsys):
    """An explicit PRV accountant with distributed noise over secagg (discrete Gaussian by
    default) is refused, with the reason, by the run and by ``budget --config`` alike."""
    cfg = tiny_config.replace(**{"protocol.name": "secagg",
                                 "privacy": {**DISTRIBUTED, "accountant": "prv"}})
    path = _write(cfg, tmp_path / "run.toml")
    with pytest.raises(config_mod.ConfigError, match="only RDP composes soundly"):
        Simulation(cfg, progress=False)
    parser = argparse.ArgumentParser()
    add_budget_command(parser.add_subparsers())
    args = parser.parse_args(["budget", "--config", str(path), "--points", "1"])
    assert args.func(args) == 2
    assert "distributed_noise = 'gaussian'" in capsys.readouterr().err


def test_budget_flags_plan_the_discrete_gaussian_with_rdp(capsys):
    parser = argparse.ArgumentParser()
    add_budget_command(parser.add_subparsers())
    args = parser.parse_args(["budget", "--placement", "distributed", "--distributed-noise",
                              "discrete_gaussian", "--noise", "1.0", "--rounds", "5",
                              "--points", "1"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "accountant=rdp" in out and "discrete Gaussian" in out
    args = parser.parse_args(["budget", "--distributed-noise", "discrete_gaussian",
                              "--noise", "1.0", "--rounds", "5"])
    assert args.func(args) == 2
    assert "--placement distributed" in capsys.readouterr().err
