"""A6: the published one-run values, independent oracles for the bounds, and planted bugs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from attacks.canaries import (
    BROKEN_MECHANISMS,
    ProductionRelease,
    ScaleAudit,
    UserCanaryAudit,
    _cp_upper,
    audit_delta,
    canary_directions,
    gaussian_delta,
    one_run_epsilon,
    one_run_p_value,
)
from ffm_private.privacy.accounting import noise_for_epsilon
from ffm_private.privacy.mechanism import CentralGaussian, DistributedGaussian
from tests.privacy.reference import gaussian_epsilon

BETA, CANARIES, CLAIM = 1e-3, 1000, 1.0


def test_one_run_bound_reproduces_the_published_worked_values():
    # Steinke, Nasr, Jagielski (NeurIPS 2023): r guesses, v of them correct, m canaries
    assert one_run_epsilon(1000, 100, 75, 1e-4, 0.05) == pytest.approx(0.673, abs=1e-3)
    assert one_run_epsilon(100_000, 1510, 1439, 1e-5, 0.05) == pytest.approx(2.675, abs=1e-3)


def test_one_run_bound_saturates_as_the_design_notes_say():
    assert one_run_epsilon(1000, 1000, 1000, 0.0, 0.05) == pytest.approx(5.8, abs=0.05)
    assert one_run_epsilon(10_000, 10_000, 10_000, 0.0, 0.05) == pytest.approx(8.1, abs=0.05)
    assert one_run_epsilon(1000, 1000, 500, 1e-6, 0.05) == 0.0  # coin flipping proves nothing


def test_pure_dp_p_value_is_a_binomial_tail():
    # with delta = 0 the p-value is P[Binomial(r, e^eps / (1 + e^eps)) >= v]
    for r, v, eps in ((100, 70, 0.5), (40, 40, 2.0), (500, 260, 0.1)):
        q = math.exp(eps) / (1 + math.exp(eps))
        assert one_run_p_value(1000, r, v, eps, 0.0) == pytest.approx(stats.binom.sf(v - 1, r, q))


def test_clopper_pearson_matches_scipys_exact_interval():
    for k, n, alpha in ((0, 250, 1e-3), (3, 100, 0.05), (40, 80, 0.01)):
        two_sided = stats.binomtest(k, n).proportion_ci(confidence_level=1 - 2 * alpha,
                                                        method="exact")
        assert _cp_upper(k, n, alpha) == pytest.approx(two_sided.high, rel=1e-9)


def test_gaussian_estimate_matches_the_analytic_gaussian_mechanism():
    # Balle and Wang (2018): independent formula in tests/privacy/reference.py
    for sigma in (0.8, 2.0, 5.0):
        eps = 1.3
        delta = gaussian_delta(eps, 1.0 / sigma)
        assert gaussian_epsilon(sigma, 1, delta) == pytest.approx(eps, rel=1e-4)


def test_canary_directions_are_orthonormal():
    u = canary_directions(300, np.random.default_rng(0))
    assert u.shape == (300, 512)
    np.testing.assert_allclose(u @ u.T, np.eye(300), atol=1e-12)


@pytest.fixture(scope="module")
def claim():
    """sigma for epsilon = 1 after one round, at the delta the audit uses."""
    delta = audit_delta(1e-5, CANARIES, BETA)
    return delta, noise_for_epsilon(CLAIM, 1.0, 1, delta)


def _background(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 0.3 * rng.standard_normal((200, 512)) + rng.standard_normal(512)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_correct_mechanism_never_exceeds_its_claim(claim, seed):
    delta, sigma = claim
    for mechanism in (ProductionRelease(CentralGaussian(sigma, 1.0, expected_clients=50.0)),
                      ProductionRelease(DistributedGaussian(sigma, 1.0, 1))):
        result = UserCanaryAudit(mechanism, CLAIM, delta, canaries=CANARIES, canary_norm=10.0,
                                 background=_background(seed), beta=BETA, seed=seed).run()
        assert result.lower_bound <= CLAIM, (mechanism.name, result.to_dict())
        assert not result.exceeds_claim


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("bug", sorted(set(BROKEN_MECHANISMS) - {"denominator-counts-users"}))
def test_planted_bugs_exceed_the_claim_every_time(claim, bug, seed):
    delta, sigma = claim
    mechanism = ProductionRelease(BROKEN_MECHANISMS[bug](CentralGaussian(sigma, 1.0, 50.0)))
    result = UserCanaryAudit(mechanism, CLAIM, delta, canaries=CANARIES, canary_norm=10.0,
                             background=_background(seed), beta=BETA, seed=seed).run()
    assert result.exceeds_claim, (bug, result.to_dict())
    assert result.lower_bound > CLAIM + 0.2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scale_audit_passes_a_public_divisor_and_fails_a_user_count(claim, seed):
    """Neighbouring datasets of n and n + 1 users, all updates zero: only the scale of the
    released noise can differ. The production mechanism divides by a public constant and gives
    the distinguisher nothing; the planted "denominator counts users" bug is caught."""
    delta, sigma = claim
    correct = ProductionRelease(CentralGaussian(sigma, 1.0, 10.0, client_rate=0.5),
                                pool_size=20)
    buggy = ProductionRelease(BROKEN_MECHANISMS["denominator-counts-users"](
        CentralGaussian(sigma, 1.0, 10.0, client_rate=0.5)), pool_size=20)
    kwargs = dict(pool_size=20, dim=4096, trials=CANARIES, client_rate=0.5, beta=BETA, seed=seed)
    ok = ScaleAudit(correct, CLAIM, delta, **kwargs).run()
    assert not ok.exceeds_claim and ok.lower_bound <= CLAIM, ok.to_dict()
    bad = ScaleAudit(buggy, CLAIM, delta, **kwargs).run()
    assert bad.exceeds_claim and bad.lower_bound > CLAIM + 0.2, bad.to_dict()


def test_interaction_canaries_catch_training_without_dp(fedmf_context):
    """Example-level canaries through the run's client training (no DP-SGD): far above an
    example-level claim of epsilon 1."""
    from attacks.canaries import run_canary_audit
    from attacks.context import Claim

    claim = Claim(mode="example", epsilon=1.0, delta=1e-8, covers=("server", "public"))
    ctx = fedmf_context.with_log(fedmf_context.log, claim)
    attack, result = run_canary_audit(ctx, canaries=400)
    assert result.kind == "example-level canary interactions"
    assert result.canaries == 400
    assert result.clopper_pearson["epsilon"] == 0.0  # canaries share clients: not independent
    assert result.exceeds_claim and attack.verdict.failed


# -- the distributed discrete Gaussian, as the run binds it ------------------------------------
DDG_SURVIVORS, DDG_CANARIES, DDG_BG = 120, 250, (10, 16)
DDG_SIGMA = 5.2  # epsilon <= 1 after one round at the audit delta (RDP; asserted below)


@pytest.fixture(scope="module")
def ddg_production():
    """A secagg config with distributed noise and no explicit noise kind: the default is the
    discrete Gaussian. The audit's mechanism comes from ``production_mechanism`` (the run's
    binding to the protocol's integer modulus), sized for the audit's vectors and rounds."""
    from attacks.canaries import canary_dim, production_mechanism
    from ffm_private.config import Config
    from ffm_private.privacy.config import resolved_privacy

    delta = audit_delta(1e-5, DDG_CANARIES, BETA)
    sigma = DDG_SIGMA
    cfg = Config(run_dir="unused").replace(**{
        "protocol.name": "secagg", "protocol.options": {"min_clients": DDG_SURVIVORS},
        "privacy": {"mode": "user", "noise_multiplier": sigma, "clipping_norm": 1.0,
                    "noise_placement": "distributed", "min_survivors": DDG_SURVIVORS}})
    plan = resolved_privacy(cfg).plan(rounds=1, client_rate=1.0)
    assert plan.distributed_noise == "discrete_gaussian" and plan.accountant == "rdp"
    from ffm_private.privacy.accounting import epsilon_for_events

    claimed = epsilon_for_events(plan.events_after(1), delta, plan.accountant)
    assert claimed <= CLAIM
    mech = production_mechanism(cfg, plan, dim=DDG_BG[1] + canary_dim(DDG_CANARIES),
                                max_clients=DDG_BG[0] + DDG_CANARIES)
    return mech, claimed, delta


def _ddg_audit(mechanism, claimed, delta, seed):
    rng = np.random.default_rng(seed)
    background = 0.3 * rng.standard_normal(DDG_BG) + rng.standard_normal(DDG_BG[1])
    return UserCanaryAudit(ProductionRelease(mechanism), claimed, delta, canaries=DDG_CANARIES,
                           canary_norm=10.0, participations=1, background=background,
                           beta=BETA, seed=seed).run()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_a6_audits_the_production_discrete_gaussian(ddg_production, seed):
    """What the adversary recovers from the released sums: with the production integer
    shares, nothing beyond the claim; with the noise off or divided by the number of clients,
    the canaries' membership (bound above the claim)."""
    from ffm_private.privacy.mechanism import DistributedDiscreteGaussian

    mech, claimed, delta = ddg_production
    assert isinstance(mech, DistributedDiscreteGaussian) and mech.modulus == 2**32
    ok = _ddg_audit(mech, claimed, delta, seed=seed)
    assert ok.lower_bound <= claimed and not ok.exceeds_claim, ok.to_dict()
    for bug in ("noise-off", "noise-over-n"):
        bad = _ddg_audit(BROKEN_MECHANISMS[bug](mech), claimed, delta, seed=seed)
        assert bad.exceeds_claim and bad.lower_bound > claimed + 0.2, (bug, bad.to_dict())


def test_noise_off_on_the_discrete_gaussian_releases_the_exact_mean(ddg_production):
    """Fast: what the adversary recovers when the planted bug removes the integer noise is
    the clipped canaries' mean to within the grid step; the production shares hide it."""
    mech, _, _ = ddg_production
    rows = np.zeros((DDG_SURVIVORS, mech.dim))
    rows[0, 0] = 10.0  # one canary, clipped to 1.0
    leaked = ProductionRelease(BROKEN_MECHANISMS["noise-off"](mech))(rows,
                                                                    np.random.default_rng(0))
    assert abs(leaked[0] * DDG_SURVIVORS - 1.0) < 1e-3
    assert np.abs(leaked[1:]).max() * DDG_SURVIVORS < 1e-3
    hidden = ProductionRelease(mech)(rows, np.random.default_rng(0))
    assert np.std(hidden * DDG_SURVIVORS) > 1.0  # noise of std ~ sigma C, far above 1.0


def test_skipping_the_clip_is_refused_by_the_discrete_mechanism_itself(ddg_production):
    """The conditional rounding checks the norm in exact arithmetic: an unclipped update
    cannot reach the integer path, so the planted bug never releases anything."""
    mech, _, _ = ddg_production
    broken = BROKEN_MECHANISMS["no-clipping"](mech)
    with pytest.raises(ValueError, match="clip it first"):
        broken.client_transform(np.full(mech.dim, 10.0), np.random.default_rng(0))
