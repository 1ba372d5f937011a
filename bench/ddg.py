"""What one client's discrete Gaussian share costs: the 64-bit sampler against the Python-integer one.

The noise std comes from the first run's own plan: ``config.quickstart()`` planned by
``RunPrivacy.prepare`` for its 300 users (60 public), 10 rounds, every client every round,
and bound to SecAgg+ for the shared vector (``--dim``, 4,096 values): ``local_sigma / gamma``
grid steps. Both samplers run on the same ChaCha20 generator type, interleaved (fast,
Python-integer, fast, ...) so that machine load hits them alike; the table gives the median per
call. Also timed: the other two client steps, conditional rounding and the modular reduction.

    python bench/ddg.py                  # the first run's sigma, 4,096 coordinates
    python bench/ddg.py --sigma 2 --repeats 21
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from fractions import Fraction

import numpy as np

from ffm_private import config
from ffm_private.privacy import discrete_gaussian as ddg
from ffm_private.privacy.run import RunPrivacy
from ffm_private.privacy.secure_random import SecureGenerator
from protocols import registry


def quickstart_mechanism(dim: int):
    """The first run's discrete Gaussian mechanism, as ``ffm-private train`` binds it."""
    cfg = config.quickstart()
    users = 300  # data.synthetic_preset = "small"
    public = range(int(users * cfg.data.public_fraction))
    with tempfile.TemporaryDirectory() as folder:
        privacy = RunPrivacy.prepare(dict(cfg.privacy), folder, user_ids=range(users),
                                     rounds=cfg.federated.rounds,
                                     client_fraction=cfg.federated.client_fraction,
                                     protocol=cfg.protocol.name,
                                     protocol_options=cfg.protocol.options, public=public)
        privacy.bind_protocol(registry.create(cfg.protocol.name, dict(cfg.protocol.options)), dim)
        return privacy.mechanism


def _interleaved(fns: dict, repeats: int) -> dict[str, float]:
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _old_rounding_norm(v: np.ndarray) -> int:
    return sum(int(a) * int(a) for a in v)  # what conditional rounding did per try before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=4096, help="coordinates per share")
    parser.add_argument("--sigma", type=float, default=0.0,
                        help="noise std in grid steps (default: the first run's plan)")
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    mech = quickstart_mechanism(args.dim)
    s = args.sigma or mech.local_sigma / mech.gamma
    s2 = Fraction(s) ** 2  # what DistributedDiscreteGaussian.client_noise passes
    plan = ddg.fast_plan(s2)
    rng = SecureGenerator.from_secret(bytes(32), b"bench/ddg")
    fns = {"fast": lambda: ddg.sample_discrete_gaussian(s2, args.dim, rng, method="fast"),
           "bigint": lambda: ddg.sample_discrete_gaussian(s2, args.dim, rng, method="bigint")}
    sample = _interleaved(fns, args.repeats)

    x = np.random.default_rng(0).normal(size=args.dim)  # a clipped update (data, not noise)
    x *= mech.clipping_norm / np.linalg.norm(x)
    rounded = ddg.conditional_rounding(x, mech.clipping_norm, mech.gamma, rng)
    noisy = rounded + ddg.sample_discrete_gaussian(s2, args.dim, rng)
    steps = _interleaved({
        "conditional_rounding": lambda: ddg.conditional_rounding(x, mech.clipping_norm,
                                                                 mech.gamma, rng),
        "rounding_norm_before": lambda: _old_rounding_norm(rounded),
        "encode_modular": lambda: ddg.encode_modular(noisy),
    }, args.repeats)

    out = {
        "dim": args.dim, "sigma_steps": s, "gamma": mech.gamma, "local_sigma": mech.local_sigma,
        "noise_multiplier": mech.noise_multiplier,
        "sampled_sigma_sq_rel_excess": float(plan.sigma_sq / s2 - 1) if plan else None,
        "fast_ms": 1e3 * sample["fast"], "bigint_ms": 1e3 * sample["bigint"],
        "speedup": sample["bigint"] / sample["fast"],
        **{f"{k}_ms": 1e3 * v for k, v in steps.items()},
        "repeats": args.repeats, "load": os.getloadavg()[0],
    }
    if args.json:
        print(json.dumps(out))
        return
    print(f"discrete Gaussian, {args.dim} coordinates, sigma = {s:.6g} grid steps "
          f"(gamma {mech.gamma:.6g}, z {mech.noise_multiplier:.6g}); median of "
          f"{args.repeats}, load {out['load']:.2f}")
    if plan is not None:
        print(f"fast path samples sigma^2 rounded up by {out['sampled_sigma_sq_rel_excess']:.3g}"
              " (relative)")
    print("| step | ms per call |\n|---|---|")
    print(f"| sample, fast (64-bit) | {out['fast_ms']:.2f} |")
    print(f"| sample, big-int (Python integers) | {out['bigint_ms']:.2f} |")
    print(f"| speed-up | {out['speedup']:.1f}x |")
    print(f"| conditional rounding (numpy norm) | {out['conditional_rounding_ms']:.3f} |")
    print(f"| its norm check before (Python sum) | {out['rounding_norm_before_ms']:.3f} |")
    print(f"| encode_modular | {out['encode_modular_ms']:.3f} |")


if __name__ == "__main__":
    main()
