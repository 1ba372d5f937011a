"""Time a full leakage audit (A1-A6, both views) of a 943-client run.

Trains a short run on the synthetic dataset in MovieLens-100K's shape (943 users, 1682 items,
~100k interactions) with every client's update recorded for two rounds, then times
``attacks.audit.run_audit`` with the default options (what ``ffm-private audit`` runs).

    python bench/audit.py --model ffm fedmf            # train, then audit each
    python bench/audit.py --run runs/ml100k            # audit an existing run only
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from ffm_private.config import Config


def train(model: str, root: Path) -> tuple[Path, float]:
    from ffm_private.simulation import run_training

    cfg = Config(run_dir=str(root / f"run-{model}")).replace(**{
        "data.synthetic_preset": "ml100k", "data.path": str(root / "data"),
        "model.kind": model, "pretrain.epochs": 2, "federated.rounds": 2,
        "evaluation.full_ranking": False, "observation.rounds": [1, 2],
        "observation.max_clients": 943})
    start = time.perf_counter()
    run_training(cfg, progress=False)
    return Path(cfg.run_dir), time.perf_counter() - start


def audit(run: Path) -> dict:
    from attacks.audit import AuditOptions, run_audit

    load_before = os.getloadavg()
    start = time.perf_counter()
    report = run_audit(run, AuditOptions(progress=False))
    seconds = time.perf_counter() - start
    per_attack: dict[str, float] = {}
    for r in report.results:
        per_attack[r.attack] = per_attack.get(r.attack, 0.0) + r.seconds
    return {"run": str(run), "model": report.model, "seconds": seconds,
            "per_attack_s": {k: round(v, 1) for k, v in sorted(per_attack.items())},
            "targets": report.observation["targets"], "shadows": report.observation["shadows"],
            "log_mb": report.observation["bytes"] / 1e6,
            "loadavg_before": load_before, "loadavg_after": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", default=["ffm", "fedmf"], choices=["ffm", "fedmf"])
    parser.add_argument("--run", help="audit this run directory instead of training one")
    args = parser.parse_args()
    rows = []
    if args.run:
        rows.append(audit(Path(args.run)))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            for model in args.model:
                run, train_s = train(model, Path(tmp))
                rows.append({**audit(run), "train_s": train_s})
    print("| model | users audited (private / public) | observation log (MB) | audit (s) | "
          "A1 | A2 | A3 | A4 | A5 | A6 | load avg |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        t = r["per_attack_s"]
        print(f"| {r['model']} | {r['targets']} / {r['shadows']} | {r['log_mb']:.1f} | "
              f"{r['seconds']:.1f} | " + " | ".join(f"{t.get(a, 0):.1f}" for a in
                                                   ("A1", "A2", "A3", "A4", "A5", "A6"))
              + f" | {r['loadavg_before'][0]:.1f} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
