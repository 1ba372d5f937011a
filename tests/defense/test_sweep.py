"""examples/subspace_sweep.py: points are resumable, gathered and tabulated (no training)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from ffm_private import config as config_mod

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "subspace_sweep.py"


@pytest.fixture()
def sweep_mod():
    spec = importlib.util.spec_from_file_location("subspace_sweep", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_measure(calls: list[str]):
    def measure(cfg, bootstrap):
        calls.append(Path(cfg.run_dir).name)
        Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)
        est = {"value": 0.6, "low": 0.55, "high": 0.65}
        defended = cfg.defense.kind == "subspace"
        return {"hr@10": 0.5, "ndcg@10": 0.3, "valid_hr@10": 0.5, "selected_round": 2,
                "selection": "round with the highest validation HR@10",
                "a3_macro_auc": 0.6, "a3_adaptive_macro_auc": 0.6,
                "per_attribute": {"gender": est}, "per_attribute_adaptive": {"gender": est},
                "energy_in_subspace": {"median": 0.0 if defended else 0.01, "p10": 0.0,
                                       "p90": 0.02},
                "basis_rank": {"1": cfg.defense.rank if defended else 3},
                "seconds_train": 1.0, "seconds_audit": 1.0, "privacy": {}}
    return measure


def test_a_finished_point_is_read_back_not_rerun(sweep_mod, tmp_path, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(sweep_mod, "measure", fake_measure(calls))
    base = config_mod.Config()
    privacy = {"mode": "user", "clipping_norm": 0.5, "delta": 1e-5,
               "expected_clients_per_round": 10}
    first = sweep_mod.sweep(base, [4], [2.0], privacy, ["linear", "spectral"], tmp_path, 10,
                            ("none", "subspace"))
    assert calls == ["none", "rank-4", "rank-4-spectral"]
    assert first["dp"] == [] and first["both"] == []
    again = sweep_mod.sweep(base, [4], [2.0], privacy, ["linear", "spectral"], tmp_path, 10,
                            ("none", "subspace", "dp"))
    assert calls[3:] == ["eps-2"]                      # only the new point ran
    assert again["subspace"] == first["subspace"]
    gathered = sweep_mod.collect(tmp_path)
    assert gathered["none"] == first["none"]
    assert [(p["rank"], p["estimator"]) for p in gathered["subspace"]] == [
        (4, "linear"), (4, "spectral")]
    assert [p["epsilon"] for p in gathered["dp"]] == [2.0]
    table = sweep_mod.table(gathered).splitlines()
    assert len(table) == 2 + 4 and "adaptive A3 gender" in table[0]
    assert "0.600 [0.550, 0.650]" in table[2]
    assert json.loads((tmp_path / "rank-4" / "point.json").read_text())["rank"] == 4
