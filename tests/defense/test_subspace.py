"""The sensitive subspace: estimators, exact projection, and what an attacker still recovers."""

from __future__ import annotations

import numpy as np
import pytest

from attacks.classifier import fit_logistic_cv
from attacks.metrics import macro_auc
from ffm_private import config as config_mod
from ffm_private.config import Config, ConfigError
from ffm_private.defense import (
    SensitiveSubspace,
    SubspaceError,
    energy_fraction,
    estimate_subspace,
    project_out,
)

P = 150


def planted(n: int, seed: int, *, signal: float = 1.0, spread: bool = False):
    """Updates = noise + attribute signal along ``a`` + an attribute-free signal along ``o``."""
    rng = np.random.default_rng(seed)
    dirs = np.linalg.qr(np.random.default_rng(99).normal(size=(P, 2)))[0]
    a, o = dirs[:, 0], dirs[:, 1]
    gender = rng.integers(0, 2, size=n)
    age = rng.integers(0, 3, size=n)
    noise = rng.normal(size=(n, P)) * 0.15
    taste = rng.normal(size=n) * 2.0
    if spread:  # variance only: no mean shift between the classes
        along = rng.normal(size=n) * np.where(gender == 1, 3.0, 0.3)
    else:
        along = signal * (2.0 * gender - 1.0) + rng.normal(size=n) * 0.3
    x = noise + np.outer(along, a) + np.outer(taste, o) + 0.5
    return x, {"gender": gender, "age": age}, a, o


def attacker_auc(x_pub, y_pub, x_priv, y_priv) -> float:
    """A3's classifier, trained on public users' updates, scored on private users."""
    model = fit_logistic_cv(x_pub, y_pub, seed=0)
    return macro_auc(y_priv, model.predict_proba(x_priv), list(model.classes))


@pytest.mark.parametrize("estimator", ["linear", "spectral"])
def test_projection_is_exact_and_orthonormal(estimator):
    x, attrs, _, _ = planted(120, 0)
    sub = estimate_subspace(x, attrs, rank=4, estimator=estimator)
    b = sub.basis
    assert b.shape == (P, sub.rank) and 1 <= sub.rank <= 4
    np.testing.assert_allclose(b.T @ b, np.eye(sub.rank), atol=1e-10)
    v = np.random.default_rng(5).normal(size=(7, P))
    out = project_out(v, b)
    assert np.max(np.abs(out @ b)) < 1e-10 * np.max(np.abs(v))
    np.testing.assert_allclose(project_out(out, b), out, atol=1e-12)   # idempotent
    assert np.all(np.linalg.norm(out, axis=1) <= np.linalg.norm(v, axis=1) + 1e-12)
    assert np.all(energy_fraction(out, b) < 1e-20)
    one = project_out(v[0].astype(np.float32), b)
    assert one.dtype == np.float32 and float(np.max(np.abs(one.astype(np.float64) @ b))) < 1e-5


@pytest.mark.parametrize("estimator", ["linear", "spectral"])
def test_planted_attribute_signal_is_removed_orthogonal_signal_kept(estimator):
    x_pub, a_pub, a, o = planted(300, 1)
    x_priv, a_priv, _, _ = planted(300, 2)
    before = attacker_auc(x_pub, a_pub["gender"], x_priv, a_priv["gender"])
    sub = estimate_subspace(x_pub, a_pub, rank=2, estimator=estimator)
    # the attacker knows the projection: it trains on projected public updates
    after = attacker_auc(sub.project(x_pub), a_pub["gender"], sub.project(x_priv),
                         a_priv["gender"])
    assert before > 0.95
    assert after - 0.5 < 0.25 * (before - 0.5), f"{estimator}: gender AUC {before:.3f} -> {after:.3f}"
    # the attribute direction is inside the subspace; the attribute-free one is not
    assert energy_fraction(a, sub.basis) > 0.95
    assert energy_fraction(o, sub.basis) < 0.02
    kept = sub.project(x_priv) @ o
    assert np.corrcoef(kept, x_priv @ o)[0, 1] > 0.99


def test_spectral_finds_a_spread_only_signal_linear_misses():
    """A class that differs only in spread: no mean difference for a linear probe to use."""
    x, attrs, a, _ = planted(400, 3, spread=True)
    spectral = estimate_subspace(x, {"gender": attrs["gender"]}, rank=1, estimator="spectral")
    assert energy_fraction(a, spectral.basis) > 0.9
    linear = estimate_subspace(x, {"gender": attrs["gender"]}, rank=1, estimator="linear")
    assert energy_fraction(a, linear.basis) < 0.5


def test_estimate_uses_only_what_it_is_given_and_is_deterministic(tmp_path):
    x, attrs, _, _ = planted(60, 4)
    one = estimate_subspace(x, attrs, rank=3)
    two = estimate_subspace(x.copy(), {k: v.copy() for k, v in attrs.items()}, rank=3)
    np.testing.assert_array_equal(one.basis, two.basis)
    one.save(tmp_path / "b.npz")
    back = SensitiveSubspace.load(tmp_path / "b.npz")
    np.testing.assert_array_equal(back.basis, one.basis)
    assert back.meta() == one.meta()


def test_bad_inputs_are_typed_errors():
    x, attrs, _, _ = planted(10, 5)
    with pytest.raises(SubspaceError, match="at least 2 public users"):
        estimate_subspace(x[:1], {k: v[:1] for k, v in attrs.items()}, rank=2)
    with pytest.raises(SubspaceError, match="two classes"):
        estimate_subspace(x, {"gender": np.zeros(10, int)}, rank=2)
    with pytest.raises(SubspaceError, match="'age'"):
        estimate_subspace(x, {"age": np.zeros(3, int)}, rank=2)
    with pytest.raises(SubspaceError, match="estimator"):
        estimate_subspace(x, attrs, rank=2, estimator="pca")
    with pytest.raises(SubspaceError, match="coordinates"):
        project_out(np.zeros(5), np.zeros((6, 1)))


@pytest.mark.parametrize(("key", "value", "match"), [
    ("defense.kind", "inlp", "defense.kind"),
    ("defense.rank", 0, "defense.rank"),
    ("defense.estimator", "pca", "defense.estimator"),
    ("defense.refresh_every", 0, "defense.refresh_every"),
    ("defense.ridge", 0.0, "defense.ridge"),
    ("defense.rnk", 3, "defense.*rnk"),
])
def test_defense_config_is_validated(key, value, match):
    with pytest.raises(ConfigError, match=match):
        Config().replace(**{key: value})


def test_defense_config_round_trips():
    cfg = Config().replace(**{"defense.kind": "subspace", "defense.rank": 3})
    back = config_mod.from_dict(config_mod.parse_toml(config_mod.to_toml(cfg), "x"))
    assert back.defense == cfg.defense and back.defense.rank == 3
    assert "[defense]" in config_mod.describe_fields()
