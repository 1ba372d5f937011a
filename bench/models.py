"""Size and cost of each model: parameters, shared parameters, time per client step.

One client of MovieLens-100K's shape (1,682 items, 100 training interactions: about the mean
user) runs ``train_client`` with the defaults (one personal and one shared epoch, 4
negatives, batch 256, no DP). *parameters*: everything one client holds (backbone, shared,
its own personal state); *sent*: the shared parameters of one update; *client step*: median
over ``--repeats`` after one warm-up; *round of 943*: 943 times that (one client after
another, as the in-process simulation runs them; aggregation and evaluation excluded).

    python bench/models.py --repeats 20
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np
import torch

from ffm_private.client import ClientData, LocalTrainingConfig, train_client
from ffm_private.config import ModelConfig
from ffm_private.messages import GlobalModelMessage
from ffm_private.models import FROZEN, PERSONAL, SHARED, build_model, params_of, state_of

N_ITEMS, N_TRAIN = 1682, 100

MODELS = {
    "ffm-pool (default)": ({"kind": "ffm-pool"}, {}),
    "ffm-transformer, LoRA": ({"kind": "ffm-transformer"}, {}),
    "ffm-transformer, FFA-LoRA": ({"kind": "ffm-transformer", "ffa_lora": True}, {}),
    "ffm-transformer, FFA-LoRA, personal LoRA 4": (
        {"kind": "ffm-transformer", "ffa_lora": True, "personal_rank": 4}, {}),
    "fedmf": ({"kind": "fedmf"}, {}),
    "pfedrec (official settings)": ({"kind": "pfedrec", "dim": 32},
                                    {"lr": 0.1, "personal_lr": 0.1}),
}


def measure(model_kw: dict, local_kw: dict, repeats: int) -> dict:
    torch.manual_seed(0)
    model = build_model(ModelConfig(**model_kw), N_ITEMS, 1)
    for p in model.parameters():
        p.requires_grad_(False)
    counts = {g: sum(p.numel() for p in params_of(model, g).values())
              for g in (FROZEN, SHARED, PERSONAL)}
    personal = {k: v[0] for k, v in model.init_personal_states(1, 0).items()}
    message = GlobalModelMessage(1, state_of(model, SHARED))
    train = np.random.default_rng(0).choice(N_ITEMS, N_TRAIN, replace=False)
    cfg = LocalTrainingConfig(**local_kw)
    data = ClientData(0, train)
    train_client(model, message, personal, data, cfg, 0)  # warm-up
    times = []
    for r in range(repeats):
        start = time.perf_counter()
        train_client(model, message, personal, data, cfg, r)
        times.append(time.perf_counter() - start)
    step = statistics.median(times)
    return {"parameters": sum(counts.values()), "backbone": counts[FROZEN],
            "sent": counts[SHARED], "personal": counts[PERSONAL], "client_ms": 1000 * step,
            "round_943_s": 943 * step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = {name: measure(m, c, args.repeats) for name, (m, c) in MODELS.items()}
    base = rows["ffm-pool (default)"]["client_ms"]
    d = ModelConfig()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, load "
          f"{os.getloadavg()[0]:.1f}; defaults dim {d.dim}, history {d.history_length}, "
          f"layers {d.layers}, heads {d.heads}, global_rank {d.global_rank}")
    print("| model | parameters | backbone (frozen) | sent per update | personal | "
          "client step (ms) | x ffm-pool | round of 943 (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['parameters']:,} | {r['backbone']:,} | {r['sent']:,} | "
              f"{r['personal']:,} | {r['client_ms']:.1f} | {r['client_ms'] / base:.1f} | "
              f"{r['round_943_s']:.1f} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
