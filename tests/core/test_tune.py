"""``ffm-private tune``: validation only, resumable, and its best config reproduces its figure."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("optuna")

from ffm_private import config as config_mod  # noqa: E402
from ffm_private import simulation  # noqa: E402
from ffm_private.config import Config, ConfigError  # noqa: E402
from ffm_private.data import SyntheticConfig, generate_synthetic  # noqa: E402
from ffm_private.tune import (  # noqa: E402
    BEST_FILE,
    TuneError,
    Tuner,
    TuneSettings,
    dimension,
    parse_param,
    read_settings,
)

SPACE = {"federated.lr": {"low": 1e-3, "high": 1e-1, "log": True},
         "federated.personal_lr": {"choices": [0.01, 0.05]}}


def _settings(trials: int) -> TuneSettings:
    return TuneSettings(space={k: dimension(k, v) for k, v in SPACE.items()}, trials=trials)


@pytest.fixture(scope="module")
def micro_data(tmp_path_factory) -> Path:
    """30 users, 100 items: a trial takes a few seconds."""
    path = tmp_path_factory.mktemp("tune-data")
    generate_synthetic(path, SyntheticConfig(n_users=30, n_items=100, n_interactions=800,
                                             min_per_user=20, eval_negatives_reserve=30, seed=0))
    return path


def _base(data: Path, run_dir: Path) -> Config:
    # pfedrec protocol: training negatives never depend on the test items, so scrambling
    # them below can change nothing but what a test metric would read
    return Config(run_dir=str(run_dir)).replace(**{
        "data.path": str(data), "data.protocol": "pfedrec", "data.num_eval_negatives": 20,
        "model.dim": 8, "model.history_length": 4, "model.global_rank": 4,
        "pretrain.epochs": 1, "federated.rounds": 3, "evaluation.full_ranking": True,
        "observation.enabled": False})


@pytest.fixture(scope="module")
def study(micro_data, tmp_path_factory):
    """Two trials run with every test item scrambled; records what the objective received."""
    root = tmp_path_factory.mktemp("tune")
    seen: list[tuple[int, dict]] = []
    original = simulation._split

    def scrambled(cfg, interactions):  # the adversary's edit: test labels replaced by noise
        split = original(cfg, interactions)
        rng = np.random.default_rng(1)
        split.test[:] = rng.integers(0, split.n_items, size=split.n_users)
        return split

    mp = pytest.MonkeyPatch()
    mp.setattr(simulation, "_split", scrambled)
    try:
        torch = pytest.importorskip("torch")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        tuner = Tuner(_base(micro_data, root / "run"), _settings(2), root / "tune",
                      progress=False, observe=lambda r, m: seen.append((r, m)))
        best = tuner.run()
    finally:
        mp.undo()
        torch.set_num_threads(threads)
    return {"out": root / "tune", "seen": seen, "best": best, "tuner": tuner, "root": root}


def test_objective_sees_validation_metrics_only(study):
    seen = study["seen"]
    assert len(seen) == 2 * 3  # two trials, three evaluated rounds each
    for _, metrics in seen:
        assert metrics and all(key.startswith("valid_") for key in metrics), metrics
    for trial_dir in sorted((study["out"] / "trials").iterdir()):
        rows = [json.loads(line) for line in (trial_dir / "metrics.jsonl").read_text().splitlines()]
        assert len(rows) == 3
        assert not [key for row in rows for key in row if key.startswith("test_")]
        selected = json.loads((trial_dir / "summary.json").read_text())["selected_metrics"]
        assert selected and not [key for key in selected if key.startswith("test_")]


def test_trials_table_best_config_and_plot(study):
    out = study["out"]
    with open(out / "trials.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["trial"] for r in rows] == ["0", "1"]
    assert {"valid_hr@10", "selected_round", "federated.lr", "federated.personal_lr"} <= set(rows[0])
    assert "| trial | state | valid_hr@10 |" in (out / "trials.md").read_text()
    assert (out / "history.png").read_bytes()[:4] == b"\x89PNG"
    best = config_mod.load(out / BEST_FILE)
    assert best.federated.lr == pytest.approx(study["best"].params["federated.lr"])
    assert best.run_dir == str(out / "best")


def test_best_config_reproduces_the_best_validation_figure(study, one_torch_thread):
    """Trained unscrambled, the best config gives the value the scrambled-test study saw."""
    best = study["best"]
    cfg = config_mod.load(study["out"] / BEST_FILE)
    summary = simulation.run_training(cfg, progress=False)
    assert summary["selected_metrics"]["valid_hr@10"] == best.value
    assert summary["selected_round"] == best.user_attrs["selected_round"]
    assert "test_hr@10" in summary["selected_metrics"]  # an ordinary run scores test too


def test_rerun_continues_the_study_and_retries_an_interrupted_trial(study, one_torch_thread,
                                                                    tmp_path):
    out = tmp_path / "tune"
    shutil.copytree(study["out"], out)
    base = study["tuner"].base
    before = {t.number: (t.params, t.value) for t in study["tuner"].study.get_trials()}

    def interrupt(round_id, metrics):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Tuner(base, _settings(3), out, progress=False, observe=interrupt).run()
    tuner = Tuner(base, _settings(3), out, progress=False)
    assert tuner.finished() == 2
    tuner.run()
    trials = tuner.study.get_trials()
    assert tuner.finished() == 3 and len(trials) == 4
    assert {t.number: (t.params, t.value) for t in trials[:2]} == before  # kept, not rerun
    assert trials[2].user_attrs["interrupted"] and trials[3].params == trials[2].params
    assert trials[3].state.name == "COMPLETE"
    # and a rerun that has nothing left to do runs nothing
    Tuner(base, _settings(3), out, progress=False).run()
    assert len(tuner.study.get_trials()) == 4


def test_another_config_or_space_in_the_same_directory_is_refused(study):
    base = study["tuner"].base
    with pytest.raises(TuneError, match="another base configuration"):
        Tuner(base.replace(**{"federated.rounds": 2}), _settings(2), study["out"])
    other = TuneSettings(space={"federated.lr": dimension("federated.lr", {"low": 1e-4,
                                                                           "high": 1e-2})},
                         trials=2)
    with pytest.raises(TuneError, match="another search space"):
        Tuner(base, other, study["out"])


def test_space_parsing_and_checks(tmp_path):
    assert parse_param("model.global_rank=4,8").choices == (4, 8)
    dim = parse_param("federated.lr=1e-4:1e-2:log")
    assert (dim.low, dim.high, dim.log, dim.integer) == (1e-4, 1e-2, True, False)
    assert parse_param("federated.local_epochs=1:3").integer
    with pytest.raises(ConfigError, match="tune.space.federated.lr"):
        parse_param("federated.lr=0:1:log")
    space = tmp_path / "space.toml"
    space.write_text('[tune]\ntrials = 4\nn_warmup_steps = 2\n[tune.space]\n'
                     '"federated.lr" = {low = 0.001, high = 0.1, log = true}\n')
    settings = read_settings(space, ["model.global_rank=4,8"])
    assert settings.trials == 4 and settings.n_warmup_steps == 2
    assert sorted(settings.space) == ["federated.lr", "model.global_rank"]
    with pytest.raises(ConfigError, match="tune.space.model.nope"):
        Tuner(Config(), TuneSettings(space={"model.nope": dimension("model.nope", {
            "choices": [1]})}, trials=1), tmp_path / "t")
    with pytest.raises(ConfigError, match="federated.local_epochs"):
        Tuner(Config(), TuneSettings(space={"federated.local_epochs": dimension(
            "federated.local_epochs", {"low": -1, "high": 2})}, trials=1), tmp_path / "t")
    with pytest.raises(ConfigError, match="trials"):
        read_settings(None, [], None)


def test_cli_tune_registered(capsys):
    from ffm_private.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["tune", "--help"])
    assert "validation" in capsys.readouterr().out
