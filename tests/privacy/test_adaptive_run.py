"""Adaptive clipping in a run: the clip moves, is checkpointed, and a resumed run matches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ffm_private.simulation import Simulation, run_training
from tests.run_records import assert_same_run, ledger_spends

ADAPTIVE = {"mode": "user", "target_epsilon": 4.0, "clipping_norm": 5.0, "noise_seed": 4,
            "accountant": "rdp", "expected_clients_per_round": 40.0,
            "adaptive_clipping": True, "clip_count_noise": 2.5, "clip_learning_rate": 0.5}


def _cfg(tiny_config, run_dir=None):
    cfg = tiny_config.replace(**{"federated.rounds": 3, "federated.client_fraction": 0.5,
                                 "privacy": ADAPTIVE})
    return cfg if run_dir is None else cfg.replace(run_dir=str(run_dir))


def _clip(run: Path) -> float:
    latest = (run / "checkpoints" / "LATEST").read_text().strip()
    return json.loads((run / "checkpoints" / latest / "state.json").read_text())[
        "mechanism_state"]["clip"]


def test_adaptive_clip_moves_and_the_statement_says_so(tiny_config):
    cfg = _cfg(tiny_config)
    summary = run_training(cfg, progress=False)
    # an initial clip of 5 is far above the tiny model's update norms: it shrinks
    assert _clip(Path(cfg.run_dir)) < 5.0
    assert "The clipping norm is adaptive" in summary["privacy"]
    assert "adaptive clip" in summary["privacy_details"]["mechanism"]


def test_resumed_adaptive_run_matches_an_uninterrupted_one(tiny_config, tmp_path, monkeypatch):
    reference = _cfg(tiny_config, tmp_path / "reference")
    run_training(reference, progress=False)
    cfg = _cfg(tiny_config, tmp_path / "run")
    original = Simulation.run_round

    def crash(self, state, round_id):
        if round_id == 3:
            raise KeyboardInterrupt
        return original(self, state, round_id)

    monkeypatch.setattr(Simulation, "run_round", crash)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, progress=False)
    monkeypatch.undo()
    run_training(cfg, resume=True, progress=False)
    run, ref = Path(cfg.run_dir), Path(reference.run_dir)
    assert _clip(run) == _clip(ref)
    assert ledger_spends(run) == ledger_spends(ref)
    assert_same_run(run, ref)
