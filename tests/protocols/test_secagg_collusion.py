"""The collusion calculator: exact per-client figure, union bound and Monte Carlo agree with
each other and with cases worked out by hand; the command prints them."""

import pytest
from scipy import stats

from protocols.secagg.collusion import exposure, main


def test_complete_graph_is_all_or_nothing():
    """k = n - 1: every honest client sees every colluder, so it is exposed iff c >= t."""
    assert exposure(10, 9, 5, 0.5, trials=100).per_client == 1.0
    e = exposure(10, 9, 5, 0.4, trials=100)
    assert e.per_client == 0.0 and e.round_hits == 0


def test_fewer_colluders_than_the_threshold_expose_nobody():
    e = exposure(100, 20, 11, 0.1, rounds=100, trials=2000)
    assert e.corrupted == 10 and e.per_client == 0.0 and e.run_union == 0.0
    assert e.round_hits == 0


def test_per_client_is_hypergeometric_and_the_round_lies_between_the_bounds():
    n, k, t, g = 60, 12, 7, 0.3
    e = exposure(n, k, t, g, rounds=10, trials=20000, seed=1)
    c = round(g * n)
    assert e.per_client == pytest.approx(stats.hypergeom.sf(t - 1, n - 1, c, k))
    assert 0 < e.per_client < e.round_estimate <= e.round_union
    assert e.round_estimate <= e.round_upper
    assert e.run_estimate == pytest.approx(1 - (1 - e.round_estimate) ** 10)
    assert e.run_union == min(1.0, 10 * e.round_union)


def test_the_degree_is_made_effective_and_bad_input_refused():
    assert exposure(10, 100, 5, 0.2).k == 9
    assert exposure(50, 7, 5, 0.2).k == 8
    with pytest.raises(ValueError):
        exposure(10, 4, 3, 1.5)


def test_command_prints_the_round_and_run_figures(capsys):
    main(["--n", "100", "--k", "20", "--t", "11", "--corrupt", "0.1", "--rounds", "5",
          "--trials", "500"])
    out = capsys.readouterr().out
    assert "some client of a round" in out and "run of 5 rounds" in out
    assert "colluding clients = 10 of 100" in out
