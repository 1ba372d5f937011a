"""Central pretraining of the foundation backbone on public users (FedPA's recipe).

Only the training interactions of users in the public split are used; the epoch kept is
the one with the best HR@10 on those users' validation items (never a test item). The
pretraining model has its own throw-away personal rows (user embedding and gate) for those
users; what is kept is the backbone, which clients then hold frozen.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ffm_private import console
from ffm_private.client import run_epochs
from ffm_private.config import ModelConfig, PretrainConfig
from ffm_private.data import LeaveOneOutSplit, train_negative_rng
from ffm_private.evaluation import evaluate_model
from ffm_private.models import FROZEN, PERSONAL, build_model, params_of, state_of
from ffm_private.training_data import Examples, build_examples


def public_users(n_users: int, fraction: float, seed: int) -> np.ndarray:
    """The sorted ids of the public split: ``round(fraction * n_users)`` users."""
    k = int(round(fraction * n_users))
    rng = np.random.default_rng(np.random.SeedSequence([seed, 13]))
    return np.sort(rng.choice(n_users, size=k, replace=False)).astype(np.int64)


def _pooled_examples(split: LeaveOneOutSplit, users: np.ndarray, n_items: int, length: int,
                     num_negatives: int, seed: int, epoch: int) -> tuple[Examples, np.ndarray]:
    parts, owners = [], []
    for row, u in enumerate(users):
        rng = train_negative_rng(seed, -1 - epoch, int(u))
        ex = build_examples(split.train[u], n_items, length, num_negatives, rng,
                            exclude=split.negative_exclusions(int(u)))
        parts.append(ex)
        owners.append(np.full(len(ex), row, dtype=np.int64))
    return (Examples(np.concatenate([p.history for p in parts]),
                     np.concatenate([p.items for p in parts]),
                     np.concatenate([p.labels for p in parts])), np.concatenate(owners))


def pretrain_backbone(model_cfg: ModelConfig, cfg: PretrainConfig, split: LeaveOneOutSplit,
                      users: np.ndarray, *, num_negatives: int = 4, seed: int = 0,
                      progress: bool = True) -> dict[str, np.ndarray]:
    """Train backbone (and throw-away user rows) on ``users``; return the backbone state."""
    torch.manual_seed(seed)
    if model_cfg.kind in ("ffm", "ffm-pool", "ffm-transformer"):
        # Public users get throw-away user embeddings and gates even for a global-only run, but
        # no personal item adapters: those would absorb item knowledge that is then discarded
        # (a backbone pretrained beside rank-8 item adapters starts federated training at
        # loss 0.41 instead of 0.28 on the ml100k preset).
        model_cfg = dataclasses.replace(model_cfg, personalization=True, personal_rank=0)
    model = build_model(model_cfg, split.n_items, max(len(users), 1))
    # FFA-LoRA's A factors belong to the backbone but stay at their seeded initialisation
    backbone = [p for n, p in params_of(model, FROZEN).items() if ".lora_a." not in n]
    if not backbone or len(users) == 0 or cfg.epochs == 0:
        return state_of(model, FROZEN)
    personal = params_of(model, PERSONAL)
    with torch.no_grad():
        for name, value in model.init_personal_states(len(users), seed).items():
            personal[name].copy_(torch.from_numpy(value))
    params = backbone + list(personal.values())
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    length = getattr(model, "history_length", 1)
    optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    public = subset(split, users)
    best_hr, best_state = -1.0, state_of(model, FROZEN)
    bar = console.bar(range(cfg.epochs), enabled=progress, desc="pretrain", leave=False)
    for epoch in bar:
        examples, owners = _pooled_examples(split, users, split.n_items, length, num_negatives,
                                            seed, epoch)
        model.train()
        loss = run_epochs(model, params, examples, 1, cfg.lr, cfg.batch_size, seed + epoch,
                          owner=torch.from_numpy(owners), optimizer=optimizer)
        hr = evaluate_model(model, public, full_ranking=False, targets=("valid",))["valid_hr@10"]
        if hr > best_hr:
            best_hr, best_state = hr, state_of(model, FROZEN)
        bar.set_postfix(loss=f"{loss:.4f}", public_valid_hr=f"{hr:.3f}")
    return best_state


def subset(split: LeaveOneOutSplit, users: np.ndarray) -> LeaveOneOutSplit:
    """The split restricted to ``users`` (renumbered 0..len(users)-1)."""
    return dataclasses.replace(
        split, n_users=len(users), train=[split.train[u] for u in users],
        valid=split.valid[users], test=split.test[users],
        eval_negatives=split.eval_negatives[users],
        source_users=None if split.source_users is None else split.source_users[users],
        raw_user_ids=None if split.raw_user_ids is None else split.raw_user_ids[users])
