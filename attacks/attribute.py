"""A3, attribute inference: gender, age group, occupation... from what a user shared.

Threat model: the attacker holds the view's observations of every user and knows the
attributes of the public split's users (they are public, like their data). It turns each
user's observations into a feature vector and trains a classifier on the public users
(shadows), then predicts the private users' attributes.

Features: the user's inferred item profile (``attacks.features``: z-scored, averaged over the
rounds observed) projected on the item embeddings the attacker knows (backbone or released
table), plus the leading principal components of the sketched update vectors. Classifier:
class-balanced L2 logistic regression, regularisation chosen by cross-validation on shadows.

Metrics: balanced accuracy (chance 1/classes, which any guess that ignores the observation
achieves) with a bootstrap interval over private users, and macro one-vs-rest AUC (chance 0.5).
"""

from __future__ import annotations

import time

import numpy as np

from attacks.base import AttackResult, judge
from attacks.classifier import fit_logistic_cv
from attacks.context import VIEW_TEXT, AuditContext, AuditError
from attacks.features import ViewFeatures, view_features, without
from attacks.metrics import balanced_accuracy, bootstrap, macro_auc

TITLE = "A3 attribute inference"
OBSERVES = ("the view's observations of every user, the item embeddings of the released "
            "artefacts, and the public users' attributes (the classifier's training set)")
TOLERANCE = 0.02
PCA_COMPONENTS = 16


def user_features(ctx: AuditContext, feats: ViewFeatures, users: list[int]) -> np.ndarray:
    """One feature row per user (see the module docstring)."""
    emb = ctx.item_embeddings()
    emb = (emb - emb.mean(axis=0)) / max(float(emb.std()), 1e-12)
    prior = np.log1p(ctx.popularity())
    profiles = np.stack([without(feats.profile(u), prior) for u in users])
    projected = profiles @ emb / emb.shape[0]
    sketches = np.stack([np.mean([feats.sketches[(r, u)] for r in feats.rounds_of(u)], axis=0)
                         for u in users])
    centred = sketches - sketches.mean(axis=0)
    k = min(PCA_COMPONENTS, max(len(users) - 1, 1), centred.shape[1])
    if np.allclose(centred, 0):
        components = np.zeros((len(users), k))
    else:
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        components = centred @ vt[:k].T
    return np.hstack([projected, components])


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
    rows = {u: i for i, u in enumerate(observed)}
    x = user_features(ctx, feats, observed)
    xs, xt = x[[rows[u] for u in shadows]], x[[rows[u] for u in targets]]
    covered = ctx.claim.claimed and ctx.claim.mode == "user" and view in ctx.claim.covers
    results = []
    for name in attributes or sorted(ctx.truth.attributes):
        codes = np.asarray(ctx.truth.attributes[name])
        ys, yt = codes[shadows], codes[targets]
        classes = np.unique(np.concatenate([ys, yt]))
        if len(np.unique(ys)) < 2:
            continue
        model = fit_logistic_cv(xs, ys, seed=ctx.seed, classes=classes)
        proba = model.predict_proba(xt)
        pred = model.classes[np.argmax(proba, axis=1)]
        present = np.unique(yt)
        chance = 1.0 / len(present)

        def stat(idx: np.ndarray, yt=yt, pred=pred) -> float:
            return balanced_accuracy(yt[idx], pred[idx])

        estimate = bootstrap(stat, len(targets), rounds=bootstrap_rounds, seed=ctx.seed)
        auc_value = macro_auc(yt, proba, list(model.classes))
        majority = np.bincount(np.searchsorted(classes, ys)).argmax()
        label_names = ctx.truth.attribute_names.get(name, [])
        results.append(AttackResult(
            attack="A3", title=f"{TITLE}: {name}", view=view, threat_model=VIEW_TEXT[view],
            observes=OBSERVES, headline="balanced_accuracy", estimate=estimate,
            reference=chance, verdict=judge(estimate, chance, TOLERANCE, "balanced accuracy"),
            metrics={"attribute": name, "classes": int(len(present)), "chance": chance,
                     "macro_auc": auc_value, "auc_chance": 0.5, "shadow_users": len(shadows),
                     "target_users": len(targets), "l2": model.l2,
                     "majority_class": (label_names[int(classes[majority])]
                                        if int(classes[majority]) < len(label_names)
                                        else int(classes[majority]))},
            covered_by_claim=covered,
            notes=["classifier trained on public users' observations and attributes; scored "
                   "on private users"],
            seconds=time.perf_counter() - start))
    return results


__all__ = ["TITLE", "run_attribute_inference", "user_features"]
