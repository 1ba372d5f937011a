"""What a run directory recorded (metrics, DP ledger), read back to compare runs."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path


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
