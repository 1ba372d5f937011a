"""A3, adaptive: attribute inference by an attacker that knows the subspace projection.

Threat model: as A3 (the view's observations of every user; the public users' attributes),
plus the sensitive-subspace basis of every round (it is public: it travels with the
broadcast and is published under ``<run_dir>/defense/``). Knowing the projection, the attacker
spends nothing on the removed directions: it projects every observed update away from the
round's basis (idempotent on a defended run, where the updates already are), averages each
user's rounds, and trains A3's classifier on the public users' projected updates (shadows),
with A3's item-profile features beside the leading principal components of the projected
updates. A high score means attribute signal lives outside the estimated subspace (other
linear directions, or non-linear ones): projection is not a formal guarantee.

Beside it, per attribute, the metric ``energy_in_subspace``: the fraction of each private
user's observed update energy inside the sensitive subspace, ``||B^T v||^2 / ||v||^2``, with its
distribution over users. On an undefended run there is no published basis; the auditor then
estimates one from the public users' observations and their attributes with the production
estimator (``[defense]`` rank and estimator), which shows what the defense would remove.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping

import numpy as np

from attacks.attribute import components_for, pca, score_attributes, user_features
from attacks.base import AttackResult
from attacks.context import VIEW_TEXT, AuditContext, AuditError, recorded_users, view_vector
from attacks.features import view_features
from ffm_private.defense import energy_fraction, project_out

TITLE = "A3 adaptive attribute inference (knows the subspace projection)"
OBSERVES = ("the view's observations of every user, the public sensitive-subspace basis of "
            "every round, and the public users' attributes (the classifier's training set)")


def round_bases(ctx: AuditContext, view: str) -> tuple[dict[int, np.ndarray], str]:
    """The basis of each recorded round: the run's published one, else the auditor's estimate."""
    from ffm_private.defense import SubspaceError, estimate_subspace
    from ffm_private.defense.server import load_basis

    d = ctx.cfg.defense
    if d.kind == "subspace" and ctx.run_dir is not None:
        bases = {}
        for r in ctx.log.rounds:
            sub = load_basis(ctx.run_dir, r, d.refresh_every)
            if sub is None:
                raise AuditError(f"A3 adaptive: the run uses the subspace defense but its "
                                 f"basis for round {r} is missing under {ctx.run_dir}/defense")
            bases[r] = sub.basis
        return bases, "published by the run (the defense's own basis)"
    public = ctx.public_set
    attrs = ctx.truth.attributes
    bases = {}
    for obs in ctx.log:
        rows = [(u, vec) for u, vec in _vectors(ctx, obs.round_id, view) if u in public]
        if len(rows) < 2:
            continue
        users = [u for u, _ in rows]
        try:
            sub = estimate_subspace(np.stack([v for _, v in rows]),
                                    {k: np.asarray(v)[users] for k, v in attrs.items()},
                                    rank=d.rank, estimator=d.estimator, ridge=d.ridge)
        except SubspaceError:
            continue
        bases[obs.round_id] = sub.basis
    return bases, ("estimated by the auditor from the public users' observations "
                   f"({d.estimator}, rank <= {d.rank}): the run has no defense")


def _vectors(ctx: AuditContext, round_id: int, view: str) -> Iterator[tuple[int, np.ndarray]]:
    """``(user, vector)`` for every user ``view`` observed in ``round_id``."""
    obs = ctx.log[round_id]
    for u in recorded_users(obs):
        vec = view_vector(obs, u, view)
        if vec is not None:
            yield u, np.asarray(vec, dtype=np.float64)


def distribution(values: np.ndarray) -> dict[str, float]:
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {"users": 0}
    q = np.quantile(values, [0.1, 0.5, 0.9])
    return {"users": int(values.size), "mean": float(values.mean()), "p10": float(q[0]),
            "median": float(q[1]), "p90": float(q[2]), "max": float(values.max())}


def energy_in_subspace(ctx: AuditContext, view: str, bases: Mapping[int, np.ndarray],
                       users: list[int]) -> dict[int, float]:
    """Per user: the mean over observed rounds of ``||B_r^T v||^2 / ||v||^2``."""
    wanted, per_user = set(users), {}
    for r, basis in bases.items():
        for u, vec in _vectors(ctx, r, view):
            if u in wanted:
                per_user.setdefault(u, []).append(float(energy_fraction(vec, basis)))
    return {u: float(np.mean(v)) for u, v in per_user.items()}


def run_adaptive_attribute_inference(ctx: AuditContext, view: str, *,
                                     bootstrap_rounds: int = 200) -> list[AttackResult]:
    """Adaptive A3 under ``view``: one result per attribute, with the energy metric."""
    start = time.perf_counter()
    if not ctx.truth.attributes:
        raise AuditError("A3 adaptive: the dataset has no user attributes")
    bases, source = round_bases(ctx, view)
    public = ctx.public_set
    sums: dict[int, list[np.ndarray]] = {}
    for r in ctx.log.rounds:
        basis = bases.get(r)
        for u, vec in _vectors(ctx, r, view):
            sums.setdefault(u, []).append(project_out(vec, basis))
    observed = sorted(sums)
    shadows = [u for u in observed if u in public]
    targets = [u for u in observed if u not in public]
    if len(shadows) < 4 or not targets:
        raise AuditError(f"A3 adaptive ({view}): {len(shadows)} shadow (public) and "
                         f"{len(targets)} target users observed; need at least 4 and 1")
    k = components_for(len(shadows))
    projected = np.stack([np.mean(sums[u], axis=0) for u in observed])
    feats = view_features(ctx, view)
    with_profiles = [u for u in observed if feats.rounds_of(u)]
    parts = [pca(projected, k, min_columns=1)]
    if with_profiles == observed:
        parts.insert(0, user_features(ctx, feats, observed, k))
    x = np.hstack(parts)
    energy = energy_in_subspace(ctx, view, bases, targets)
    energy_stats = distribution(np.array(list(energy.values())))
    covered = ctx.claim.claimed and ctx.claim.mode == "user" and view in ctx.claim.covers
    results = []
    for score in score_attributes(ctx, x, observed, shadows, targets,
                                  sorted(ctx.truth.attributes), bootstrap_rounds):
        notes = [f"subspace basis {source}",
                 "the attacker removes the basis from every observation and trains on the "
                 "public users' projected updates",
                 *([score.decide_note] if score.decide_note else [])]
        results.append(AttackResult(
            attack="A3", title=f"{TITLE}: {score.name}", view=view,
            threat_model=VIEW_TEXT[view], observes=OBSERVES, headline="macro_auc",
            estimate=score.estimate, reference=0.5, verdict=score.verdict,
            metrics={"attribute": score.name, "adaptive": True,
                     "macro_auc": score.estimate.value,
                     "balanced_accuracy": score.balanced_accuracy,
                     "chance": 1.0 / score.present,
                     "shadow_users": len(shadows), "target_users": len(targets),
                     "basis_source": source,
                     "basis_rank": {int(r): int(b.shape[1]) for r, b in bases.items()},
                     "energy_in_subspace": energy_stats, "l2": score.l2},
            covered_by_claim=covered, notes=notes, seconds=time.perf_counter() - start))
        start = time.perf_counter()
    return results


__all__ = ["TITLE", "energy_in_subspace", "round_bases", "run_adaptive_attribute_inference"]
