"""A diverged model is never scored as good, and a run whose rounds abort says so."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ffm_private.cli import main
from ffm_private.errors import DivergedError, NoRoundAppliedError
from ffm_private.evaluation import hr_ndcg, pessimistic_rank
from ffm_private.simulation import run_training


def test_non_finite_scores_rank_last():
    pos = np.array([np.nan, np.inf, -np.inf, 1.0, 1.0])
    others = np.array([[0.0, 1.0, 2.0]] * 3 + [[np.nan, np.nan, 0.0], [np.inf, np.nan, 2.0]])
    ranks = pessimistic_rank(pos, others)
    assert ranks.tolist() == [3, 3, 3, 0, 1]  # the adversarial NaN model earns nothing
    valid = np.array([[True, True, False]] * 5)
    assert pessimistic_rank(pos, others, valid).tolist() == [2, 2, 2, 0, 0]
    assert hr_ndcg(pessimistic_rank(np.full(4, np.nan), np.full((4, 99), np.nan)), 10) == (0, 0)


def test_a_diverging_run_stops_with_a_clear_error_instead_of_hr_1(fast_config, capsys):
    cfg = fast_config.replace(**{"federated.server_lr": 1e300})
    with pytest.raises(DivergedError, match="federated.server_lr") as err:
        run_training(cfg, progress=False)
    assert "non-finite" in str(err.value)
    run = Path(cfg.run_dir)
    assert not (run / "summary.json").exists()  # no HR@10 is ever reported for it
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(r.get("valid_hr@10", 0) < 1.0 for r in rows)
    rc = main(["train", "-q", "--no-privacy", "--run-dir", str(run) + "-cli", "--set",
               f"data.path={cfg.data.path}", "--set", "data.protocol=pfedrec", "--set",
               "federated.server_lr=1e300", "--set",
               "pretrain.epochs=1", "--set", "federated.rounds=2", "--set", "model.dim=8",
               "--set", "evaluation.full_ranking=false"])
    assert rc == 2 and "non-finite" in capsys.readouterr().err


def test_a_run_whose_rounds_all_abort_fails_and_says_so(fast_config, capsys):
    # ~8 of 80 clients sampled per round, 50 required: every round aborts
    cfg = fast_config.replace(**{"federated.client_fraction": 0.1,
                                 "protocol.options.min_clients": 50})
    with pytest.raises(NoRoundAppliedError, match="every one of the 2 rounds aborted"):
        run_training(cfg, progress=False)
    run = Path(cfg.run_dir)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["rounds_applied"] == 0 and summary["aborted_rounds"] == [1, 2]
    assert "aborted rounds: 2 of 2" in (run / "summary.md").read_text()
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(r["aborted"] for r in rows)
    argv = ["train", "--no-privacy", "--run-dir", str(run) + "-cli", "--set",
            f"data.path={cfg.data.path}",
            "--set", "data.protocol=pfedrec"]  # the tiny dataset: see tests/conftest.py
    for key in ("federated.client_fraction=0.1", "protocol.options.min_clients=50",
                "pretrain.epochs=1", "federated.rounds=2", "model.dim=8",
                "evaluation.full_ranking=false"):
        argv += ["--set", key]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "aborted" in err and "never trained" in err
