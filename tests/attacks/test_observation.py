"""The observation log records exactly what the server saw, survives resume, stays bounded."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from ffm_private.config import Config, ConfigError
from ffm_private.observation import (
    DIRNAME,
    ObservationLog,
    resolve_rounds,
    round_bytes_bound,
    round_file,
)
from ffm_private.server import Server
from ffm_private.simulation import Simulation, run_training
from protocols import registry
from protocols.plaintext import PlaintextProtocol


class HidingProtocol(PlaintextProtocol):
    """A stand-in for secagg/he: same sum, individual updates hidden from the server."""

    name = "hiding-test"
    reveals_individual_updates = False

    def aggregate(self, round_id, updates, *, channel=None, seed=0, secrets=None,
                  encoding="float"):
        result = super().aggregate(round_id, updates, channel=channel, seed=seed)
        return dataclasses.replace(result, individual=None)


registry.register("hiding-test", f"{__name__}:HidingProtocol")


def _config(tiny_data_dir, run_dir, **overrides) -> Config:
    return Config(run_dir=str(run_dir)).replace(**{
        "data.path": str(tiny_data_dir), "data.protocol": "pfedrec",  # 150 items: see conftest
        "model.kind": "fedmf", "model.dim": 16, "pretrain.epochs": 0, "federated.rounds": 3, "federated.client_fraction": 0.5,
        "evaluation.full_ranking": False, "observation.rounds": [1, 2, 3], **overrides})


def _capture(monkeypatch):
    seen = {}
    original = Server.aggregate

    def spy(self, round_id, updates, **kwargs):
        outcome = original(self, round_id, updates, **kwargs)
        seen[round_id] = (dict(updates), outcome, self.shared)
        return outcome

    monkeypatch.setattr(Server, "aggregate", spy)
    return seen


def test_plaintext_log_equals_what_the_server_saw(tiny_data_dir, tmp_path, monkeypatch):
    seen = _capture(monkeypatch)
    cfg = _config(tiny_data_dir, tmp_path / "run")
    run_training(cfg, progress=False)
    log = ObservationLog.open(cfg.run_dir)
    assert log.rounds == [1, 2, 3] and log.manifest["reveals_individual"]
    for r in log.rounds:
        updates, outcome, after = seen[r]
        obs = log[r]
        assert obs.client_ids == sorted(outcome.individual)
        np.testing.assert_array_equal(obs.contributors, outcome.contributors)
        np.testing.assert_array_equal(obs.sampled, sorted(updates))
        for cid, vec in outcome.individual.items():
            np.testing.assert_array_equal(obs.vector(cid), vec.astype(np.float32))
        np.testing.assert_array_equal(obs.total, outcome.total)
        np.testing.assert_array_equal(obs.after, log.spec.flatten(after).astype(np.float32))
    np.testing.assert_array_equal(log[2].broadcast, log[1].after)
    np.testing.assert_array_equal(log.released, log[3].after)


def test_hiding_protocol_log_holds_only_the_sum(tiny_data_dir, tmp_path, monkeypatch):
    seen = _capture(monkeypatch)
    cfg = _config(tiny_data_dir, tmp_path / "run", **{"protocol.name": "hiding-test"})
    run_training(cfg, progress=False)
    log = ObservationLog.open(cfg.run_dir)
    assert not log.manifest["reveals_individual"]
    for r in log.rounds:
        obs = log[r]
        _, outcome, _ = seen[r]
        assert obs.client_ids == [] and obs.individual is None
        np.testing.assert_array_equal(obs.total, outcome.total)
        with np.load(round_file(Path(cfg.run_dir) / DIRNAME, r)) as f:
            assert not {"updates", "upd_value"} & set(f.files)


def test_resume_rewrites_rounds_without_duplicates(tiny_data_dir, tmp_path, monkeypatch):
    reference = _config(tiny_data_dir, tmp_path / "reference")
    run_training(reference, progress=False)
    cfg = _config(tiny_data_dir, tmp_path / "run")
    original = Simulation.save_checkpoint

    def crash_after_recording_round_2(self, state):
        if state.round_id == 2:
            raise KeyboardInterrupt  # round 2 is in the log, its checkpoint is not
        return original(self, state)

    monkeypatch.setattr(Simulation, "save_checkpoint", crash_after_recording_round_2)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, progress=False)
    assert ObservationLog.open(cfg.run_dir).rounds == [1, 2]
    monkeypatch.setattr(Simulation, "save_checkpoint", original)
    run_training(cfg, resume=True, progress=False)
    a, b = ObservationLog.open(reference.run_dir), ObservationLog.open(cfg.run_dir)
    assert a.rounds == b.rounds == [1, 2, 3]
    assert sorted(p.name for p in (Path(cfg.run_dir) / DIRNAME).glob("round-*")) == [
        "round-0001.npz", "round-0002.npz", "round-0003.npz"]
    for r in a.rounds:
        assert a[r].client_ids == b[r].client_ids
        for cid in a[r].client_ids:
            np.testing.assert_array_equal(a[r].vector(cid), b[r].vector(cid))
        np.testing.assert_array_equal(a[r].total, b[r].total)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_size_bound_and_client_cap_hold(tiny_data_dir, tmp_path, dtype):
    cfg = _config(tiny_data_dir, tmp_path / "run", **{
        "observation.max_clients": 7, "observation.dtype": dtype, "observation.rounds": [1, -1],
        "federated.client_fraction": 1.0})
    run_training(cfg, progress=False)
    log = ObservationLog.open(cfg.run_dir)
    assert log.rounds == [1, 3]
    for r in log.rounds:
        obs = log[r]
        assert len(obs.client_ids) == 7
        size = round_file(Path(cfg.run_dir) / DIRNAME, r).stat().st_size
        assert size <= round_bytes_bound(log.n_params, len(obs.sampled), 7, dtype), size
    # the same clients every round (keyed hash), so linkage audits can follow them
    assert log[1].client_ids == log[3].client_ids
    dense_vectors = 7 * log.n_params * (2 if dtype == "float16" else 4)
    assert log.bytes_on_disk() < 2 * (dense_vectors + 16 * log.n_params) + 65_536


def test_off_means_no_log(tiny_data_dir, tmp_path):
    cfg = _config(tiny_data_dir, tmp_path / "run", **{"observation.enabled": False,
                                                      "federated.rounds": 1})
    run_training(cfg, progress=False)
    assert not (Path(cfg.run_dir) / DIRNAME).exists()


def test_config_validation_and_round_resolution():
    with pytest.raises(ConfigError, match="observation.rounds"):
        Config().replace(**{"observation.rounds": [1, 0]})
    with pytest.raises(ConfigError, match="observation.dtype"):
        Config().replace(**{"observation.dtype": "int8"})
    with pytest.raises(ConfigError, match="observation.max_clients"):
        Config().replace(**{"observation.max_clients": -1})
    assert resolve_rounds([1, 2, -1], 20) == [1, 2, 20]
    assert resolve_rounds([1, -1, 5], 1) == [1]


@pytest.mark.parametrize("density", [0.01, 0.9])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_vector_encoding_round_trips(density, dtype):
    from ffm_private.observation import RoundObservation, _encode_vectors

    rng = np.random.default_rng(0)
    vectors = [np.where(rng.random(500) < density, rng.standard_normal(500), 0.0)
               for _ in range(6)]
    encoded, used = _encode_vectors(vectors, dtype)
    assert used == dtype
    assert ("upd_value" in encoded) == (density < 0.5)  # sparse only when smaller
    obs = RoundObservation(round_id=1, broadcast=np.zeros(500, np.float32), after=None,
                           sampled=np.arange(6), contributors=np.arange(6),
                           _ids=np.arange(6), _encoded=encoded, dtype=used)
    for cid, v in enumerate(vectors):
        np.testing.assert_array_equal(obs.vector(cid), v.astype(dtype).astype(np.float32))


def test_float16_overflow_keeps_float32():
    from ffm_private.observation import _encode_vectors

    _, used = _encode_vectors([np.array([1e6, 0.0, 2.0])], "float16")
    assert used == "float32"
