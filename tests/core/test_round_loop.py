"""The round loop: a constructor that writes nothing, callbacks, and the null privacy object."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from ffm_private.callbacks import RoundCallback, default_callbacks
from ffm_private.messages import ClientUpdate
from ffm_private.privacy.guarantee import NO_DP
from ffm_private.privacy.run import NoPrivacy
from ffm_private.simulation import Simulation, run_training
from protocols import AggregateResult


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_constructor_writes_nothing_start_writes(tiny_config):
    run = Path(tiny_config.run_dir)
    sim = Simulation(tiny_config, progress=False)
    try:
        assert not run.exists()  # checked in memory only
        with pytest.raises(RuntimeError, match="start"):
            sim.initial_state()
        sim.start()
        assert (run / "config.toml").is_file() and (run / "checkpoints" / "backbone.npz").is_file()
    finally:
        sim.close()


def test_resume_and_overwrite_construct_without_touching_the_run(tiny_config):
    cfg = tiny_config.replace(**{"federated.rounds": 1, "privacy.mode": "user",
                                 "privacy.noise_multiplier": 1.0, "privacy.delta": 1e-3,
                                 "privacy.clipping_norm": 0.5,
                                 "privacy.expected_clients_per_round": 20.0})
    run_training(cfg, progress=False)
    run = Path(cfg.run_dir)
    before = _tree(run)
    for kwargs in ({"resume": True}, {"overwrite": True}):
        Simulation(cfg, progress=False, **kwargs).close()
        assert _tree(run) == before, kwargs


class _Recorder(RoundCallback):
    def __init__(self, stop_after: int | None = None) -> None:
        self.events: list[tuple] = []
        self.stop_after = stop_after

    def on_start(self, run, state):
        self.events.append(("start", state.round_id))

    def before_round(self, run, state, round_id):
        self.events.append(("before", round_id))

    def after_round(self, run, state, result):
        # the defaults ran first: the row is evaluated, timed; the checkpoint is on disk
        latest = (run.run_dir / "checkpoints" / "LATEST").read_text()
        self.events.append(("after", result.round_id, "seconds" in result.row,
                            "valid_hr@10" in result.row, latest))
        if self.stop_after == result.round_id:
            raise KeyboardInterrupt("stopped by a callback")

    def on_end(self, run, state):
        self.events.append(("end", state.round_id))


def test_callbacks_see_every_round_after_the_defaults_and_can_stop_a_run(tiny_config):
    cfg = tiny_config.replace(**{"federated.rounds": 2, "federated.eval_every": 2,
                                 "evaluation.full_ranking": False})
    stopper = _Recorder(stop_after=1)
    with pytest.raises(KeyboardInterrupt):
        Simulation(cfg, progress=False, callbacks=[stopper]).run()
    assert stopper.events == [("start", 0), ("before", 1), ("after", 1, True, False,
                                                             "round-0001")]
    lines = (Path(cfg.run_dir) / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["round"] for x in lines] == [1]
    recorder = _Recorder()
    Simulation(cfg, resume=True, progress=False, callbacks=[recorder]).run()
    assert recorder.events == [("start", 1), ("before", 2),
                               ("after", 2, True, True, "round-0002"), ("end", 2)]
    lines = (Path(cfg.run_dir) / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["round"] for x in lines] == [1, 2]


def test_default_callbacks_order():
    names = [type(c).__name__ for c in default_callbacks()]
    # what the parties saw is logged, a diverged model refused, before anything is saved
    assert names.index("ObservationLog") < names.index("DivergenceCheck") \
        < names.index("Checkpointing") < names.index("MetricsLog")
    assert names.index("Evaluation") < names.index("RoundTimer") < names.index("Checkpointing")


def test_the_null_privacy_object_leaves_everything_as_it_is():
    none = NoPrivacy()
    chosen = none.select(3, [0, 1, 2, 3], lambda pool: [pool[2], pool[0]])
    assert chosen.sampled == [2, 0] and chosen.declined == [] and chosen.pool_size == 4
    update = ClientUpdate(client_id=1, round_id=3, delta=np.ones(3), num_examples=7,
                          metrics={"shared_loss": 0.5})
    assert none.protect(3, 1, update) is update  # example count and losses kept: no claim
    total = np.array([2.0, 4.0, 6.0])
    step = none.averager(4, 3)(3, AggregateResult(total=total, contributors=[0, 1]))
    np.testing.assert_array_equal(step, total / 2)
    assert none.statement() == NO_DP and none.report(3) is None
    assert none.round_fields(3, [1]) == {} and none.fingerprints(3) == {}
    assert none.protocol_options({"min_clients": 2}, "report_clipped") == {"min_clients": 2}


def _doc_callback() -> dict:
    import re

    doc = Path(__file__).resolve().parents[2] / "docs" / "extending.md"
    section = doc.read_text().split("\n## A round callback\n", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    namespace: dict = {}
    exec(compile(block, str(doc), "exec"), namespace)  # noqa: S102 - our own doc
    return namespace


def test_the_documented_early_stop_callback_stops_and_resume_continues(tiny_config):
    early_stop = _doc_callback()["EarlyStop"]
    scores = iter([0.5, 0.6, 0.55, 0.52, 0.7, 0.7])

    class Scripted(Simulation):  # validation HR@10 as scripted, test metrics as computed
        def evaluate(self, state):
            return {**super().evaluate(state), "valid_hr@10": next(scores)}

    cfg = tiny_config.replace(**{"federated.rounds": 5, "evaluation.full_ranking": False})
    with pytest.raises(early_stop.Stopped, match="since round 2"):
        Scripted(cfg, progress=False, callbacks=[early_stop(patience=2)]).run()
    rows = [json.loads(x) for x in (Path(cfg.run_dir) / "metrics.jsonl").read_text().splitlines()]
    assert [r["valid_hr@10"] for r in rows] == [0.5, 0.6, 0.55, 0.52]  # round 4 is kept
    summary = Scripted(cfg, resume=True, progress=False).run()
    assert summary["rounds"] == 5 and summary["selected_round"] == 5
