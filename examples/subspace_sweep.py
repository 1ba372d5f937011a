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
    python examples/subspace_sweep.py --set model.kind=fedmf --estimator linear spectral
    python examples/subspace_sweep.py --preset ml100k --curves none subspace   # no DP points

A finished point leaves ``<out>/<point>/point.json`` and is not run again, so an interrupted
sweep resumes where it stopped (delete the file, or use another ``--out``, to rerun it); the
sweep's points share the backbone the first point pretrained (``<out>/backbone.npz``).
``--report`` runs nothing and gathers every finished point under ``--out`` (from several
invocations) into the json, the table and the figure.
A synthetic figure is a mechanics check of the defense, never a quality claim.
Writes ``<out>/subspace_sweep.json``, ``<out>/subspace_sweep.md`` (a table) and ``<out>/leakage_utility.png``.
"""

from __future__ import annotations

import argparse
import json
import time
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

    start = time.perf_counter()
    summary = run_training(cfg, overwrite=True, progress=False)
    trained = time.perf_counter()
    ctx = AuditContext.from_run(cfg.run_dir, seed=0)
    plain = run_attribute_inference(ctx, "server", bootstrap_rounds=bootstrap)
    adaptive = run_adaptive_attribute_inference(ctx, "server", bootstrap_rounds=bootstrap)
    audited = time.perf_counter()
    first = adaptive[0].metrics if adaptive else {}
    return {
        "hr@10": summary["selected_metrics"]["test_hr@10"],
        "ndcg@10": summary["selected_metrics"]["test_ndcg@10"],
        "valid_hr@10": summary["selected_metrics"]["valid_hr@10"],
        "selected_round": summary["selected_round"],
        "selection": summary["selection"],
        "a3_macro_auc": float(np.mean([r.estimate.value for r in plain])),
        "a3_adaptive_macro_auc": float(np.mean([r.estimate.value for r in adaptive])),
        "per_attribute": {r.metrics["attribute"]: r.estimate.to_dict() for r in plain},
        "per_attribute_adaptive": {r.metrics["attribute"]: r.estimate.to_dict()
                                   for r in adaptive},
        "verdicts": {r.metrics["attribute"]: r.verdict.to_dict() for r in plain},
        "verdicts_adaptive": {r.metrics["attribute"]: r.verdict.to_dict()
                              for r in adaptive},
        "shadow_users": first.get("shadow_users"), "target_users": first.get("target_users"),
        "basis_source": first.get("basis_source"), "basis_rank": first.get("basis_rank"),
        "energy_in_subspace": first.get("energy_in_subspace", {}),
        "shared_parameters": summary["shared_parameters"],
        "refresh_every": cfg.defense.refresh_every, "ridge": cfg.defense.ridge,
        "seconds_train": trained - start, "seconds_audit": audited - trained,
        "privacy": summary["privacy"],
    }


CURVES = ("none", "dp", "subspace", "both")


def sweep(base: config_mod.Config, ranks: list[int], epsilons: list[float],
          privacy: dict[str, Any], estimators: list[str], out: Path,
          bootstrap: int, curves: tuple[str, ...] = CURVES) -> dict[str, Any]:
    """Every point of ``curves``; a point whose ``point.json`` exists is read, not rerun."""
    def point(name: str, rank: int | None, eps: float | None,
              estimator: str | None = None) -> dict[str, Any]:
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
        done = out / name / "point.json"
        if done.exists():  # resumable: a finished point is not run again
            result = json.loads(done.read_text())
        else:
            result = {"rank": rank, "epsilon": eps, "estimator": estimator,
                      **measure(cfg, bootstrap)}
            done.write_text(json.dumps(result, indent=2))
        made = Path(cfg.run_dir) / "checkpoints" / "backbone.npz"
        if not backbone.exists() and made.exists():  # pretrain once, share it across the sweep
            backbone.write_bytes(made.read_bytes())
        per = "  ".join(f"{a} {e['value']:.3f} [{e['low']:.3f}, {e['high']:.3f}]"
                        for a, e in result["per_attribute_adaptive"].items())
        print(f"{name:>26}: HR@10 {result['hr@10']:.4f} NDCG@10 {result['ndcg@10']:.4f} "
              f"(round {result['selected_round']})  A3 {result['a3_macro_auc']:.3f}  "
              f"adaptive A3 {result['a3_adaptive_macro_auc']:.3f} ({per})  "
              f"energy median {result['energy_in_subspace'].get('median', float('nan')):.3g}  "
              f"{result['seconds_train'] + result['seconds_audit']:.0f} s", flush=True)
        return result

    def tag(estimator: str) -> str:  # stable point names: linear is the unmarked default
        return "" if estimator == "linear" else f"-{estimator}"

    return {
        "none": point("none", None, None) if "none" in curves else None,
        "dp": [point(f"eps-{e:g}", None, e) for e in epsilons] if "dp" in curves else [],
        "subspace": ([point(f"rank-{r}{tag(m)}", r, None, m) for m in estimators
                      for r in ranks] if "subspace" in curves else []),
        "both": ([point(f"rank-{r}{tag(m)}-eps-{e:g}", r, e, m) for m in estimators
                  for r in ranks for e in epsilons] if "both" in curves else []),
    }


def collect(out: Path) -> dict[str, Any]:
    """Every finished point under ``out`` (``<point>/point.json``), grouped by curve."""
    results: dict[str, Any] = {"none": None, "dp": [], "subspace": [], "both": []}
    points = [json.loads(f.read_text()) for f in sorted(out.glob("*/point.json"))]
    for p in sorted(points, key=lambda p: (p.get("estimator") or "", p["rank"] or 0,
                                           p["epsilon"] or 0.0)):
        if p["rank"] is None and p["epsilon"] is None:
            results["none"] = p
        else:
            results[("both" if p["epsilon"] is not None else "subspace") if p["rank"]
                    else "dp"].append(p)
    return results


def table(results: dict[str, Any]) -> str:
    """A Markdown table: one row per point, adaptive A3 per attribute with its interval."""
    points = [p for p in ([results["none"]] if results["none"] else []) + results["dp"]
              + results["subspace"] + results["both"]]
    if not points:
        return ""
    attrs = list(points[0]["per_attribute_adaptive"])

    def cell(e: dict[str, float]) -> str:
        return f"{e['value']:.3f} [{e['low']:.3f}, {e['high']:.3f}]"

    head = (["defense", "kept rank", "adaptive A3 macro AUC (mean)"]
            + [f"adaptive A3 {a}" for a in attrs]
            + ["A3 (mean)", "energy in subspace, median [p10, p90]", "test HR@10",
               "test NDCG@10", "round", "seconds"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in points:
        name = ", ".join(t for t in (
            f"subspace r{p['rank']} {p.get('estimator') or 'linear'}" if p["rank"] else "",
            f"refresh every {p['refresh_every']}" if p["rank"] and p.get("refresh_every")
            not in (None, 5) else "",
            f"DP eps {p['epsilon']:g}" if p["epsilon"] else "") if t) or "none"
        kept = sorted(set((p.get("basis_rank") or {}).values()))
        e = p["energy_in_subspace"]
        energy = (f"{e['median']:.3g} [{e['p10']:.3g}, {e['p90']:.3g}]" if "median" in e
                  else "")
        row = ([name, "/".join(map(str, kept)) if p["rank"] else "-",
                f"{p['a3_adaptive_macro_auc']:.3f}"]
               + [cell(p["per_attribute_adaptive"][a]) for a in attrs]
               + [f"{p['a3_macro_auc']:.3f}", energy, f"{p['hr@10']:.4f}",
                  f"{p['ndcg@10']:.4f}", str(p["selected_round"]),
                  f"{p['seconds_train'] + p['seconds_audit']:.0f}"])
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    """Adaptive A3 macro AUC (leakage) against HR@10 (utility), one curve per defense."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    none = results["none"]
    if none is not None:
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
                                        (p.get("estimator") or "")[:4] if p["rank"] else "",
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
    parser.add_argument("--estimator", choices=["linear", "spectral"], nargs="+",
                        default=["linear"], help="one or both estimators")
    parser.add_argument("--curves", choices=CURVES, nargs="+", default=list(CURVES),
                        help="which curves to run (default all)")
    parser.add_argument("--report", action="store_true",
                        help="run nothing: gather every finished point under --out into "
                             "the json, the table and the figure")
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
    if args.report:
        results = collect(out)
    else:
        results = sweep(base, args.ranks, args.epsilons, privacy, args.estimator, out,
                        args.bootstrap, tuple(args.curves))
    (out / "subspace_sweep.json").write_text(json.dumps(results, indent=2))
    (out / "subspace_sweep.md").write_text(table(results))
    plot(results, out / "leakage_utility.png")
    print(f"plot: {out / 'leakage_utility.png'}")


if __name__ == "__main__":
    main()
