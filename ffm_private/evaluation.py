"""Ranking evaluation: leave-one-out HR@k and NDCG@k, sampled and full.

Sampled protocol: each held-out item is ranked against the user's fixed 99 negatives.
Full protocol: against every item the user has not interacted with in training (and, for
the test item, not the validation item either). Ties count against the held-out item, so
a constant scorer earns nothing, and a non-finite score (NaN, infinity: a diverged model)
ranks last, so a broken model earns nothing either.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ffm_private.data import LeaveOneOutSplit
from ffm_private.engine.threads import client_threads
from ffm_private.models import Recommender
from ffm_private.training_data import last_window


def hr_ndcg(ranks: np.ndarray, k: int) -> tuple[float, float]:
    """Hit rate and NDCG at ``k`` from 0-based ranks of the held-out items."""
    ranks = np.asarray(ranks)
    if ranks.size == 0:
        return float("nan"), float("nan")
    hit = ranks < k
    hr = float(hit.mean())
    ndcg = float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean())
    return hr, ndcg


def pessimistic_rank(pos_scores: np.ndarray, other_scores: np.ndarray,
                     valid: np.ndarray | None = None) -> np.ndarray:
    """Number of candidates scoring at least as high as the positive (0 = top).

    Non-finite scores count as ``-inf``: a NaN positive ranks below every candidate (a NaN
    comparison is false, which would otherwise rank it first), a NaN candidate below it.
    """
    pos_scores = _finite_or_last(np.asarray(pos_scores))
    other_scores = _finite_or_last(np.asarray(other_scores))
    beats = other_scores >= pos_scores[:, None]
    if valid is not None:
        beats &= valid
    return beats.sum(axis=1)


def _finite_or_last(scores: np.ndarray) -> np.ndarray:
    if np.issubdtype(scores.dtype, np.floating) and not np.all(np.isfinite(scores)):
        return np.where(np.isfinite(scores), scores, -np.inf)
    return scores


def eval_histories(split: LeaveOneOutSplit, target: str, length: int, pad: int) -> np.ndarray:
    """History windows used to rank ``target``: train for valid; train + valid for test."""
    rows = []
    for u in range(split.n_users):
        seq = split.train[u] if target == "valid" else np.append(split.train[u], split.valid[u])
        rows.append(last_window(seq, length, pad))
    return np.stack(rows)


def evaluate_model(model: Recommender, split: LeaveOneOutSplit, *, k: int = 10,
                   full_ranking: bool = True, targets: tuple[str, ...] = ("valid", "test"),
                   chunk: int = 16, use_history: bool = True,
                   threads: int = 1) -> dict[str, float]:
    """Metrics for every user; ``model`` holds one personal row per user (``owner = user``).

    ``use_history=False`` scores with empty histories, as example-level DP-SGD trains: what
    the DP-trained parameters alone have learned. Users are scored ``chunk`` at a time
    (each user's scores do not depend on the chunk), with ``threads`` torch intra-op
    threads (restored afterwards; 0 keeps torch's setting): on a loaded 2-core machine two
    threads made a 943-user evaluation 10x slower than one (bench/README.md).
    """
    if model.num_personal != split.n_users:
        raise ValueError(f"model holds {model.num_personal} personal rows, split has "
                         f"{split.n_users} users")
    with torch.no_grad(), client_threads(threads):
        return _evaluate(model, split, k=k, full_ranking=full_ranking, targets=targets,
                         chunk=chunk, use_history=use_history)


def _evaluate(model: Recommender, split: LeaveOneOutSplit, *, k: int, full_ranking: bool,
              targets: tuple[str, ...], chunk: int, use_history: bool) -> dict[str, float]:
    model.eval()
    # a model may score many users faster with per-item work done once (same scores)
    scorer = getattr(model, "eval_scorer", None)
    score = scorer() if scorer is not None else model
    length = getattr(model, "history_length", 1)
    out: dict[str, float] = {}
    for target in targets:
        heldout = split.valid if target == "valid" else split.test
        hist = torch.from_numpy(eval_histories(split, target, length, model.pad))
        if not use_history:
            hist = torch.full_like(hist, model.pad)
        sampled, full = [], []
        for start in range(0, split.n_users, chunk):
            users = torch.arange(start, min(start + chunk, split.n_users))
            cand = np.concatenate([heldout[users.numpy(), None],
                                   split.eval_negatives[users.numpy()]], axis=1)
            s = score(hist[users], torch.from_numpy(cand), users).numpy()
            sampled.append(pessimistic_rank(s[:, 0], s[:, 1:]))
            if full_ranking:
                all_items = torch.arange(split.n_items).expand(len(users), -1)
                s = score(hist[users], all_items, users).numpy()
                valid = np.ones_like(s, dtype=bool)
                for row, u in enumerate(users.tolist()):
                    valid[row, split.train[u]] = False
                    if target == "test":
                        valid[row, split.valid[u]] = False
                    valid[row, heldout[u]] = False
                pos = s[np.arange(len(users)), heldout[users.numpy()]]
                full.append(pessimistic_rank(pos, s, valid))
        hr, ndcg = hr_ndcg(np.concatenate(sampled), k)
        out[f"{target}_hr@{k}"], out[f"{target}_ndcg@{k}"] = hr, ndcg
        if full_ranking:
            hr, ndcg = hr_ndcg(np.concatenate(full), k)
            out[f"{target}_full_hr@{k}"], out[f"{target}_full_ndcg@{k}"] = hr, ndcg
    return out


def evaluate_state(model: Recommender, split: LeaveOneOutSplit, cfg: Any, state: Any, *,
                   targets: tuple[str, ...] = ("valid", "test")) -> dict[str, float]:
    """:func:`evaluate_model` of a run state (its shared and every user's personal arrays)
    under a run config's ``evaluation`` settings and ``federated.client_threads``."""
    from ffm_private.models import PERSONAL, SHARED
    from ffm_private.models.partition import load_group

    load_group(model, SHARED, state.shared)
    load_group(model, PERSONAL, state.personal.arrays)
    return evaluate_model(model, split, k=cfg.evaluation.k,
                          full_ranking=cfg.evaluation.full_ranking, targets=targets,
                          threads=cfg.federated.client_threads)


def evaluate_popularity(split: LeaveOneOutSplit, *, k: int = 10,
                        targets: tuple[str, ...] = ("valid", "test")) -> dict[str, float]:
    """The popularity baseline: rank items by their training interaction counts."""
    pop = np.zeros(split.n_items)
    for items in split.train:
        np.add.at(pop, items, 1.0)
    out = {}
    for target in targets:
        heldout = split.valid if target == "valid" else split.test
        ranks = pessimistic_rank(pop[heldout], pop[split.eval_negatives])
        out[f"{target}_hr@{k}"], out[f"{target}_ndcg@{k}"] = hr_ndcg(ranks, k)
    return out
