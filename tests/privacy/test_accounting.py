"""Accountant values against Opacus's own and independent references from the papers."""

from __future__ import annotations

import pytest

from ffm_private.privacy import accounting as acc
from ffm_private.privacy.accounting import (
    PRV_EPS_ERROR,
    RDP_ORDERS,
    GaussianEvent,
    epsilon_for,
    epsilon_for_events,
    noise_for_epsilon,
    noise_for_epsilon_phases,
)
from ffm_private.privacy.errors import AccountingError
from tests.privacy import reference as ref

DELTA = 1e-5
# (sigma, q, steps): DP-FedAvg-like (few rounds, q ~ 0.1) and DP-SGD-like (many steps, small q).
SUBSAMPLED = [(1.0, 0.1, 100), (0.8, 0.05, 500), (2.0, 0.01, 1000), (1.2, 0.3, 20)]
# PRV reports the upper end of an interval of width <= 2 * eps_error around the true value.
PRV_TOL = 2 * PRV_EPS_ERROR


def _opacus_epsilon(history, accountant, **kwargs):
    from opacus.accountants import PRVAccountant, RDPAccountant

    a = PRVAccountant() if accountant == "prv" else RDPAccountant()
    a.history = list(history)
    return a.get_epsilon(delta=DELTA, **kwargs)


@pytest.mark.parametrize(("sigma", "q", "steps"), SUBSAMPLED + [(1.5, 1.0, 10)])
def test_rdp_equals_opacus_and_the_published_formula(sigma, q, steps):
    # Our wrapper is Opacus's RDP accountant with our orders ...
    ours = epsilon_for(sigma, q, steps, DELTA, "rdp")
    assert ours == pytest.approx(_opacus_epsilon([(sigma, q, steps)], "rdp",
                                                 alphas=list(RDP_ORDERS)), rel=1e-12)
    # ... and Opacus's RDP at integer orders equals Mironov et al. (2019) + Balle et al. (2020)
    # computed independently.
    reference = ref.rdp_epsilon([(sigma, q, steps)], DELTA)
    opacus_int = _opacus_epsilon([(sigma, q, steps)], "rdp", alphas=list(ref.INT_ORDERS))
    assert opacus_int == pytest.approx(reference, rel=1e-9)
    # More orders can only tighten the bound.
    assert ours <= reference * (1 + 1e-12)


def test_rdp_composition_of_heterogeneous_phases_is_additive():
    history = [(1.1, 0.05, 200), (0.9, 0.2, 30), (3.0, 1.0, 5)]
    opacus_int = _opacus_epsilon(history, "rdp", alphas=list(ref.INT_ORDERS))
    assert opacus_int == pytest.approx(ref.rdp_epsilon(history, DELTA), rel=1e-9)
    assert epsilon_for_events(history, DELTA, "rdp") == pytest.approx(
        _opacus_epsilon(history, "rdp", alphas=list(RDP_ORDERS)), rel=1e-12)


@pytest.mark.parametrize(("sigma", "q", "steps"), SUBSAMPLED[:2])
def test_prv_equals_opacus_and_sits_below_rdp(sigma, q, steps):
    ours = epsilon_for(sigma, q, steps, DELTA, "prv")
    assert ours == pytest.approx(_opacus_epsilon([(sigma, q, steps)], "prv",
                                                 eps_error=PRV_EPS_ERROR), rel=1e-12)
    # PRV is tight, RDP an upper bound: PRV must not exceed RDP (beyond PRV's error).
    assert ours <= epsilon_for(sigma, q, steps, DELTA, "rdp") + PRV_TOL


@pytest.mark.parametrize(("sigma", "steps"), [(1.0, 1), (3.0, 10), (10.0, 100)])
def test_unsampled_gaussian_matches_the_analytic_gaussian(sigma, steps):
    exact = ref.gaussian_epsilon(sigma, steps, DELTA)
    prv = epsilon_for(sigma, 1.0, steps, DELTA, "prv")
    assert exact <= prv <= exact + PRV_TOL
    assert epsilon_for(sigma, 1.0, steps, DELTA, "rdp") >= exact


@pytest.mark.parametrize(("sigma", "q"), [(1.0, 0.1), (0.7, 0.2), (0.5, 0.01), (2.0, 0.5)])
def test_one_subsampled_step_matches_the_exact_hockey_stick(sigma, q):
    exact = ref.subsampled_gaussian_one_step_epsilon(q, sigma, DELTA)
    prv = epsilon_for(sigma, q, 1, DELTA, "prv")
    assert exact <= prv <= exact + PRV_TOL
    assert epsilon_for(sigma, q, 1, DELTA, "rdp") >= exact


# PRV's reported figure is the upper end of its error interval, so it must not fall below an
# independent (pessimistic) PLD bound by more than rounding, and sits at most 2 * eps_error above.
PLD_SLACK = 1e-3


def _pld_epsilon(sigma: float, q: float, steps: int) -> float:
    pytest.importorskip("dp_accounting")
    from dp_accounting import dp_event
    from dp_accounting.pld import pld_privacy_accountant

    event = dp_event.SelfComposedDpEvent(
        dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(sigma)), steps)
    pld = pld_privacy_accountant.PLDAccountant()
    pld.compose(event)
    return float(pld.get_epsilon(DELTA))


def check_prv_against_pld(prv: float, pld: float) -> None:
    """One-sided: a PRV figure below Google's PLD bound would under-state epsilon."""
    assert prv >= pld - PLD_SLACK, f"PRV epsilon {prv} is below the PLD bound {pld}"
    assert prv <= pld + PRV_TOL, f"PRV epsilon {prv} is more than {PRV_TOL} above PLD {pld}"


@pytest.mark.parametrize(("sigma", "q", "steps"), SUBSAMPLED[:2] + [(1.5, 1.0, 10)])
def test_prv_is_never_below_dp_accounting_pld(sigma, q, steps):
    check_prv_against_pld(epsilon_for(sigma, q, steps, DELTA, "prv"),
                          _pld_epsilon(sigma, q, steps))


def test_pld_cross_check_rejects_a_prv_figure_below_the_bound():
    pld = _pld_epsilon(*SUBSAMPLED[0])
    lowered = epsilon_for(*SUBSAMPLED[0], DELTA, "prv") - 0.02  # still within 2 eps_error
    assert abs(lowered - pld) <= PRV_TOL  # a two-sided tolerance would accept it
    with pytest.raises(AssertionError, match="below the PLD bound"):
        check_prv_against_pld(lowered, pld)
    with pytest.raises(AssertionError, match="above PLD"):
        check_prv_against_pld(pld + 2.5 * PRV_TOL, pld)


def test_heterogeneous_composition_uses_the_accountant_history():
    events = [GaussianEvent(1.0, 0.05, 100), GaussianEvent(1.0, 0.2, 10)]
    ours = epsilon_for_events(events, DELTA, "prv")
    assert ours == pytest.approx(_opacus_epsilon([e.as_tuple() for e in events], "prv"),
                                 rel=1e-12)
    # Composing two phases costs more than either alone.
    assert ours > epsilon_for(1.0, 0.05, 100, DELTA, "prv")
    assert ours > epsilon_for(1.0, 0.2, 10, DELTA, "prv")


def test_equal_mechanisms_merge():
    split = epsilon_for_events([(1.0, 0.1, 30), (2.0, 0.5, 3), (1.0, 0.1, 20)], DELTA, "rdp")
    merged = epsilon_for_events([(1.0, 0.1, 50), (2.0, 0.5, 3)], DELTA, "rdp")
    assert split == merged
    assert acc.compose([(1.0, 0.1, 30), (1.0, 0.1, 20)]) == (GaussianEvent(1.0, 0.1, 50),)


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_noise_for_epsilon_round_trips(accountant):
    target, q, steps = 4.0, 0.1, 100
    sigma = noise_for_epsilon(target, q, steps, DELTA, accountant)
    eps = epsilon_for(sigma, q, steps, DELTA, accountant)
    assert target - acc.NOISE_TOLERANCE <= eps <= target
    # The search is tight: noticeably less noise overshoots the target.
    assert epsilon_for(0.95 * sigma, q, steps, DELTA, accountant) > target


def test_noise_search_is_cached():
    acc._noise_single.cache_clear()
    noise_for_epsilon(3.0, 0.2, 50, DELTA, "rdp")
    noise_for_epsilon(3.0, 0.2, 50, DELTA, "rdp")
    info = acc._noise_single.cache_info()
    assert (info.misses, info.hits) == (1, 1)


def test_multi_phase_noise_search_round_trips():
    phases = [(0.05, 200), (0.2, 20)]
    sigma = noise_for_epsilon_phases(6.0, phases, DELTA, "rdp")
    eps = epsilon_for_events([(sigma, q, n) for q, n in phases], DELTA, "rdp")
    assert 6.0 - acc.NOISE_TOLERANCE <= eps <= 6.0
    # One phase delegates to Opacus's search.
    assert noise_for_epsilon_phases(6.0, [(0.05, 200)], DELTA, "rdp") == \
        noise_for_epsilon(6.0, 0.05, 200, DELTA, "rdp")


@pytest.mark.parametrize(("call", "message"), [
    (lambda: epsilon_for(1.0, 0.1, 10, 0.0), "0 < delta < 1"),
    (lambda: epsilon_for(1.0, 0.1, 10, 1.0), "0 < delta < 1"),
    (lambda: epsilon_for(1.0, 0.0, 10, DELTA), "0 < q <= 1"),
    (lambda: epsilon_for(1.0, 1.5, 10, DELTA), "0 < q <= 1"),
    (lambda: epsilon_for(1.0, 0.1, 0, DELTA), "integer >= 1"),
    (lambda: epsilon_for(1.0, 0.1, 2.5, DELTA), "integer >= 1"),
    (lambda: epsilon_for(0.0, 0.1, 10, DELTA), "zero noise"),
    (lambda: epsilon_for(1.0, 0.1, 10, DELTA, "gdp"), "refused for privacy claims"),
    (lambda: epsilon_for(1.0, 0.1, 10, DELTA, "moments"), "unknown accountant"),
    (lambda: noise_for_epsilon(0.0, 0.1, 10, DELTA), "target_epsilon"),
    (lambda: noise_for_epsilon(-1.0, 0.1, 10, DELTA), "target_epsilon"),
    (lambda: noise_for_epsilon(float("inf"), 0.1, 10, DELTA), "target_epsilon"),
    (lambda: epsilon_for_events([], DELTA), "empty composition"),
])
def test_invalid_inputs_raise_clear_value_errors(call, message):
    with pytest.raises(ValueError, match=message) as info:
        call()
    assert isinstance(info.value, AccountingError)
