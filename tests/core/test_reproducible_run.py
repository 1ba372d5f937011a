"""Two runs of the same config and seed produce the same run directory.

Compared byte for byte: ``metrics.jsonl`` and every checkpoint's ``state.json`` (once the
wall-clock ``seconds`` of each round are removed), ``privacy/plan.json``, the observation
manifest, every party's secret, and the summary (without ``seconds_per_round``, with the
run directory's path replaced by a placeholder). ``.npz`` files (backbone, checkpoints, observation rounds) are
compared array by array (name, dtype, shape and bytes), because the zip container stores
each member's write time; the file checksums a checkpoint records are therefore left out of
the ``state.json`` comparison. Ledger rows are compared in every column except
``recorded_at`` (the wall-clock time of the charge). What is meant to differ: ``seconds``,
``seconds_per_round``, ``recorded_at``, the zip member times, and the run directory's path
(``run_dir`` in ``config.toml`` and the summary, the ledger's path in the summary), nothing
else.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from ffm_private.config import Config
from ffm_private.simulation import run_training

TIMING = ("seconds",)


def _rows_without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def _npz(path: Path) -> dict[str, tuple[str, tuple, bytes]]:
    with np.load(path, allow_pickle=False) as f:
        return {k: (str(f[k].dtype), f[k].shape, f[k].tobytes()) for k in f.files}


def _state(path: Path) -> dict:
    meta = json.loads(path.read_text())
    meta.pop("checksum", None)
    meta.pop("files", None)  # sha256 of the .npz bytes: compared array by array instead
    meta["history"] = _rows_without_timing(meta["history"])
    return meta


def _ledger(path: Path) -> dict[str, list]:
    db = sqlite3.connect(path)
    try:
        return {"meta": db.execute("SELECT * FROM meta ORDER BY key").fetchall(),
                "caps": db.execute("SELECT * FROM caps ORDER BY user").fetchall(),
                "spends": db.execute("SELECT user, round, epsilon_after, events, digest FROM "
                                     "spends ORDER BY user, round").fetchall(),
                "declines": db.execute("SELECT * FROM declines ORDER BY user, round").fetchall()}
    finally:
        db.close()


def _content(run: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    for path in sorted(p for p in run.rglob("*") if p.is_file()):
        rel = str(path.relative_to(run))
        if path.suffix == ".npz":
            out[rel] = _npz(path)
        elif path.name == "metrics.jsonl":
            out[rel] = _rows_without_timing([json.loads(x) for x in path.read_text().splitlines()])
        elif path.name == "state.json":
            out[rel] = _state(path)
        elif path.name == "summary.json":
            summary = json.loads(path.read_text().replace(str(run), "<run>"))
            summary.pop("seconds_per_round")
            out[rel] = summary
        elif path.name == "summary.md" or path.name == "config.toml":
            out[rel] = path.read_text().replace(str(run), "<run>")
        elif path.suffix == ".sqlite":
            out[rel] = _ledger(path)
        elif path.name.startswith(".ffm-private"):  # marker text, lock (holds a process id)
            continue
        else:
            out[rel] = path.read_bytes()
    return out


@pytest.mark.slow
def test_same_config_and_seed_give_the_same_run_directory(tiny_data_dir, tmp_path):
    def run(name: str) -> Path:
        cfg = Config(run_dir=str(tmp_path / name)).replace(**{
            "data.path": str(tiny_data_dir), "data.protocol": "pfedrec",
            "model.dim": 8, "model.history_length": 4, "pretrain.epochs": 1,
            "federated.rounds": 2, "evaluation.full_ranking": False,
            "observation.rounds": [1, 2],
            # user-level DP with central noise; the test-only noise seed makes each party's
            # secret (and so the noise and the sampling) a function of the config
            "privacy.mode": "user", "privacy.noise_multiplier": 1.0, "privacy.delta": 1e-3,
            "privacy.clipping_norm": 0.5, "privacy.expected_clients_per_round": 20.0,
            "privacy.noise_seed": 7, "federated.client_fraction": 0.5})
        run_training(cfg, progress=False)
        return Path(cfg.run_dir)

    first, second = _content(run("a")), _content(run("b"))
    assert sorted(first) == sorted(second)
    assert {"metrics.jsonl", "privacy/plan.json", "privacy/ledger.sqlite",
            "observations/manifest.json", "checkpoints/backbone.npz"} <= set(first)
    different = [k for k in first if first[k] != second[k]]
    assert different == []
    assert first["privacy/ledger.sqlite"]["spends"]  # the DP run charged someone
