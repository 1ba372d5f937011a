"""The audit of the defense: adaptive A3, the energy metric, and the audit-power figures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attacks.attribute import decide_note, users_to_decide
from attacks.audit import AuditOptions, run_audit
from attacks.base import INCONCLUSIVE, LEAK, NO_LEAK, Verdict
from attacks.context import AuditContext
from attacks.metrics import Interval
from attacks.subspace import run_adaptive_attribute_inference
from ffm_private.config import ObservationConfig
from ffm_private.data import SyntheticConfig, generate_synthetic
from tests.attacks.conftest import fedmf_config


def test_users_to_decide_an_inconclusive_verdict():
    est = Interval(0.55, 0.49, 0.61)
    assert users_to_decide(est, 0.52, 100) == 400          # (0.06 / 0.03)^2 x 100
    assert users_to_decide(Interval(0.48, 0.40, 0.53), 0.52, 100) == 157
    assert users_to_decide(Interval(0.52, 0.45, 0.60), 0.52, 100) is None
    note = decide_note(est, 0.52, 100, Verdict(INCONCLUSIVE, ""))
    assert "about 400 observed private users" in note
    assert decide_note(est, 0.52, 100, Verdict(LEAK, "")) is None


def test_the_log_records_every_client_of_a_movielens_100k_sized_run():
    assert ObservationConfig().max_clients >= 943


def _run(data_dir, run_dir, **overrides):
    from ffm_private.simulation import run_training

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_training(fedmf_config(data_dir, run_dir, **overrides), progress=False)
    finally:
        torch.set_num_threads(threads)
    return AuditContext.from_run(run_dir, seed=0)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An undefended and a defended FedMF run on data with planted attributes."""
    data = tmp_path_factory.mktemp("sub-audit-data")
    generate_synthetic(data, SyntheticConfig(n_users=200, n_items=300, n_interactions=12_000,
                                             seed=3))
    root = tmp_path_factory.mktemp("sub-audit")
    plain = _run(data, root / "plain")
    defended = _run(data, root / "defended", **{"defense.kind": "subspace",
                                               "defense.rank": 8})
    return plain, defended


@pytest.mark.slow
def test_energy_in_the_subspace_undefended_vs_defended(runs):
    plain, defended = runs
    before = run_adaptive_attribute_inference(plain, "server", bootstrap_rounds=20)
    after = run_adaptive_attribute_inference(defended, "server", bootstrap_rounds=20)
    assert {r.metrics["attribute"] for r in before} == {"gender", "age_group", "occupation"}
    e_before, e_after = (before[0].metrics["energy_in_subspace"],
                         after[0].metrics["energy_in_subspace"])
    assert before[0].metrics["basis_source"].startswith("estimated by the auditor")
    assert after[0].metrics["basis_source"].startswith("published")
    assert e_before["users"] == before[0].metrics["target_users"] > 100   # every private user
    assert e_before["median"] > 1e-4                 # undefended updates have energy there
    assert e_after["max"] < 1e-10                    # the defense removed all of it


@pytest.mark.slow
def test_adaptive_attacker_still_infers_gender_projection_is_no_guarantee(runs):
    """FedMF leaks gender through which item rows an update touches: a few linear
    directions estimated on 60 public users do not remove that, and the audit says so."""
    _, defended = runs
    gender = {r.metrics["attribute"]: r for r in
              run_adaptive_attribute_inference(defended, "server", bootstrap_rounds=50)}["gender"]
    assert gender.verdict.level == LEAK and gender.estimate.low > 0.6


@pytest.mark.slow
def test_the_audit_runs_the_adaptive_attacker_beside_a3(runs):
    _, defended = runs
    report = run_audit(defended, AuditOptions(attacks=("a3",), views=("public",),
                                              bootstrap=10, progress=False))
    titles = [r.title for r in report.results]
    assert sum("adaptive" in t for t in titles) == 3 and len(titles) == 6
    # the public view (one model change for everyone) teaches nothing per user
    assert all(r.verdict.level in (NO_LEAK, INCONCLUSIVE) for r in report.results)
    assert all(np.isfinite(r.estimate.value) for r in report.results)
