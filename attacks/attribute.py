"""A3, attribute inference: gender, age group, occupation... from what a user shared.

Threat model: the attacker holds the view's observations of every user and knows the
attributes of the public split's users (they are public, like their data). It turns each
user's observations into a feature vector and trains a classifier on the public users
(shadows), then predicts the private users' attributes.

Features: the leading principal components (fit on every observed user: unsupervised) of the
users' inferred item profiles (``attacks.features``: z-scored, averaged over the rounds
observed, popularity removed) and of their sketched update vectors; few components, since the
shadows are few. Classifier: class-balanced L2 logistic regression, regularisation chosen by
cross-validation on the shadows.

Metrics: macro one-vs-rest AUC (chance 0.5 whatever the class balance; the verdict's metric)
and balanced accuracy (chance 1/classes, which any guess that ignores the observation
achieves), each with a bootstrap interval over private users.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from attacks.base import INCONCLUSIVE, AttackResult, Verdict, judge
from attacks.classifier import fit_logistic_cv
from attacks.context import VIEW_TEXT, AuditContext, AuditError
from attacks.features import ViewFeatures, view_features, without
from attacks.metrics import Interval, balanced_accuracy, bootstrap, macro_auc
from attacks.registry import register_attack

TITLE = "A3 attribute inference"
OBSERVES = ("the view's observations of every user, the item embeddings of the released "
            "artefacts, and the public users' attributes (the classifier's training set)")
TOLERANCE = 0.02
PCA_COMPONENTS = 16


def pca(rows: np.ndarray, k: int, *, min_columns: int = 0) -> np.ndarray:
    """The rows' first ``k`` principal-component scores (zeros, ``min_columns`` wide, if flat)."""
    centred = rows - rows.mean(axis=0)
    k = max(0, min(k, centred.shape[0] - 1, centred.shape[1]))
    if k == 0 or np.allclose(centred, 0):
        return np.zeros((rows.shape[0], max(k, min_columns)))
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:k].T


def components_for(shadows: int) -> int:
    """Principal components of the profiles kept: few, since shadows are few (4 to 16)."""
    return int(np.clip(shadows // 8, 4, PCA_COMPONENTS))


def user_features(ctx: AuditContext, feats: ViewFeatures, users: list[int],
                  k: int) -> np.ndarray:
    """One feature row per user (see the module docstring)."""
    prior = np.log1p(ctx.popularity())
    profiles = np.stack([without(feats.profile(u), prior) for u in users])
    sketches = np.stack([np.mean([feats.sketches[(r, u)] for r in feats.rounds_of(u)], axis=0)
                         for u in users])
    return np.hstack([pca(profiles, k), pca(sketches, max(1, k // 2))])


def users_to_decide(estimate, bar: float, n: int) -> int | None:
    """Targets that would decide an inconclusive verdict if the estimate stayed where it is.

    The bootstrap interval narrows as ``1 / sqrt(n)``: the side facing ``bar`` must shrink
    below the estimate's distance to it. ``None`` when the estimate sits on the bar.
    """
    gap = abs(estimate.value - bar)
    half = (estimate.value - estimate.low) if estimate.value > bar else \
        (estimate.high - estimate.value)
    if gap < 1e-9 or not np.isfinite(half):
        return None
    return int(np.ceil(n * (half / gap) ** 2))


def decide_note(estimate, bar: float, n: int, verdict) -> str | None:
    """A sentence for an inconclusive verdict: how many users would decide it."""
    if verdict.level != INCONCLUSIVE:
        return None
    need = users_to_decide(estimate, bar, n)
    if need is None:
        return (f"inconclusive with {n} target users: the estimate sits on the reference, so "
                "no number of users decides it")
    return (f"inconclusive with {n} target users: about {need} observed private users (at "
            "the same per-user observation) would decide it if the estimate stayed at "
            f"{estimate.value:.3f}")


@dataclass(frozen=True)
class AttributeScore:
    """One attribute's classifier, scored on the target users (shared by A3 and adaptive A3)."""

    name: str
    estimate: Interval  # macro AUC with its bootstrap interval
    balanced_accuracy: Interval
    verdict: Verdict
    decide_note: str | None
    l2: float
    classes: np.ndarray
    majority: int  # the most frequent class among the shadows
    present: int  # classes present among the targets


def score_attributes(ctx: AuditContext, x: np.ndarray, observed: list[int], shadows: list[int],
                     targets: list[int], names: list[str],
                     bootstrap_rounds: int) -> Iterator[AttributeScore]:
    """Train on the shadows' rows of ``x`` (public users), score on the targets', per attribute.

    ``x`` holds one feature row per user of ``observed``; attributes the shadows show only one
    value of are skipped.
    """
    rows = {u: i for i, u in enumerate(observed)}
    xs, xt = x[[rows[u] for u in shadows]], x[[rows[u] for u in targets]]
    for name in names:
        codes = np.asarray(ctx.truth.attributes[name])
        ys, yt = codes[shadows], codes[targets]
        classes = np.unique(np.concatenate([ys, yt]))
        if len(np.unique(ys)) < 2:
            continue
        model = fit_logistic_cv(xs, ys, seed=ctx.seed, classes=classes)
        proba = model.predict_proba(xt)
        pred = model.classes[np.argmax(proba, axis=1)]

        def stat_bacc(idx: np.ndarray, yt=yt, pred=pred) -> float:
            return balanced_accuracy(yt[idx], pred[idx])

        def stat_auc(idx: np.ndarray, yt=yt, proba=proba, classes=model.classes) -> float:
            return macro_auc(yt[idx], proba[idx], list(classes))

        bacc = bootstrap(stat_bacc, len(targets), rounds=bootstrap_rounds, seed=ctx.seed)
        estimate = bootstrap(stat_auc, len(targets), rounds=bootstrap_rounds, seed=ctx.seed)
        verdict = judge(estimate, 0.5, TOLERANCE, "macro AUC")
        yield AttributeScore(
            name=name, estimate=estimate, balanced_accuracy=bacc, verdict=verdict,
            decide_note=decide_note(estimate, 0.5 + TOLERANCE, len(targets), verdict),
            l2=model.l2, classes=classes,
            majority=int(classes[np.bincount(np.searchsorted(classes, ys)).argmax()]),
            present=int(len(np.unique(yt))))


def run_attribute_inference(ctx: AuditContext, view: str, *, attributes: list[str] | None = None,
                            bootstrap_rounds: int = 200) -> list[AttackResult]:
    """Run A3 under ``view``: one result per attribute the dataset has."""
    start = time.perf_counter()
    if not ctx.truth.attributes:
        raise AuditError("A3: the dataset has no user attributes")
    feats = view_features(ctx, view)
    observed = [u for u in feats.users() if feats.rounds_of(u)]
    public = ctx.public_set
    shadows = [u for u in observed if u in public]
    targets = [u for u in observed if u not in public]
    if len(shadows) < 4 or not targets:
        raise AuditError(f"A3 ({view}): {len(shadows)} shadow (public) and {len(targets)} "
                         "target users observed; need at least 4 and 1")
    x = user_features(ctx, feats, observed, components_for(len(shadows)))
    covered = ctx.claim.claimed and ctx.claim.mode == "user" and view in ctx.claim.covers
    results = []
    for score in score_attributes(ctx, x, observed, shadows, targets,
                                  attributes or sorted(ctx.truth.attributes), bootstrap_rounds):
        notes = ["classifier trained on public users' observations and attributes; scored "
                 "on private users", *([score.decide_note] if score.decide_note else [])]
        label_names = ctx.truth.attribute_names.get(score.name, [])
        results.append(AttackResult(
            attack="A3", title=f"{TITLE}: {score.name}", view=view,
            threat_model=VIEW_TEXT[view], observes=OBSERVES, headline="macro_auc",
            estimate=score.estimate, reference=0.5, verdict=score.verdict,
            metrics={"attribute": score.name, "classes": score.present,
                     "chance": 1.0 / score.present,
                     "balanced_accuracy": score.balanced_accuracy,
                     "macro_auc": score.estimate.value, "auc_chance": 0.5,
                     "shadow_users": len(shadows), "target_users": len(targets),
                     "l2": score.l2,
                     "majority_class": (label_names[score.majority]
                                        if score.majority < len(label_names)
                                        else score.majority)},
            covered_by_claim=covered,
            notes=notes,
            seconds=time.perf_counter() - start))
        start = time.perf_counter()  # the next attribute's time is its own
    return results


@register_attack("a3", title="attribute inference")
def audit_attribute_inference(ctx: AuditContext, view: str, options: Any) -> list[AttackResult]:
    """A3 in an audit: the attribute attacker, then the adaptive one that knows the projection."""
    from attacks.subspace import run_adaptive_attribute_inference

    results = run_attribute_inference(ctx, view, bootstrap_rounds=options.bootstrap)
    return results + run_adaptive_attribute_inference(ctx, view,
                                                      bootstrap_rounds=options.bootstrap)


__all__ = ["TITLE", "AttributeScore", "decide_note", "pca", "score_attributes", "run_attribute_inference", "user_features",
           "users_to_decide"]
