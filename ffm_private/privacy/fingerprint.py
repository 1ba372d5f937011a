"""Fingerprints of a run's privacy state, recorded in each checkpoint and checked on resume.

Why: the ledger (who spent how much) and the observation log (what was released) are not
re-derivable from the model. A checkpoint records how many spends the ledger held up to its
round with a digest of them, and the name, size and SHA-256 of each observation file it
covers; ``--resume`` refuses when the files on disk no longer match, instead of starting an
empty ledger (forgetting spent budget) or auditing a log with holes.

Rows for rounds *after* the checkpoint are legitimate (a charge is committed before the
update is released, so a crash mid-round leaves them) and are not part of the fingerprint.
The ledger is read from a snapshot (the database and its write-ahead log copied to a temporary
directory): opening a WAL database in place, even read-only, creates its ``-shm`` and ``-wal``
files, and a reader never writes into the run it reads. This module never writes privacy state.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from ffm_private.errors import PrivacyStateError
from ffm_private.storage import sha256_file

LEDGER_FILE = "ledger.sqlite"
_ROW_SQL = ("SELECT round, user, epsilon_after, events, digest FROM spends WHERE round <= ? "
            "ORDER BY round, user")


def ledger_fingerprint(path: str | Path, round_id: int) -> dict[str, Any]:
    """Spend-row count and SHA-256 over the rows with ``round <= round_id`` (ordered)."""
    path = Path(path)
    if not path.is_file():
        raise PrivacyStateError(f"{path}: the privacy ledger is missing")
    try:
        with tempfile.TemporaryDirectory(prefix="ffm-private-ledger-") as tmp:
            copy = Path(tmp) / path.name
            for suffix in ("", "-wal"):  # committed spends may still be in the log
                source = path.with_name(path.name + suffix)
                if source.is_file():
                    shutil.copyfile(source, copy.with_name(copy.name + suffix))
            db = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
            try:
                rows = db.execute(_ROW_SQL, (int(round_id),)).fetchall()
            finally:
                db.close()
    except sqlite3.Error as err:
        raise PrivacyStateError(f"{path}: the privacy ledger is unreadable ({err})") from None
    h = hashlib.sha256()
    for row in rows:
        h.update(repr(tuple(row)).encode())
        h.update(b"\n")
    return {"rows": len(rows), "sha256": h.hexdigest()}


def observation_fingerprint(directory: str | Path, round_id: int) -> list[dict[str, Any]]:
    """Name, size and SHA-256 of every ``round-NNNN.npz`` with ``NNNN <= round_id``."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    out = []
    for path in sorted(directory.glob("round-*.npz")):
        try:
            number = int(path.stem.split("-")[1])
        except (IndexError, ValueError):
            continue
        if number <= round_id:
            out.append({"name": path.name, "size": path.stat().st_size,
                        "sha256": sha256_file(path)})
    return out


def check_ledger(path: str | Path, round_id: int, recorded: dict[str, Any]) -> None:
    """Refuse a ledger that lost or changed spends the checkpoint recorded."""
    path = Path(path)
    if not path.is_file():
        raise PrivacyStateError(
            f"{path} is missing: the checkpoint after round {round_id} records "
            f"{recorded['rows']} spend(s) in it; resuming would forget every user's spent "
            "budget. Restore the file or start a new run directory")
    actual = ledger_fingerprint(path, round_id)
    if actual["rows"] != recorded["rows"]:
        raise PrivacyStateError(
            f"{path} holds {actual['rows']} spend(s) up to round {round_id}, the checkpoint "
            f"records {recorded['rows']}: {abs(recorded['rows'] - actual['rows'])} spend(s) "
            f"{'missing' if actual['rows'] < recorded['rows'] else 'unexpected'}")
    if actual["sha256"] != recorded["sha256"]:
        raise PrivacyStateError(f"{path}: the spends up to round {round_id} differ from what "
                                "the checkpoint recorded (rows were altered)")


def check_observations(directory: str | Path, round_id: int,
                       recorded: list[dict[str, Any]]) -> None:
    """Refuse an observation log whose covered files are missing or changed."""
    directory = Path(directory)
    for entry in recorded:
        path = directory / entry["name"]
        if not path.is_file():
            raise PrivacyStateError(f"{path} is missing: the checkpoint after round {round_id} "
                                    "covers it; the observation log would have a hole")
        size = path.stat().st_size
        if size != entry["size"]:
            raise PrivacyStateError(f"{path} has {size} bytes, the checkpoint recorded "
                                    f"{entry['size']}: the file was truncated or altered")
        if sha256_file(path) != entry["sha256"]:
            raise PrivacyStateError(f"{path}: content differs from the checksum the checkpoint "
                                    "recorded")


__all__ = ["check_ledger", "check_observations", "ledger_fingerprint",
           "observation_fingerprint"]
