"""Evaluating and auditing a finished run leave its directory byte-identical."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from ffm_private.cli import main
from ffm_private.errors import RunDirectoryError, RunLockedError
from ffm_private.run_view import RunView
from ffm_private.rundir import LOCK, RunDir


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file and directory under ``root``: content hash and modification time (ns)."""
    out: dict[str, tuple[str, int]] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        out[rel] = (digest, st.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def dp_run(tmp_path_factory):
    """A finished user-level DP run (central noise, FedMF) on its own generated data."""
    from ffm_private.config import Config
    from ffm_private.data import SyntheticConfig, generate_synthetic
    from ffm_private.simulation import run_training

    root = tmp_path_factory.mktemp("view")
    data = root / "data"
    generate_synthetic(data, SyntheticConfig(n_users=80, n_items=150, n_interactions=4000,
                                             min_per_user=20, seed=0))
    cfg = Config(run_dir=str(root / "run")).replace(**{
        "data.path": str(data), "data.protocol": "pfedrec", "data.public_fraction": 0.3,
        "model.kind": "fedmf", "model.dim": 8, "pretrain.epochs": 0,
        "federated.rounds": 2, "evaluation.full_ranking": False,
        "observation.rounds": [1, 2], "observation.max_clients": 1000,
        "privacy.mode": "user", "privacy.target_epsilon": 4.0, "privacy.delta": 1e-4,
        "privacy.clipping_norm": 0.5, "privacy.expected_clients_per_round": 10.0})
    run_training(cfg, progress=False)
    return Path(cfg.run_dir)


def test_evaluate_and_audit_leave_the_run_byte_identical(dp_run, tmp_path, capsys):
    before = snapshot(dp_run)
    assert (dp_run / "privacy" / "plan.json").name in {Path(k).name for k in before}
    assert main(["evaluate", "--run", str(dp_run)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["round"] == 2
    assert snapshot(dp_run) == before
    code = main(["audit", "--run", str(dp_run), "--out", str(tmp_path / "audit"), "-q",
                 "--attacks", "a1", "a2", "a6", "--views", "server", "--bootstrap", "5",
                 "--a2-users", "3", "--a2-pool", "4", "--shadows", "2", "--canaries", "100",
                 "--a6-rounds", "1", "--format", "md"])
    assert code == 0, capsys.readouterr().err
    after = snapshot(dp_run)
    assert sorted(set(after) ^ set(before)) == []  # no file added or removed
    assert after == before  # same bytes, same modification times


def test_the_view_reads_the_runs_own_plan_and_checkpoint(dp_run):
    saved = json.loads((dp_run / "privacy" / "plan.json").read_text())
    with RunView.open(dp_run) as view:
        assert view.plan is not None and view.plan.to_dict() == saved
        state = view.checkpoint()
        assert state.round_id == 2
        assert view.evaluate(state) == pytest.approx(
            {k: v for k, v in state.history[-1].items() if k.startswith(("valid_", "test_"))})


def test_a_run_in_progress_is_not_read_and_an_unlocked_one_gets_no_lock_file(dp_run, tmp_path):
    held = RunDir(dp_run)
    held.lock()  # a training process holds the run
    try:
        with pytest.raises(RunLockedError):
            RunView.open(dp_run)
    finally:
        held.unlock()
    bare = tmp_path / "copy"
    bare.mkdir()
    for name in ("config.toml",):
        (bare / name).write_bytes((dp_run / name).read_bytes())
    with RunView.open(bare) as view:
        assert view.checkpoint() is None
    assert not (bare / LOCK).exists() and sorted(os.listdir(bare)) == ["config.toml"]


def test_a_directory_without_a_run_is_refused_by_name(tmp_path):
    with pytest.raises(RunDirectoryError, match=str(tmp_path)):
        RunView.open(tmp_path)
