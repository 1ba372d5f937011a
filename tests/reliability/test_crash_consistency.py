"""SIGKILL at chosen moments (data generation, pretraining, mid-round, checkpoint write,
ledger commit, summary), then ``--resume``: the final model, personal state, metrics, ledger
rows and observation log equal an uninterrupted run's.

CI runs a bounded sample; ``FFM_PRIVATE_CRASH_TRIALS=full`` runs every trial (see
docs/reliability.md for the command and the figures).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ffm_private.config import Config, to_toml
from ffm_private.rundir import MARKER
from ffm_private.simulation import run_training
from ffm_private.storage import load_arrays
from tests.reliability._runs import assert_same_run
from tests.run_records import ledger_spends

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")]

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
PRIVACY = {"mode": "user", "target_epsilon": 4.0, "clipping_norm": 0.5, "noise_seed": 3,
           "expected_clients_per_round": 40.0}

#: (kind, point, n): the process kills itself at the n-th occurrence of point. Kinds:
#: plain and dp (user-level DP, central noise) train on the tiny dataset; gen generates its
#: synthetic data into the run directory (the kill lands mid-generation).
SAMPLE = [("gen", "data", 2), ("plain", "write", 6), ("plain", "client", 40),
          ("dp", "charge", 2), ("dp", "write", 10)]
FULL = SAMPLE + [
    ("gen", "data", 1), ("gen", "data", 3), ("gen", "write", 2),
    ("plain", "write", 1), ("plain", "write", 2), ("plain", "write", 3), ("plain", "write", 4),
    ("plain", "write", 8), ("plain", "write", 10), ("plain", "write", 12),
    ("plain", "write", 14), ("plain", "write", 16), ("plain", "client", 1),
    ("plain", "client", 60), ("dp", "write", 3), ("dp", "write", 6), ("dp", "write", 12),
    ("dp", "write", 15), ("dp", "charge", 1), ("dp", "charge", 3), ("dp", "client", 20),
    ("dp", "client", 50),
]
TRIALS = FULL if os.environ.get("FFM_PRIVATE_CRASH_TRIALS") == "full" else SAMPLE


def _config(kind: str, run: Path, data: Path) -> Config:
    cfg = Config(run_dir=str(run)).replace(**{
        "model.dim": 8, "model.history_length": 8, "pretrain.epochs": 1,
        "federated.rounds": 3, "federated.client_fraction": 0.3,
        "evaluation.full_ranking": False})
    if kind == "gen":  # the small preset, generated into <run>/data
        return cfg.replace(**{"federated.rounds": 2, "federated.client_fraction": 0.1,
                              "observation.enabled": False})
    cfg = cfg.replace(**{"data.path": str(data), "data.protocol": "pfedrec"})  # see conftest
    return cfg.replace(privacy=PRIVACY) if kind == "dp" else cfg


@pytest.fixture(scope="module")
def references(tmp_path_factory, tiny_data_dir):
    base = tmp_path_factory.mktemp("crash-ref")
    cache: dict[str, Path] = {}

    def get(kind: str) -> Path:  # built on first use: a sample needs only its kinds
        if kind not in cache:
            cfg = _config(kind, base / kind, tiny_data_dir)
            run_training(cfg, progress=False)
            cache[kind] = Path(cfg.run_dir)
        return cache[kind]

    return get


def _observations(run: Path) -> dict[str, dict[str, np.ndarray]]:
    return {p.name: load_arrays(p) for p in sorted((run / "observations").glob("*.npz"))}


def _assert_equal_runs(reference: Path, run: Path, kind: str) -> None:
    assert_same_run(reference, run)
    if kind == "dp":
        assert ledger_spends(reference) == ledger_spends(run)
    a, b = _observations(reference), _observations(run)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].keys() == b[name].keys(), name
        for key in a[name]:
            np.testing.assert_array_equal(a[name][key], b[name][key], err_msg=f"{name}:{key}")


def _train(config_file: Path, run: Path, worker: list[str] | None) -> int:
    resume = ["--resume"] if (run / MARKER).exists() else []
    args = ["train", "-q", "--config", str(config_file), *resume]
    cmd = ([sys.executable, "-m", "tests.reliability._kill_worker", *worker, "--", *args]
           if worker else [sys.executable, "-m", "ffm_private.cli", *args])
    return subprocess.run(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, timeout=600).returncode


@pytest.mark.parametrize("kind, point, n", TRIALS)
def test_sigkill_then_resume_equals_an_uninterrupted_run(references, tiny_data_dir, tmp_path,
                                                         kind, point, n):
    reference = references(kind)
    run = tmp_path / "run"
    config_file = tmp_path / "run.toml"
    config_file.write_text(to_toml(_config(kind, run, tiny_data_dir)))
    rc = _train(config_file, run, [point, str(n)])
    assert rc in (-signal.SIGKILL, 0), rc  # 0: the point came too late to be reached
    for _ in range(3):  # resume from whatever state the kill left
        if _train(config_file, run, None) == 0:
            break
    else:
        pytest.fail(f"the run did not complete after a kill at {point} #{n}")
    _assert_equal_runs(reference, run, kind)
    if kind == "gen":
        for name in ("u.data", "u.user", "u.item"):
            assert (run / "data" / name).read_bytes() == (reference / "data" / name).read_bytes()
