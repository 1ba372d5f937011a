"""Train an unprotected baseline, a user-level DP run and a secure-aggregation run on synthetic
data, audit all three, and print their verdicts side by side.

    python examples/audit_compare.py                       # FedMF, small synthetic preset
    python examples/audit_compare.py --model ffm --epsilon 4 --out runs/compare

The DP run needs user-level DP wired into training (``[privacy] mode = "user"``) and the
secagg run the SecAgg+ protocol (``protocol.name = "secagg"``); a scenario the installed
version cannot train is reported as skipped. Two what-if columns are always computed from the
baseline's own observation log: each update released with user-level DP noise (the mechanism
of ``ffm_private.privacy.mechanisms`` applied per user), and only the round sums (what secure
aggregation leaves the server). Central DP trusts the server: its "server" rows are
expected to leak; its claim covers the "public" rows. See docs/attacks.md for a sample output.
"""

from __future__ import annotations

import argparse
import traceback
from pathlib import Path

import numpy as np

from attacks.audit import AuditOptions, run_audit
from attacks.context import AuditContext, Claim
from attacks.whatif import hide_individual, privatize
from ffm_private.config import Config
from ffm_private.privacy.accounting import noise_for_epsilon
from ffm_private.simulation import run_training


def scenarios(args: argparse.Namespace) -> dict[str, dict]:
    base = {"data.synthetic_preset": "small", "data.path": str(Path(args.out) / "data"),
            "model.kind": args.model, "federated.rounds": args.rounds,
            "pretrain.epochs": 5, "evaluation.full_ranking": False,
            "observation.rounds": [1, 2, -1], "observation.max_clients": 1000}
    return {
        "baseline (plaintext, no DP)": base,
        f"user-level DP (epsilon {args.epsilon:g})": {
            **base, "privacy": {"mode": "user", "target_epsilon": args.epsilon,
                                "delta": 1e-5, "clipping_norm": args.clip,
                                # the public divisor: q (1.0) x the 300 users of the preset
                                "expected_clients_per_round": 300.0}},
        "secure aggregation": {**base, "protocol.name": "secagg"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/compare")
    parser.add_argument("--model", default="fedmf", choices=["fedmf", "ffm"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epsilon", type=float, default=2.0)
    parser.add_argument("--clip", type=float, default=1.0)
    parser.add_argument("--attacks", nargs="+", default=["a1", "a3", "a4", "a5", "a6"])
    args = parser.parse_args()
    options = AuditOptions(attacks=tuple(args.attacks), progress=False)

    columns: dict[str, dict[str, str]] = {}
    baseline_dir = None
    for name, overrides in scenarios(args).items():
        run_dir = Path(args.out) / name.split(" ")[0].replace("-", "")
        try:
            cfg = Config(run_dir=str(run_dir)).replace(**overrides)
            run_training(cfg, overwrite=True, progress=False)
        except Exception as err:  # noqa: BLE001 - report which part is not available yet
            print(f"skipped {name}: {type(err).__name__}: {err}")
            traceback.print_exc(limit=1)
            continue
        if baseline_dir is None:
            baseline_dir = run_dir
        columns[name] = _verdicts(run_audit(run_dir, options))

    if baseline_dir is not None:
        ctx = AuditContext.from_run(baseline_dir, progress=False)
        norms = [np.linalg.norm(v) for obs in ctx.log for _, v in obs.vectors()]
        sigma = noise_for_epsilon(args.epsilon, 1.0, len(ctx.log.rounds), 1e-5)
        c = float(np.median(norms)) if norms else args.clip
        claim = Claim(mode="user", epsilon=args.epsilon, delta=1e-5, noise_multiplier=sigma,
                      clipping_norm=c, covers=("server", "public"),
                      text=f"what-if: each recorded update released with user-level DP "
                           f"(epsilon {args.epsilon:g})")
        whatif = [a for a in options.attacks if a != "a6"]
        columns["what-if: per-user DP release"] = _verdicts(run_audit(
            ctx.with_log(privatize(ctx.log, clipping_norm=c, noise_multiplier=sigma), claim),
            AuditOptions(attacks=tuple(whatif), progress=False)))
        columns["what-if: sums only"] = _verdicts(run_audit(
            ctx.with_log(hide_individual(ctx.log)),
            AuditOptions(attacks=tuple(whatif), progress=False)))

    rows = sorted({k for col in columns.values() for k in col})
    names = list(columns)
    print("| attack (view) | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for row in rows:
        print(f"| {row} | " + " | ".join(columns[n].get(row, "-") for n in names) + " |")


def _verdicts(report) -> dict[str, str]:
    out = {}
    for r in report.results:
        value = (f"{r.estimate.value:.3f}" if r.estimate else
                 f"eps >= {r.metrics.get('lower_bound', float('nan')):.2f}")
        out[f"{r.title} ({r.view})"] = f"{value} {r.verdict.level}"
    return out


if __name__ == "__main__":
    main()
