"""A durable per-user privacy-budget ledger (SQLite).

Each spend is one row keyed by ``(user, round)``, written in its own transaction *before* the
user's update leaves the client (or, for eligibility charging, before the round starts), with
``journal_mode = WAL`` and ``synchronous = FULL``: once :meth:`PrivacyLedger.record` or
:meth:`PrivacyLedger.charge` returns, the spend survives a killed process or a power cut.
Recording the same ``(user, round)`` again is a no-op, so a round replayed after a crash is
never counted twice.

Epsilon does not add up linearly under PRV or RDP accounting, so a row stores the mechanism it
charged (``events``: ``[[sigma, q, steps], ...]``); a user's next epsilon is the accountant
applied to the composition of all their rows plus the new charge. The epsilon after each
spend is stored too, and :meth:`PrivacyLedger.spent` reports the largest one.

A replayed round must re-send the *same* update: regenerate its randomness from a persisted
secret (:class:`ffm_private.privacy.client_secrets.SecretStore`). Passing the update's
``digest`` lets the ledger catch a replay whose content changed (a second release of the same
data, which this ledger would otherwise not charge).
"""

from __future__ import annotations

import csv
import json
import math
import sqlite3
import time
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ffm_private.privacy.accounting import (
    GaussianEvent,
    check_accountant,
    check_delta,
    compose,
    epsilon_for_events,
)
from ffm_private.privacy.errors import BudgetExceededError, LedgerConflictError, LedgerError

SCHEMA_VERSION = "1"
_EPS_MATCH = 1e-12

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS caps (user TEXT PRIMARY KEY, cap REAL NOT NULL CHECK (cap > 0));
CREATE TABLE IF NOT EXISTS spends (
    user TEXT NOT NULL,
    round INTEGER NOT NULL CHECK (round >= 0),
    epsilon_after REAL NOT NULL CHECK (epsilon_after >= 0),
    events TEXT NOT NULL,
    digest TEXT,
    recorded_at REAL NOT NULL,
    PRIMARY KEY (user, round)
);
CREATE TABLE IF NOT EXISTS declines (
    user TEXT NOT NULL,
    round INTEGER NOT NULL CHECK (round >= 0),
    epsilon_needed REAL NOT NULL,
    cap REAL NOT NULL,
    PRIMARY KEY (user, round)
);
"""


def _uid(user: int | str) -> str:
    if isinstance(user, bool) or not isinstance(user, int | str) or str(user) == "":
        raise LedgerError(f"user id {user!r} must be a non-empty str or an int")
    return str(user)


def _limit(before_round: int | None) -> int:
    """The exclusive upper bound on rounds for a read (everything when ``None``)."""
    return 2**62 if before_round is None else _round(before_round)


def _round(round_id: int) -> int:
    if isinstance(round_id, bool) or not isinstance(round_id, int) or round_id < 0:
        raise LedgerError(f"round = {round_id!r} must be a non-negative integer")
    return round_id


def check_cap(cap: float, where: str = "cap") -> float:
    """A cap is a positive epsilon (``math.inf`` means no cap)."""
    if isinstance(cap, bool) or not isinstance(cap, int | float) or math.isnan(cap) or cap <= 0:
        raise LedgerError(f"{where} = {cap!r} must be a number > 0")
    return float(cap)


def _events_json(events: Iterable[GaussianEvent | Sequence[float]]) -> str:
    evs = [e if isinstance(e, GaussianEvent) else GaussianEvent(*e) for e in events]
    return json.dumps([list(e.as_tuple()) for e in evs])


def _events_from_json(text: str) -> list[GaussianEvent]:
    return [GaussianEvent(float(s), float(q), int(n)) for s, q, n in json.loads(text)]


@dataclass(frozen=True)
class SpendDecision:
    """The outcome of a charge: whether the user takes part, and their epsilon."""

    user: str
    round: int
    admitted: bool
    epsilon: float
    """Epsilon after this charge if admitted (or replayed); the epsilon it *would* have
    reached if declined."""
    cap: float
    replayed: bool = False
    """The ``(user, round)`` spend was already recorded (a replay after a resume)."""


class PrivacyLedger:
    """Per-user epsilon caps and spends, durable across crashes.

    ``delta`` and ``accountant`` are fixed when the file is created (spends computed under
    different settings are not comparable); reopening with other values raises
    :class:`LedgerError`. ``default_cap`` applies to users without their own cap.
    """

    def __init__(self, path: str | Path, *, delta: float, accountant: str = "prv",
                 default_cap: float, caps: Mapping[int | str, float] | None = None) -> None:
        self.path = Path(path)
        self.delta = check_delta(delta)
        self.accountant = check_accountant(accountant)
        self.default_cap = check_cap(default_cap, "default_cap")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=60.0)
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                self._db.execute("PRAGMA journal_mode=DELETE")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            with self._transaction():
                for stmt in filter(str.strip, _SCHEMA.split(";")):
                    self._db.execute(stmt)
                self._check_meta()
        except sqlite3.DatabaseError as err:
            raise LedgerError(f"{self.path}: not a usable ledger database: {err}") from err
        if caps:
            self.set_caps(caps)

    # -- plumbing -----------------------------------------------------------------------------
    def _transaction(self) -> _Tx:
        return _Tx(self._db)

    def _check_meta(self) -> None:
        want = {"schema_version": SCHEMA_VERSION, "delta": repr(self.delta),
                "accountant": self.accountant}
        have = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        for key, value in want.items():
            if key not in have:
                self._db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))
            elif have[key] != value:
                raise LedgerError(f"{self.path} was created with {key} = {have[key]}, not "
                                  f"{value}: spends under different settings do not compose")

    def close(self) -> None:
        """Close the database (every recorded spend is already durable)."""
        self._db.close()

    def __enter__(self) -> PrivacyLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- caps ---------------------------------------------------------------------------------
    def set_cap(self, user: int | str, cap: float) -> None:
        """Set one user's own cap (replacing any earlier one)."""
        self.set_caps({user: cap})

    def set_caps(self, caps: Mapping[int | str, float]) -> None:
        """Set many users' caps in one transaction."""
        rows = [(_uid(u), check_cap(c, f"cap of user {u!r}")) for u, c in caps.items()]
        with self._transaction():
            self._db.executemany("INSERT INTO caps (user, cap) VALUES (?, ?) ON CONFLICT(user) "
                                 "DO UPDATE SET cap = excluded.cap", rows)

    def cap(self, user: int | str) -> float:
        """The user's own cap, or the default one."""
        row = self._db.execute("SELECT cap FROM caps WHERE user = ?", (_uid(user),)).fetchone()
        return float(row[0]) if row else self.default_cap

    # -- reading ------------------------------------------------------------------------------
    def spent(self, user: int | str) -> float:
        """Epsilon the user has spent so far (0.0 if never charged)."""
        row = self._db.execute("SELECT MAX(epsilon_after) FROM spends WHERE user = ?",
                               (_uid(user),)).fetchone()
        return float(row[0]) if row and row[0] is not None else 0.0

    def participations(self, user: int | str, before_round: int | None = None) -> int:
        """How many rounds the user has been charged for (only rounds < ``before_round``).

        ``before_round`` reads the ledger as it stood when that round started, so a round
        replayed after a crash (whose charges may already be recorded) selects as it did.
        """
        limit = _limit(before_round)
        return int(self._db.execute("SELECT COUNT(*) FROM spends WHERE user = ? AND round < ?",
                                    (_uid(user), limit)).fetchone()[0])

    def rounds(self, user: int | str) -> list[int]:
        """The rounds the user was charged for, in order."""
        return [int(r) for (r,) in self._db.execute(
            "SELECT round FROM spends WHERE user = ? ORDER BY round", (_uid(user),))]

    def history(self, user: int | str, before_round: int | None = None
                ) -> tuple[GaussianEvent, ...]:
        """The user's composed mechanism history (rounds < ``before_round``; empty if none)."""
        rows = self._db.execute("SELECT events FROM spends WHERE user = ? AND round < ? "
                                "ORDER BY round", (_uid(user), _limit(before_round))).fetchall()
        events = [e for (text,) in rows for e in _events_from_json(text)]
        return compose(events) if events else ()

    def next_epsilon(self, user: int | str, events: Iterable[GaussianEvent],
                     before_round: int | None = None) -> float:
        """Epsilon the user would have after one more charge of ``events``."""
        return self._epsilon(list(self.history(user, before_round)) + list(events))

    def would_exceed(self, user: int | str, epsilon_after: float) -> bool:
        """True when reaching ``epsilon_after`` would take the user past their cap."""
        return epsilon_after > self.cap(user)

    def _epsilon(self, events: Sequence[GaussianEvent]) -> float:
        return epsilon_for_events(events, self.delta, self.accountant) if events else 0.0

    # -- writing ------------------------------------------------------------------------------
    def record(self, user: int | str, round_id: int, epsilon_after: float,
               events: Iterable[GaussianEvent | Sequence[float]] = (),
               digest: str | None = None) -> SpendDecision:
        """Durably record a spend the caller computed; idempotent on ``(user, round)``.

        ``events`` is the mechanism this spend adds (required: it is the accountant state the
        next spend composes with). ``epsilon_after`` is checked against the ledger's own
        accounting of the history plus ``events``; an understated value is refused.
        Raises :class:`BudgetExceededError` (nothing written) if ``epsilon_after`` exceeds the
        user's cap, and :class:`LedgerConflictError` if the ``(user, round)`` spend already
        exists with a different epsilon, mechanism or digest.
        """
        uid, rnd = _uid(user), _round(round_id)
        if (isinstance(epsilon_after, bool) or not isinstance(epsilon_after, int | float)
                or not math.isfinite(epsilon_after) or epsilon_after < 0):
            raise LedgerError(f"epsilon_after = {epsilon_after!r} must be a finite number >= 0")
        evs = [e if isinstance(e, GaussianEvent) else GaussianEvent(*e) for e in events]
        if not evs:
            raise LedgerError("record needs the mechanism events of the spend (the state the "
                              "next participation's epsilon is computed from)")
        ev_json = _events_json(evs)
        with self._transaction():
            replay = self._replay(uid, rnd, float(epsilon_after), ev_json, digest)
            if replay is not None:
                return replay
            cap = self.cap(uid)
            if epsilon_after > cap:
                raise BudgetExceededError(uid, float(epsilon_after), cap)
            needed = self._epsilon(list(self.history(uid)) + evs)
            if epsilon_after < needed * (1 - 1e-9):
                raise LedgerError(f"user {uid!r} round {rnd}: epsilon_after = {epsilon_after!r} "
                                  f"understates the accountant's {needed!r} for this history")
            self._insert_spend(uid, rnd, float(epsilon_after), ev_json, digest)
        return SpendDecision(uid, rnd, True, float(epsilon_after), cap)

    def charge(self, user: int | str, round_id: int,
               events: Iterable[GaussianEvent | Sequence[float]],
               digest: str | None = None) -> SpendDecision:
        """Compute the user's epsilon after ``events`` and record it, or decline.

        One transaction: read the history, account, compare with the cap, write. A declined
        charge is logged in ``declines`` (for the run summary) and spends nothing.
        """
        return self.charge_many([user], round_id, events, digests={user: digest} if digest
                                else None)[_uid(user)]

    def charge_many(self, users: Iterable[int | str], round_id: int,
                    events: Iterable[GaussianEvent | Sequence[float]],
                    digests: Mapping[int | str, str] | None = None
                    ) -> dict[str, SpendDecision]:
        """:meth:`charge` for many users with the same mechanism, in one transaction.

        Use it for eligibility charging (user-level DP with central noise): before sampling,
        charge every user in the pool; those declined leave the pool for this round.
        """
        rnd = _round(round_id)
        evs = [e if isinstance(e, GaussianEvent) else GaussianEvent(*e) for e in events]
        if not evs:
            raise LedgerError("a charge needs at least one mechanism event")
        ev_json = _events_json(evs)
        uids = list(dict.fromkeys(_uid(u) for u in users))
        dig = {_uid(u): d for u, d in (digests or {}).items()}
        out: dict[str, SpendDecision] = {}
        with self._transaction():
            for uid in uids:
                replay = self._replay(uid, rnd, None, ev_json, dig.get(uid))
                if replay is not None:
                    out[uid] = replay
                    continue
                cap = self.cap(uid)
                eps = self._epsilon(list(self.history(uid)) + evs)
                if eps > cap:
                    self._db.execute("INSERT OR IGNORE INTO declines (user, round, "
                                     "epsilon_needed, cap) VALUES (?, ?, ?, ?)",
                                     (uid, rnd, eps, cap))
                    out[uid] = SpendDecision(uid, rnd, False, eps, cap)
                    continue
                self._insert_spend(uid, rnd, eps, ev_json, dig.get(uid))
                out[uid] = SpendDecision(uid, rnd, True, eps, cap)
        return out

    def _replay(self, uid: str, rnd: int, epsilon_after: float | None, ev_json: str,
                digest: str | None) -> SpendDecision | None:
        row = self._db.execute("SELECT epsilon_after, events, digest FROM spends WHERE "
                               "user = ? AND round = ?", (uid, rnd)).fetchone()
        if row is None:
            return None
        eps, old_events, old_digest = float(row[0]), row[1], row[2]
        if epsilon_after is not None and abs(eps - epsilon_after) > _EPS_MATCH * max(1.0, eps):
            raise LedgerConflictError(f"user {uid!r} round {rnd}: already recorded with "
                                      f"epsilon {eps!r}, now {epsilon_after!r}")
        if ev_json != old_events:
            raise LedgerConflictError(f"user {uid!r} round {rnd}: already recorded with "
                                      f"mechanism {old_events}, now {ev_json}")
        if digest is not None and old_digest is not None and digest != old_digest:
            raise LedgerConflictError(
                f"user {uid!r} round {rnd}: a different update was already recorded for this "
                "round; re-sending different content would be a second, uncharged release "
                "(replay the same randomness, or have the user decline the replayed round)")
        return SpendDecision(uid, rnd, True, eps, self.cap(uid), replayed=True)

    def _insert_spend(self, uid: str, rnd: int, eps: float, ev_json: str,
                      digest: str | None) -> None:
        self._db.execute("INSERT INTO spends (user, round, epsilon_after, events, digest, "
                         "recorded_at) VALUES (?, ?, ?, ?, ?, ?)",
                         (uid, rnd, eps, ev_json, digest, time.time()))

    # -- reporting ----------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Per-user caps and spends plus totals, JSON-ready, for the run summary."""
        rows = self._db.execute("""
            SELECT u.user, c.cap, COUNT(s.round), MAX(s.epsilon_after), MAX(s.round),
                   (SELECT COUNT(*) FROM declines d WHERE d.user = u.user)
            FROM (SELECT user FROM spends UNION SELECT user FROM caps
                  UNION SELECT user FROM declines) u
            LEFT JOIN caps c ON c.user = u.user
            LEFT JOIN spends s ON s.user = u.user
            GROUP BY u.user ORDER BY u.user""").fetchall()
        users = []
        for user, cap, n, eps, last, declined in rows:
            cap = float(cap) if cap is not None else self.default_cap
            eps = float(eps) if eps is not None else 0.0
            users.append({"user": user, "cap": cap, "participations": int(n), "epsilon": eps,
                          "remaining": cap - eps, "last_round": last,
                          "declined_rounds": int(declined)})
        spent = [u["epsilon"] for u in users if u["participations"]]
        return {
            "delta": self.delta,
            "accountant": self.accountant,
            "default_cap": self.default_cap,
            "users": users,
            "users_charged": len(spent),
            "max_epsilon": max(spent) if spent else 0.0,
            "mean_epsilon": sum(spent) / len(spent) if spent else 0.0,
            "users_with_declines": sum(1 for u in users if u["declined_rounds"]),
            "users_over_cap": sum(1 for u in users if u["epsilon"] > u["cap"]),
        }


class _Tx:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any exception)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.db.execute("COMMIT")
        else:
            self.db.execute("ROLLBACK")


# -- per-user caps files ------------------------------------------------------------------------
def load_caps(path: str | Path) -> dict[str, float]:
    """Per-user caps from a CSV (header ``user,cap``) or TOML (``[caps]`` table) file.

    Every cap must be a number > 0; duplicate or empty user ids are refused.
    """
    from ffm_private.config import ConfigError

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"per-user caps file {path} does not exist")
    caps: dict[str, float] = {}

    def put(user: Any, cap: Any, where: str) -> None:
        uid = str(user).strip()
        if not uid:
            raise ConfigError(f"{where}: empty user id")
        if uid in caps:
            raise ConfigError(f"{where}: user {uid!r} appears twice")
        if isinstance(cap, str):
            try:
                cap = float(cap)
            except ValueError:
                raise ConfigError(f"{where}: cap {cap!r} of user {uid!r} is not a number") \
                    from None
        if isinstance(cap, bool) or not isinstance(cap, int | float) or math.isnan(cap) \
                or cap <= 0:
            raise ConfigError(f"{where}: cap {cap!r} of user {uid!r} must be a number > 0")
        caps[uid] = float(cap)

    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or not {"user", "cap"} <= set(reader.fieldnames):
                raise ConfigError(f"{path}: CSV needs a header with columns 'user' and 'cap', "
                                  f"found {reader.fieldnames}")
            for i, row in enumerate(reader, start=2):
                put(row["user"], row["cap"], f"{path}:{i}")
    elif suffix == ".toml":
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: not valid TOML: {err}") from None
        table = data.get("caps")
        if not isinstance(table, Mapping) or set(data) != {"caps"}:
            raise ConfigError(f"{path}: expected a single [caps] table of user = cap")
        for user, cap in table.items():
            put(user, cap, f"{path} [caps]")
    else:
        raise ConfigError(f"{path}: per-user caps must be a .csv or .toml file")
    return caps


__all__ = ["PrivacyLedger", "SpendDecision", "check_cap", "load_caps"]
