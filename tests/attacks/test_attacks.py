"""Attacks on an unprotected FedMF baseline leak; under user-level DP or secagg they do not."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from attacks.attribute import run_attribute_inference
from attacks.base import LEAK, NO_LEAK
from attacks.context import Claim
from attacks.item_inference import run_item_inference
from attacks.linkage import run_linkage
from attacks.reconstruction import run_reconstruction
from attacks.whatif import hide_individual, privatize
from ffm_private.privacy.accounting import noise_for_epsilon

EPSILON, DELTA = 1.0, 1e-5


@pytest.fixture(scope="module")
def dp_context(fedmf_context):
    """Each recorded update clipped to C and released with N(0, (sigma C)^2): epsilon = 1 for
    a user's two releases (the rounds the log holds), by the project's accountant."""
    log = fedmf_context.log
    norms = [np.linalg.norm(v) for obs in log for _, v in obs.vectors()]
    c = float(np.median(norms))
    sigma = noise_for_epsilon(EPSILON, 1.0, len(log.rounds), DELTA)
    claim = Claim(mode="user", epsilon=EPSILON, delta=DELTA, noise_multiplier=sigma,
                  clipping_norm=c, covers=("server", "public"), text="test: per-user release")
    return fedmf_context.with_log(privatize(log, clipping_norm=c, noise_multiplier=sigma, seed=1),
                                  claim)


def test_a1_recovers_item_sets_from_shared_item_embeddings(fedmf_context):
    result = run_item_inference(fedmf_context, "server", bootstrap_rounds=50)
    assert result.estimate.value > 0.95
    assert result.metrics["variants"]["rows"]["auc"] > 0.95
    assert result.verdict.level == LEAK
    assert result.metrics["variants"]["rows"]["p@10"] > 0.8


def test_a1_under_user_level_dp_is_near_chance(dp_context):
    result = run_item_inference(dp_context, "server", bootstrap_rounds=50)
    rows = result.metrics["variants"]["rows"]["auc"]
    assert abs(rows - 0.5) < 0.03, rows
    assert result.verdict.level == NO_LEAK
    assert result.covered_by_claim


def test_a1_sees_no_user_specific_signal_in_sums(fedmf_context):
    secagg = fedmf_context.with_log(hide_individual(fedmf_context.log))
    result = run_item_inference(secagg, "server", bootstrap_rounds=50)
    assert result.verdict.level != LEAK
    # the sum ranks items by popularity: as good for any other user as for this one
    assert abs(result.estimate.value - result.metrics["other_user_auc"]) < 0.02


def _by_attribute(results):
    return {r.metrics["attribute"]: r for r in results}


def test_a3_infers_planted_attributes_well_above_chance(fedmf_context):
    results = _by_attribute(run_attribute_inference(fedmf_context, "server",
                                                    bootstrap_rounds=100))
    assert set(results) == {"gender", "age_group", "occupation"}
    for name in ("gender", "occupation"):
        r = results[name]
        assert r.estimate.low > 0.55, (name, r.estimate)  # macro AUC, chance 0.5
        assert r.verdict.level == LEAK
    gender = results["gender"].metrics["balanced_accuracy"]
    assert gender.low > 0.55, gender  # chance 0.5


def test_a3_under_user_level_dp_is_near_chance(dp_context):
    for r in run_attribute_inference(dp_context, "server", bootstrap_rounds=100):
        assert r.verdict.level != LEAK, (r.metrics["attribute"], r.estimate)
        assert abs(r.estimate.value - 0.5) < 0.08, r.estimate
        bacc = r.metrics["balanced_accuracy"].value
        assert abs(bacc - r.metrics["chance"]) < 0.08, (r.metrics["attribute"], bacc)


def test_a3_on_sums_is_exactly_chance(fedmf_context):
    secagg = fedmf_context.with_log(hide_individual(fedmf_context.log))
    for r in run_attribute_inference(secagg, "server", bootstrap_rounds=20):
        assert r.estimate.value == pytest.approx(0.5)
        assert r.metrics["balanced_accuracy"].value == pytest.approx(r.metrics["chance"])


def test_a4_links_rounds_unless_protected(fedmf_context, dp_context):
    plain = run_linkage(fedmf_context, "server", bootstrap_rounds=50)
    assert plain.estimate.value > 0.9 and plain.verdict.level == LEAK
    dp = run_linkage(dp_context, "server", bootstrap_rounds=50)
    assert dp.estimate.value < 0.05 and dp.verdict.level != LEAK
    sums = run_linkage(fedmf_context.with_log(hide_individual(fedmf_context.log)), "server",
                       bootstrap_rounds=20)
    assert sums.estimate.value == pytest.approx(sums.reference)


def test_a5_recovers_planted_traits_from_updates_not_from_dp_releases(fedmf_context,
                                                                      dp_context):
    plain = run_reconstruction(fedmf_context, "server", bootstrap_rounds=50)
    assert plain.headline == "trait_cosine"
    assert plain.estimate.low > 0.3 and plain.verdict.level == LEAK
    assert plain.metrics["trait_cosine_baseline"] < 0.1
    dp = run_reconstruction(dp_context, "server", bootstrap_rounds=50)
    assert dp.verdict.level != LEAK and dp.estimate.value < 0.15


def test_public_view_is_the_model_change_shared_by_everyone(fedmf_context):
    result = run_item_inference(fedmf_context, "public", bootstrap_rounds=20)
    assert result.verdict.level != LEAK
    obs = fedmf_context.log[1]
    np.testing.assert_allclose(obs.public_delta,
                               obs.after.astype(np.float64) - obs.broadcast.astype(np.float64))


def test_claim_coverage_follows_the_view(fedmf_context):
    central = dataclasses.replace(fedmf_context.claim, mode="user", epsilon=1.0, delta=1e-5,
                                  covers=("public",))
    ctx = fedmf_context.with_log(fedmf_context.log, central)
    assert not run_linkage(ctx, "server", bootstrap_rounds=5).covered_by_claim
    assert run_linkage(ctx, "public", bootstrap_rounds=5).covered_by_claim
