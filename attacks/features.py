"""What attacks compute from one observed vector: per-item scores and a compact sketch.

Item scores answer "how much did this update favour item i?":

- ``rows`` (models that share per-item rows, e.g. FedMF item embeddings and biases): the change
  of item i's bias (positive items are pushed up, sampled negatives down, untouched rows do
  not move at all), or the norm of the change of its rows when there is no bias;
- ``score`` (any model, e.g. the FFM's small global adapter): the directional derivative of
  the model's score for every item along the observed update, ``<grad_theta s(h, i), v>``,
  computed with one forward-mode pass (``torch.func.jvp``) from the broadcast state and the
  public backbone. The user's history ``h`` is private, so it is estimated: first from the
  public split's most popular items, then from the items the first pass scored highest.

The sketch is a count-sketch of the vector (a random signed hashing of coordinates into a few
thousand buckets), which keeps inner products in expectation and makes similarity searches
over 10^5-parameter updates cheap.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from attacks.context import AuditContext, recorded_users, view_vector

SKETCH_DIM = 2048
_SCORE_TAG, _SKETCH_TAG, _PERSONAL_TAG = 0xA1, 0x5C, 0x9E


def item_tables(ctx: AuditContext) -> dict[str, tuple[int, int]]:
    """Shared tensors holding one row per item, as the model declares them (``item_rows``):
    name -> (offset in the flat vector, width)."""
    declared = set(ctx.model_class().item_rows)
    out, offset = {}, 0
    for name, shape in zip(ctx.log.spec.names, ctx.log.spec.shapes, strict=True):
        size = int(np.prod(shape))
        if name in declared:
            out[name] = (offset, size // shape[0])
        offset += size
    return out


class RowsScorer:
    """Per-item scores from the item rows an update changed (see the module docstring)."""

    name = "rows"

    def __init__(self, ctx: AuditContext) -> None:
        self.n = ctx.n_items
        self.tables = item_tables(ctx)
        if not self.tables:
            raise ValueError("the model shares no per-item rows")
        self.bias = next((k for k, (_, w) in self.tables.items() if w == 1), None)

    def __call__(self, vector: np.ndarray, broadcast: np.ndarray) -> np.ndarray:
        if self.bias is not None:
            off, _ = self.tables[self.bias]
            return np.asarray(vector[off:off + self.n], dtype=np.float64)
        total = np.zeros(self.n)
        for off, width in self.tables.values():
            rows = np.asarray(vector[off:off + self.n * width], dtype=np.float64)
            total += np.linalg.norm(rows.reshape(self.n, width), axis=1)
        return total


class ScoreScorer:
    """Directional derivative of every item's score along the update (see the docstring)."""

    name = "score"

    def __init__(self, ctx: AuditContext) -> None:
        import torch

        from ffm_private.models import FROZEN, PERSONAL, build_model, load_group

        self.torch = torch
        self.ctx = ctx
        self.model = build_model(ctx.cfg.model, ctx.n_items, 1)
        if ctx.backbone:
            load_group(self.model, FROZEN, ctx.backbone)
        gen_seed = int(np.random.SeedSequence([ctx.seed, _PERSONAL_TAG]).generate_state(1)[0])
        personal = self.model.init_personal_states(1, gen_seed)
        load_group(self.model, PERSONAL, personal)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model.eval()
        self.length = getattr(self.model, "history_length", 1)
        self.spec = ctx.log.spec
        popular = np.argsort(-ctx.popularity(), kind="stable")[:self.length][::-1]
        self.prior_history = popular.copy()
        self.items = torch.arange(ctx.n_items)[None, :]
        self.owner = torch.zeros(1, dtype=torch.long)

    def _history(self, items: np.ndarray) -> object:
        from ffm_private.training_data import last_window

        window = last_window(np.asarray(items, dtype=np.int64), self.length, self.model.pad)
        return self.torch.from_numpy(window)[None, :]

    def derivative(self, vector: np.ndarray, broadcast: np.ndarray,
                   history: np.ndarray) -> np.ndarray:
        torch = self.torch
        from torch.func import functional_call, jvp

        names = self.spec.names
        state = self.spec.unflatten(np.asarray(broadcast, dtype=np.float64))
        direction = self.spec.unflatten(np.asarray(vector, dtype=np.float64))
        primals = tuple(torch.from_numpy(state[n]) for n in names)
        tangents = tuple(torch.from_numpy(direction[n]) for n in names)
        hist = self._history(history)

        def scores(*params):
            return functional_call(self.model, dict(zip(names, params, strict=True)),
                                   (hist, self.items, self.owner))

        with torch.no_grad():
            _, out = jvp(scores, primals, tangents)
        return out[0].double().numpy()

    def __call__(self, vector: np.ndarray, broadcast: np.ndarray) -> np.ndarray:
        first = self.derivative(vector, broadcast, self.prior_history)
        if self.length <= 1:
            return first
        guess = np.argsort(-first, kind="stable")[:self.length][::-1]
        return self.derivative(vector, broadcast, guess)


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run torch with ``n`` intra-op threads inside the block (``None``: leave as is).

    The attacks run thousands of tiny kernels (one user, one item table); on a busy machine
    several threads spin-wait on each other for longer than the kernels take.
    """
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def scorers_for(ctx: AuditContext) -> dict[str, object]:
    """The item scorers that apply to this model, headline first."""
    out: dict[str, object] = {}
    if item_tables(ctx):
        out["rows"] = RowsScorer(ctx)
    out["score"] = ScoreScorer(ctx)
    return out


def count_sketch(vector: np.ndarray, buckets: np.ndarray, signs: np.ndarray,
                 dim: int) -> np.ndarray:
    """Signed hashing of coordinates into ``dim`` buckets (inner products kept in expectation)."""
    return np.bincount(buckets, weights=signs * np.asarray(vector, dtype=np.float64),
                       minlength=dim)


def zscore(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    sd = x.std()
    return (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)


def without(profile: np.ndarray, common: np.ndarray) -> np.ndarray:
    """``profile`` z-scored, minus its projection on ``common`` (e.g. log popularity).

    What is left is what the observation says about this user beyond what everyone shares.
    """
    z, c = zscore(profile), zscore(common)
    denom = float(c @ c)
    return z - (z @ c) / denom * c if denom > 0 else z


@dataclass
class ViewFeatures:
    """Per-(round, user) item profiles and sketches under one view, computed in one pass."""

    view: str
    headline: str
    profiles: dict[str, dict[tuple[int, int], np.ndarray]] = field(default_factory=dict)
    sketches: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)

    def users(self) -> list[int]:
        return sorted({u for _, u in self.sketches})

    def rounds_of(self, user: int) -> list[int]:
        return sorted(r for r, u in self.sketches if u == user)

    def profile(self, user: int, variant: str | None = None) -> np.ndarray | None:
        """The user's item scores averaged over rounds (each round z-scored), or ``None``."""
        table = self.profiles[variant or self.headline]
        parts = [zscore(table[(r, user)]) for r in self.rounds_of(user)]
        return np.mean(parts, axis=0) if parts else None


def view_features(ctx: AuditContext, view: str, users: Iterable[int] | None = None
                  ) -> ViewFeatures:
    """Profiles and sketches of every observation of ``users`` (default: all) under ``view``.

    A vector shared by several users (a sum, or the public model change) is scored once.
    """
    key = f"features:{view}"
    if key in ctx._cache and users is None:
        return ctx._cache[key]
    from ffm_private import console

    scorers = scorers_for(ctx)
    feats = ViewFeatures(view=view, headline=next(iter(scorers)),
                         profiles={name: {} for name in scorers})
    wanted = None if users is None else {int(u) for u in users}
    n_params = ctx.log.n_params
    dim = min(n_params, SKETCH_DIM)
    rng = ctx.rng(_SKETCH_TAG)
    buckets = rng.integers(0, dim, size=n_params) if n_params > dim else np.arange(n_params)
    signs = rng.choice([-1.0, 1.0], size=n_params) if n_params > dim else np.ones(n_params)
    for obs in ctx.log:
        members = [u for u in recorded_users(obs) if wanted is None or u in wanted]
        shared: dict[str, np.ndarray] | None = None
        individual = view == "server" and obs.has_individual
        bar = console.bar(members, enabled=ctx.progress, leave=False, unit="user",
                          desc=f"features round {obs.round_id} ({view})")
        for u in bar:
            if individual or shared is None:
                vec = view_vector(obs, u, view)
                if vec is None:
                    continue
                current = {name: s(vec, obs.broadcast) for name, s in scorers.items()}
                current["_sketch"] = count_sketch(vec, buckets, signs, dim)
                if not individual:
                    shared = current
            else:
                current = shared
            for name in scorers:
                feats.profiles[name][(obs.round_id, u)] = current[name]
            feats.sketches[(obs.round_id, u)] = current["_sketch"]
    if users is None:
        ctx._cache[key] = feats
    return feats


__all__ = ["SKETCH_DIM", "RowsScorer", "ScoreScorer", "ViewFeatures", "count_sketch",
           "item_tables", "scorers_for", "torch_threads", "view_features", "without", "zscore"]
