"""End to end: a user-level DP run (central noise) as the audit sees it."""

from __future__ import annotations

import numpy as np
import pytest

from attacks.base import FAIL, LEAK, PASS
from attacks.canaries import BROKEN_MECHANISMS, _plan, production_mechanism, run_canary_audit
from attacks.context import AuditContext
from attacks.item_inference import run_item_inference
from tests.attacks.conftest import fedmf_config

CLIP = 0.5


@pytest.fixture(scope="module")
def dp_run(audit_data_dir, tmp_path_factory):
    from ffm_private.simulation import run_training

    run_dir = tmp_path_factory.mktemp("dp") / "run"
    cfg = fedmf_config(audit_data_dir, run_dir, privacy={
        "mode": "user", "target_epsilon": 1.0, "delta": 1e-5, "clipping_norm": CLIP,
        "expected_clients_per_round": 10.0})
    run_training(cfg, progress=False)
    return AuditContext.from_run(run_dir, seed=0)


def test_the_log_holds_what_the_trusted_server_saw_clipped_updates(dp_run):
    assert dp_run.claim.mode == "user" and dp_run.claim.covers == ("public",)
    assert dp_run.claim.epsilon == pytest.approx(1.0, abs=0.05)
    for obs in dp_run.log:
        norms = [np.linalg.norm(v.astype(np.float64)) for _, v in obs.vectors()]
        assert norms and max(norms) <= CLIP * (1 + 1e-5)
        # the released model moved by the noisy mean, not by the clipped sum's mean
        clean = obs.total / len(obs.contributors)
        assert not np.allclose(obs.public_delta, clean, atol=1e-4)


def test_central_dp_protects_the_released_models_not_the_server_view(dp_run):
    server = run_item_inference(dp_run, "server", bootstrap_rounds=30)
    assert server.verdict.level == LEAK and not server.covered_by_claim
    public = run_item_inference(dp_run, "public", bootstrap_rounds=30)
    assert public.verdict.level != LEAK and public.covered_by_claim
    # the noisy model change tells no more than public popularity does
    assert public.estimate.value <= public.metrics["baseline_auc"] + 0.02


def test_a6_passes_the_run_and_fails_its_broken_variants(dp_run):
    attack, result = run_canary_audit(dp_run, canaries=1000)
    assert attack.verdict.level == PASS, attack.verdict.text
    assert result.lower_bound <= attack.metrics["claimed_epsilon_at_audit_delta"]
    production = production_mechanism(dp_run.cfg, _plan(dp_run.cfg, dp_run.run_dir))
    for bug in ("noise-off", "no-clipping", "denominator-counts-users"):
        mechanism = BROKEN_MECHANISMS[bug](production)
        attack, _ = run_canary_audit(dp_run, canaries=1000, mechanism=mechanism)
        assert attack.verdict.level == FAIL, (bug, attack.verdict.text)


def test_a6_interaction_canaries_pass_a_dp_sgd_run(audit_data_dir, tmp_path):
    """Example-level DP-SGD through the run's own client configuration (its saved plan)."""
    from ffm_private.simulation import run_training

    cfg = fedmf_config(audit_data_dir, tmp_path / "run", privacy={
        "mode": "example", "target_epsilon": 1.0, "delta": 1e-6})
    run_training(cfg, progress=False)
    ctx = AuditContext.from_run(cfg.run_dir, seed=0)
    attack, result = run_canary_audit(ctx, canaries=400)
    assert result.kind == "example-level canary interactions"
    assert attack.verdict.level == PASS, attack.verdict.text
    assert attack.metrics["claimed_epsilon_at_audit_delta"] > 1.0  # restated at a smaller delta


def test_secagg_run_logs_only_sums_and_defeats_per_user_attacks(audit_data_dir, tmp_path):
    from attacks.linkage import run_linkage
    from ffm_private.simulation import run_training

    cfg = fedmf_config(audit_data_dir, tmp_path / "run", **{"protocol.name": "secagg"})
    run_training(cfg, progress=False)
    ctx = AuditContext.from_run(cfg.run_dir, seed=0)
    assert not ctx.log.manifest["reveals_individual"]
    assert all(not obs.has_individual and obs.total is not None for obs in ctx.log)
    assert run_item_inference(ctx, "server", bootstrap_rounds=20).verdict.level != LEAK
    link = run_linkage(ctx, "server", bootstrap_rounds=20)
    assert link.estimate.value == pytest.approx(link.reference)


@pytest.mark.slow
def test_a6_audits_a_discrete_gaussian_run(audit_data_dir, tmp_path):
    """Distributed noise over secagg: the discrete Gaussian by default. A6 builds the run's
    own mechanism (bound to the protocol's modulus) and passes it; with the noise off, FAIL."""
    from attacks.canaries import _background, canary_dim
    from ffm_private.privacy.mechanism import DistributedDiscreteGaussian
    from ffm_private.simulation import run_training

    cfg = fedmf_config(audit_data_dir, tmp_path / "run", **{
        "protocol.name": "secagg", "federated.client_fraction": 0.2,
        "privacy": {"mode": "user", "target_epsilon": 1.0, "delta": 1e-5,
                    "clipping_norm": CLIP, "noise_placement": "distributed",
                    "min_survivors": 10}})
    run_training(cfg, progress=False)
    ctx = AuditContext.from_run(cfg.run_dir, seed=0)
    plan = _plan(ctx.cfg, ctx.run_dir)
    assert plan.distributed_noise == "discrete_gaussian" and plan.accountant == "rdp"
    small = dict(canaries=250, background_clients=10, background_dim=16)
    attack, result = run_canary_audit(ctx, **small)
    assert attack.verdict.level == PASS, attack.verdict.text
    assert result.lower_bound <= attack.metrics["claimed_epsilon_at_audit_delta"]
    rows, width = _background(ctx, 10, 16).shape  # the audit's own vectors and round size
    production = production_mechanism(ctx.cfg, plan, dim=width + canary_dim(250),
                                      max_clients=rows + 250)
    assert isinstance(production, DistributedDiscreteGaussian)
    attack, _ = run_canary_audit(ctx, mechanism=BROKEN_MECHANISMS["noise-off"](production),
                                 **small)
    assert attack.verdict.level == FAIL, attack.verdict.text
