"""The federated loop end to end: run directory, resume, and that learning happens."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ffm_private.config import Config, to_toml
from ffm_private.data import SyntheticConfig, generate_synthetic
from ffm_private.simulation import RunDirectoryError, Simulation, run_training
from ffm_private.storage import load_arrays
from tests.run_records import assert_same_run, round_metrics


def test_run_directory_layout(tiny_config):
    summary = run_training(tiny_config, progress=False)
    run = Path(tiny_config.run_dir)
    for name in ("config.toml", "metrics.jsonl", "summary.json", "summary.md",
                 "checkpoints/backbone.npz", "checkpoints/LATEST"):
        assert (run / name).exists(), name
    rows = round_metrics(run)
    assert [r["round"] for r in rows] == [1, 2, 3]
    assert all("valid_hr@10" in r and "test_ndcg@10" in r for r in rows)
    assert summary["selected_round"] in (1, 2, 3)
    assert "No differential privacy" in summary["privacy"]
    ckpt = run / "checkpoints" / "round-0003"
    assert (ckpt / "global.npz").exists() and (ckpt / "personal.npz").exists()
    personal = load_arrays(ckpt / "personal.npz")
    assert all(v.shape[0] == summary["dataset"]["users"] for v in personal.values())


def test_existing_run_is_not_overwritten_silently(tiny_config):
    run_training(tiny_config, progress=False)
    with pytest.raises(RunDirectoryError, match="--resume"):
        Simulation(tiny_config, progress=False)
    changed = tiny_config.replace(**{"federated.lr": 0.5})
    with pytest.raises(RunDirectoryError, match="differs"):
        Simulation(changed, resume=True, progress=False)


def test_resume_after_an_exception_mid_round_equals_uninterrupted(tiny_config, tmp_path,
                                                                  monkeypatch):
    reference = tiny_config.replace(run_dir=str(tmp_path / "reference"))
    run_training(reference, progress=False)

    original = Simulation.run_round

    def crash_in_round_3(self, state, round_id):
        if round_id == 3:
            raise KeyboardInterrupt
        return original(self, state, round_id)

    monkeypatch.setattr(Simulation, "run_round", crash_in_round_3)
    with pytest.raises(KeyboardInterrupt):
        run_training(tiny_config, progress=False)
    monkeypatch.setattr(Simulation, "run_round", original)
    assert len(round_metrics(Path(tiny_config.run_dir))) == 2
    run_training(tiny_config, resume=True, progress=False)
    assert_same_run(Path(reference.run_dir), Path(tiny_config.run_dir))


@pytest.mark.slow
def test_resume_after_sigkill_equals_uninterrupted(tiny_config, tmp_path):
    """Kill the training process at several moments (mid-round, mid-checkpoint)."""
    cfg = tiny_config.replace(**{"federated.rounds": 6, "pretrain.epochs": 1})
    reference = cfg.replace(run_dir=str(tmp_path / "reference"))
    run_training(reference, progress=False)
    config_file = tmp_path / "run.toml"
    config_file.write_text(to_toml(cfg))
    cmd = [sys.executable, "-m", "ffm_private.cli", "train", "--config", str(config_file), "-q"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    run = Path(cfg.run_dir)
    for kill_after in (2.5, 1.3, 0.7):
        proc = subprocess.Popen(cmd + (["--resume"] if (run / "config.toml").exists() else []),
                                env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(kill_after)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # (on a loaded machine a kill may land before the run directory exists: then start it)
    subprocess.run(cmd + (["--resume"] if (run / "config.toml").exists() else []), env=env,
                   check=True, stdout=subprocess.DEVNULL)
    assert_same_run(Path(reference.run_dir), run)


@pytest.fixture(scope="module")
def small_data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("small-data")
    generate_synthetic(path, SyntheticConfig.small())
    return path


def test_training_beats_popularity_and_personalization_beats_global_only(small_data_dir,
                                                                        tmp_path):
    base = Config(run_dir=str(tmp_path / "personal")).replace(**{
        "data.path": str(small_data_dir), "federated.rounds": 8,
        "evaluation.full_ranking": False})
    personal = run_training(base, progress=False)
    global_only = run_training(base.replace(**{"run_dir": str(tmp_path / "global"),
                                               "model.personalization": False}), progress=False)
    pop = personal["popularity_baseline"]["test_hr@10"]
    hr_personal = personal["selected_metrics"]["test_hr@10"]
    hr_global = global_only["selected_metrics"]["test_hr@10"]
    assert hr_personal > pop + 0.10, (hr_personal, pop)
    assert hr_personal > hr_global + 0.03, (hr_personal, hr_global)
