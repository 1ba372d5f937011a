"""A DP training process killed with SIGKILL mid-run resumes to the uninterrupted run's
ledger, sample and model, in every privacy mode.

The kill lands wherever the process happens to be once a round-3 charge is committed (between
a charge and its round's checkpoint, or later; in participation modes mid-round): any point
must do.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ffm_private.config import to_toml
from ffm_private.simulation import run_training
from tests.run_records import assert_same_run, ledger_spends

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")

ROOT = Path(__file__).resolve().parents[2]
PRIVACY = {"mode": "user", "target_epsilon": 4.0, "clipping_norm": 0.5, "noise_seed": 3,
           "expected_clients_per_round": 40.0}
MODES = {
    "user-central": ({}, PRIVACY),
    "user-distributed-secagg": (
        {"protocol.name": "secagg", "protocol.options": {"clip": 4.0}},
        {"mode": "user", "target_epsilon": 4.0, "clipping_norm": 0.5, "noise_seed": 3,
         "noise_placement": "distributed", "min_survivors": 10}),
    "example": ({"federated.batch_size": 16},
                {"mode": "example", "target_epsilon": 8.0, "clipping_norm": 0.1,
                 "noise_seed": 5}),
}


def _latest_charged_round(ledger: Path) -> int:
    if not ledger.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=0.1)
        try:
            return con.execute("SELECT COALESCE(MAX(round), 0) FROM spends").fetchone()[0]
        finally:
            con.close()
    except sqlite3.OperationalError:  # not created yet, or the writer holds a lock
        return 0


@pytest.mark.parametrize("mode", [
    "user-central",
    pytest.param("user-distributed-secagg", marks=pytest.mark.slow),
    pytest.param("example", marks=pytest.mark.slow)])
def test_sigkill_mid_run_then_resume_matches_an_uninterrupted_run(tiny_config, tmp_path, mode):
    extra, privacy = MODES[mode]
    cfg = tiny_config.replace(**{"federated.rounds": 5, "federated.client_fraction": 0.5,
                                 "privacy": privacy, **extra})
    reference = cfg.replace(run_dir=str(tmp_path / "reference"))
    run_training(reference, progress=False)

    config_file = tmp_path / "run.toml"
    config_file.write_text(to_toml(cfg))
    run = Path(cfg.run_dir)
    proc = subprocess.Popen([sys.executable, "-m", "ffm_private.cli", "train", "--config",
                             str(config_file)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        while proc.poll() is None and _latest_charged_round(run / "privacy" /
                                                            "ledger.sqlite") < 3:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (run / "summary.json").exists()

    run_training(cfg, resume=True, progress=False)
    ref = Path(reference.run_dir)
    assert ledger_spends(run) == ledger_spends(ref)
    assert_same_run(run, ref)

