"""The per-user ledger: caps are never exceeded, spends compose correctly, replays are free."""

from __future__ import annotations

import math
import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ffm_private.config import ConfigError
from ffm_private.privacy import ledger as ledger_mod
from ffm_private.privacy.accounting import GaussianEvent, epsilon_for, epsilon_for_events
from ffm_private.privacy.errors import BudgetExceededError, LedgerConflictError, LedgerError
from ffm_private.privacy.ledger import PrivacyLedger, load_caps
from tests.privacy import reference as ref

DELTA = 1e-5
EVENT = GaussianEvent(2.0, 0.1, 5)


def _ledger(tmp_path, name="ledger.db", **kwargs) -> PrivacyLedger:
    kwargs.setdefault("delta", DELTA)
    kwargs.setdefault("accountant", "rdp")
    kwargs.setdefault("default_cap", 5.0)
    return PrivacyLedger(tmp_path / name, **kwargs)


def test_pragmas_make_each_commit_durable(tmp_path):
    with _ledger(tmp_path) as led:
        assert led._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert led._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_charges_compose_by_participation_count_until_the_cap(tmp_path):
    led = _ledger(tmp_path, default_cap=3.0)
    admitted = []
    for r in range(40):
        d = led.charge("alice", r, [EVENT])
        assert led.spent("alice") <= 3.0
        if not d.admitted:
            assert d.epsilon > 3.0 and led.spent("alice") == admitted[-1]
            break
        admitted.append(d.epsilon)
    k = len(admitted)
    assert 1 < k < 40
    assert led.participations("alice") == k == len(led.rounds("alice"))
    # Independent oracle: epsilon of k participations is the accountant over k * steps, not
    # k times the epsilon of one participation (which would be far larger).
    assert led.spent("alice") == pytest.approx(
        ref.rdp_epsilon([(2.0, 0.1, 5 * k)], DELTA), rel=0.05)
    assert led.spent("alice") == epsilon_for(2.0, 0.1, 5 * k, DELTA, "rdp")
    assert led.spent("alice") < k * admitted[0]
    assert led.history("alice") == (GaussianEvent(2.0, 0.1, 5 * k),)
    # Declines are idempotent and reported.
    led.charge("alice", 39, [EVENT])
    led.charge("alice", 39, [EVENT])
    row = next(u for u in led.summary()["users"] if u["user"] == "alice")
    assert row["declined_rounds"] == 2 and row["participations"] == k


def test_recording_the_same_round_twice_is_idempotent(tmp_path):
    led = _ledger(tmp_path)
    first = led.charge(7, 0, [EVENT], digest="abc")
    again = led.charge("7", 0, [EVENT], digest="abc")
    assert again.replayed and again.epsilon == first.epsilon
    assert led.participations(7) == 1
    second = led.charge(7, 1, [EVENT])
    assert second.epsilon == epsilon_for_events([EVENT.times(2)], DELTA, "rdp")
    rec = led.record(7, 1, second.epsilon, [EVENT])
    assert rec.replayed and led.participations(7) == 2


def test_conflicting_replays_are_refused(tmp_path):
    led = _ledger(tmp_path)
    d = led.charge("u", 0, [EVENT], digest="aaa")
    with pytest.raises(LedgerConflictError, match="different update"):
        led.charge("u", 0, [EVENT], digest="bbb")
    with pytest.raises(LedgerConflictError, match="mechanism"):
        led.charge("u", 0, [GaussianEvent(3.0, 0.2, 5)])
    with pytest.raises(LedgerConflictError, match="epsilon"):
        led.record("u", 0, d.epsilon + 0.1, [EVENT])
    assert led.participations("u") == 1


def test_record_checks_cap_and_the_callers_epsilon(tmp_path):
    led = _ledger(tmp_path, caps={"bob": 1.0})
    eps1 = epsilon_for_events([EVENT], DELTA, "rdp")
    assert not led.would_exceed("bob", eps1) and eps1 < 1.0
    led.record("bob", 0, eps1, [EVENT])
    eps2 = led.next_epsilon("bob", [EVENT])
    assert eps2 == epsilon_for_events([EVENT.times(2)], DELTA, "rdp")
    with pytest.raises(LedgerError, match="understates"):
        led.record("bob", 1, eps1, [EVENT])  # as if the history were forgotten
    big = GaussianEvent(0.5, 1.0, 1)
    eps_big = led.next_epsilon("bob", [big])
    assert led.would_exceed("bob", eps_big)
    with pytest.raises(BudgetExceededError, match="must decline"):
        led.record("bob", 1, eps_big, [big])
    assert led.participations("bob") == 1 and led.spent("bob") == eps1
    with pytest.raises(LedgerError, match="mechanism events"):
        led.record("bob", 2, eps2, [])


def test_charge_many_is_one_decision_per_user(tmp_path):
    led = _ledger(tmp_path, default_cap=2.0, caps={"b": 0.5})
    ev = GaussianEvent(2.0, 0.1, 1)
    out = led.charge_many(["a", "b", "a"], 0, [ev])
    assert set(out) == {"a", "b"}
    assert out["a"].admitted
    first = epsilon_for_events([ev], DELTA, "rdp")
    assert out["a"].epsilon == first
    assert out["b"].admitted == (first <= 0.5)
    assert led.charge_many(["a"], 0, [ev])["a"].replayed


def _reference_accountant(events, delta, accountant):
    return ref.rdp_epsilon([e.as_tuple() for e in events], delta, ref.INT_ORDERS[:62])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(caps=st.lists(st.floats(0.2, 6.0), min_size=1, max_size=4),
       plan=st.lists(st.tuples(st.integers(0, 3), st.sampled_from([0.5, 1.0, 2.0]),
                               st.sampled_from([0.05, 0.3, 1.0]), st.integers(1, 4)),
                     min_size=1, max_size=25))
def test_no_sequence_of_charges_exceeds_a_cap(tmp_path_factory, monkeypatch, caps, plan):
    # The property is about the ledger's bookkeeping; the reference RDP (cached per order)
    # keeps the many distinct histories fast.
    monkeypatch.setattr(ledger_mod, "epsilon_for_events", _reference_accountant)
    led = _ledger(tmp_path_factory.mktemp("h"), caps={f"u{i}": c for i, c in enumerate(caps)},
                  default_cap=1.0)
    admitted: dict[str, list[GaussianEvent]] = {}
    for r, (who, sigma, q, steps) in enumerate(plan):
        user = f"u{who}"
        ev = GaussianEvent(sigma, q, steps)
        d = led.charge(user, r, [ev])
        if d.admitted:
            admitted.setdefault(user, []).append(ev)
        assert led.spent(user) <= led.cap(user)
    for user, events in admitted.items():
        # The recorded spend is the accountant over exactly the admitted charges.
        assert led.spent(user) == pytest.approx(
            ref.rdp_epsilon([e.as_tuple() for e in events], DELTA, ref.INT_ORDERS[:62]), rel=1e-9)
    assert led.summary()["users_over_cap"] == 0
    led.close()


def test_reopening_keeps_spends_and_refuses_other_settings(tmp_path):
    led = _ledger(tmp_path)
    led.charge("u", 0, [EVENT])
    led.close()
    with _ledger(tmp_path) as again:
        assert again.participations("u") == 1
    with pytest.raises(LedgerError, match="delta"):
        _ledger(tmp_path, delta=1e-6)
    with pytest.raises(LedgerError, match="accountant"):
        _ledger(tmp_path, accountant="prv")
    (tmp_path / "junk.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(LedgerError, match="not a usable ledger"):
        _ledger(tmp_path, name="junk.db")


def test_bad_arguments(tmp_path):
    with pytest.raises(LedgerError, match="default_cap"):
        _ledger(tmp_path, default_cap=0.0)
    led = _ledger(tmp_path)
    with pytest.raises(LedgerError, match="cap of user"):
        led.set_cap("u", -1.0)
    with pytest.raises(LedgerError, match="round"):
        led.charge("u", -1, [EVENT])
    with pytest.raises(LedgerError, match="user id"):
        led.charge("", 0, [EVENT])
    led.set_cap("u", math.inf)
    assert led.cap("u") == math.inf and led.cap("other") == 5.0


def test_summary_lists_every_user(tmp_path):
    led = _ledger(tmp_path, caps={"quiet": 1.0})
    led.charge("a", 0, [EVENT])
    s = led.summary()
    users = {u["user"]: u for u in s["users"]}
    assert set(users) == {"a", "quiet"}
    assert users["quiet"]["participations"] == 0 and users["quiet"]["cap"] == 1.0
    assert users["a"]["remaining"] == pytest.approx(5.0 - users["a"]["epsilon"])
    assert s["users_charged"] == 1 and s["max_epsilon"] == users["a"]["epsilon"]
    # The rows are plain SQLite: readable without this package.
    con = sqlite3.connect(tmp_path / "ledger.db")
    assert con.execute("SELECT COUNT(*) FROM spends").fetchone()[0] == 1
    con.close()


def test_caps_files(tmp_path):
    csv_file = tmp_path / "caps.csv"
    csv_file.write_text("user,cap\n1,2.5\nalice,0.5\n")
    assert load_caps(csv_file) == {"1": 2.5, "alice": 0.5}
    toml_file = tmp_path / "caps.toml"
    toml_file.write_text('[caps]\n1 = 2.5\n"alice" = 1\n')
    assert load_caps(toml_file) == {"1": 2.5, "alice": 1.0}
    bad = {
        "dup.csv": ("user,cap\n1,2\n1,3\n", "appears twice"),
        "neg.csv": ("user,cap\n1,-2\n", "must be a number > 0"),
        "zero.csv": ("user,cap\n1,0\n", "must be a number > 0"),
        "nan.csv": ("user,cap\n1,abc\n", "not a number"),
        "nohead.csv": ("1,2\n", "header"),
        "empty.csv": ("user,cap\n,2\n", "empty user id"),
        "flat.toml": ("alice = 1.0\n", r"\[caps\] table"),
        "badval.toml": ('[caps]\nalice = "x"\n', "not a number"),
        "caps.json": ("{}", ".csv or .toml"),
    }
    for name, (text, message) in bad.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_caps(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_caps(tmp_path / "missing.csv")


def test_ledger_accountant_is_the_public_one(tmp_path, monkeypatch):
    # Guard for the crash test's worker, which swaps in the reference accountant.
    assert ledger_mod.epsilon_for_events is epsilon_for_events
