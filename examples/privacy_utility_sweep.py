"""Sweep epsilon and plot privacy against utility (HR@10 and NDCG@10, with the non-private line).

Each point is a full federated run at the given target epsilon (delta 1e-5): user-level
DP-FedAvg (``--mode user``, default) or example-level DP-SGD on the clients (``--mode
example``); the non-private run is the same configuration with ``privacy.mode = "none"``.
Test metrics are read at the round chosen on validation HR@10, as in every run summary.

    python examples/privacy_utility_sweep.py                       # quick: small synthetic data
    python examples/privacy_utility_sweep.py --preset ml100k --rounds 50 --epsilons 1 4 8 16
    python examples/privacy_utility_sweep.py --mode example --clipping-norm 0.1 \
        --set federated.batch_size=32 --client-fraction 1
    python examples/privacy_utility_sweep.py --config examples/movielens100k.toml \\
        --set data.path=/data/ml-100k --out runs/sweep-ml100k
    python examples/privacy_utility_sweep.py --compare-clipping --expected-clients 150 \\
        --clipping-norm 0.1                                        # fixed vs adaptive clipping

``--compare-clipping`` (user mode, central noise) runs every epsilon twice: with the fixed
``--clipping-norm`` and with adaptive clipping started from it (``privacy.adaptive_clipping``,
docs/privacy.md "Adaptive clipping"): the clip tracks the ``--clip-quantile`` of the update
norms from a noisy count, at the same epsilon. ``--expected-clients`` is the public number
of participants per round the count is divided by (about ``client_fraction`` times the
number of users); the count noise defaults to 0.05 times it.

Writes ``<out>/sweep.json`` and ``<out>/privacy_utility.png``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ffm_private import config as config_mod
from ffm_private.simulation import run_training


def sweep(base: config_mod.Config, epsilons: list[float], privacy: dict[str, Any],
          out: Path, adaptive: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the non-private baseline and one DP run per epsilon; return their metrics.

    ``privacy`` holds the ``[privacy]`` keys every DP run shares (mode, clipping norm); with
    ``adaptive`` (extra ``[privacy]`` keys) each epsilon also runs with adaptive clipping.
    """
    def run(name: str, table: dict[str, Any]) -> dict[str, Any]:
        cfg = base.replace(**{"run_dir": str(out / name), "privacy": table,
                              "pretrain.checkpoint": str(out / "backbone.npz")
                              if (out / "backbone.npz").exists() else ""})
        summary = run_training(cfg, overwrite=True)
        backbone = Path(cfg.run_dir) / "checkpoints" / "backbone.npz"
        if not (out / "backbone.npz").exists():  # pretrain once, share it across the sweep
            (out / "backbone.npz").write_bytes(backbone.read_bytes())
        return {"selected": summary["selected_metrics"], "privacy": summary["privacy"],
                "epsilon": (summary["privacy_details"] or {}).get("epsilon")}

    results: dict[str, Any] = {"baseline": run("none", {}), "dp": {}}
    for eps in epsilons:
        results["dp"][str(eps)] = run(f"eps-{eps:g}",
                                      {**privacy, "target_epsilon": eps})
    if adaptive:
        results["dp_adaptive"] = {
            str(eps): run(f"eps-{eps:g}-adaptive",
                          {**privacy, **adaptive, "target_epsilon": eps})
            for eps in epsilons}
    return results


def plot(results: dict[str, Any], path: Path, k: int = 10, label: str = "DP") -> None:
    """HR@k and NDCG@k (test, at the validation-selected round) against epsilon."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.8), dpi=120)
    FigureCanvasAgg(fig)
    dp = sorted(results["dp"].values(), key=lambda r: r["epsilon"])
    series = [(label, dp)]
    if results.get("dp_adaptive"):
        series = [(f"{label}, fixed clip", dp),
                  (f"{label}, adaptive clip",
                   sorted(results["dp_adaptive"].values(), key=lambda r: r["epsilon"]))]
    for col, metric in enumerate((f"test_hr@{k}", f"test_ndcg@{k}")):
        ax = fig.add_subplot(1, 2, col + 1)
        for name, points in series:
            ax.plot([r["epsilon"] for r in points], [r["selected"][metric] for r in points],
                    marker="o", label=name)
        ax.axhline(results["baseline"]["selected"][metric], color="grey", ls="--",
                   label="no DP")
        ax.set_xscale("log")
        ax.set_xticks([r["epsilon"] for r in dp], [f"{r['epsilon']:.2g}" for r in dp])
        ax.minorticks_off()
        ax.set_xlabel("epsilon (delta = 1e-5)")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("privacy-utility trade-off", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="base run configuration (default: the quickstart)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--epsilons", type=float, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--preset", choices=["small", "ml100k"], default="small")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--client-fraction", type=float, default=0.5,
                        help="Poisson sampling rate of clients per round (amplifies privacy)")
    parser.add_argument("--mode", choices=["user", "example"], default="user",
                        help="user-level DP-FedAvg or example-level DP-SGD")
    parser.add_argument("--clipping-norm", type=float, default=0.5,
                        help="fixed clip (with --compare-clipping: also the adaptive start)")
    parser.add_argument("--compare-clipping", action="store_true",
                        help="user mode: run each epsilon with fixed and adaptive clipping")
    parser.add_argument("--expected-clients", type=float, default=0.0,
                        help="--compare-clipping: public expected participants per round")
    parser.add_argument("--clip-quantile", type=float, default=0.5,
                        help="--compare-clipping: target quantile of update norms")
    parser.add_argument("--clip-lr", type=float, default=0.2,
                        help="--compare-clipping: learning rate of the geometric clip update")
    parser.add_argument("--clip-count-noise", type=float, default=0.0,
                        help="--compare-clipping: noise std on the count (default 0.05 x "
                        "--expected-clients)")
    parser.add_argument("--out", default="runs/privacy-utility")
    args = parser.parse_args()
    adaptive = None
    if args.compare_clipping:
        if args.mode != "user" or args.expected_clients <= 0:
            parser.error("--compare-clipping needs --mode user and --expected-clients > 0")
        adaptive = {"adaptive_clipping": True, "clip_target_quantile": args.clip_quantile,
                    "clip_learning_rate": args.clip_lr,
                    "clip_count_noise": args.clip_count_noise or 0.05 * args.expected_clients,
                    "expected_clients_per_round": args.expected_clients}

    overrides = {"data.synthetic_preset": args.preset, "federated.rounds": args.rounds,
                 "federated.client_fraction": args.client_fraction}
    overrides.update(dict(config_mod.parse_override(o) for o in args.set))
    base = (config_mod.load(args.config, overrides) if args.config
            else config_mod.Config().replace(**overrides))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if base.data.kind == "synthetic" and not base.data.path:  # generate the data once
        base = base.replace(**{"data.path": str(out / "data")})
    shared: dict[str, Any] = {"mode": args.mode, "clipping_norm": args.clipping_norm}
    if args.mode == "user":  # central noise: the public divisor (q x the preset's user count)
        users = 943 if args.preset == "ml100k" else 300
        shared["expected_clients_per_round"] = (args.expected_clients
                                                or base.federated.client_fraction * users)
        if adaptive:
            adaptive["expected_clients_per_round"] = shared["expected_clients_per_round"]
    results = sweep(base, args.epsilons, shared, out, adaptive)
    (out / "sweep.json").write_text(json.dumps(results, indent=2))
    plot(results, out / "privacy_utility.png", k=base.evaluation.k,
         label=f"{args.mode}-level DP")
    print(f"{'epsilon':>8} | HR@10  | NDCG@10")
    base_sel = results["baseline"]["selected"]
    print(f"{'no DP':>8} | {base_sel['test_hr@10']:.4f} | {base_sel['test_ndcg@10']:.4f}")
    for name in ("dp", "dp_adaptive"):
        if name == "dp_adaptive" and adaptive:
            print("adaptive clipping:")
        for r in sorted(results.get(name, {}).values(), key=lambda r: r["epsilon"]):
            print(f"{r['epsilon']:>8.3f} | {r['selected']['test_hr@10']:.4f} | "
                  f"{r['selected']['test_ndcg@10']:.4f}")
    print(f"plot: {out / 'privacy_utility.png'}")


if __name__ == "__main__":
    main()
