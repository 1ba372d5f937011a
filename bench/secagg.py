"""SecAgg+ cost per client and at the server, beside the plaintext sum and the PRG floor.

For each number of clients ``n`` and vector length ``L``, one in-process round with 10% of the
clients dropping after key sharing (at the ``masked_input`` stage, the case that makes the
server reconstruct mask keys), measured in the same run as:

- the plaintext sum (what the server does without secure aggregation: add ``n`` float64
  vectors), and
- the PRG floor: ``k`` neighbour masks plus the self mask of ``L + 1`` words with AES-256-CTR
  (what a client cannot avoid; median of ``min(n, 30)`` runs right after each round), and,
  for the server, one mask per survivor plus one per (dropped, surviving neighbour) pair at
  the same speed per mask.

Client times are the median over clients (one client's step takes milliseconds, so a busy
machine's preemptions would dominate a mean); all timings are then the minimum over
``--repeats`` rounds, and the client/floor ratio is the median over rounds of each round's
ratio (floor measured right after the round, so both see the same machine load).
``os.getloadavg()`` is recorded per configuration.

    python bench/secagg.py                  # full grid: n in {10, 100, 200}, L in {1e4, 1e5, 1e6}
    python bench/secagg.py --quick          # n in {10, 100}, L in {1e4, 1e5}
    python bench/secagg.py --malicious-server --clients 100 200 --lengths 1e5 \
        --out bench/results/secagg_malicious  # Ed25519 signatures and the consistency check

In malicious-server mode the client's ``consistency`` step (verify nothing, sign the survivor
set) and the extra checks of ``unmask`` (one Ed25519 verification per survivor's signature)
are in *client, all stages*; the server's consistency stage is in *server, all stages*.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from protocols import FaultyChannel
from protocols.secagg import SecAggOptions, SecAggPlusProtocol
from protocols.secagg import primitives as cr
from protocols.secagg.messages import HEADER
from protocols.secagg.transcript import RoundView

UNMASK_STEPS = ("receive_unmask", "unmask_collect", "unmask_reconstruct", "unmask_derive_keys",
                "unmask_remove_masks")


class _Pool(dict):
    """``n`` clients' updates backed by a few distinct vectors (memory stays small at 1e6)."""

    def __init__(self, n: int, length: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        base = [rng.uniform(-0.5, 0.5, size=length) for _ in range(4)]
        super().__init__({cid: base[cid % 4] for cid in range(n)})


class _CountingChannel(FaultyChannel):
    """Counts the bytes each client uploads over the whole round."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.per_client: dict[int, int] = {}

    def upload(self, stage, client_id, payload):
        got = super().upload(stage, client_id, payload)
        if got is not None:
            self.per_client[client_id] = self.per_client.get(client_id, 0) + len(got)
        return got


def _min_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def prg_floor(length: int, masks: int, samples: int) -> float:
    """Median seconds for ``masks`` AES-256-CTR keystreams of ``length + 1`` words, each run
    as a client would (fresh buffers), nothing added anywhere: the same statistic as the
    clients' median, under the same machine load."""
    keys = [os.urandom(32) for _ in range(masks)]
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        stream = cr.MaskStream(length + 1)
        for key in keys:
            for _ in stream.blocks(key):
                pass
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def plaintext_sum(ups: dict, repeats: int) -> float:
    def run():
        total = np.zeros_like(ups[0])
        for vec in ups.values():
            total += vec
    return _min_time(run, repeats)


def measure(n: int, length: int, dropout: float, repeats: int, seed: int,
            malicious: bool = False) -> dict:
    options = SecAggOptions(malicious_server=malicious)
    ups = _Pool(n, length, seed)
    rng = np.random.default_rng(seed + 1)
    drop = {int(c) for c in rng.choice(n, size=int(round(dropout * n)), replace=False)}
    best: dict[str, float] = {}
    result = None
    ratios: list[float] = []
    for r in range(repeats):
        proto = SecAggPlusProtocol(options)
        channel = _CountingChannel(drop={"masked_input": drop})
        result = proto.aggregate(r, ups, channel=channel, seed=seed)
        t = result.timings
        server_unmask = sum(t.get(f"server_{s}", 0.0) for s in UNMASK_STEPS)
        server_total = sum(v for k, v in t.items() if k.startswith("server_"))
        steps = ["advertise_keys", "share_keys", "receive_shares", "mask", "unmask"]
        if malicious:
            steps.append("consistency")
        per_client = {s: t[f"client_{s}_median"] for s in steps}
        floor = prg_floor(length, result.neighbours + 1, samples=min(n, 30))
        ratios.append(per_client["mask"] / floor)
        sample = {
            "client_prg_floor_s": floor,
            "client_mask_s": per_client["mask"],
            "client_total_s": sum(per_client.values()),
            "client_share_keys_s": per_client["share_keys"],
            "server_unmask_s": server_unmask,
            "server_total_s": server_total,
        }
        for key, value in sample.items():
            best[key] = min(best.get(key, float("inf")), value)
    assert result is not None
    expect = np.sum([ups[c] for c in result.contributors], axis=0)
    k = result.neighbours
    survivors = len(result.contributors)
    per_mask = best["client_prg_floor_s"] / (k + 1)
    # masks the server must regenerate: one per survivor, one per (dropped, surviving neighbour)
    graph = RoundView.derive(options, repeats - 1, seed, length, range(n)).graph
    alive = set(result.contributors)
    dropped = sorted(drop)
    server_masks = survivors + sum(len(alive.intersection(graph[d])) for d in dropped)
    masked_bytes = HEADER.size + 4 * (length + 1) + cr.TAG_BYTES
    return {
        "malicious_server": malicious,
        "clients": n,
        "length": length,
        "neighbours": k,
        "threshold": result.threshold,
        "dropped": len(dropped),
        "contributors": survivors,
        "max_abs_error": float(np.abs(result.total - expect).max()),
        "plaintext_sum_s": plaintext_sum(ups, max(3, repeats)),
        "prg_per_mask_s": per_mask,
        "server_masks": server_masks,
        "server_prg_floor_s": server_masks * per_mask,
        **best,
        # each round's clients against a floor measured right after it, median over rounds
        "client_mask_over_floor": float(np.median(ratios)),
        "bytes_per_param_masked": masked_bytes / length,
        # everything one full participant uploads (keys, shares, masked input, unmask shares)
        "bytes_per_param_all_uploads": float(np.median(
            [channel.per_client[c] for c in result.contributors])) / length,
        "loadavg": list(os.getloadavg()),
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        "| n | L | k / t | client mask (ms) | client PRG floor (ms) | mask / floor | client, all "
        "stages (ms) | server unmask (s) | masks regenerated | server PRG floor (s) | server, "
        "all stages (s) | plaintext sum (s) | max abs error | bytes/param masked input | "
        "bytes/param all uploads | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['clients']} | {r['length']:.0e} | {r['neighbours']} / {r['threshold']} | "
            f"{1e3 * r['client_mask_s']:.2f} | {1e3 * r['client_prg_floor_s']:.2f} | "
            f"{r['client_mask_over_floor']:.2f} | {1e3 * r['client_total_s']:.2f} | "
            f"{r['server_unmask_s']:.3f} | {r['server_masks']} | {r['server_prg_floor_s']:.3f} | "
            f"{r['server_total_s']:.3f} | {r['plaintext_sum_s']:.4f} | "
            f"{r['max_abs_error']:.1e} | {r['bytes_per_param_masked']:.3f} | "
            f"{r['bytes_per_param_all_uploads']:.2f} | {r['loadavg'][0]:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 100, 200])
    parser.add_argument("--lengths", type=float, nargs="+", default=[1e4, 1e5, 1e6])
    parser.add_argument("--dropout", type=float, default=0.1,
                        help="fraction of clients dropping after key sharing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="n in {10, 100}, L in {1e4, 1e5}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--malicious-server", action="store_true",
                        help="malicious_server = true: signed keys and the consistency check")
    parser.add_argument("--out", default="bench/results/secagg",
                        help="writes OUT.md and OUT.json")
    args = parser.parse_args()
    if args.quick:
        args.clients, args.lengths = [10, 100], [1e4, 1e5]
    grid = [(n, int(length)) for n in args.clients for length in args.lengths]
    rows = []
    for n, length in tqdm(grid, desc="secagg bench", unit="config"):
        rows.append(measure(n, length, args.dropout, args.repeats, args.seed,
                            malicious=args.malicious_server))
        tqdm.write(f"n={n} L={length:.0e}: client mask {1e3 * rows[-1]['client_mask_s']:.2f} ms "
                   f"({rows[-1]['client_mask_over_floor']:.2f}x floor), server unmask "
                   f"{rows[-1]['server_unmask_s']:.3f} s, load {rows[-1]['loadavg'][0]:.1f}")
    table = markdown(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(table + "\n")
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    print(table)


if __name__ == "__main__":
    main()
