"""The first run: private by default, audited at the end, readable in a terminal and a log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ffm_private import config as C
from ffm_private.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _tiny(tiny_data_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    """The built-in first run, shrunk to the tiny dataset (80 users, 64 of them protected)."""
    sets = [f"data.path={tiny_data_dir}", "data.protocol=pfedrec",  # see tests/conftest.py
            "model.dim=16", "model.history_length=8", "pretrain.epochs=1",
            "federated.rounds=2", "evaluation.full_ranking=false", *extra]
    argv = ["--run-dir", str(run_dir)]
    for s in sets:
        argv += ["--set", s]
    return argv


def test_the_default_config_is_private_and_plaintext_is_opt_out():
    cfg = C.quickstart()
    privacy = cfg.privacy
    assert privacy["mode"] == "user" and privacy["noise_placement"] == "distributed"
    assert privacy["target_epsilon"] > 0 and cfg.protocol.name == "secagg"
    assert cfg.observation.enabled and cfg.observation.audit
    plain = C.plaintext()
    assert plain.privacy == {} and plain.protocol.name == "plaintext"
    # the comparison run differs only in its protection and its directory
    assert plain.replace(run_dir=cfg.run_dir, privacy=cfg.privacy,
                         protocol={"name": "secagg", "options": {}}) == cfg
    # the library's own default stays neutral (plaintext), as every caller of Config() expects
    assert C.Config().privacy == {} and C.Config().protocol.name == "plaintext"


@pytest.mark.slow
def test_default_train_runs_dp_over_secagg_and_states_the_guarantee(tiny_data_dir, tmp_path,
                                                                   capsys):
    run = tmp_path / "run"
    argv = ["train", "-q", *_tiny(tiny_data_dir, run, "privacy.min_survivors=20")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    saved = C.load(run / "config.toml")
    assert saved.privacy["mode"] == "user" and saved.protocol.name == "secagg"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["protocol"].lower().startswith("secagg")
    assert "User-level differential privacy against the server" in summary["privacy"]
    plan = json.loads((run / "privacy" / "plan.json").read_text())
    assert f"epsilon = {plan['epsilon']:.3f}" in out  # the guarantee, in words, with its figure
    # the short audit ran on the observation log, wrote its report where `audit` would, and
    # printed one verdict line per attack and view it ran
    report = json.loads((run / "audit" / "audit.json").read_text())
    assert {r["attack"] for r in report["results"]} == {"A1", "A3", "A4", "A6"}
    for r in report["results"]:
        assert f"{r['attack']} " in out and f"({r['view']}): {r['verdict']['level']}:" in out
    assert not report["failed"]
    # under SecAgg+ the server never held an individual update: its view holds only the sum
    assert report["observation"]["reveals_individual"] is False
    # `audit --json` prints the report as JSON only
    assert main(["audit", "--run", str(run), "--attacks", "a1", "--bootstrap", "10",
                 "--json", "--out", str(tmp_path / "a1")]) == 0
    a1 = json.loads(capsys.readouterr().out)
    assert [r["attack"] for r in a1["results"]] == ["A1", "A1"]


def test_no_privacy_is_the_plaintext_run_and_json_parses(tiny_data_dir, tmp_path, capsys):
    run = tmp_path / "plain"
    assert main(["train", "--no-privacy", "--no-audit", "--json",
                 *_tiny(tiny_data_dir, run)]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)  # stdout holds the JSON and nothing else
    assert data["audit"] is None and data["summary"]["rounds"] == 2
    assert "no formal guarantee" in data["summary"]["privacy"]
    saved = C.load(run / "config.toml")
    assert saved.privacy == {} and saved.protocol.name == "plaintext"
    assert not (run / "privacy" / "plan.json").exists()
    assert captured.err.count("round ") == 2  # the round lines went to stderr


@pytest.mark.slow
def test_a_redirected_log_holds_no_progress_frames_and_one_line_per_round(tiny_data_dir,
                                                                          tmp_path):
    run = tmp_path / "run"
    out, err = tmp_path / "out.log", tmp_path / "err.log"
    cmd = [sys.executable, "-m", "ffm_private.cli", "train",
           *_tiny(tiny_data_dir, run, "privacy.min_survivors=20")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(out, "w") as fo, open(err, "w") as fe:
        subprocess.run(cmd, stdout=fo, stderr=fe, env=env, check=True, timeout=1800)
    log = out.read_text() + err.read_text()
    assert "\r" not in log and "it/s" not in log and "█" not in log  # no tqdm frame
    round_lines = [ln for ln in log.splitlines() if ln.startswith("round ")]
    assert [ln.split()[1] for ln in round_lines] == ["1/2", "2/2"]
    assert "Run summary" in log and "Leakage audit" in log


@pytest.mark.parametrize("flag", ["--quiet", "--json"])
def test_quiet_and_json_print_no_round_lines_on_stdout(tiny_data_dir, tmp_path, capsys, flag):
    run = tmp_path / "run"
    assert main(["train", flag, "--no-privacy", "--no-audit", *_tiny(tiny_data_dir, run)]) == 0
    captured = capsys.readouterr()
    assert "round   1/2" not in captured.out
    if flag == "--quiet":
        assert captured.err == "" and "Run summary" in captured.out
    else:
        json.loads(captured.out)
