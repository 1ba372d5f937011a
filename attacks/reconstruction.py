"""A5, personality reconstruction: how much of a user's taste is recovered from what they shared.

Threat model: as A1 (the view's observations of the user and the released artefacts). The
attacker takes the user's inferred item profile, removes what it shares with public
popularity (which says nothing about this user), turns the rest into a preference vector in
the space of the item embeddings it knows, ``p = sum_i z_i e_i``, and predicts a preference for
every item, ``<p, e_i>``.

Scored against ground truth the attacker never sees:

- synthetic data: the planted latent traits ``z_u`` (the "personality"): the cosine between
  ``z_u`` and the traits the prediction implies (its least-squares fit on the planted item
  factors), and the rank correlation of the prediction with the planted preferences
  ``z_u . v_i``;
- any data: the rank correlation with the user's own final model (personal adapter, user
  embedding and gate applied), minus what every user's model shares (the item's mean score),
  i.e. with the personal part of the user's recommendations.

Reference: the same measures for a no-information attacker who predicts public popularity
for everyone.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from attacks.base import AttackResult, judge
from attacks.context import VIEW_TEXT, AuditContext, AuditError
from attacks.features import view_features, without, zscore
from attacks.metrics import cosine, mean_interval, spearman
from attacks.registry import register_attack

TITLE = "A5 personality reconstruction"
OBSERVES = "the view's observations of the user and the released artefacts"
TOLERANCE = 0.05


def personal_effects(ctx: AuditContext, users: list[int]) -> dict[int, np.ndarray] | None:
    """Each user's final-model scores minus the item's mean over these users (scorer side).

    Reads the run's latest checkpoint (personal states): ground truth, never attacker input.
    """
    if ctx.run_dir is None:
        return None
    latest = ctx.run_dir / "checkpoints" / "LATEST"
    if not latest.exists():
        return None
    import torch

    from ffm_private.models import FROZEN, PERSONAL, SHARED, build_model, load_group
    from ffm_private.storage import load_arrays
    from ffm_private.training_data import last_window

    ckpt = ctx.run_dir / "checkpoints" / latest.read_text().strip()
    personal = load_arrays(Path(ckpt) / "personal.npz")
    n_users = next(iter(personal.values())).shape[0] if personal else ctx.split.n_users
    model = build_model(ctx.cfg.model, ctx.n_items, n_users)
    if ctx.backbone:
        load_group(model, FROZEN, ctx.backbone)
    load_group(model, SHARED, load_arrays(Path(ckpt) / "global.npz"))
    load_group(model, PERSONAL, personal)
    model.eval()
    length = getattr(model, "history_length", 1)
    items = torch.arange(ctx.n_items)
    out = {}
    with torch.no_grad():
        for start in range(0, len(users), 32):
            batch = users[start:start + 32]
            hist = torch.from_numpy(np.stack([last_window(ctx.split.train[u], length, model.pad)
                                              for u in batch]))
            scores = model(hist, items[None, :].expand(len(batch), -1),
                           torch.as_tensor(batch, dtype=torch.long))
            for u, row in zip(batch, scores.double().numpy(), strict=True):
                out[u] = row
    mean = np.mean(list(out.values()), axis=0)
    return {u: s - mean for u, s in out.items()}


def run_reconstruction(ctx: AuditContext, view: str, *, bootstrap_rounds: int = 200
                       ) -> AttackResult:
    """Run A5 under ``view`` on every private user with an observation."""
    start = time.perf_counter()
    feats = view_features(ctx, view)
    users = [u for u in ctx.targets() if feats.rounds_of(u)]
    if not users:
        raise AuditError(f"A5 ({view}): no private user has an observation in this view")
    emb = ctx.item_embeddings()
    prior = zscore(np.log1p(ctx.popularity()))

    def predict(profile: np.ndarray) -> np.ndarray:
        return emb @ (emb.T @ profile)

    baseline_pred = predict(prior)
    rows: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        rows.setdefault(name, []).append(value)

    traits, factors = ctx.truth.traits, ctx.truth.item_factors
    fit = None
    if traits is not None and factors is not None:
        fit = np.linalg.pinv(factors)  # predicted preferences -> implied traits
    effects = personal_effects(ctx, users)
    for u in users:
        pred = predict(without(feats.profile(u), prior))
        if fit is not None:
            truth = factors @ traits[u]
            add("trait_cosine", cosine(fit @ pred, traits[u]))
            add("trait_cosine_baseline", cosine(fit @ baseline_pred, traits[u]))
            add("preference_spearman", spearman(pred, truth))
            add("preference_spearman_baseline", spearman(baseline_pred, truth))
        if effects is not None:
            add("personal_model_spearman", spearman(pred, effects[u]))
            add("personal_model_spearman_baseline", spearman(baseline_pred, effects[u]))
    headline = "trait_cosine" if fit is not None else "personal_model_spearman"
    if headline not in rows:
        raise AuditError("A5: no ground truth (no planted traits and no personal checkpoint)")
    estimate = mean_interval(np.array(rows[headline]), rounds=bootstrap_rounds, seed=ctx.seed)
    reference = max(0.0, float(np.mean(rows[f"{headline}_baseline"])))
    covered = ctx.claim.claimed and ctx.claim.mode == "user" and view in ctx.claim.covers
    return AttackResult(
        attack="A5", title=TITLE, view=view, threat_model=VIEW_TEXT[view], observes=OBSERVES,
        headline=headline, estimate=estimate, reference=reference,
        verdict=judge(estimate, reference, TOLERANCE, headline.replace("_", " ")),
        metrics={"users": len(users), **{k: float(np.mean(v)) for k, v in rows.items()}},
        covered_by_claim=covered,
        notes=["prediction: the inferred item profile projected through the known item "
               "embeddings; baseline: the same for public popularity"],
        seconds=time.perf_counter() - start)


@register_attack("a5", title="personality reconstruction")
def audit_reconstruction(ctx: AuditContext, view: str, options: Any) -> list[AttackResult]:
    """A5 in an audit (``options``: the audit's :class:`~attacks.audit.AuditOptions`)."""
    return [run_reconstruction(ctx, view, bootstrap_rounds=options.bootstrap)]


__all__ = ["TITLE", "personal_effects", "run_reconstruction"]
