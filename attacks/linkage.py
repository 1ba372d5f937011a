"""A4, linkage: which of this round's observations belongs to which user of an earlier round?

Threat model: the attacker holds the view's observations of two recorded rounds but not who
sent which (e.g. pseudonymous or shuffled uploads, or an outsider matching leaked updates).
It matches each observation of the later round to the most similar observation of the earlier
one: cosine similarity of sketched vectors, after removing the round's mean (what all users
share). Scored by top-1 accuracy (ties split evenly) against chance ``1 / candidates``, and mean
reciprocal rank, over users observed in both rounds of each consecutive pair of recorded rounds.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from attacks.base import AttackResult, judge
from attacks.context import VIEW_TEXT, AuditContext, AuditError
from attacks.features import view_features
from attacks.metrics import mean_interval
from attacks.registry import register_attack

TITLE = "A4 linkage across rounds"
OBSERVES = "the view's observations of two recorded rounds, without the senders' identities"
TOLERANCE = 0.02


def _normalised(rows: np.ndarray) -> np.ndarray:
    centred = rows - rows.mean(axis=0, keepdims=True)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    return np.divide(centred, norms, out=np.zeros_like(centred), where=norms > 0)


def match(earlier: np.ndarray, later: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``later`` (same users, same order as ``earlier``): top-1 credit and 1/rank."""
    sim = _normalised(later) @ _normalised(earlier).T
    own = np.diag(sim)
    better = (sim > own[:, None] + 1e-12).sum(axis=1)
    ties = (np.abs(sim - own[:, None]) <= 1e-12).sum(axis=1)
    top1 = np.where(better == 0, 1.0 / ties, 0.0)
    rank = better + (ties + 1) / 2.0  # expected rank under random tie-breaking
    return top1, 1.0 / rank


def run_linkage(ctx: AuditContext, view: str, *, bootstrap_rounds: int = 200) -> AttackResult:
    """Run A4 under ``view`` over consecutive pairs of recorded rounds."""
    start = time.perf_counter()
    feats = view_features(ctx, view)
    rounds = sorted({r for r, _ in feats.sketches})
    top1, rr, chance, pairs = [], [], [], []
    for r1, r2 in zip(rounds, rounds[1:], strict=False):
        users = sorted({u for r, u in feats.sketches if r == r1}
                       & {u for r, u in feats.sketches if r == r2})
        if len(users) < 2:
            continue
        a = np.stack([feats.sketches[(r1, u)] for u in users])
        b = np.stack([feats.sketches[(r2, u)] for u in users])
        t, m = match(a, b)
        top1.extend(t)
        rr.extend(m)
        chance.extend([1.0 / len(users)] * len(users))
        pairs.append({"rounds": [r1, r2], "users": len(users), "top1": float(np.mean(t)),
                      "chance": 1.0 / len(users), "mrr": float(np.mean(m))})
    if not pairs:
        raise AuditError(f"A4 ({view}): no two recorded rounds observe the same users")
    estimate = mean_interval(np.array(top1), rounds=bootstrap_rounds, seed=ctx.seed)
    reference = float(np.mean(chance))
    covered = ctx.claim.claimed and ctx.claim.mode == "user" and view in ctx.claim.covers
    return AttackResult(
        attack="A4", title=TITLE, view=view, threat_model=VIEW_TEXT[view], observes=OBSERVES,
        headline="top1_accuracy", estimate=estimate, reference=reference,
        verdict=judge(estimate, reference, TOLERANCE, "top-1 accuracy"),
        metrics={"pairs": pairs, "chance": reference, "mrr": float(np.mean(rr)),
                 "users": int(len(top1))},
        covered_by_claim=covered,
        notes=["similarity: cosine of sketched vectors minus the round mean; ties split evenly"],
        seconds=time.perf_counter() - start)


@register_attack("a4", title="linkage across rounds")
def audit_linkage(ctx: AuditContext, view: str, options: Any) -> list[AttackResult]:
    """A4 in an audit (``options``: the audit's :class:`~attacks.audit.AuditOptions`)."""
    return [run_linkage(ctx, view, bootstrap_rounds=options.bootstrap)]


__all__ = ["TITLE", "match", "run_linkage"]
