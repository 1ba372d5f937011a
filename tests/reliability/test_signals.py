"""SIGTERM and Ctrl-C (SIGINT) stop a training run promptly with exit status 130 and a one-line
hint; the run then resumes to the uninterrupted run's result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ffm_private.config import to_toml
from ffm_private.simulation import run_training
from tests.run_records import assert_same_run

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")]

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _rounds_done(run: Path) -> int:
    metrics = run / "metrics.jsonl"
    return len(metrics.read_text().splitlines()) if metrics.exists() else 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_run_exits_130_promptly_and_the_run_resumes(fast_config, tmp_path,
                                                                  signum):
    cfg = fast_config.replace(**{"federated.rounds": 4})
    reference = cfg.replace(run_dir=str(tmp_path / "reference"))
    run_training(reference, progress=False)
    config_file = tmp_path / "run.toml"
    config_file.write_text(to_toml(cfg))
    run = Path(cfg.run_dir)
    cmd = [sys.executable, "-m", "ffm_private.cli", "train", "-q", "--config", str(config_file)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        while proc.poll() is None and _rounds_done(run) < 1:
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be signalled"
        proc.send_signal(signum)
        start = time.perf_counter()
        _, err = proc.communicate(timeout=120)
        stopped_after = time.perf_counter() - start
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines() == ["interrupted: resume with --resume"], err
    assert stopped_after < 60  # at most the rest of one client's step on a loaded machine
    assert not (run / "summary.json").exists()
    resumed = subprocess.run([*cmd, "--resume"], cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(Path(reference.run_dir), run)
