"""The run directory: overwrite deletes only what a run created, a lock keeps one process per
run, validation happens before the claim, and resume accepts re-spelled paths."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ffm_private.cli import main
from ffm_private.config import ConfigError
from ffm_private.errors import FFMPrivateError, RunDirectoryError, RunLockedError
from ffm_private.rundir import LOCK, MARKER, RunDir
from ffm_private.simulation import Simulation, run_training
from ffm_private.storage import save_arrays

ROOT = Path(__file__).resolve().parents[2]


def _user_project(path: Path) -> dict[str, bytes]:
    """A user's own directory that happens to hold a config.toml."""
    files = {"config.toml": b"# my own notes\n", "notes.md": b"important",
             "data/ratings.csv": b"user,item\n1,2\n"}
    for name, content in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(content)
    return files


def _snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}


def test_overwrite_refuses_a_directory_the_toolkit_did_not_create(fast_config):
    run = Path(fast_config.run_dir)
    run.mkdir()
    files = _user_project(run)
    with pytest.raises(RunDirectoryError, match=MARKER):
        run_training(fast_config, overwrite=True, progress=False)
    assert _snapshot(run) == files  # the adversary (a mistyped run_dir) deleted nothing


def test_overwrite_of_a_run_keeps_the_users_own_files(fast_config):
    run = Path(fast_config.run_dir)
    run_training(fast_config, progress=False)
    (run / "my-analysis.ipynb").write_bytes(b"user work")
    (run / "plots").mkdir()
    (run / "plots" / "hr.png").write_bytes(b"png")
    first_metrics = (run / "metrics.jsonl").read_text()
    run_training(fast_config, overwrite=True, progress=False)
    assert (run / "my-analysis.ipynb").read_bytes() == b"user work"
    assert (run / "plots" / "hr.png").read_bytes() == b"png"
    assert (run / "metrics.jsonl").read_text().count("\n") == first_metrics.count("\n")


def test_overwrite_never_deletes_the_current_directory(fast_config, monkeypatch, tmp_path):
    run = Path(fast_config.run_dir)
    run_training(fast_config, progress=False)
    (run / "keep.txt").write_text("x")
    before = _snapshot(run)
    monkeypatch.chdir(run)
    for spelling in (".", "./", str(run)):
        with pytest.raises(RunDirectoryError, match="current directory"):
            run_training(fast_config.replace(run_dir=spelling), overwrite=True, progress=False)
    monkeypatch.chdir(run / "checkpoints")
    with pytest.raises(RunDirectoryError, match="current directory or one of its parents"):
        run_training(fast_config.replace(run_dir=".."), overwrite=True, progress=False)
    assert _snapshot(run) == before
    with pytest.raises(ConfigError, match="run_dir must be a non-empty path"):
        fast_config.replace(run_dir="")


def test_invalid_settings_are_refused_before_the_directory_is_claimed(fast_config, tmp_path):
    run = Path(fast_config.run_dir)
    bad_backbone = tmp_path / "backbone.npz"
    bad_backbone.write_bytes(b"PK\x03\x04 not a zip")
    for bad in ({"pretrain.checkpoint": str(bad_backbone)},
                {"pretrain.checkpoint": str(tmp_path / "missing.npz")},
                {"protocol.name": "secagg", "protocol.options.threshold": 1_000_000},
                {"data.public_fraction": 0.001}):
        with pytest.raises(ConfigError) as err:
            run_training(fast_config.replace(**bad), progress=False)
        assert list(bad)[-1] in str(err.value)
        assert not run.exists(), bad  # nothing written: the corrected rerun needs no flag
    save_arrays(bad_backbone, {"wrong": np.zeros(3)})
    with pytest.raises(ConfigError, match="pretrain.checkpoint"):
        run_training(fast_config.replace(**{"pretrain.checkpoint": str(bad_backbone)}),
                     progress=False)
    assert not run.exists()
    run_training(fast_config, progress=False)  # the corrected run: no --overwrite needed
    assert (run / MARKER).exists()


def test_resume_accepts_respelled_paths_and_names_differing_fields(fast_config, monkeypatch):
    run = Path(fast_config.run_dir)
    run_training(fast_config, progress=False)
    monkeypatch.chdir(run.parent)
    data = Path(fast_config.data.path)
    for run_dir, data_path in ((str(run) + "/", str(data) + "/"), ("./" + run.name, str(data)),
                               (run.name, os.path.relpath(data, run.parent))):
        cfg = fast_config.replace(run_dir=run_dir, **{"data.path": data_path})
        Simulation(cfg, resume=True, progress=False).close()
    changed = fast_config.replace(**{"federated.lr": 0.5, "model.dim": 4})
    with pytest.raises(RunDirectoryError) as err:
        Simulation(changed, resume=True, progress=False)
    assert "federated.lr: 0.01 in the run != 0.5 requested" in str(err.value)
    assert "model.dim" in str(err.value)


def test_resume_where_no_run_exists_is_refused(fast_config):
    with pytest.raises(RunDirectoryError, match="no run to resume"):
        run_training(fast_config, resume=True, progress=False)
    assert not Path(fast_config.run_dir).exists()
    rc = main(["train", "-q", "--resume", "--run-dir", fast_config.run_dir,
               "--set", f"data.path={fast_config.data.path}"])
    assert rc == 2


_HOLD = """
import sys, time
from ffm_private.rundir import RunDir
d = RunDir(sys.argv[1]); d.claim(); print("locked", flush=True); time.sleep(60)
"""


def test_a_second_process_on_a_locked_run_is_refused(fast_config):
    run = Path(fast_config.run_dir)
    run_training(fast_config, progress=False)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(run)], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)},
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = (run / "metrics.jsonl").read_text()
        with pytest.raises(RunLockedError, match="in use by another"):
            run_training(fast_config, resume=True, progress=False)
        with pytest.raises(RunLockedError):
            run_training(fast_config, overwrite=True, progress=False)
        rc = main(["evaluate", "--run", str(run)])
        assert rc == 2
        assert (run / "metrics.jsonl").read_text() == before  # nothing interleaved
    finally:
        holder.kill()
        holder.wait()
    run_training(fast_config, resume=True, progress=False)  # lock released with the process
    assert issubclass(RunLockedError, FFMPrivateError)


def test_lock_is_released_after_a_refused_set_up(fast_config):
    run_training(fast_config, progress=False)
    with pytest.raises(RunDirectoryError):
        Simulation(fast_config.replace(**{"federated.lr": 0.5}), resume=True, progress=False)
    d = RunDir(fast_config.run_dir)
    d.lock()  # would raise if the refused Simulation still held it
    d.unlock()
    assert (Path(fast_config.run_dir) / LOCK).exists()
