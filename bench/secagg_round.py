"""One SecAgg+ round as the first run does it, stage by stage: where the round's time goes.

The first run (``ffm-private train``, ``examples/quickstart.toml``) samples all 300 clients
every round and sums their 4096-coordinate shared updates with SecAgg+ on the exact integer
path (each client's distributed discrete Gaussian share is already a residue modulo 2**32).
This runs that round through :class:`~protocols.secagg.SecAggPlusProtocol` (the object the
simulation uses), every party in this process, and prints

- the wall time and the process CPU time of ``aggregate`` (all stages, every client and the
  server together; on a machine shared with other jobs the CPU time is the steadier), and
- the seconds per step: ``client_*`` summed over all clients, ``server_*`` for the server,

each the minimum and the median over ``--repeats`` rounds (fresh keys every round; the first
round is a warm-up and is not counted), and the CPU time of the round's X25519 operations
alone (key pairs and agreements, the same count, the same library, right after the rounds):
the floor no engineering of the rest can go below. ``--dropout`` drops that fraction of the clients
after key sharing (the server then reconstructs their mask keys), ``--float`` uses the float
codec path instead of the integer one, ``--profile FILE`` writes a cProfile of the counted
rounds.

    python bench/secagg_round.py                     # 300 clients x 4096, 5 rounds
    python bench/secagg_round.py --clients 100 --length 100000 --dropout 0.1
    python bench/secagg_round.py --repeats 3 --profile /tmp/secagg.prof
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import time

import numpy as np

from protocols import FaultyChannel
from protocols.secagg import SecAggOptions, SecAggPlusProtocol
from protocols.secagg import primitives as cr


def _updates(n: int, length: int, integer: bool, seed: int) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)  # test data only, nothing secret
    if integer:
        base = [rng.integers(0, 2**32, size=length, dtype=np.int64) for _ in range(4)]
    else:
        base = [rng.uniform(-0.5, 0.5, size=length) for _ in range(4)]
    return {cid: base[cid % 4] for cid in range(n)}


def x25519_floor(n: int, k: int, repeats: int = 3) -> tuple[int, float]:
    """The round's X25519 work alone, with the same library: ``(count, seconds)``, the seconds
    the minimum CPU time over ``repeats``. Per client two key pairs, one agreement with the
    server and two per neighbour (share encryption, pairwise mask); per client at the server
    the upload-key agreement and the check of the masking key; the server's own key pair.
    Dropouts add the server's agreements for their mask keys (not counted here)."""
    pairs = [cr.new_key_pair(os.urandom) for _ in range(64)]
    publics = [pk for _, pk in pairs]
    count = n * (2 + 1 + 2 * k) + 2 * n + 1
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for _ in range(n * 2 + 1):
            cr.new_key_pair(os.urandom)
        for i in range(count - (2 * n + 1)):
            cr.agree(pairs[i % 64][0], publics[(i * 7 + 1) % 64])
        best = min(best, time.process_time() - start)
    return count, best


def run(n: int, length: int, repeats: int, *, dropout: float = 0.0, integer: bool = True,
        seed: int = 0, profile: str | None = None) -> dict:
    options = SecAggOptions()
    ups = _updates(n, length, integer, seed)
    secrets = {cid: bytes([cid % 251]) * 32 for cid in range(n)}
    rng = np.random.default_rng(seed + 1)
    drop = {int(c) for c in rng.choice(n, size=int(round(dropout * n)), replace=False)}
    encoding = "integer" if integer else "float"
    proto = SecAggPlusProtocol(options)
    walls: list[float] = []
    cpus: list[float] = []
    steps: dict[str, list[float]] = {}
    prof = cProfile.Profile() if profile else None
    result = None
    for r in range(repeats + 1):
        channel = FaultyChannel(drop={"masked_input": drop}) if drop else None
        if prof is not None and r > 0:
            prof.enable()
        start, cpu = time.perf_counter(), time.process_time()
        result = proto.aggregate(r, ups, channel=channel, seed=seed, secrets=secrets,
                                 encoding=encoding)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        if prof is not None and r > 0:
            prof.disable()
        if r == 0:
            continue  # warm-up: imports, caches
        walls.append(wall)
        cpus.append(cpu)
        for key, value in result.timings.items():
            if key.endswith(("_median", "_max", "_count")):
                continue
            steps.setdefault(key, []).append(value)
    if prof is not None:
        prof.dump_stats(profile)
    assert result is not None
    floor_count, floor_s = x25519_floor(n, result.neighbours)
    expect = np.sum([ups[c] for c in result.contributors], axis=0)
    if integer:
        expect = (expect + 2**31) % 2**32 - 2**31
        assert np.array_equal(result.total, expect), "wrong sum"
    else:
        assert np.abs(result.total - expect).max() < 1e-3, "wrong sum"
    return {
        "clients": n,
        "length": length,
        "encoding": encoding,
        "dropped": len(drop),
        "neighbours": result.neighbours,
        "threshold": result.threshold,
        "repeats": repeats,
        "wall_min_s": min(walls),
        "wall_median_s": float(np.median(walls)),
        "cpu_min_s": min(cpus),
        "cpu_median_s": float(np.median(cpus)),
        "x25519_count": floor_count,
        "x25519_floor_cpu_s": floor_s,
        "steps_min_s": {k: min(v) for k, v in sorted(steps.items())},
        "steps_median_s": {k: float(np.median(v)) for k, v in sorted(steps.items())},
        "loadavg": list(os.getloadavg()),
    }


def report(row: dict) -> str:
    lines = [f"SecAgg+ round: {row['clients']} clients x {row['length']} ({row['encoding']}), "
             f"k = {row['neighbours']}, t = {row['threshold']}, {row['dropped']} dropped after "
             f"key sharing; {row['repeats']} rounds, load {row['loadavg'][0]:.1f}",
             f"{'step':34s} {'min (s)':>9s} {'median (s)':>11s}"]
    for key, best in row["steps_min_s"].items():
        lines.append(f"{key:34s} {best:9.4f} {row['steps_median_s'][key]:11.4f}")
    client = sum(v for k, v in row["steps_median_s"].items() if k.startswith("client_"))
    server = sum(v for k, v in row["steps_median_s"].items() if k.startswith("server_"))
    lines.append(f"{'client, all steps (median)':34s} {'':9s} {client:11.4f}")
    lines.append(f"{'server, all steps (median)':34s} {'':9s} {server:11.4f}")
    lines.append(f"{'aggregate() wall, end to end':34s} {row['wall_min_s']:9.4f} "
                 f"{row['wall_median_s']:11.4f}")
    lines.append(f"{'aggregate() CPU time (process)':34s} {row['cpu_min_s']:9.4f} "
                 f"{row['cpu_median_s']:11.4f}")
    lines.append(f"{'X25519 alone (CPU), ' + str(row['x25519_count']) + ' ops':34s} "
                 f"{row['x25519_floor_cpu_s']:9.4f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=300)
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dropout", type=float, default=0.0,
                        help="fraction of clients dropping after key sharing")
    parser.add_argument("--float", action="store_true", help="the float codec path")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", default=None, help="write a cProfile of the counted rounds")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args()
    row = run(args.clients, args.length, args.repeats, dropout=args.dropout,
              integer=not args.float, seed=args.seed, profile=args.profile)
    print(report(row))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(row, fh, indent=1)


if __name__ == "__main__":
    main()
