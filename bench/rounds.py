"""Time one federated round per client count and engine, with and without DP, and peak memory.

Uses the synthetic dataset in MovieLens-100K's shape (943 users, 1682 items, ~100k
interactions; ``--users N`` generates N users with the same items and interactions per
user) and the default FFM model, in-process with the plaintext protocol.
``--privacy user`` adds user-level DP-FedAvg (central noise, epsilon 4 over 100 rounds):
eligibility charges of every user in the durable ledger, clipping and noise.
``--privacy example`` runs example-level DP-SGD on every client (epsilon 8 over 100 rounds,
clipping norm 0.1; loop engine only); ``--batch-size`` sets the local batch of every run.
``--engines loop batched`` measures both client engines side by side (ratio loop / batched
per row). Each measurement runs in its own process, so its peak RSS is its own.
``--large 10000 50000`` adds, after the 943-user rows, one batched-engine round per user
count with every user a client (synthetic users in the ml100k shape, no DP, no evaluation),
with its peak RSS: the loop would take minutes per such round.
``--busy N`` keeps N CPU-bound busy loops (separate processes) running during the
measurement, to see how a round behaves when other jobs load the cores; ``--threads``
sets ``federated.client_threads`` (0: torch's default).

    python bench/rounds.py --clients 100 943 --privacy none user example --repeats 3
    python bench/rounds.py --clients 943 --engines loop batched --busy 2
    python bench/rounds.py --clients 943 --engines loop batched --large 10000 50000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from ffm_private.config import Config

PRIVACY = {
    "none": {},
    "user": {"mode": "user", "target_epsilon": 4.0, "clipping_norm": 0.5,
             "expected_clients_per_round": 94.3},
    # one protected interaction among ~100k: delta 1e-5 needs the explicit override
    "example": {"mode": "example", "target_epsilon": 8.0, "clipping_norm": 0.1,
                "allow_large_delta": True},
}
ML100K_USERS, ML100K_INTERACTIONS = 943, 100_000


def _spin() -> None:
    while True:
        pass


def start_busy(n: int) -> list[multiprocessing.Process]:
    """``n`` CPU-bound processes that run until terminated."""
    procs = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(n)]
    for p in procs:
        p.start()
    return procs


def stop_busy(procs: list[multiprocessing.Process]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.join()


def data_dir(root: Path, users: int) -> Path:
    """The ml100k-shaped synthetic data with ``users`` users (generated once)."""
    from ffm_private.data import SyntheticConfig, generate_synthetic
    from ffm_private.simulation import synthetic_complete

    path = root / f"data-{users}"
    if not synthetic_complete(path):
        generate_synthetic(path, SyntheticConfig(
            n_users=users, n_interactions=ML100K_INTERACTIONS * users // ML100K_USERS))
    return path


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """One configuration: median round time and a full evaluation, in this process."""
    from ffm_private.simulation import Simulation

    n, users, privacy = spec["clients"], spec["users"], spec["privacy"]
    cfg = Config(run_dir=spec["run_dir"]).replace(**{
        "data.synthetic_preset": "ml100k", "data.path": spec["data"],
        "federated.client_fraction": n / users, "model.kind": spec["model"],
        "federated.rounds": 100, "pretrain.epochs": 2, "privacy": PRIVACY[privacy],
        "federated.batch_size": spec["batch_size"], "federated.engine": spec["engine"],
        "federated.client_threads": spec["threads"],
        # a run records the observation log in its first two and last rounds: a typical
        # round does not (and run_round leaves it to the loop's ObservationLog callback)
        "observation.rounds": [-1]})
    sim = Simulation(cfg, progress=False).start()
    state = sim.initial_state()
    times = []
    for r in range(1, spec["repeats"] + 1):
        start = time.perf_counter()
        row = sim.run_round(state, r).row
        times.append(time.perf_counter() - start)
    eval_s = float("nan")
    if spec["evaluate"]:
        start = time.perf_counter()
        sim.evaluate(state)
        eval_s = time.perf_counter() - start
    sim.close()
    return {
        **{k: spec[k] for k in ("clients", "users", "privacy", "engine")},
        "load": os.getloadavg()[0], "round_s": statistics.median(times),
        "per_client_ms": 1000 * statistics.median(times) / n, "eval_s": eval_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "shared_params": sim.spec.size, "train_loss": row["train_loss"],
    }


def _child(spec: dict[str, Any]) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                         capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"measurement {spec} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[100, 943],
                        help="clients per round (at most --users)")
    parser.add_argument("--users", type=int, default=ML100K_USERS,
                        help="synthetic users (943: the ml100k preset)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="ffm", choices=["ffm", "fedmf"])
    parser.add_argument("--privacy", nargs="+", default=["none"], choices=sorted(PRIVACY))
    parser.add_argument("--engines", nargs="+", default=["loop"], choices=["loop", "batched"])
    parser.add_argument("--batch-size", type=int, default=Config().federated.batch_size,
                        help="local batch size of every run (example-level DP: sets the rate)")
    parser.add_argument("--busy", type=int, default=0,
                        help="CPU-bound busy loops running during the measurement")
    parser.add_argument("--threads", type=int, default=Config().federated.client_threads,
                        help="federated.client_threads (0: torch's default)")
    parser.add_argument("--no-eval", action="store_true", help="skip the full evaluation")
    parser.add_argument("--large", type=int, nargs="*", default=[],
                        help="also one batched round with this many users, all sampled")
    parser.add_argument("--data-dir", help="keep the generated data here (reused when complete)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(json.loads(args.child))))
        return

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = data_dir(Path(args.data_dir or tmp), args.users)
        busy = start_busy(args.busy)
        try:
            for n, privacy in ((n, p) for n in args.clients for p in args.privacy):
                row: dict[str, Any] = {}
                for engine in args.engines:
                    if engine == "batched" and privacy == "example":
                        continue
                    spec = {"clients": n, "users": args.users, "privacy": privacy,
                            "engine": engine, "model": args.model, "repeats": args.repeats,
                            "batch_size": args.batch_size, "threads": args.threads,
                            "evaluate": not args.no_eval, "data": str(data),
                            "run_dir": f"{tmp}/run-{n}-{privacy}-{engine}"}
                    row[engine] = _child(spec)
                rows.append(row)
            for users in args.large:
                spec = {"clients": users, "users": users, "privacy": "none",
                        "engine": "batched", "model": args.model, "repeats": args.repeats,
                        "batch_size": args.batch_size, "threads": args.threads,
                        "evaluate": False, "data": str(data_dir(Path(args.data_dir or tmp),
                                                                 users)),
                        "run_dir": f"{tmp}/run-large-{users}"}
                rows.append({"batched": _child(spec)})
        finally:
            stop_busy(busy)
    print(f"torch {torch.__version__}, client threads {args.threads or 'default'}, "
          f"model {args.model}, users {args.users}, batch size {args.batch_size}, "
          f"busy loops {args.busy}, cores {os.cpu_count()}")
    engines = args.engines
    head = "| clients | privacy | " + " | ".join(
        f"{e} round (s) | {e} peak RSS (MB)" for e in engines)
    ratio = len(engines) == 2
    print(head + (" | loop / batched |" if ratio else " |") + " full evaluation (s) | load |")
    print("|---" * (2 + 2 * len(engines) + ratio + 2) + "|")
    for row in rows:
        first = next(iter(row.values()))
        cells = [f"{first['clients']}" + ("" if first["users"] == args.users
                                          else f" ({first['users']} users)"),
                 first["privacy"]]
        for e in engines:
            r = row.get(e)
            cells += [f"{r['round_s']:.2f}", f"{r['peak_rss_mb']:.0f}"] if r else ["-", "-"]
        if ratio:
            a, b = row.get(engines[0]), row.get(engines[1])
            cells.append(f"{a['round_s'] / b['round_s']:.1f}" if a and b else "-")
        cells += [f"{first['eval_s']:.2f}",
                  "/".join(f"{r['load']:.1f}" for r in row.values())]
        print("| " + " | ".join(cells) + " |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
