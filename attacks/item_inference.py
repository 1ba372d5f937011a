"""A1, item-set inference: which items did a user interact with, from what they shared?

Threat model: the attacker holds the view's observations of the user (their update, a round
sum, or the public model change) plus the released artefacts; it ranks every item by how much
the observation favoured it (``attacks.features``: changed item rows for models that share
item embeddings, the directional derivative of item scores otherwise). Scored against the
user's training items (valid/test items, which no update touched, are left out).

Metrics: per-user AUC (mean, bootstrap interval over users), precision and recall at k, and
two references: a no-information attacker who ranks items by public popularity, and the same
scores tested against another user's items (a sum or the public model change gives every
user the same scores: it says something about everyone, nothing about this user).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from attacks.base import AttackResult, judge
from attacks.classifier import fit_logistic
from attacks.context import VIEW_TEXT, AuditContext, AuditError
from attacks.features import view_features, zscore
from attacks.metrics import auc, mean_interval, precision_recall_at_k, roc_curve
from attacks.registry import register_attack

TITLE = "A1 item-set inference"
OBSERVES = ("the view's observations of the user (update vectors or sums), the broadcast "
            "state, the public backbone and the public split's item popularity")
TOLERANCE = 0.02


def _mask_and_labels(ctx: AuditContext, user: int) -> tuple[np.ndarray, np.ndarray]:
    labels = np.zeros(ctx.n_items, dtype=bool)
    labels[ctx.truth.train[user]] = True
    keep = np.ones(ctx.n_items, dtype=bool)
    keep[ctx.truth.held_out[user]] = False
    keep[ctx.truth.train[user]] = True
    return keep, labels


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random permutation without fixed points (identity for n < 2)."""
    if n < 2:
        return np.arange(n)
    return (np.arange(n) + rng.integers(1, n)) % n if n == 2 else _derange(n, rng)


def _derange(n: int, rng: np.random.Generator) -> np.ndarray:
    while True:
        perm = rng.permutation(n)
        if not np.any(perm == np.arange(n)):
            return perm


def _item_features(profiles: list[np.ndarray], popularity: np.ndarray) -> np.ndarray:
    """Per-item attacker features: each scorer's z-scored profile and log popularity."""
    cols = [zscore(p) for p in profiles] + [zscore(np.log1p(popularity))]
    return np.stack(cols, axis=1)


def fit_combiner(ctx: AuditContext, feats, variants: list[str]):
    """Weigh the scorers and the popularity prior on shadow users (public, items known).

    Returns ``None`` without shadows. Each shadow's own items are removed from the
    popularity it sees, so the prior is not credited with what it cannot know.
    """
    shadows = [u for u in ctx.shadows() if feats.rounds_of(u)]
    if len(shadows) < 2:
        return None
    pop = ctx.popularity()
    xs, ys = [], []
    for u in shadows:
        _, labels = _mask_and_labels(ctx, u)
        own = np.zeros(ctx.n_items)
        own[ctx.truth.train[u]] = 1.0
        xs.append(_item_features([feats.profile(u, v) for v in variants], pop - own))
        ys.append(labels.astype(np.int64))
    x, y = np.concatenate(xs), np.concatenate(ys)
    if len(np.unique(y)) < 2:
        return None
    return fit_logistic(x, y, l2=1e-3, balanced=True)


def run_item_inference(ctx: AuditContext, view: str, *, ks: tuple[int, ...] = (10, 50),
                       bootstrap_rounds: int = 200) -> AttackResult:
    """Run A1 under ``view`` on every private user with an observation."""
    start = time.perf_counter()
    feats = view_features(ctx, view)
    users = [u for u in ctx.targets() if feats.rounds_of(u)]
    if not users:
        raise AuditError(f"A1 ({view}): no private user has an observation in this view")
    prior = ctx.popularity()
    variants = list(feats.profiles)
    combiner = fit_combiner(ctx, feats, variants)
    headline = "combined" if combiner is not None else feats.headline
    names = [*variants, "popularity"] + (["combined"] if combiner is not None else [])
    per_user: dict[str, dict[str, list[float]]] = {
        v: {"auc": [], **{f"p@{k}": [] for k in ks}, **{f"r@{k}": [] for k in ks}}
        for v in names}
    per_user["other user"] = {"auc": []}
    partner = derangement(len(users), ctx.rng(0xA1))
    pooled_scores, pooled_labels = [], []
    combined: dict[int, np.ndarray] = {}
    for u in users:
        profiles = [feats.profile(u, v) for v in variants]
        if combiner is not None:
            combined[u] = combiner.decision(_item_features(profiles, prior))[:, 1]
    for row, u in enumerate(users):
        keep, labels = _mask_and_labels(ctx, u)
        candidates = {v: feats.profile(u, v) for v in variants}
        candidates["popularity"] = prior
        if combiner is not None:
            candidates["combined"] = combined[u]
        other_keep, other_labels = _mask_and_labels(ctx, users[partner[row]])
        if len(users) > 1:
            per_user["other user"]["auc"].append(
                auc(candidates[headline][other_keep], other_labels[other_keep]))
        for v, scores in candidates.items():
            s, y = scores[keep], labels[keep]
            per_user[v]["auc"].append(auc(s, y))
            for k in ks:
                p, r = precision_recall_at_k(s, y, k)
                per_user[v][f"p@{k}"].append(p)
                per_user[v][f"r@{k}"].append(r)
        pooled_scores.append(zscore(candidates[headline][keep]))
        pooled_labels.append(labels[keep])

    seed = ctx.seed
    summary = {v: {m: float(np.nanmean(vals)) for m, vals in d.items()}
               for v, d in per_user.items()}
    estimate = mean_interval(np.array(per_user[headline]["auc"]), rounds=bootstrap_rounds,
                             seed=seed)
    baseline = summary["popularity"]["auc"]
    other = summary["other user"].get("auc", float("nan"))
    reference = float(np.nanmax([0.5, baseline, other]))
    fpr, tpr = roc_curve(np.concatenate(pooled_scores), np.concatenate(pooled_labels))
    covered = ctx.claim.claimed and ctx.claim.mode == "user" and view in ctx.claim.covers
    verdict = judge(estimate, reference, TOLERANCE, "mean per-user AUC")
    notes = [f"headline: {headline}" + (" (the observation scorers and the popularity prior "
                                        "weighed by a logistic model fit on public users)"
                                        if headline == "combined" else ""),
             "positives: the user's training items; reference: the best of chance, public "
             "popularity, and the same scores tested on another user's items (a sum or the "
             "public model change says something about everyone, nothing about this user)"]
    return AttackResult(
        attack="A1", title=TITLE, view=view, threat_model=VIEW_TEXT[view], observes=OBSERVES,
        headline="auc", estimate=estimate, reference=reference, verdict=verdict,
        metrics={"users": len(users), "scorer": headline, "variants": summary,
                 "baseline_auc": baseline, "other_user_auc": other, "chance_auc": 0.5,
                 "rounds_per_user": float(np.mean([len(feats.rounds_of(u)) for u in users]))},
        curves={"A1 pooled": (fpr, tpr)}, covered_by_claim=covered, notes=notes,
        seconds=time.perf_counter() - start)


@register_attack("a1", title="item-set inference")
def audit_item_inference(ctx: AuditContext, view: str, options: Any) -> list[AttackResult]:
    """A1 in an audit (``options``: the audit's :class:`~attacks.audit.AuditOptions`)."""
    return [run_item_inference(ctx, view, bootstrap_rounds=options.bootstrap)]


__all__ = ["TITLE", "derangement", "run_item_inference"]
