"""One federated round in-process vs on a local Flower deployment (one user per SuperNode).

A synthetic dataset with exactly ``--nodes`` users, so both placements train the same clients;
one round (with the evaluation that always follows the last round), plaintext, no DP. Prints
one Markdown row per placement: seconds of the round as the run recorded it (``seconds`` in
metrics.jsonl), wall seconds of the whole command (process start-up, pretraining), and payload
bytes per client and round (arrays and values of the Flower messages; Flower's framing and
TLS not counted; in-process: the protocol's upload count).

    python bench/flower.py --nodes 8
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import tempfile
import time
from pathlib import Path

from ffm_private import config as config_mod
from ffm_private.data import SyntheticConfig, generate_synthetic

CONFIG = """run_dir = "{run_dir}"

[data]
kind = "synthetic"
path = "{data}"
public_fraction = 0.25

[model]
kind = "ffm"
dim = 64

[pretrain]
epochs = 5

[federated]
rounds = 1
client_fraction = 1.0
seed = 0
"""


def row(placement: str, nodes: int, run_dir: Path, wall: float, per_client: float) -> str:
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return (f"| {placement} | {nodes} | {metrics[-1]['seconds']:.2f} | {wall:.1f} | "
            f"{per_client:,.0f} | {os.getloadavg()[0]:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[8])
    parser.add_argument("--timeout", type=float, default=3000.0)
    args = parser.parse_args()
    from ffm_private.flower.local import run_local
    from ffm_private.simulation import Simulation

    print("| placement | users = nodes | round incl. evaluation (s) | command wall (s) | "
          "payload bytes per client per round (down+up) | load |")
    print("|---|---|---|---|---|---|")
    for n in args.nodes:
        with tempfile.TemporaryDirectory(prefix="ffm-bench-flower-") as tmp:
            root = Path(tmp)
            generate_synthetic(root / "data", SyntheticConfig(
                n_users=n, n_items=400, n_interactions=60 * n, min_per_user=20, seed=0))
            for placement in ("in-process", "flower"):
                run_dir = root / placement
                path = root / f"{placement}.toml"
                path.write_text(CONFIG.format(run_dir=run_dir, data=root / "data"))
                start = time.perf_counter()
                if placement == "in-process":
                    Simulation(config_mod.load(path), progress=False).run()
                    wall = time.perf_counter() - start
                    up = json.loads((run_dir / "metrics.jsonl").read_text()
                                    .splitlines()[-1])["bytes_up"]
                    per_client = up / n  # the protocol's count of what clients uploaded
                else:
                    out = io.StringIO()
                    run_local(path, n, timeout=args.timeout, round_timeout=args.timeout,
                              out=out)
                    wall = time.perf_counter() - start
                    m = re.search(r"payload bytes to nodes (\d+), from nodes (\d+)",
                                  out.getvalue())
                    # query + train + evaluate messages of the one round, per client
                    per_client = (int(m.group(1)) + int(m.group(2))) / n if m else float("nan")
                print(row(placement, n, run_dir, wall, per_client), flush=True)


if __name__ == "__main__":
    main()
