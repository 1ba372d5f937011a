"""Time one federated round per client count, with and without DP, and peak memory.

Uses the synthetic dataset in MovieLens-100K's shape (943 users, 1682 items, ~100k
interactions) and the default FFM model, in-process with the plaintext protocol.
``--privacy user`` adds user-level DP-FedAvg (central noise, epsilon 4 over 100 rounds):
eligibility charges of every user in the durable ledger, clipping and noise.
``--privacy example`` runs example-level DP-SGD on every client (epsilon 8 over 100 rounds,
clipping norm 0.1); ``--batch-size`` sets the local batch of every run, DP or not.
``--busy N`` keeps N CPU-bound busy loops (separate processes) running during the
measurement, to see how a round behaves when other jobs load the cores; ``--threads``
sets ``federated.client_threads`` (0: torch's default).

    python bench/rounds.py --clients 100 943 --privacy none user example --repeats 3
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import statistics
import tempfile
import time

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[100, 943])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="ffm", choices=["ffm", "fedmf"])
    parser.add_argument("--privacy", nargs="+", default=["none"], choices=sorted(PRIVACY))
    parser.add_argument("--batch-size", type=int, default=Config().federated.batch_size,
                        help="local batch size of every run (example-level DP: sets the rate)")
    parser.add_argument("--busy", type=int, default=0,
                        help="CPU-bound busy loops running during the measurement")
    parser.add_argument("--threads", type=int, default=Config().federated.client_threads,
                        help="federated.client_threads (0: torch's default)")
    args = parser.parse_args()

    from ffm_private.simulation import Simulation

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n, privacy in ((n, p) for n in args.clients for p in args.privacy):
            cfg = Config(run_dir=f"{tmp}/run-{n}-{privacy}").replace(**{
                "data.synthetic_preset": "ml100k", "data.path": f"{tmp}/data",
                "federated.client_fraction": n / 943, "model.kind": args.model,
                "federated.rounds": 100, "pretrain.epochs": 2, "privacy": PRIVACY[privacy],
                "federated.batch_size": args.batch_size,
                "federated.client_threads": args.threads})
            sim = Simulation(cfg, progress=False)
            state = sim.initial_state()
            times = []
            busy = start_busy(args.busy)
            try:
                for r in range(1, args.repeats + 1):
                    start = time.perf_counter()
                    sim.run_round(state, r)
                    times.append(time.perf_counter() - start)
            finally:
                stop_busy(busy)
            start = time.perf_counter()
            sim.evaluate(state)
            eval_s = time.perf_counter() - start
            rows.append({
                "clients": n, "privacy": privacy, "load": os.getloadavg()[0],
                "round_s": statistics.median(times),
                "per_client_ms": 1000 * statistics.median(times) / n, "eval_s": eval_s,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "shared_params": sim.spec.size,
            })
    print(f"torch {torch.__version__}, client threads {args.threads or torch.get_num_threads()}, "
          f"model {args.model}, batch size {args.batch_size}, busy loops {args.busy}")
    print("| clients | privacy | round (s) | per client (ms) | full evaluation (s) | "
          "peak RSS (MB) | load |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['clients']} | {r['privacy']} | {r['round_s']:.2f} | "
              f"{r['per_client_ms']:.1f} | {r['eval_s']:.2f} | {r['peak_rss_mb']:.0f} | "
              f"{r['load']:.1f} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
