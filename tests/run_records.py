"""What a run directory recorded (metrics, DP ledger), read back to compare runs."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np

from ffm_private.storage import load_arrays


def round_metrics(run: Path) -> list[dict]:
    """``metrics.jsonl`` without the wall-clock field, which differs between equal runs."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("seconds")
    return rows


def ledger_spends(run: Path) -> list[tuple]:
    """Every charge in the run's ledger: (user, round, epsilon_after, events), sorted."""
    con = sqlite3.connect(run / "privacy" / "ledger.sqlite")
    try:
        return con.execute("SELECT user, round, epsilon_after, events FROM spends "
                           "ORDER BY user, round").fetchall()
    finally:
        con.close()


def final_state(run: Path) -> tuple[dict, dict]:
    """The latest checkpoint's global and personal arrays."""
    ckpt = run / "checkpoints" / (run / "checkpoints" / "LATEST").read_text().strip()
    return load_arrays(ckpt / "global.npz"), load_arrays(ckpt / "personal.npz")


def assert_same_run(a: Path, b: Path) -> None:
    """Two runs recorded the same metrics and ended in the same global and personal state."""
    assert round_metrics(a) == round_metrics(b)
    for x, y in zip(final_state(a), final_state(b), strict=True):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)
