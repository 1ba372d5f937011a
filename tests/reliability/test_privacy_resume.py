"""Resume never recreates privacy state: a lost or shortened ledger, a lost noise key, or a
missing or altered observation file is refused by name; legitimate rows after the
checkpoint's round (charges committed before a crash) are accepted."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from ffm_private.errors import PrivacyStateError
from ffm_private.privacy.fingerprint import ledger_fingerprint, observation_fingerprint
from ffm_private.privacy.run import RunPrivacy
from ffm_private.simulation import run_training
from tests.reliability._runs import copy_run, corrupt
from tests.run_records import ledger_spends

PRIVACY = {"mode": "user", "target_epsilon": 4.0, "clipping_norm": 0.5,
           "expected_clients_per_round": 40.0}


@pytest.fixture(scope="module")
def dp_crashed(tmp_path_factory, tiny_data_dir):
    """A user-level DP run (secret noise key) killed mid-round 3, after some round-3 charges."""
    from ffm_private.config import Config

    base = tmp_path_factory.mktemp("dp-resume")
    cfg = Config(run_dir=str(base / "crashed")).replace(**{
        "data.path": str(tiny_data_dir), "data.protocol": "pfedrec",  # 150 items: see conftest
        "model.dim": 8, "model.history_length": 8,
        "pretrain.epochs": 1, "federated.rounds": 3, "federated.client_fraction": 0.5,
        "evaluation.full_ranking": False, "privacy": PRIVACY})
    mp = pytest.MonkeyPatch()
    original, calls = RunPrivacy.release, []

    def release(self, round_id, client, *args, **kwargs):
        out = original(self, round_id, client, *args, **kwargs)
        if round_id == 3:
            calls.append(client)
            if len(calls) == 3:
                raise KeyboardInterrupt  # after three charges of round 3 were committed
        return out

    mp.setattr(RunPrivacy, "release", release)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, progress=False)
    mp.undo()
    return cfg, base / "crashed"


def _copy(dp_crashed, tmp_path, name):
    cfg, crashed = dp_crashed
    run = copy_run(crashed, tmp_path / name)
    return cfg.replace(run_dir=str(run)), run


def test_fingerprint_counts_only_rows_up_to_the_round(dp_crashed):
    _, run = dp_crashed
    ledger = run / "privacy" / "ledger.sqlite"
    rounds = [r for _, r, *_ in ledger_spends(run)]
    assert rounds.count(3) > 0  # the crash left round-3 charges past the checkpoint
    assert ledger_fingerprint(ledger, 2)["rows"] == sum(r <= 2 for r in rounds)
    assert [e["name"] for e in observation_fingerprint(run / "observations", 2)] == [
        "round-0001.npz", "round-0002.npz"]


def test_resume_with_intact_state_and_rows_after_the_checkpoint_goes_on(dp_crashed, tmp_path):
    cfg, run = _copy(dp_crashed, tmp_path, "intact")
    before = [row for row in ledger_spends(run) if row[1] <= 2]
    run_training(cfg, resume=True, progress=False)
    after = ledger_spends(run)
    assert [row for row in after if row[1] <= 2] == before  # nothing lost, nothing doubled
    assert {r for _, r, *_ in after} == {1, 2, 3}


def test_a_deleted_ledger_is_refused_not_replaced_by_an_empty_one(dp_crashed, tmp_path):
    cfg, run = _copy(dp_crashed, tmp_path, "no-ledger")
    for suffix in ("", "-wal", "-shm"):
        (run / "privacy" / f"ledger.sqlite{suffix}").unlink(missing_ok=True)
    with pytest.raises(PrivacyStateError, match="ledger.sqlite is missing") as err:
        run_training(cfg, resume=True, progress=False)
    assert "spend(s)" in str(err.value)
    assert not (run / "privacy" / "ledger.sqlite").exists()  # not silently recreated


def test_a_ledger_missing_one_rounds_rows_is_refused(dp_crashed, tmp_path):
    cfg, run = _copy(dp_crashed, tmp_path, "short-ledger")
    con = sqlite3.connect(run / "privacy" / "ledger.sqlite")
    with con:
        lost = con.execute("DELETE FROM spends WHERE round = 1").rowcount
    con.close()
    assert lost > 0
    with pytest.raises(PrivacyStateError, match=f"{lost} spend\\(s\\) missing"):
        run_training(cfg, resume=True, progress=False)


def test_an_altered_ledger_row_is_refused(dp_crashed, tmp_path):
    cfg, run = _copy(dp_crashed, tmp_path, "altered-ledger")
    con = sqlite3.connect(run / "privacy" / "ledger.sqlite")
    with con:
        con.execute("UPDATE spends SET epsilon_after = 0 WHERE round = 2")
    con.close()
    with pytest.raises(PrivacyStateError, match="altered"):
        run_training(cfg, resume=True, progress=False)


@pytest.mark.parametrize("party", ["server", "client"])
def test_a_deleted_secret_is_refused_not_regenerated(dp_crashed, tmp_path, party):
    cfg, run = _copy(dp_crashed, tmp_path, f"no-key-{party}")
    # a client whose secret the last checkpoint recorded (one that took part by then)
    latest = (run / "checkpoints" / "LATEST").read_text().strip()
    state = json.loads((run / "checkpoints" / latest / "state.json").read_text())
    client = sorted(int(p) for p in state["privacy"]["secrets"] if p != "server")[0]
    key = run / ("server" if party == "server" else f"clients/{client}") / "secret.key"
    assert key.exists()
    key.unlink()
    with pytest.raises(PrivacyStateError, match="secret.key is missing"):
        run_training(cfg, resume=True, progress=False)
    assert not key.exists()


@pytest.mark.parametrize("name, how", [("round-0002.npz", "truncate"),
                                       ("round-0001.npz", "delete"),
                                       ("round-0001.npz", "flip")])
def test_a_missing_or_altered_observation_file_is_refused(dp_crashed, tmp_path, name, how):
    cfg, run = _copy(dp_crashed, tmp_path, f"obs-{how}")
    corrupt(run / "observations" / name, how)
    with pytest.raises(PrivacyStateError, match=name):
        run_training(cfg, resume=True, progress=False)
    assert how != "delete" or not (run / "observations" / name).exists()
    assert Path(run / "privacy" / "ledger.sqlite").exists()
