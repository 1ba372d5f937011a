"""The defense inside a run: basis with the broadcast, projection before DP and encoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ffm_private.config import Config, ConfigError, DefenseConfig
from ffm_private.defense import SensitiveSubspace, energy_fraction
from ffm_private.defense.server import SubspaceDefense, basis_file, load_basis
from ffm_private.errors import CheckpointError
from ffm_private.messages import GlobalModelMessage
from ffm_private.observation import ObservationLog
from ffm_private.simulation import Simulation, run_training

DEFENSE = {"defense.kind": "subspace", "defense.rank": 3, "defense.refresh_every": 2}


def run_config(data_dir, run_dir, **overrides) -> Config:
    return Config(run_dir=str(run_dir)).replace(**{
        "data.path": str(data_dir), "data.protocol": "pfedrec", "data.public_fraction": 0.3,
        "model.dim": 16, "model.history_length": 8, "pretrain.epochs": 1,
        "federated.rounds": 3, "evaluation.full_ranking": False,
        "observation.rounds": [1, 2, 3], **overrides})


def max_inside(vectors, basis) -> float:
    """Largest |B^T v| / ||v|| over the vectors (0 means exactly orthogonal)."""
    worst = 0.0
    for v in vectors:
        v = np.asarray(v, dtype=np.float64)
        worst = max(worst, float(np.max(np.abs(v @ basis)) / max(np.linalg.norm(v), 1e-300)))
    return worst


pytestmark_slow = pytest.mark.slow  # whole runs: tens of seconds each on a shared machine


@pytest.fixture(scope="module")
def defended(tiny_data_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("defended") / "run"
    run_training(run_config(tiny_data_dir, run_dir, **DEFENSE), progress=False)  # 3 rounds
    return run_dir


@pytestmark_slow
def test_every_shared_update_is_orthogonal_to_the_published_basis(defended):
    assert basis_file(defended, 1).exists() and basis_file(defended, 3).exists()
    assert not basis_file(defended, 2).exists()          # refreshed every 2 rounds
    log = ObservationLog.open(defended)
    for obs in log:
        sub = load_basis(defended, obs.round_id, 2)
        assert sub is not None and 1 <= sub.rank <= 3
        vectors = [v for _, v in obs.vectors()]
        assert len(vectors) == len(obs.contributors)
        assert max_inside(vectors, sub.basis) < 1e-6      # float32 storage of the log
        assert max_inside([obs.total], sub.basis) < 1e-6


@pytestmark_slow
def test_undefended_updates_do_have_energy_in_that_subspace(defended, tiny_data_dir, tmp_path):
    """The same subspace, applied to an undefended run's updates: the defense removed it."""
    run_training(run_config(tiny_data_dir, tmp_path / "plain", **{"federated.rounds": 1}),
                 progress=False)
    obs = ObservationLog.open(tmp_path / "plain")[1]
    sub = load_basis(defended, 1, 2)   # round 1 broadcasts are equal: same subspace applies
    fractions = [energy_fraction(v, sub.basis) for _, v in obs.vectors()]
    assert np.median(fractions) > 1e-4


def test_the_subspace_comes_from_public_users_only(tmp_path):
    """Private users' data and attributes change: the basis does not; only public users run."""
    rng = np.random.default_rng(0)
    n, p = 40, 30
    public = np.arange(0, n, 3)
    data = rng.normal(size=(n, p))
    attrs = {"gender": rng.integers(0, 2, n), "age": rng.integers(0, 4, n)}
    data[public, 0] += 3 * attrs["gender"][public]
    called: list[int] = []

    def update(message, user):
        called.append(user)
        return data[user]

    message = GlobalModelMessage(1, {})
    cfg = DefenseConfig(kind="subspace", rank=2)
    first = SubspaceDefense(cfg, tmp_path / "a", public, attrs, p).basis(message, update)
    assert sorted(called) == sorted(public.tolist())
    private = np.setdiff1d(np.arange(n), public)
    data[private] = rng.normal(size=(len(private), p)) * 10
    changed = {k: v.copy() for k, v in attrs.items()}
    changed["gender"][private] = 1 - changed["gender"][private]
    changed["age"][private] = 0
    second = SubspaceDefense(cfg, tmp_path / "b", public, changed, p).basis(message, update)
    np.testing.assert_array_equal(first.basis, second.basis)


def test_a_resumed_run_reuses_the_published_basis_and_refuses_a_lost_one(tmp_path):
    cfg = DefenseConfig(kind="subspace", rank=1, refresh_every=3)
    rng = np.random.default_rng(1)
    data, attrs = rng.normal(size=(10, 8)), {"g": np.arange(10) % 2}
    sub = SubspaceDefense(cfg, tmp_path, np.arange(10), attrs, 8).basis(
        GlobalModelMessage(1, {}), lambda m, u: data[u])
    again = SubspaceDefense(cfg, tmp_path, np.arange(10), attrs, 8)
    reused = again.basis(GlobalModelMessage(2, {}), lambda m, u: pytest.fail("recomputed"))
    np.testing.assert_array_equal(reused.basis, sub.basis)
    basis_file(tmp_path, 1).unlink()
    with pytest.raises(CheckpointError, match="round 1"):
        SubspaceDefense(cfg, tmp_path, np.arange(10), attrs, 8).basis(
            GlobalModelMessage(3, {}), lambda m, u: data[u])


def test_defense_refuses_what_it_cannot_do(tiny_data_dir, tmp_path):
    with pytest.raises(ConfigError, match="defense.rank"):
        Simulation(run_config(tiny_data_dir, tmp_path / "r", **{**DEFENSE,
                                                                "defense.rank": 4096}),
                   progress=False)
    with pytest.raises(ConfigError, match="attributes"):
        SubspaceDefense(DefenseConfig(kind="subspace"), tmp_path, np.arange(4), {}, 10)


CLIP = 0.05


@pytestmark_slow
def test_composes_with_user_level_dp_projection_then_clip_guarantee_unchanged(tiny_data_dir,
                                                                             tmp_path):
    privacy = {"mode": "user", "target_epsilon": 2.0, "delta": 1e-5, "clipping_norm": CLIP,
               "expected_clients_per_round": 20.0}
    overrides = {"federated.rounds": 2, "observation.rounds": [1, 2]}
    plain = run_training(run_config(tiny_data_dir, tmp_path / "dp", privacy=privacy,
                                    **overrides), progress=False)
    defended = run_training(run_config(tiny_data_dir, tmp_path / "dp-def", privacy=privacy,
                                       **overrides, **DEFENSE), progress=False)
    assert defended["privacy"] == plain["privacy"]          # the same guarantee, in words
    log = ObservationLog.open(tmp_path / "dp-def")
    for obs in log:   # the trusted server saw clipped updates: projected first, then clipped
        sub = load_basis(tmp_path / "dp-def", obs.round_id, 2)
        vectors = [v for _, v in obs.vectors()]
        assert max(np.linalg.norm(v.astype(np.float64)) for v in vectors) <= CLIP * (1 + 1e-5)
        assert max_inside(vectors, sub.basis) < 1e-5


@pytestmark_slow
@pytest.mark.parametrize("protocol", ["secagg", "he"])
def test_composes_with_secure_aggregation_clients_project_before_encoding(tiny_data_dir,
                                                                         tmp_path, protocol):
    """The protocol's sum is the sum of projected updates: nothing in the subspace survives."""
    cfg = run_config(tiny_data_dir, tmp_path / protocol, **{
        **DEFENSE, "federated.rounds": 1, "observation.rounds": [1],
        "federated.client_fraction": 0.5, "protocol.name": protocol})
    run_training(cfg, progress=False)
    obs = ObservationLog.open(tmp_path / protocol)[1]
    assert not obs.has_individual and obs.total is not None
    sub = SensitiveSubspace.load(basis_file(tmp_path / protocol, 1))
    total = np.asarray(obs.total, dtype=np.float64)
    # fixed-point quantization leaves rounding noise only (about 1e-6 per coordinate)
    assert np.max(np.abs(total @ sub.basis)) < 1e-4 * max(np.linalg.norm(total), 1e-3)
    assert Path(tmp_path / protocol / "defense").is_dir()
