"""Every file of the run directory damaged (truncate, flip a byte, empty, delete): resume and
evaluate either recover exactly or refuse with a typed error naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ffm_private.cli import main
from ffm_private.errors import CheckpointError, FFMPrivateError
from ffm_private.rundir import LOCK
from ffm_private.simulation import run_training
from tests.reliability._runs import copy_run, corrupt, crash_in_round
from tests.run_records import assert_same_run

HOWS = ("truncate", "flip", "empty", "delete")
#: (file in the run directory, what must happen on resume)
FILES = {
    "checkpoints/round-0002/global.npz": "recover",   # falls back to round-0001
    "checkpoints/round-0002/personal.npz": "recover",
    "checkpoints/round-0002/state.json": "recover",
    "checkpoints/LATEST": "recover",
    "checkpoints/backbone.npz": "recover",           # pretrained again, deterministically
    "metrics.jsonl": "recover",                       # rewritten from the checkpoint
    "observations/manifest.json": "recover",          # rewritten at start
    "observations/round-0001.npz": "refuse",          # released data: never re-created
    "observations/round-0002.npz": "refuse",
    "config.toml": "refuse",
}


@pytest.fixture(scope="module")
def crashed(tmp_path_factory, tiny_data_dir):
    """A 3-round run interrupted at round 3, and the uninterrupted reference."""
    from ffm_private.config import Config

    mp = pytest.MonkeyPatch()
    base = tmp_path_factory.mktemp("corruption")
    cfg = Config(run_dir=str(base / "crashed")).replace(**{
        "data.path": str(tiny_data_dir), "data.protocol": "pfedrec",  # 150 items: see conftest
        "model.dim": 8, "model.history_length": 8,
        "pretrain.epochs": 1, "federated.rounds": 3, "evaluation.full_ranking": False})
    run_training(cfg.replace(run_dir=str(base / "reference")), progress=False)
    crash_in_round(cfg, 3, mp)
    mp.undo()
    return cfg, base


def _resume_case(crashed, tmp_path, name: str, how: str) -> str:
    """Damage one file of a copy of the crashed run, resume: 'recover' or 'refuse'."""
    cfg, base = crashed
    run = copy_run(base / "crashed", tmp_path / f"{name.replace('/', '_')}-{how}")
    cfg = cfg.replace(run_dir=str(run))
    corrupt(run / name, how)
    try:
        run_training(cfg, resume=True, progress=False)
    except FFMPrivateError as err:
        assert Path(name).name in str(err), (name, how, str(err))
        return "refuse"
    assert_same_run(base / "reference", run)
    return "recover"


FAST = [("checkpoints/round-0002/global.npz", "flip"), ("checkpoints/round-0002/state.json",
                                                        "empty"),
        ("checkpoints/LATEST", "empty"), ("observations/round-0002.npz", "truncate")]


@pytest.mark.parametrize("name, how", FAST)
def test_a_damaged_file_is_recovered_exactly_or_refused_by_name(crashed, tmp_path, name, how):
    assert _resume_case(crashed, tmp_path, name, how) == FILES[name]


@pytest.mark.slow
def test_every_run_file_every_damage(crashed, tmp_path):
    outcomes = {(n, h): _resume_case(crashed, tmp_path, n, h) for n in FILES for h in HOWS}
    wrong = {k: v for k, v in outcomes.items() if v != FILES[k[0]]}
    # deleting an empty-tolerant file is not a corruption for some cases: report exactly
    assert not wrong, wrong


def test_both_checkpoints_damaged_is_a_typed_error_naming_the_files(crashed, tmp_path):
    cfg, base = crashed
    run = copy_run(base / "crashed", tmp_path / "both")
    corrupt(run / "checkpoints/round-0002/global.npz", "truncate")
    corrupt(run / "checkpoints/round-0001/state.json", "flip")
    with pytest.raises(CheckpointError) as err:
        run_training(cfg.replace(run_dir=str(run)), resume=True, progress=False)
    assert "round-0002/global.npz" in str(err.value)
    assert "round-0001/state.json" in str(err.value)


def test_evaluate_falls_back_or_refuses_and_never_pretrains(crashed, tmp_path, capsys):
    cfg, base = crashed
    run = copy_run(base / "crashed", tmp_path / "eval")
    corrupt(run / "checkpoints/round-0002/personal.npz", "flip")
    assert main(["evaluate", "--run", str(run)]) == 0
    assert json.loads(capsys.readouterr().out)["round"] == 1  # fell back, said so
    # a run that never got past pretraining: evaluate writes nothing into it
    fresh = copy_run(base / "crashed", tmp_path / "no-ckpt")
    for p in sorted((fresh / "checkpoints").rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    def listing():  # the lock file is the only thing evaluate may create
        return sorted(str(p) for p in fresh.rglob("*") if p.name != LOCK)

    before = listing()
    assert main(["evaluate", "--run", str(fresh)]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert listing() == before and not (fresh / "checkpoints" / "backbone.npz").exists()
