"""A2, interaction-level membership inference: was item i in user u's training data?

Threat model (in the spirit of Yuan et al., "Interaction-level Membership Inference Attack
Against Federated Recommender Systems", WWW 2023): the attacker holds the view's observation
of the user's upload in one round, the broadcast state and backbone, and knows the client
algorithm (:func:`ffm_private.client.train_client`, run with the run's local configuration
but the attacker's own randomness and a fresh personal state). For a candidate item ``i`` it
simulates local training under a guessed interaction set ``B`` (the items A1 ranks highest)
with and without ``i``, and asks which simulated upload the observed one resembles at item
``i``, through A1's per-item scores ``p`` (z-scored):

    score(u, i) = (p_i(sim(B)) - p_i(observed))^2 - (p_i(sim(B + i)) - p_i(observed))^2

(comparing whole vectors instead drowns the signal: adding one item reshuffles every sampled
negative of the simulation).

LiRA-style calibration (Carlini et al., S&P 2022): public users serve as shadow clients, whose
data the attacker knows; it simulates their uploads with ``i`` inserted and removed, computes
the same score, and fits Gaussians to the "in" and "out" scores of each candidate item (one
variance per world, pooled over items, as LiRA's fixed-variance variant). The calibrated score
is the log-likelihood ratio.

Candidates: a pool of items drawn by public popularity (so members occur), tested against
every target user; pairs whose item is the user's validation or test item are left out.
Metrics: AUC (bootstrap over users), TPR at 1% and 0.1% FPR; reference: the better of chance
and a popularity guess.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from attacks.base import AttackResult, judge
from attacks.context import VIEW_TEXT, AuditContext, AuditError, view_vector
from attacks.features import scorers_for, zscore
from attacks.metrics import auc, bootstrap, roc_curve, tpr_at_fpr
from attacks.registry import register_attack

TITLE = "A2 interaction-level membership inference"
OBSERVES = ("the view's observation of the user's upload in one round, the broadcast state, "
            "the backbone and the client algorithm; public users' data for calibration")
TOLERANCE = 0.02


@dataclass
class _Simulator:
    """Runs the client algorithm as the attacker can: own seed, fresh personal state."""

    ctx: AuditContext
    round_id: int
    broadcast: np.ndarray

    def __post_init__(self) -> None:
        from ffm_private.messages import GlobalModelMessage
        from ffm_private.models import FROZEN, build_model, load_group
        from ffm_private.simulation import local_config

        cfg = self.ctx.cfg
        self.model = build_model(cfg.model, self.ctx.n_items, 1)
        if self.ctx.backbone:
            load_group(self.model, FROZEN, self.ctx.backbone)
        for p in self.model.parameters():
            p.requires_grad_(False)
        seed = int(np.random.SeedSequence([self.ctx.seed, 0xA2]).generate_state(1)[0])
        self.seed = seed
        self.personal = {k: v[0] for k, v in self.model.init_personal_states(1, seed).items()}
        self.local = self._client_config(local_config(cfg))
        self.message = GlobalModelMessage(
            self.round_id, self.ctx.log.spec.unflatten(np.asarray(self.broadcast, np.float64)))
        self.calls = 0

    def _client_config(self, plain):
        """The run's client configuration: with example-level DP, its DP-SGD settings.

        They come from the run's saved plan, read by the read-only run view (the client
        algorithm is public; the clients' secret generators are not: the attacker draws its
        own).
        """
        return self.ctx.local_cfg if self.ctx.local_cfg is not None else plain

    def __call__(self, items: np.ndarray, tag: int) -> np.ndarray:
        import torch

        from ffm_private.client import ClientData, train_client

        self.calls += 1
        items = np.asarray(items, dtype=np.int64)
        if items.size == 0:
            return np.zeros(self.ctx.log.n_params)
        generator = None
        if getattr(self.local, "example_dp", None) is not None:
            generator = torch.Generator().manual_seed(
                int(np.random.SeedSequence([self.seed, self.calls]).generate_state(1)[0]))
        result = train_client(self.model, self.message, self.personal, ClientData(tag, items),
                              self.local, self.seed, generator=generator)
        return result.update.delta


def _profile(scorer, sim: _Simulator, vector: np.ndarray) -> np.ndarray:
    return zscore(scorer(vector, sim.broadcast))


def _score(sim: _Simulator, scorer, observed: np.ndarray, base: np.ndarray,
           base_profile: np.ndarray, item: int, tag: int) -> float:
    """Which simulated upload, with or without ``item``, explains the observed one at ``item``.

    ``observed`` and ``base_profile`` are z-scored item profiles (A1's scorer); the score is
    ``(out - obs)^2 - (in - obs)^2`` at the item: positive when "in" fits better.
    """
    p_in = _profile(scorer, sim, sim(np.concatenate([base, [item]]), tag))[item]
    p_out, obs = base_profile[item], observed[item]
    return float((p_out - obs) ** 2 - (p_in - obs) ** 2)


def _base_guess(scorer, vector: np.ndarray, broadcast: np.ndarray, exclude: np.ndarray,
                size: int) -> np.ndarray:
    scores = np.asarray(scorer(vector, broadcast), dtype=np.float64).copy()
    scores[exclude] = -np.inf
    top = np.argsort(-scores, kind="stable")[:size]
    return top[::-1].copy()  # the highest-scored item last (most recent in the history)


def run_membership(ctx: AuditContext, view: str, *, users: int = 40, pool: int = 30,
                   shadows: int = 8, base: int = 20, bootstrap_rounds: int = 200
                   ) -> AttackResult:
    """Run A2 under ``view`` (see the module docstring for the sizes)."""
    from tqdm.auto import tqdm

    start = time.perf_counter()
    rng = ctx.rng(0xA2)
    target_round = None
    for obs in ctx.log:
        candidates = [u for u in ctx.targets() if view_vector(obs, u, view) is not None]
        if candidates:
            target_round, target_users = obs, candidates
            break
    if target_round is None:
        raise AuditError(f"A2 ({view}): no private user has an observation in this view")
    obs = target_round
    chosen = sorted(rng.choice(target_users, size=min(users, len(target_users)),
                               replace=False).tolist())
    weights = ctx.popularity() + 1.0
    items = rng.choice(ctx.n_items, size=min(pool, ctx.n_items), replace=False,
                       p=weights / weights.sum())
    scorer = next(iter(scorers_for(ctx).values()))
    sim = _Simulator(ctx, obs.round_id, obs.broadcast)

    raw, labels, owner, item_of = [], [], [], []
    bar = tqdm(chosen, desc=f"A2 targets ({view})", leave=False, disable=not ctx.progress)
    for u in bar:
        observed = np.asarray(view_vector(obs, u, view), dtype=np.float64)
        guess = _base_guess(scorer, observed, obs.broadcast, items, base)
        observed_profile = _profile(scorer, sim, observed)
        base_profile = _profile(scorer, sim, sim(guess, u))
        train = set(ctx.truth.train[u].tolist())
        held = set(ctx.truth.held_out[u].tolist())
        for i in items:
            if int(i) in held:
                continue
            raw.append(_score(sim, scorer, observed_profile, guess, base_profile, int(i), u))
            labels.append(int(i) in train)
            owner.append(u)
            item_of.append(int(i))
    raw_a, labels_a = np.array(raw), np.array(labels, dtype=bool)
    owner_a, item_a = np.array(owner), np.array(item_of)

    lira = _lira(ctx, sim, scorer, items, raw_a, item_a, shadows, base, rng, view)
    # the verdict follows the stronger variant: an attacker may use either
    headline = "lira" if lira is not None and auc(lira, labels_a) >= auc(raw_a, labels_a) \
        else "raw"
    scores = lira if headline == "lira" else raw_a
    pop_scores = ctx.popularity()[item_a]
    index = {u: np.flatnonzero(owner_a == u) for u in chosen}

    def stat(idx: np.ndarray) -> float:
        rows = np.concatenate([index[chosen[k]] for k in idx]) if len(idx) else np.zeros(0, int)
        return auc(scores[rows], labels_a[rows])

    estimate = bootstrap(stat, len(chosen), rounds=bootstrap_rounds, seed=ctx.seed)
    pop_auc = auc(pop_scores, labels_a)
    reference = float(np.nanmax([0.5, pop_auc]))
    fpr, tpr = roc_curve(scores, labels_a)
    covered = ctx.claim.claimed and view in ctx.claim.covers
    metrics = {
        "round": obs.round_id, "users": len(chosen), "pool": len(items),
        "pairs": int(labels_a.size), "members": int(labels_a.sum()),
        "auc_raw": auc(raw_a, labels_a), "auc_lira": auc(lira, labels_a) if lira is not None
        else None, "auc_popularity": pop_auc,
        "tpr@1%fpr": tpr_at_fpr(scores, labels_a, 0.01),
        "tpr@0.1%fpr": tpr_at_fpr(scores, labels_a, 0.001),
        "non_members": int((~labels_a).sum()), "shadows_per_item": shadows,
        "simulations": sim.calls, "headline": headline,
    }
    notes = ["TPR at 0.1% FPR needs about 1,000 non-member pairs to be more than 0 or 1 "
             f"false positive; this run has {metrics['non_members']}"]
    return AttackResult(
        attack="A2", title=TITLE, view=view, threat_model=VIEW_TEXT[view], observes=OBSERVES,
        headline="auc", estimate=estimate, reference=reference,
        verdict=judge(estimate, reference, TOLERANCE, f"AUC ({headline})"), metrics=metrics,
        curves={f"A2 {headline}": (fpr, tpr)}, covered_by_claim=covered, notes=notes,
        seconds=time.perf_counter() - start)


def _lira(ctx: AuditContext, sim: _Simulator, scorer, items: np.ndarray, raw: np.ndarray,
          item_of: np.ndarray, shadows: int, base: int, rng: np.random.Generator,
          view: str) -> np.ndarray | None:
    """Calibrated scores from shadow clients (public users), or ``None`` without them."""
    from tqdm.auto import tqdm

    public = [int(u) for u in ctx.public if len(ctx.truth.train[int(u)]) > 1]
    if shadows < 1 or len(public) < 1:
        return None
    stats_in: dict[int, list[float]] = {}
    stats_out: dict[int, list[float]] = {}
    bar = tqdm(items, desc=f"A2 shadows ({view})", leave=False, disable=not ctx.progress)
    for i in bar:
        i = int(i)
        for s in rng.choice(public, size=min(shadows, len(public)), replace=False):
            own = ctx.truth.train[int(s)]
            without = own[own != i]
            for world, data in ((True, np.concatenate([without, [i]])), (False, without)):
                tag = 1_000_000 + int(s)
                upload = sim(data, tag)
                guess = _base_guess(scorer, upload, sim.broadcast, items, base)
                value = _score(sim, scorer, _profile(scorer, sim, upload), guess,
                               _profile(scorer, sim, sim(guess, tag)), i, tag)
                (stats_in if world else stats_out).setdefault(i, []).append(value)
    all_in = np.concatenate([v for v in stats_in.values()])
    all_out = np.concatenate([v for v in stats_out.values()])
    sd_in, sd_out = max(all_in.std(), 1e-6), max(all_out.std(), 1e-6)
    mu_in = {i: float(np.mean(v)) for i, v in stats_in.items()}
    mu_out = {i: float(np.mean(v)) for i, v in stats_out.items()}
    m_in = np.array([mu_in[int(i)] for i in item_of])
    m_out = np.array([mu_out[int(i)] for i in item_of])
    return (-0.5 * ((raw - m_in) / sd_in) ** 2 - np.log(sd_in)
            + 0.5 * ((raw - m_out) / sd_out) ** 2 + np.log(sd_out))


@register_attack("a2", title="interaction-level membership inference")
def audit_membership(ctx: AuditContext, view: str, options: Any) -> list[AttackResult]:
    """A2 in an audit (``options``: the audit's :class:`~attacks.audit.AuditOptions`)."""
    return [run_membership(ctx, view, users=options.a2_users, pool=options.a2_pool,
                           shadows=options.a2_shadows, bootstrap_rounds=options.bootstrap)]


__all__ = ["TITLE", "run_membership"]
