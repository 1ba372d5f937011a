"""``ffm-private audit``: report files, verdicts, and a failing exit status for a broken claim."""

from __future__ import annotations

import json
import shutil

import pytest

from ffm_private import config as config_mod
from ffm_private.cli import main


@pytest.fixture(scope="module")
def claimed_run(fedmf_run, tmp_path_factory):
    """The baseline run's directory, its config stating a user-level claim (epsilon ~ 1)."""
    run = tmp_path_factory.mktemp("claimed") / "run"
    shutil.copytree(fedmf_run, run)
    cfg = config_mod.load(run / "config.toml").replace(
        run_dir=str(run), privacy={"mode": "user", "target_epsilon": 1.0, "delta": 1e-5,
                                   "clipping_norm": 1.0, "expected_clients_per_round": 10.0})
    (run / "config.toml").write_text(config_mod.to_toml(cfg))
    return run


def test_audit_writes_reports_and_passes_a_correct_mechanism(claimed_run, tmp_path, capsys):
    out = tmp_path / "audit"
    code = main(["audit", "--run", str(claimed_run), "--attacks", "a1", "a4", "a6",
                 "--out", str(out), "-q", "--bootstrap", "20"])
    assert code == 0
    report = json.loads((out / "audit.json").read_text())
    assert not report["failed"]
    levels = {(r["attack"], r["view"]): r["verdict"]["level"] for r in report["results"]}
    assert levels[("A1", "server")] == "leak"
    assert levels[("A6", "mechanism")] == "pass"
    a6 = next(r for r in report["results"] if r["attack"] == "A6")
    assert a6["metrics"]["lower_bound"] <= a6["metrics"]["claimed_epsilon_at_audit_delta"]
    for name in ("audit.md", "audit.html", "audit-roc.png", "audit-epsilon.png"):
        assert (out / name).stat().st_size > 0, name
    assert "A6 empirical epsilon audit" in (out / "audit.md").read_text()


@pytest.mark.parametrize("bug", ["noise-off", "no-clipping"])
def test_audit_fails_loudly_on_a_broken_mechanism(claimed_run, tmp_path, capsys, bug):
    out = tmp_path / "audit"
    code = main(["audit", "--run", str(claimed_run), "--attacks", "a6", "--mechanism", bug,
                 "--out", str(out), "-q"])
    assert code == 1
    assert "AUDIT FAILED" in capsys.readouterr().err
    report = json.loads((out / "audit.json").read_text())
    assert report["failed"]
    assert report["results"][0]["verdict"] == {
        "level": "FAIL", "color": "red", "text": report["results"][0]["verdict"]["text"]}


def test_audit_of_a_directory_without_a_run_is_a_usage_error(tmp_path, capsys):
    assert main(["audit", "--run", str(tmp_path), "-q"]) == 2
    assert "not a run directory" in capsys.readouterr().err
