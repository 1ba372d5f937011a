"""Helpers: crash a run at a chosen point, copy and damage run directories."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ffm_private.simulation import Simulation, run_training


def crash_in_round(cfg, round_id: int, monkeypatch) -> None:
    """Run ``cfg`` until ``round_id`` starts, as if interrupted there."""
    original = Simulation.run_round

    def crash(self, state, r):
        if r == round_id:
            raise KeyboardInterrupt
        return original(self, state, r)

    monkeypatch.setattr(Simulation, "run_round", crash)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, progress=False)
    monkeypatch.setattr(Simulation, "run_round", original)


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".ffm-private.lock"))
    return dst


def corrupt(path: Path, how: str) -> None:
    """truncate (half), flip (one byte in the middle), empty, delete."""
    if how == "delete":
        path.unlink()
        return
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "flip":
        k = len(data) // 2
        path.write_bytes(data[:k] + bytes([data[k] ^ 0xFF]) + data[k + 1:])
    else:
        raise ValueError(how)
