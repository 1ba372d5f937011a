"""A process that charges a fixed sequence of spends; the crash test kills it with SIGKILL.

Usage: python _ledger_worker.py DB [--hang-in-tx N]

Prints ``OK user round epsilon`` after each committed spend, ``DECLINE user round`` and
``REPLAY user round epsilon`` likewise, flushing each line. With ``--hang-in-tx N`` it prints
``INSIDE user round`` and sleeps inside the N-th write transaction, after its INSERT and before
its COMMIT, so the test can kill it there. The accountant is the test's reference RDP (no torch
import: each process starts in well under a second).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ffm_private.privacy import ledger as ledger_mod  # noqa: E402
from tests.privacy import reference  # noqa: E402

USERS = ["u0", "u1", "u2", "u3", "u4"]
CAPS = {"u0": 100.0, "u1": 3.0, "u2": 2.0, "u3": 1.2, "u4": 0.8}
ROUNDS = 24
EVENT = (1.2, 0.25, 2)  # (sigma, q, steps) charged per participation
DELTA = 1e-5
ORDERS = tuple(range(2, 65))


def reference_epsilon(events, delta, accountant):  # same signature as epsilon_for_events
    return reference.rdp_epsilon([e.as_tuple() for e in events], delta, ORDERS)


def participates(user: str, round_id: int) -> bool:
    """A fixed, data-independent participation pattern (two rounds in three)."""
    return (int(user[1:]) + round_id) % 3 != 0


class HangingLedger(ledger_mod.PrivacyLedger):
    hang_at = -1
    writes = 0

    def _insert_spend(self, uid, rnd, eps, ev_json, digest):
        super()._insert_spend(uid, rnd, eps, ev_json, digest)
        HangingLedger.writes += 1
        if HangingLedger.writes == HangingLedger.hang_at:
            print(f"INSIDE {uid} {rnd}", flush=True)
            time.sleep(60)


def main(argv: list[str]) -> int:
    ledger_mod.epsilon_for_events = reference_epsilon
    if "--hang-in-tx" in argv:
        HangingLedger.hang_at = int(argv[argv.index("--hang-in-tx") + 1])
    led = HangingLedger(argv[0], delta=DELTA, accountant="rdp", default_cap=100.0, caps=CAPS)
    for r in range(ROUNDS):
        for user in USERS:
            if not participates(user, r):
                continue
            d = led.charge(user, r, [EVENT])
            tag = "REPLAY" if d.replayed else ("OK" if d.admitted else "DECLINE")
            print(f"{tag} {user} {r} {d.epsilon!r}", flush=True)
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
