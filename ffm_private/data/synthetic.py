"""Synthetic interactions in MovieLens-100K's shape, with a planted per-user "personality".

Why: the quickstart, the tests and the leakage audits need data whose ground truth is known.
Each user ``u`` has latent preference traits ``z_u ~ N(0, I_K)``; each item ``i`` has latent
factors ``v_i ~ N(0, I_K / K)`` and a power-law base popularity ``p_i``. User ``u`` interacts
with ``n_u`` distinct items drawn without replacement from

    softmax_i(trait_strength * z_u . v_i + log p_i)

(exactly, by the Gumbel-top-k trick), after a coverage step that gives every item at least one
user (as in MovieLens-100K, where every listed item has a rating). ``n_u`` is
``min_per_user`` plus a gamma-distributed excess rescaled to ``n_interactions`` in total, which gives
MovieLens-100K's heavy-tailed activity. Observable attributes depend on the traits:
``gender`` on trait 0, ``age`` on trait 1 and ``occupation`` on all traits (and on age), so
inferring them from what a user interacted with is possible, which is what the attacks measure.

Output (ML-100K format, so the real loader reads it): ``u.data``, ``u.user``, ``u.item``,
plus ``personality.npz`` (the ground truth, rows in raw-id order) and ``synthetic.json``
(the configuration and summary statistics).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, fields
from os import PathLike
from pathlib import Path

import numpy as np

from ffm_private.data.interactions import Interactions
from ffm_private.data.movielens import (
    AGE_GROUPS,
    GENDERS,
    ML100K_OCCUPATIONS,
    age_group,
)

PERSONALITY_FILE = "personality.npz"
CONFIG_FILE = "synthetic.json"
FORMAT_VERSION = 1

#: Users per occupation in MovieLens-100K (same order as ML100K_OCCUPATIONS).
_ML100K_OCCUPATION_COUNTS = np.array([79, 28, 7, 95, 67, 18, 32, 16, 7, 12, 51, 26, 9, 105,
                                      66, 14, 12, 31, 196, 27, 45], dtype=np.float64)
#: Share of MovieLens-100K ratings with 1..5 stars (ratings are derived from affinity).
_RATING_SHARES = np.array([0.0611, 0.1137, 0.2715, 0.3417, 0.2120])
_GENRES = 19  # u.item carries MovieLens-100K's 19 genre flags
_OCC = {name: k for k, name in enumerate(ML100K_OCCUPATIONS)}
GENERATORS = ("softmax", "sequential")
#: Fields only the sequential generator reads (left out of a softmax dataset's summary, so
#: the existing presets write the same files as before).
_SEQUENTIAL_FIELDS = ("generator", "session_mean", "transition_prob", "neighbours",
                      "interests", "interest_spread", "drift", "drift_memory",
                      "new_release_fraction", "trend_strength", "trend_days")
#: ml100k-seq popularity shape, calibrated to MovieLens-100K's item Gini (docs/synthetic.md).
SEQ_POPULARITY_EXPONENT = 1.0
SEQ_POPULARITY_CUTOFF = 0.16
#: MovieLens-100K's first and last rating: 1997-09-20 03:05:10 to 1998-04-22 23:10:38 UTC.
SEQ_SPAN_DAYS = (893_286_638 - 874_724_710) / 86_400.0


@dataclass(frozen=True)
class SyntheticConfig:
    """Size, shape and planted structure of a synthetic dataset (defaults: ML-100K's shape)."""

    n_users: int = 943
    n_items: int = 1682
    n_interactions: int = 100_000
    min_per_user: int = 20
    #: Cap on one user's interactions, as a fraction of the items (ML-100K's most active
    #: user rated 44% of them).
    max_per_user_fraction: float = 0.45
    #: Items every user leaves untouched, when the size allows, so the standard evaluation
    #: (99 never-interacted negatives per user) always works.
    eval_negatives_reserve: int = 99
    #: Gamma shape of each user's activity beyond ``min_per_user``: smaller is more spread
    #: (0.65 fits MovieLens-100K's quantiles).
    activity_shape: float = 0.65
    n_traits: int = 8
    #: Zipf exponent of the items' base popularity ``p_i ~ rank^-a``.
    popularity_exponent: float = 0.9
    #: Exponential cutoff of the power law, as a fraction of the items: MovieLens' long tail
    #: of barely-rated items (``p_i ~ rank^-a * exp(-rank / (cutoff * n_items))``).
    popularity_cutoff: float = 0.2
    #: Weight of personal taste against popularity in the interaction softmax.
    trait_strength: float = 3.0
    #: Logit weight of the traits on the observable attributes (0 = independent).
    attribute_strength: float = 1.5
    male_fraction: float = 0.71
    mean_age: float = 34.0
    age_std: float = 12.0
    #: Interactions fall in ``[start_timestamp, start_timestamp + span_days]`` (Unix seconds).
    start_timestamp: int = 874_724_710
    span_days: float = 215.0
    seed: int = 0
    #: ``softmax`` (static low-rank softmax, above) or ``sequential`` (sessions, taste drift,
    #: item-to-item transitions, trending items: see :func:`_draw_sequential`).
    generator: str = "softmax"
    #: sequential: mean interactions per session (geometric lengths).
    session_mean: float = 8.0
    #: sequential: probability that the next item in a session follows the previous one
    #: through the item-to-item transition graph (instead of the user's current taste).
    transition_prob: float = 0.35
    #: sequential: out-degree of the item-to-item transition graph (same-genre neighbours).
    neighbours: int = 12
    #: sequential: interest prototypes per user; each session follows one of them.
    interests: int = 3
    #: sequential: spread of a user's interests around their traits.
    interest_spread: float = 0.7
    #: sequential: per-session taste drift (AR(1) noise added to the interest, this scale).
    drift: float = 0.5
    #: sequential: AR(1) memory of the drift from one session to the next.
    drift_memory: float = 0.8
    #: sequential: share of items released during the span (trending for a while after).
    new_release_fraction: float = 0.2
    #: sequential: logit boost of an item just released (decays over ``trend_days``).
    trend_strength: float = 2.0
    trend_days: float = 30.0

    def __post_init__(self) -> None:
        cap = self.max_per_user
        checks = [
            (self.n_users >= 1, "n_users must be >= 1"),
            (self.n_traits >= 2, "n_traits must be >= 2 (gender and age each use one)"),
            (self.min_per_user >= 3, "min_per_user must be >= 3 (leave-one-out)"),
            (self.min_per_user < self.n_items, "min_per_user must be below n_items"),
            (self.eval_negatives_reserve >= 0, "eval_negatives_reserve must be >= 0"),
            (self.n_users * self.min_per_user <= self.n_interactions <= self.n_users * cap,
             f"n_interactions must lie in [n_users * min_per_user, n_users * {cap}]"),
            (self.n_interactions >= self.n_items,
             "n_interactions must be >= n_items (every item gets at least one interaction)"),
            (self.popularity_cutoff > 0, "popularity_cutoff must be > 0"),
            (0.0 < self.male_fraction < 1.0, "male_fraction must be in (0, 1)"),
            (self.activity_shape > 0 and self.popularity_exponent >= 0
             and self.trait_strength >= 0 and self.attribute_strength >= 0 and self.age_std >= 0,
             "strengths, exponents and spreads must be >= 0"),
            (self.span_days > 0, "span_days must be > 0"),
            (self.seed >= 0, "seed must be >= 0"),
            (self.generator in GENERATORS, f"generator must be one of {list(GENERATORS)}"),
            (self.session_mean >= 1 and self.neighbours >= 1 and self.interests >= 1
             and self.trend_days > 0, "session_mean, neighbours, interests, trend_days "
             "must be >= 1 (> 0 for trend_days)"),
            (0 <= self.transition_prob <= 1 and 0 <= self.drift_memory < 1
             and 0 <= self.new_release_fraction <= 1,
             "transition_prob, new_release_fraction must lie in [0, 1], drift_memory in [0, 1)"),
            (self.drift >= 0 and self.interest_spread >= 0 and self.trend_strength >= 0,
             "drift, interest_spread and trend_strength must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"SyntheticConfig: {message}")

    @property
    def max_per_user(self) -> int:
        """Most interactions one user may have (the fraction cap, then the reserve)."""
        cap = min(int(self.max_per_user_fraction * self.n_items),
                  self.n_items - self.eval_negatives_reserve)
        return max(cap, self.min_per_user)

    @classmethod
    def small(cls, seed: int = 0) -> SyntheticConfig:
        """~300 users, 400 items, 15k interactions: the half-minute federated quickstart."""
        return cls(n_users=300, n_items=400, n_interactions=15_000, seed=seed)

    @classmethod
    def ml100k_seq(cls, seed: int = 0) -> SyntheticConfig:
        """MovieLens-100K's shape with sequential structure (docs/synthetic.md)."""
        return cls(generator="sequential", popularity_exponent=SEQ_POPULARITY_EXPONENT,
                   popularity_cutoff=SEQ_POPULARITY_CUTOFF, span_days=SEQ_SPAN_DAYS, seed=seed)

    @classmethod
    def preset(cls, name: str, seed: int = 0) -> SyntheticConfig:
        """The named preset: ``small``, ``ml100k`` or ``ml100k-seq``."""
        makers = {"small": cls.small, "ml100k": lambda seed: cls(seed=seed),
                  "ml100k-seq": cls.ml100k_seq}
        if name not in makers:
            raise ValueError(f"unknown synthetic preset {name!r}; expected one of "
                             f"{sorted(makers)}")
        return makers[name](seed=seed)

    @classmethod
    def from_dict(cls, values: dict) -> SyntheticConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass(frozen=True, eq=False)
class Personality:
    """The planted ground truth. Rows follow ``raw_user_ids`` / ``raw_item_ids``."""

    raw_user_ids: np.ndarray
    raw_item_ids: np.ndarray
    traits: np.ndarray          # (n_users, n_traits)
    item_factors: np.ndarray    # (n_items, n_traits)
    log_popularity: np.ndarray  # (n_items,) log base popularity (normalized)
    trait_strength: float
    gender: np.ndarray          # 0 = F, 1 = M
    age: np.ndarray             # years
    age_group: np.ndarray       # codes into AGE_GROUPS
    occupation: np.ndarray      # codes into ML100K_OCCUPATIONS
    activity: np.ndarray        # interactions per user

    def scores(self) -> np.ndarray:
        """The generative logits ``(n_users, n_items)``: the oracle ranking of every item."""
        return self.trait_strength * self.traits @ self.item_factors.T + self.log_popularity

    def aligned(self, data: Interactions) -> Personality:
        """The same ground truth with rows reordered to ``data``'s internal ids."""
        urows = _positions(self.raw_user_ids, data.raw_user_ids, "user")
        irows = _positions(self.raw_item_ids, data.raw_item_ids, "item")
        return Personality(
            raw_user_ids=self.raw_user_ids[urows], raw_item_ids=self.raw_item_ids[irows],
            traits=self.traits[urows], item_factors=self.item_factors[irows],
            log_popularity=self.log_popularity[irows], trait_strength=self.trait_strength,
            gender=self.gender[urows], age=self.age[urows], age_group=self.age_group[urows],
            occupation=self.occupation[urows], activity=self.activity[urows])


def generate_synthetic(out_dir: str | PathLike[str],
                       config: SyntheticConfig = SyntheticConfig()) -> Path:  # noqa: B008
    """Write a synthetic dataset to ``out_dir`` (created if needed) and return its path.

    Deterministic: the same config writes byte-identical files. Crash-safe: the files are
    written into a temporary sibling directory, which is renamed to ``out_dir`` (or, when
    ``out_dir`` already holds other files, each file is renamed into it, the summary
    ``synthetic.json`` last), so a killed generator never leaves a half-written dataset.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _write_synthetic(tmp, config)
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        if not out.exists():
            os.rename(tmp, out)
            return out
        names = sorted(p.name for p in tmp.iterdir())
        for name in sorted(names, key=lambda n: n == CONFIG_FILE):
            os.replace(tmp / name, out / name)
        tmp.rmdir()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _write_synthetic(out: Path, cfg: SyntheticConfig) -> None:
    root = np.random.SeedSequence([0x5F17, cfg.seed])
    s_traits, s_items, s_attr, s_activity, s_cover, s_draw, s_time, s_misc = root.spawn(8)
    n_users, n_items, K = cfg.n_users, cfg.n_items, cfg.n_traits

    rng = np.random.default_rng(s_traits)
    traits = rng.standard_normal((n_users, K))

    rng = np.random.default_rng(s_items)
    factors = rng.standard_normal((n_items, K))
    factors /= np.linalg.norm(factors, axis=1, keepdims=True)
    ranks = rng.permutation(n_items) + 1.0
    log_pop = -cfg.popularity_exponent * np.log(ranks) - ranks / (cfg.popularity_cutoff * n_items)
    log_pop -= np.log(np.exp(log_pop).sum())

    gender, age, occupation = _attributes(cfg, traits, np.random.default_rng(s_attr))
    quota = _activity(cfg, np.random.default_rng(s_activity))

    logits = cfg.trait_strength * traits @ factors.T + log_pop
    chosen = _cover_items(logits, quota, np.random.default_rng(s_cover))
    if cfg.generator == "sequential":
        user, item, timestamp = _draw_sequential(cfg, traits, factors, log_pop, quota, chosen,
                                                 np.random.default_rng(s_draw),
                                                 np.random.default_rng(s_time))
    else:
        user, item = _draw(logits, quota, chosen, np.random.default_rng(s_draw))
        timestamp = _timestamps(cfg, user, np.random.default_rng(s_time))

    rng = np.random.default_rng(s_misc)
    affinity = logits[user, item] - log_pop[item] + rng.standard_normal(len(user))
    rating = _ratings(affinity)
    rows = rng.permutation(len(user))
    user, item, rating, timestamp = user[rows], item[rows], rating[rows], timestamp[rows]

    _write_lines(out / "u.data", (f"{u}\t{i}\t{r}\t{t}" for u, i, r, t in
                                  zip((user + 1).tolist(), (item + 1).tolist(), rating.tolist(),
                                      timestamp.tolist(), strict=True)))
    zips = rng.integers(0, 100_000, size=n_users)
    _write_lines(out / "u.user", (
        f"{u + 1}|{age[u]}|{GENDERS[gender[u]]}|{ML100K_OCCUPATIONS[occupation[u]]}|{zips[u]:05d}"
        for u in range(n_users)))
    genres = _genres(factors)
    _write_lines(out / "u.item", (
        f"{i + 1}|Synthetic item {i + 1} (1995)|01-Jan-1995||"
        f"|{'|'.join(map(str, genres[i].tolist()))}" for i in range(n_items)))

    np.savez(out / PERSONALITY_FILE, raw_user_ids=np.arange(1, n_users + 1),
             raw_item_ids=np.arange(1, n_items + 1), traits=traits, item_factors=factors,
             log_popularity=log_pop, trait_strength=np.float64(cfg.trait_strength),
             gender=gender, age=age, age_group=age_group(age), occupation=occupation,
             activity=quota)
    counts = np.bincount(item, minlength=n_items)
    config = asdict(cfg)
    if cfg.generator == "softmax":
        config = {k: v for k, v in config.items() if k not in _SEQUENTIAL_FIELDS}
    summary = {
        "format_version": FORMAT_VERSION,
        "config": config,
        "files": ["u.data", "u.user", "u.item", PERSONALITY_FILE],
        "attribute_codes": {"gender": GENDERS, "age_group": AGE_GROUPS,
                            "occupation": ML100K_OCCUPATIONS},
        "planted": {"gender": "logit = attribute_strength * traits[:, 0] + bias",
                    "age": "mean_age + age_std * (rho * traits[:, 1] + sqrt(1 - rho^2) * noise),"
                           " rho = s / sqrt(1 + s^2), s = attribute_strength",
                    "occupation": "softmax(log ML-100K share + attribute_strength * W traits"
                                  " + age effects)"},
        "stats": {"interactions": int(len(user)), "users": n_users, "items": n_items,
                  "min_per_user": int(quota.min()), "median_per_user": float(np.median(quota)),
                  "max_per_user": int(quota.max()), "item_gini": _gini(counts),
                  "user_gini": _gini(quota), "male_share": float(gender.mean())},
    }
    if cfg.generator == "sequential":
        summary["stats"].update(sequence_stats(user, item, timestamp, genres))
    (out / CONFIG_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


def load_personality(path: str | PathLike[str], data: Interactions | None = None
                     ) -> Personality:
    """Read ``personality.npz`` from a generated directory (or the file itself).

    With ``data`` (the loaded interactions) rows are aligned to its internal ids.
    """
    file = Path(path)
    if file.is_dir():
        file = file / PERSONALITY_FILE
    from ffm_private.data.errors import DataError

    if not file.exists():
        raise DataError("file not found (not a synthetic dataset?)", path=file)
    with np.load(file) as z:
        values = {k: z[k] for k in z.files}
    values["trait_strength"] = float(values["trait_strength"])
    personality = Personality(**values)
    return personality if data is None else personality.aligned(data)


def _positions(ids: np.ndarray, wanted: np.ndarray, what: str) -> np.ndarray:
    order = np.argsort(ids)
    pos = np.minimum(np.searchsorted(ids[order], wanted), len(ids) - 1)
    rows = order[pos]
    if np.any(ids[rows] != wanted):
        raise ValueError(f"the interactions hold a {what} id absent from the personality file")
    return rows


def _attributes(cfg: SyntheticConfig, traits: np.ndarray, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = cfg.attribute_strength
    # Bias so that the population share of men is about male_fraction (probit approximation
    # of the logistic-normal mean).
    bias = math.log(cfg.male_fraction / (1 - cfg.male_fraction)) * math.sqrt(
        1 + math.pi * s * s / 8)
    p_male = 1 / (1 + np.exp(-(s * traits[:, 0] + bias)))
    gender = (rng.random(len(traits)) < p_male).astype(np.int64)

    rho = s / math.sqrt(1 + s * s)
    noise = rng.standard_normal(len(traits))
    age = cfg.mean_age + cfg.age_std * (rho * traits[:, 1] + math.sqrt(1 - rho * rho) * noise)
    age = np.clip(np.rint(age), 7, 73).astype(np.int64)

    weights = rng.standard_normal((len(ML100K_OCCUPATIONS), cfg.n_traits))
    weights /= math.sqrt(cfg.n_traits)
    young = (25.0 - age) / 10.0
    logits = np.log(_ML100K_OCCUPATION_COUNTS) + s * traits @ weights.T
    logits[:, _OCC["student"]] += 1.5 * young
    logits[:, _OCC["retired"]] += (age - 60.0) / 4.0
    logits[:, _OCC["homemaker"]] += 0.5 * (1 - 2 * gender)  # planted like ML-100K's skew
    occupation = _sample_rows(logits, rng)
    return gender, age, occupation


def _sample_rows(logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One categorical draw per row of ``logits`` (Gumbel-max)."""
    return np.argmax(logits + rng.gumbel(size=logits.shape), axis=1).astype(np.int64)


def _activity(cfg: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
    """Interactions per user: ``min_per_user`` + gamma-distributed excess summing to the target."""
    n_users, cap, low = cfg.n_users, cfg.max_per_user, cfg.min_per_user
    excess_total = cfg.n_interactions - n_users * low
    weights = rng.gamma(cfg.activity_shape, size=n_users)
    room = np.full(n_users, float(cap - low))
    excess = np.zeros(n_users)
    free = np.ones(n_users, dtype=bool)
    remaining = float(excess_total)
    while remaining > 1e-9 and free.any():  # water-filling under the cap
        share = remaining * weights * free / (weights * free).sum()
        take = np.minimum(share, room - excess)
        excess += take
        remaining -= take.sum()
        free &= excess < room - 1e-9
    counts = np.floor(excess).astype(np.int64)
    short = excess_total - int(counts.sum())
    frac = np.where(counts < cap - low, excess - counts, -1.0)
    counts[np.argsort(-frac, kind="stable")[:short]] += 1
    return counts + low


def _cover_items(logits: np.ndarray, quota: np.ndarray, rng: np.random.Generator
                 ) -> np.ndarray:
    """Give every item one user, drawn by how likely each user is to pick it."""
    n_users, n_items = logits.shape
    shifted = logits - logits.max(axis=1, keepdims=True)
    prob = np.exp(shifted)
    prob /= prob.sum(axis=1, keepdims=True)
    # P(user u picks item i) ~ n_u * softmax_u(i); a column-wise draw under capacity.
    weight = quota[:, None] * prob
    owner = np.empty(n_items, dtype=np.int64)
    left = quota.astype(np.int64).copy()
    for i in rng.permutation(n_items):
        w = weight[:, i] * (left > 0)
        c = np.cumsum(w)
        u = int(np.searchsorted(c, rng.random() * c[-1], side="right"))
        u = min(u, n_users - 1)
        owner[i] = u
        left[u] -= 1
    chosen = np.zeros((n_users, n_items), dtype=bool)
    chosen[owner, np.arange(n_items)] = True
    return chosen


def _draw(logits: np.ndarray, quota: np.ndarray, chosen: np.ndarray,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Fill each user's quota without replacement from the softmax (Gumbel-top-k)."""
    keys = logits + rng.gumbel(size=logits.shape)
    keys[chosen] = np.inf
    order = np.argsort(-keys, axis=1, kind="stable")
    take = np.arange(logits.shape[1])[None, :] < quota[:, None]
    user = np.repeat(np.arange(logits.shape[0]), quota)
    item = order[take]
    return user.astype(np.int64), item.astype(np.int64)


def _transition_graph(cfg: SyntheticConfig, primary: np.ndarray, log_pop: np.ndarray,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Each item's ``neighbours`` successors: same-genre items, drawn by sqrt(popularity).

    A sparse graph, not a function of the latent factors: the next-item structure a low-rank
    scorer cannot express (the draw weights are Zipf over the neighbour list).
    """
    n_items, deg = len(primary), cfg.neighbours
    weight = np.exp(0.5 * (log_pop - log_pop.max()))
    table = np.empty((n_items, deg), dtype=np.int64)
    for i in range(n_items):
        pool = np.flatnonzero(primary == primary[i])
        pool = pool[pool != i]
        if len(pool) < deg:
            pool = np.setdiff1d(np.arange(n_items), [i])
        keys = np.log(weight[pool]) + rng.gumbel(size=len(pool))
        table[i] = pool[np.argsort(-keys, kind="stable")[:deg]]
    probs = 1.0 / np.arange(1, deg + 1)
    return table, probs / probs.sum()


def _draw_sequential(cfg: SyntheticConfig, traits: np.ndarray, factors: np.ndarray,
                     log_pop: np.ndarray, quota: np.ndarray, chosen: np.ndarray,
                     rng: np.random.Generator, rng_time: np.random.Generator
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Interactions as sessions over time: the generative process of ``ml100k-seq``.

    Per user: an active window (log-normal length, median two days, as ``_timestamps``);
    sessions of geometric length inside it; each session follows one of the user's
    ``interests`` prototypes (``traits + interest_spread * noise``; it switches between
    sessions with probability 0.4) plus an AR(1) taste drift. Within a session the next item
    follows the previous one through the transition graph with ``transition_prob``, else it
    is the next unseen item of the session's Gumbel-ranked taste logits: ``trait_strength *
    factors . taste + log popularity + trend(t)``, where items released during the span
    (``new_release_fraction``) cannot be taken before their release and get a boost
    ``trend_strength * exp(-age / trend_days)`` after it. A user never takes an item twice
    (MovieLens rates each movie once). Items the coverage step gave the user sit at random
    positions of the sequence.
    """
    n_users, n_items = len(traits), len(factors)
    K = factors.shape[1]
    primary = np.argmax(_genres(factors), axis=1)
    table, step_probs = _transition_graph(cfg, primary, log_pop, rng)
    span = cfg.span_days * 86_400.0
    release = np.full(n_items, -np.inf)
    new = rng.random(n_items) < cfg.new_release_fraction
    release[new] = rng.random(int(new.sum())) * span
    users, items, stamps = [], [], []
    rho = cfg.drift_memory
    for u in range(n_users):
        q = int(quota[u])
        owned = np.flatnonzero(chosen[u])
        rng.shuffle(owned)
        lengths = []
        while sum(lengths) < q:
            lengths.append(int(rng.geometric(1.0 / cfg.session_mean)))
        lengths[-1] -= sum(lengths) - q
        slot_owned = np.full(q, -1, dtype=np.int64)
        slot_owned[rng.choice(q, size=len(owned), replace=False)] = owned
        duration = min(float(rng_time.lognormal(math.log(2 * 86_400.0), 2.0)), span)
        start = float(rng_time.random()) * (span - duration)
        session_start = start + np.sort(rng_time.random(len(lengths))) * duration
        protos = traits[u] + cfg.interest_spread * rng.standard_normal((cfg.interests, K))
        drift = np.zeros(K)
        interest = int(rng.integers(cfg.interests))
        taken = np.zeros(n_items, dtype=bool)
        taken[owned] = True
        seq = np.empty(q, dtype=np.int64)
        times = np.empty(q)
        pos, prev = 0, -1
        for s, length in enumerate(lengths):
            if s and rng.random() < 0.4:
                interest = int(rng.integers(cfg.interests))
            drift = rho * drift + math.sqrt(1 - rho * rho) * rng.standard_normal(K)
            t = session_start[s]
            age = t - release
            trend = np.where(age >= 0, cfg.trend_strength * np.exp(-np.maximum(age, 0.0)
                                                                  / (cfg.trend_days * 86_400.0)),
                             -np.inf)
            taste = protos[interest] + cfg.drift * drift
            keys = cfg.trait_strength * factors @ taste + log_pop + trend
            keys = keys + rng.gumbel(size=n_items)
            order = np.argsort(-keys, kind="stable")
            ptr = 0
            follow = rng.random(length) < cfg.transition_prob
            gaps = np.cumsum(1.0 + rng_time.exponential(60.0, size=length))
            for j in range(length):
                item = int(slot_owned[pos])
                if item < 0 and prev >= 0 and follow[j]:
                    succ = table[prev]
                    free = ~taken[succ] & (release[succ] <= t)
                    if free.any():
                        p = step_probs[free] / step_probs[free].sum()
                        item = int(succ[free][rng.choice(int(free.sum()), p=p)])
                if item < 0:
                    while taken[order[ptr]]:
                        ptr += 1
                    item = int(order[ptr])
                taken[item] = True
                seq[pos], times[pos] = item, t + gaps[j]
                prev, pos = item, pos + 1
        times -= max(0.0, times[-1] + q - span)  # the last session ends inside the span
        times = np.maximum(times, 0.0)
        users.append(np.full(q, u, dtype=np.int64))
        items.append(seq)
        stamps.append(_strictly_increasing(np.floor(cfg.start_timestamp + times)))
    return np.concatenate(users), np.concatenate(items), np.concatenate(stamps)


def _strictly_increasing(ts: np.ndarray) -> np.ndarray:
    """Integer seconds, each at least one more than the previous: the order is the sequence."""
    out = ts.astype(np.int64)
    for k in range(1, len(out)):
        if out[k] <= out[k - 1]:
            out[k] = out[k - 1] + 1
    return out


def sequence_stats(user: np.ndarray, item: np.ndarray, timestamp: np.ndarray,
                   genres: np.ndarray) -> dict[str, float]:
    """Calibration statistics of interaction data (docs/synthetic.md), real or synthetic.

    ``genres`` is the items' genre-flag matrix (u.item's 19 columns). Order within a user
    is by timestamp (stable).
    """
    n_items = genres.shape[0]
    order = np.lexsort((np.arange(len(user)), timestamp, user))
    u, i, t = user[order], item[order], timestamp[order]
    same_user = u[1:] == u[:-1]
    gaps = (t[1:] - t[:-1])[same_user]
    per_user = np.bincount(u)
    per_user = per_user[per_user > 0]
    per_item = np.bincount(i, minlength=n_items)
    flags = genres.astype(bool)
    a, b = i[:-1][same_user], i[1:][same_user]
    shared = (flags[a] & flags[b]).any(axis=1)
    # chance level: two items drawn independently by interaction frequency
    share = per_item / per_item.sum()
    genre_mass = share @ flags
    overlap_rng = np.random.default_rng(0)
    x = overlap_rng.choice(n_items, size=20_000, p=share)
    y = overlap_rng.choice(n_items, size=20_000, p=share)
    chance = float((flags[x] & flags[y]).any(axis=1).mean())
    # popularity drift: items' interaction counts in the first and the second half of time
    mid = np.median(t)
    first = np.bincount(i[t <= mid], minlength=n_items)
    second = np.bincount(i[t > mid], minlength=n_items)
    from scipy.stats import spearmanr

    drift = float(spearmanr(first, second).statistic)
    return {
        "interactions": int(len(user)),
        "density": float(len(user) / (len(per_user) * n_items)),
        "item_gini": _gini(per_item), "user_gini": _gini(per_user),
        "per_user_min": int(per_user.min()), "per_user_median": float(np.median(per_user)),
        "per_user_max": int(per_user.max()),
        "per_item_median": float(np.median(per_item)), "per_item_max": int(per_item.max()),
        "repeat_share": float(1 - len(np.unique(u * n_items + i)) / len(u)),
        "gap_under_hour_share": float((gaps < 3600).mean()) if len(gaps) else 0.0,
        "consecutive_genre_share": float(shared.mean()) if len(shared) else 0.0,
        "random_pair_genre_share": chance,
        "popularity_half_rank_correlation": drift,
        "genre_mass_max": float(genre_mass.max()),
    }


def _timestamps(cfg: SyntheticConfig, user: np.ndarray, rng: np.random.Generator
                ) -> np.ndarray:
    """Each user is active over a log-normal window (median two days) inside the span."""
    span = cfg.span_days * 86_400.0
    n_users = cfg.n_users
    duration = np.minimum(rng.lognormal(math.log(2 * 86_400.0), 2.0, size=n_users), span)
    start = rng.random(n_users) * (span - duration)
    offset = rng.random(len(user)) * duration[user]
    return (cfg.start_timestamp + np.floor(start[user] + offset)).astype(np.int64)


def _ratings(affinity: np.ndarray) -> np.ndarray:
    """1..5 stars by affinity quantile, with MovieLens-100K's star shares."""
    cuts = np.quantile(affinity, np.cumsum(_RATING_SHARES)[:-1])
    return (np.searchsorted(cuts, affinity, side="right") + 1).astype(np.int64)


def _genres(factors: np.ndarray) -> np.ndarray:
    """Genre flags from the item factors (one or two per item), for a realistic u.item."""
    n_items, K = factors.shape
    proj = factors @ np.cos(np.outer(np.arange(K), np.arange(_GENRES - 1) + 1.0))
    flags = np.zeros((n_items, _GENRES), dtype=np.int64)
    top = np.argsort(-proj, axis=1)[:, :2] + 1
    flags[np.arange(n_items), top[:, 0]] = 1
    second = proj[np.arange(n_items), top[:, 1] - 1] > np.quantile(proj, 0.9)
    flags[np.arange(n_items)[second], top[second, 1]] = 1
    return flags


def _gini(counts: np.ndarray) -> float:
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n = len(x)
    return float((2 * np.arange(1, n + 1) - n - 1) @ x / (n * x.sum()))


def _write_lines(path: Path, lines) -> None:
    path.write_text("\n".join(lines) + "\n", encoding="latin-1")
