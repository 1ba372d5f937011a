"""Run ``ffm-private train`` and SIGKILL this process at a chosen moment.

Usage: python -m tests.reliability._kill_worker POINT N -- <cli arguments>

POINT names what is counted; the process kills itself on the N-th occurrence:
  write     before the N-th atomic rename (config, backbone, checkpoint files, LATEST, logs)
  data      after the N-th synthetic data file is written (mid-generation)
  client    before the N-th client's local training (mid-round)
  charge    after the N-th durable ledger charge returns (committed, not yet released)
  time      N milliseconds after the command starts (wherever the run happens to be)
  none      never (a resume that needs the environment below)

FFM_PRIVATE_TEST_SECRETS=<seed> derives every party's secret from that public seed, as
``privacy.noise_seed`` does for DP runs, so two runs without DP (HE's stochastic rounding is
keyed by the clients' secrets) are comparable bit for bit. Tests only: it protects nothing.
"""

from __future__ import annotations

import os
import signal
import sys
import threading


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _counting(fn, n: int, after: bool):
    calls = [0]

    def wrapper(*args, **kwargs):
        calls[0] += 1
        if not after and calls[0] == n:
            _die()
        out = fn(*args, **kwargs)
        if after and calls[0] == n:
            _die()
        return out

    return wrapper


def seed_secrets(seed: int) -> None:
    """Make every run of this process derive its parties' secrets from ``seed``."""
    import ffm_private.simulation as simulation

    store = simulation.SecretStore

    class Seeded(store):
        def __init__(self, root, *, test_seed=None):
            super().__init__(root, test_seed=seed if test_seed is None else test_seed)

    simulation.SecretStore = Seeded


def main() -> int:
    point, n = sys.argv[1], int(sys.argv[2])
    argv = sys.argv[sys.argv.index("--") + 1:]
    if os.environ.get("FFM_PRIVATE_TEST_SECRETS"):
        seed_secrets(int(os.environ["FFM_PRIVATE_TEST_SECRETS"]))
    if point == "write":
        import ffm_private.storage as storage

        storage.os.replace = _counting(os.replace, n, after=False)
    elif point == "data":
        import ffm_private.data.synthetic as synthetic

        synthetic._write_lines = _counting(synthetic._write_lines, n, after=True)
    elif point == "client":
        import ffm_private.simulation as simulation

        simulation.train_client = _counting(simulation.train_client, n, after=False)
    elif point == "charge":
        from ffm_private.privacy.ledger import PrivacyLedger

        PrivacyLedger.charge_many = _counting(PrivacyLedger.charge_many, n, after=True)
        PrivacyLedger.charge = _counting(PrivacyLedger.charge, n, after=True)
    elif point == "none":
        pass
    elif point == "time":
        timer = threading.Timer(n / 1000, _die)
        timer.daemon = True
        timer.start()
    else:
        raise SystemExit(f"unknown kill point {point!r}")
    from ffm_private.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
