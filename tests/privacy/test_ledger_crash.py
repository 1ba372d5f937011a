"""A ledger process killed with SIGKILL never loses a committed spend nor double counts one."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("_ledger_worker.py")

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")


def _run(db: Path, *extra: str, kill_after: int | None = None, kill_inside: bool = False):
    """Run the worker; SIGKILL it after ``kill_after`` spend lines or once it hangs in a tx."""
    proc = subprocess.Popen([sys.executable, str(WORKER), str(db), *extra], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines: list[list[str]] = []
    killed = False
    for raw in proc.stdout:
        lines.append(raw.split())
        spends = sum(1 for ln in lines if ln[0] in ("OK", "REPLAY", "DECLINE"))
        if (kill_after is not None and spends >= kill_after) or (kill_inside and
                                                                 raw.startswith("INSIDE")):
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
    lines += [ln.split() for ln in proc.stdout.read().splitlines()]
    proc.wait(timeout=30)
    if killed:
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 0 and lines[-1] == ["DONE"]
    return lines


def _rows(db: Path) -> dict[tuple[str, int], tuple[float, str]]:
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT user, round, epsilon_after, events FROM spends").fetchall()
    finally:
        con.close()
    out = {(u, r): (e, ev) for u, r, e, ev in rows}
    assert len(out) == len(rows)
    return out


@pytest.fixture(scope="module")
def reference_rows(tmp_path_factory) -> dict[tuple[str, int], tuple[float, str]]:
    db = tmp_path_factory.mktemp("ledger-ref") / "ledger.db"
    lines = _run(db)
    assert any(ln[0] == "DECLINE" for ln in lines), "the sequence must exercise the caps"
    return _rows(db)


def _check_committed(lines, rows, reference_rows) -> None:
    for ln in lines:
        if ln[0] in ("OK", "REPLAY"):
            key = (ln[1], int(ln[2]))
            assert key in rows, f"committed spend {key} lost"
            assert rows[key][0] == float(ln[3])
    for key, value in rows.items():
        assert value == reference_rows[key], f"{key} differs from an uninterrupted run"


def test_repeated_kills_then_resume_match_an_uninterrupted_run(tmp_path, reference_rows):
    db = tmp_path / "ledger.db"
    seen_ok: set[tuple[str, int]] = set()
    for kill_after in (5, 17, 41):
        lines = _run(db, kill_after=kill_after)
        rows = _run_rows = _rows(db)
        _check_committed(lines, rows, reference_rows)
        new_ok = {(ln[1], int(ln[2])) for ln in lines if ln[0] == "OK"}
        assert not new_ok & seen_ok, "a spend was committed twice"
        seen_ok |= new_ok
        assert set(_run_rows) >= seen_ok
    lines = _run(db)
    replayed = {(ln[1], int(ln[2])) for ln in lines if ln[0] == "REPLAY"}
    assert replayed >= seen_ok
    assert _rows(db) == reference_rows


def test_kill_inside_a_transaction_leaves_no_partial_spend(tmp_path, reference_rows):
    db = tmp_path / "ledger.db"
    lines = _run(db, "--hang-in-tx", "9", kill_inside=True)
    inside = next(ln for ln in lines if ln[0] == "INSIDE")
    rows = _rows(db)
    _check_committed(lines, rows, reference_rows)
    assert (inside[1], int(inside[2])) not in rows, "an uncommitted spend survived"
    assert len(rows) == 8
    _run(db)
    assert _rows(db) == reference_rows
