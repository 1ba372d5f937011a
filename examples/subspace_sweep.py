"""Sweep projection rank x epsilon and draw the leakage-utility frontier of the subspace defense.

Every point is a full federated run followed by the A3 audit (attribute inference, server
view), read from the run directory like ``ffm-private audit`` does:

- leakage: the **adaptive** A3 attacker's macro AUC (it knows the projection and trains on the
  public users' projected updates; ``attacks/subspace.py``), averaged over the attributes;
- utility: test HR@10 at the round chosen on validation HR@10.

Curves: none (one point: the non-private run), DP only (one point per epsilon), subspace only
(one point per rank), both (every rank x epsilon). User-level DP with central noise protects
the released models, not the trusted server's view, so under "DP only" the server-view A3
shows what the trusted server could still infer: that is the point of comparing.

    python examples/subspace_sweep.py                                    # small synthetic data
    python examples/subspace_sweep.py --preset ml100k --rounds 20 --ranks 4 8 16 --epsilons 4 16
    python examples/subspace_sweep.py --set model.kind=fedmf --estimator spectral

A synthetic figure is a mechanics check of the defense, never a quality claim.
Writes ``<out>/subspace_sweep.json`` and ``<out>/leakage_utility.png``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from ffm_private import config as config_mod
from ffm_private.simulation import run_training


def measure(cfg: config_mod.Config, bootstrap: int) -> dict[str, Any]:
    """Run ``cfg``, then A3 and adaptive A3 (server view) on its observation log."""
    from attacks.attribute import run_attribute_inference
    from attacks.context import AuditContext
    from attacks.subspace import run_adaptive_attribute_inference

    summary = run_training(cfg, overwrite=True, progress=False)
    ctx = AuditContext.from_run(cfg.run_dir, seed=0)
    plain = run_attribute_inference(ctx, "server", bootstrap_rounds=bootstrap)
    adaptive = run_adaptive_attribute_inference(ctx, "server", bootstrap_rounds=bootstrap)
    energy = adaptive[0].metrics["energy_in_subspace"] if adaptive else {}
    return {
        "hr@10": summary["selected_metrics"]["test_hr@10"],
        "ndcg@10": summary["selected_metrics"]["test_ndcg@10"],
        "a3_macro_auc": float(np.mean([r.estimate.value for r in plain])),
        "a3_adaptive_macro_auc": float(np.mean([r.estimate.value for r in adaptive])),
        "per_attribute": {r.metrics["attribute"]: {"a3": r.estimate.to_dict()} for r in plain},
        "per_attribute_adaptive": {r.metrics["attribute"]: r.estimate.to_dict()
                                   for r in adaptive},
        "energy_in_subspace": energy,
        "privacy": summary["privacy"],
    }


def sweep(base: config_mod.Config, ranks: list[int], epsilons: list[float],
          privacy: dict[str, Any], estimator: str, out: Path,
          bootstrap: int) -> dict[str, Any]:
    def point(name: str, rank: int | None, eps: float | None) -> dict[str, Any]:
        overrides: dict[str, Any] = {"run_dir": str(out / name),
                                     "privacy": ({**privacy, "target_epsilon": eps}
                                                 if eps is not None else {})}
        if rank is not None:
            overrides.update({"defense.kind": "subspace", "defense.rank": rank,
                              "defense.estimator": estimator})
        backbone = out / "backbone.npz"
        if backbone.exists():
            overrides["pretrain.checkpoint"] = str(backbone)
        cfg = base.replace(**overrides)
        result = measure(cfg, bootstrap)
        if not backbone.exists():  # pretrain once, share it across the sweep
            backbone.write_bytes((Path(cfg.run_dir) / "checkpoints" / "backbone.npz")
                                 .read_bytes())
        print(f"{name:>18}: HR@10 {result['hr@10']:.4f}  A3 {result['a3_macro_auc']:.3f}  "
              f"adaptive A3 {result['a3_adaptive_macro_auc']:.3f}", flush=True)
        return {"rank": rank, "epsilon": eps, **result}

    return {
        "none": point("none", None, None),
        "dp": [point(f"eps-{e:g}", None, e) for e in epsilons],
        "subspace": [point(f"rank-{r}", r, None) for r in ranks],
        "both": [point(f"rank-{r}-eps-{e:g}", r, e) for r in ranks for e in epsilons],
    }


def plot(results: dict[str, Any], path: Path) -> None:
    """Adaptive A3 macro AUC (leakage) against HR@10 (utility), one curve per defense."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    none = results["none"]
    ax.scatter([none["hr@10"]], [none["a3_adaptive_macro_auc"]], color="black", zorder=3,
               label="no defense (non-private)")
    for name, key in (("DP only", "dp"), ("subspace only", "subspace"), ("both", "both")):
        pts = results[key]
        if not pts:
            continue
        ax.plot([p["hr@10"] for p in pts], [p["a3_adaptive_macro_auc"] for p in pts],
                marker="o", ls="-" if key != "both" else ":", label=name)
        for p in pts:
            tag = ", ".join(t for t in (f"r{p['rank']}" if p["rank"] else "",
                                        f"e{p['epsilon']:g}" if p["epsilon"] else "") if t)
            ax.annotate(tag, (p["hr@10"], p["a3_adaptive_macro_auc"]), fontsize=6,
                        textcoords="offset points", xytext=(3, 3))
    ax.axhline(0.5, color="grey", ls="--", lw=0.8, label="chance")
    ax.set_xlabel("test HR@10 (utility)")
    ax.set_ylabel("adaptive A3 macro AUC, server view (leakage)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle("leakage-utility frontier of the subspace defense", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="base run configuration (default: the quickstart)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--preset", choices=["small", "ml100k"], default="small")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--ranks", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--epsilons", type=float, nargs="+", default=[4.0])
    parser.add_argument("--estimator", choices=["linear", "spectral"], default="linear")
    parser.add_argument("--clipping-norm", type=float, default=0.5)
    parser.add_argument("--client-fraction", type=float, default=0.5)
    parser.add_argument("--bootstrap", type=int, default=100)
    parser.add_argument("--out", default="runs/subspace-sweep")
    args = parser.parse_args()
    overrides = {"data.synthetic_preset": args.preset, "federated.rounds": args.rounds,
                 "federated.client_fraction": args.client_fraction,
                 "observation.rounds": [1, -1]}
    overrides.update(dict(config_mod.parse_override(o) for o in args.set))
    base = (config_mod.load(args.config, overrides) if args.config
            else config_mod.Config().replace(**overrides))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if base.data.kind == "synthetic" and not base.data.path:  # generate the data once
        base = base.replace(**{"data.path": str(out / "data")})
    users = 943 if args.preset == "ml100k" else 300
    privacy = {"mode": "user", "clipping_norm": args.clipping_norm, "delta": 1e-5,
               "expected_clients_per_round": base.federated.client_fraction * users}
    results = sweep(base, args.ranks, args.epsilons, privacy, args.estimator, out,
                    args.bootstrap)
    (out / "subspace_sweep.json").write_text(json.dumps(results, indent=2))
    plot(results, out / "leakage_utility.png")
    print(f"plot: {out / 'leakage_utility.png'}")


if __name__ == "__main__":
    main()
