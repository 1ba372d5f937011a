"""What example-level DP-SGD costs on the client: local-step time, per-step time and memory.

Client data come from the synthetic dataset in MovieLens-100K's shape (943 users, 1682
items, ~100k interactions); the client is one with the median number of training
interactions. Models at their defaults (dim 64; FFM history 20, ranks 16/8); FedMF also at
MovieLens-1M's 3706 items. The plan's figures come from ``example_plan_inputs`` (one rate
and step count for every client); the noise multiplier does not change the cost.

    python bench/dp_round.py                      # all tables, batch size 32
    python bench/dp_round.py --batch-size 16 --repeats 7
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
import time
from functools import partial

import numpy as np
import torch

from ffm_private.client import ClientData, LocalTrainingConfig, train_client
from ffm_private.data import SyntheticConfig, generate_synthetic, leave_one_out, load_dataset
from ffm_private.messages import GlobalModelMessage
from ffm_private.models import (
    PERSONAL,
    SHARED,
    FedMFRecommender,
    FFMRecommender,
    params_of,
    state_of,
)
from ffm_private.privacy.dpsgd import (
    DPStepper,
    ExampleDP,
    example_plan_inputs,
    history_free_frozen,
    make_rows,
)


def _models(n_items: int) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {"ffm": FFMRecommender(n_items, 1), "fedmf": FedMFRecommender(n_items, 1)}


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up (imports, allocator)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def client_step_table(train: np.ndarray, sizes: list[int], items: list[int], batch: int,
                      repeats: int) -> list[dict]:
    """One client's whole local step (personal + shared phase), with and without DP."""
    cfg = LocalTrainingConfig(batch_size=batch)
    # synthetic data: the plan is sized for this dataset's median user, as a public figure
    inputs = example_plan_inputs(sizes, cfg, reference_size=int(np.median(sizes)))
    dp = ExampleDP(noise_multiplier=1.0, clipping_norm=0.1, sample_rate=inputs.example_rate,
                   steps=inputs.local_steps, expected_batch_size=inputs.expected_batch_size,
                   personal_sample_rate=inputs.personal_rate,
                   personal_steps=inputs.personal_steps)
    rows = []
    for n_items in items:
        for kind, model in _models(n_items).items():
            if kind == "ffm" and n_items != items[0]:
                continue
            message = GlobalModelMessage(1, state_of(model, SHARED))
            personal = {k: v[0] for k, v in model.init_personal_states(1, 0).items()}
            data = ClientData(0, train % n_items)
            plain = _timed(partial(train_client, model, message, personal, data, cfg, 0),
                           repeats)
            timed = {}
            engines = ["auto"] + (["hooks"] if kind == "fedmf" else [])
            for engine in engines:
                c = dataclasses.replace(cfg, example_dp=dataclasses.replace(dp, engine=engine))
                timed[engine] = _timed(partial(train_client, model, message, personal, data, c,
                                               0, generator=torch.Generator().manual_seed(0)),
                                       repeats)
            rows.append({"model": kind, "items": n_items, "rows": len(train),
                         "plain_ms": 1000 * plain, "dp_ms": 1000 * timed["auto"],
                         "dp_dense_ms": 1000 * timed["hooks"] if "hooks" in timed else None,
                         "dp_steps": dp.steps + dp.personal_steps,
                         "shared_params": sum(p.numel() for p in
                                              params_of(model, SHARED).values())})
    return rows


def step_table(items: list[int], batch: int, repeats: int) -> list[dict]:
    """One noisy step of each phase and engine: time and per-row gradient storage."""
    out = []
    for n_items in items:
        for kind, model in _models(n_items).items():
            if kind == "ffm" and n_items != items[0]:
                continue
            model.train()
            gen = torch.Generator().manual_seed(0)
            positives = torch.randint(0, n_items, (batch,), generator=gen)
            rows = make_rows(positives, n_items, getattr(model, "history_length", 1), 4, gen)
            frozen = set(history_free_frozen(model))
            phases = {"shared": {k: p for k, p in params_of(model, SHARED).items()
                                 if k not in frozen},
                      "personal": params_of(model, PERSONAL)}
            for phase, params in phases.items():
                engines = ("functorch",) if phase == "personal" else ("hooks", "ghost")
                for engine in engines:
                    for p in model.parameters():
                        p.requires_grad_(False)
                    for p in params.values():
                        p.requires_grad_(True)
                    with DPStepper(model, params, noise_multiplier=1.0, clipping_norm=0.1,
                                   expected_batch_size=batch, lr=0.01, generator=gen,
                                   engine=engine) as stepper:
                        ms = 1000 * _timed(partial(stepper.step, rows), repeats)
                        mb = stepper.peak_grad_sample_bytes / 2**20
                    for p in params.values():
                        p.requires_grad_(False)
                    out.append({"model": kind, "items": n_items, "phase": phase,
                                "engine": engine, "rows": batch, "step_ms": ms,
                                "per_row_grad_mb": mb,
                                "params": sum(p.numel() for p in params.values())})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--items", type=int, nargs="+", default=[1682, 3706])
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (0: torch's default)")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        generate_synthetic(tmp, SyntheticConfig())
        split = leave_one_out(load_dataset("synthetic", tmp), seed=0)
    sizes = [len(t) for t in split.train]
    median_user = int(np.argsort(sizes)[len(sizes) // 2])
    train = np.asarray(split.train[median_user])
    load_before = os.getloadavg()
    clients = client_step_table(train, sizes, args.items, args.batch_size, args.repeats)
    steps = step_table(args.items, args.batch_size, args.repeats)
    load_after = os.getloadavg()

    inputs = example_plan_inputs(sizes, LocalTrainingConfig(batch_size=args.batch_size),
                                 reference_size=int(np.median(sizes)))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, load average "
          f"{load_before[0]:.2f} -> {load_after[0]:.2f}; client with {len(train)} training "
          f"interactions (median); batch size {args.batch_size}: rate "
          f"{inputs.example_rate:.3f}, {inputs.local_steps} shared + {inputs.personal_steps} "
          "personal DP steps per participation")
    print("\n| model | items | shared params | local step, no DP (ms) | with DP (ms) | "
          "DP, dense per-row grads (ms) |")
    print("|---|---|---|---|---|---|")
    for r in clients:
        dense = f"{r['dp_dense_ms']:.0f}" if r["dp_dense_ms"] is not None else "-"
        print(f"| {r['model']} | {r['items']} | {r['shared_params']} | {r['plain_ms']:.0f} | "
              f"{r['dp_ms']:.0f} | {dense} |")
    print(f"\n| model | items | phase | engine | params | ms per step ({args.batch_size} rows) "
          "| per-row gradients (MB) |")
    print("|---|---|---|---|---|---|---|")
    for r in steps:
        print(f"| {r['model']} | {r['items']} | {r['phase']} | {r['engine']} | {r['params']} | "
              f"{r['step_ms']:.1f} | {r['per_row_grad_mb']:.2f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"load": [load_before, load_after], "clients": clients, "steps": steps,
                       "batch_size": args.batch_size}, fh, indent=1)


if __name__ == "__main__":
    main()
