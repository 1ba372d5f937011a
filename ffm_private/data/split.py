"""Leave-one-out split, evaluation negatives and per-round training negatives.

The protocol of PFedRec, FedRAP and GPFedRec: each user's latest interaction is the test item,
the second latest the validation item, the rest is training data; each held-out item is ranked
against 99 items the user never interacted with, drawn once per user and seed; training uses
4 negatives per positive, drawn afresh every round.

Two training-negative protocols (``LeaveOneOutSplit.protocol``):

- ``isolated`` (the default): a user's training negatives never include any of that user's
  evaluation candidates (its validation and test items and their sampled negatives). A client
  that trains item parameters would otherwise learn to rank its own evaluation negatives low.
- ``pfedrec``: negatives are drawn from every item outside the user's training set: this
  project's sampling before the isolated protocol, draw for draw. The user's validation and
  test items can be drawn too, as often as each evaluation negative.
- ``pfedrec-official``: negatives are drawn from every item the user never interacted with
  (validation and test items excluded, the evaluation negatives included), as the official
  PFedRec code samples them. Its leak favours the held-out items, which no training step
  pushes down; use it to compare with PFedRec's published figures.

The last two are kept only for comparison with published figures.

Every random stream is keyed by a domain tag plus ``(seed, [round,] user)`` through
``np.random.SeedSequence``: a user's draws never depend on which other users exist, on the
order clients are trained in, or on how many rounds ran before a resume.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ffm_private.data.errors import DataError
from ffm_private.data.interactions import MIN_INTERACTIONS, Interactions, first_occurrences

_EVAL_NEGATIVES_TAG = 0xE7A1
_TRAIN_NEGATIVES_TAG = 0x7EA1

#: Training-negative protocols: see the module docstring.
PROTOCOLS = ("isolated", "pfedrec", "pfedrec-official")


@dataclass(frozen=True, eq=False)
class LeaveOneOutSplit:
    """Per-user training sequences and held-out items, all as internal ids."""

    n_users: int
    n_items: int
    train: list[np.ndarray]     # per user, training item ids (time-ordered)
    valid: np.ndarray           # (n_users,) second-latest item
    test: np.ndarray            # (n_users,) latest item
    eval_negatives: np.ndarray  # (n_users, k) never-interacted items, shared by valid and test
    #: Internal id in the source :class:`Interactions` of each row here; differs from
    #: ``arange(n_users)`` only when users with too few interactions were dropped.
    source_users: np.ndarray | None = None
    #: The dataset's own id of each user (as in the source file), for reports and caps.
    raw_user_ids: np.ndarray | None = None
    #: How training negatives relate to the evaluation candidates (see :data:`PROTOCOLS`).
    protocol: str = "isolated"

    def evaluation_candidates(self, user: int) -> np.ndarray:
        """Every item ``user`` is evaluated on: valid and test items and their negatives."""
        return np.unique(np.concatenate([[self.valid[user], self.test[user]],
                                         self.eval_negatives[user]])).astype(np.int64)

    def negative_exclusions(self, user: int) -> np.ndarray | None:
        """Items ``user``'s training negatives must avoid besides its training items.

        ``None`` under the ``pfedrec`` protocol (the previous sampling, unchanged).
        """
        if self.protocol == "pfedrec":
            return None
        if self.protocol == "pfedrec-official":
            return np.unique([self.valid[user], self.test[user]]).astype(np.int64)
        return self.evaluation_candidates(user)


def leave_one_out(data: Interactions, *, num_eval_negatives: int = 99, seed: int = 0,
                  protocol: str = "isolated") -> LeaveOneOutSplit:
    """Split each user's interactions by time: ..., valid, test.

    Ties in timestamp keep the source row order (a stable sort), so the split is a function
    of the file alone. Users with fewer than 3 interactions are dropped with a warning.
    ``protocol`` says which items training negatives avoid (see :data:`PROTOCOLS`); the
    split itself does not depend on it.
    """
    seed_words = _signed(seed, "seed")
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol = {protocol!r} is not one of {list(PROTOCOLS)}")
    if num_eval_negatives < 0:
        raise ValueError("num_eval_negatives must be >= 0")
    keep = first_occurrences(data.user, data.item, data.timestamp)
    user, item, ts = data.user[keep], data.item[keep], data.timestamp[keep]

    counts = np.bincount(user, minlength=data.n_users)
    users = np.flatnonzero(counts >= MIN_INTERACTIONS)
    if len(users) < data.n_users:
        warnings.warn(f"leave_one_out: dropped {data.n_users - len(users)} user(s) with fewer "
                      f"than {MIN_INTERACTIONS} interactions", UserWarning, stacklevel=2)
        if len(users) == 0:
            raise DataError(f"no user has at least {MIN_INTERACTIONS} interactions")

    order = np.lexsort((np.arange(len(user)), ts, user))
    item_sorted = item[order]
    ends = np.cumsum(counts)
    starts = ends - counts
    train = [item_sorted[starts[u]:ends[u] - 2] for u in users]
    valid = item_sorted[ends[users] - 2]
    test = item_sorted[ends[users] - 1]

    negatives = np.empty((len(users), num_eval_negatives), dtype=np.int64)
    seen = np.zeros(data.n_items, dtype=bool)
    for row, u in enumerate(users):
        history = item_sorted[starts[u]:ends[u]]
        free = data.n_items - len(history)
        if free < num_eval_negatives:
            raise DataError(f"user {data.raw_user_ids[u]} interacted with {len(history)} of "
                            f"{data.n_items} items: fewer than {num_eval_negatives} are left "
                            f"to serve as evaluation negatives")
        seen[history] = True
        candidates = np.flatnonzero(~seen)
        seen[history] = False
        rng = np.random.default_rng(np.random.SeedSequence([_EVAL_NEGATIVES_TAG, *seed_words, int(u)]))
        negatives[row] = rng.choice(candidates, size=num_eval_negatives, replace=False)
        if protocol == "isolated" and free == num_eval_negatives:
            raise DataError(f"user {data.raw_user_ids[u]} interacted with {len(history)} of "
                            f"{data.n_items} items: with {num_eval_negatives} evaluation "
                            f"negatives no item is left for training negatives under "
                            f"data.protocol = 'isolated' (use fewer data.num_eval_negatives)")

    return LeaveOneOutSplit(
        n_users=len(users), n_items=data.n_items, train=train,
        valid=valid.astype(np.int64), test=test.astype(np.int64), eval_negatives=negatives,
        source_users=users.astype(np.int64), raw_user_ids=np.asarray(data.raw_user_ids)[users],
        protocol=protocol)


def train_negative_rng(seed: int, round_id: int, user: int) -> np.random.Generator:
    """The generator for one user's training negatives in one round.

    Independent across (seed, round, user) and from the evaluation-negative streams. Any
    integers are accepted (negative round ids are free for phases such as pretraining).
    """
    key = [_TRAIN_NEGATIVES_TAG]
    for value, name in ((seed, "seed"), (round_id, "round_id"), (user, "user")):
        key += _signed(value, name)
    return np.random.default_rng(np.random.SeedSequence(key))


def sample_train_negatives(train_items: np.ndarray, n_items: int, num_negatives: int,
                           rng: np.random.Generator, *,
                           exclude: np.ndarray | None = None) -> np.ndarray:
    """``num_negatives`` uniform draws per positive from the items not in ``train_items``.

    Draws are with replacement (as in NCF and PFedRec): positive ``k``'s negatives are
    ``out[k * num_negatives:(k + 1) * num_negatives]``. Items in ``exclude`` (the user's
    evaluation candidates under the isolated protocol) are never drawn; ``exclude=None``
    is the ``pfedrec`` protocol's sampling, draw for draw.
    """
    if num_negatives < 0:
        raise ValueError("num_negatives must be >= 0")
    train_items = np.asarray(train_items, dtype=np.int64)
    if len(train_items) and (train_items.min() < 0 or train_items.max() >= n_items):
        raise ValueError(f"train_items must be item ids in 0..{n_items - 1}")
    size = len(train_items) * num_negatives
    if size == 0:
        return np.zeros(0, dtype=np.int64)
    positive = np.zeros(n_items, dtype=bool)
    positive[train_items] = True
    if exclude is not None:
        exclude = np.asarray(exclude, dtype=np.int64)
        if len(exclude) and (exclude.min() < 0 or exclude.max() >= n_items):
            raise ValueError(f"exclude must be item ids in 0..{n_items - 1}")
        positive[exclude] = True
    candidates = np.flatnonzero(~positive)
    if len(candidates) == 0:
        raise DataError("every item is a training item or an evaluation candidate of the user: "
                        "no training negative can be sampled")
    return candidates[rng.integers(0, len(candidates), size=size)]


def popularity(split: LeaveOneOutSplit) -> np.ndarray:
    """How many users have each item in their training data (the popularity baseline)."""
    if not split.train:
        return np.zeros(split.n_items, dtype=np.int64)
    return np.bincount(np.concatenate(split.train), minlength=split.n_items).astype(np.int64)


def _check_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)


def _signed(value: int, name: str) -> list[int]:
    """SeedSequence entropy words for any integer (it only takes non-negative ones)."""
    value = _check_int(value, name)
    return [1 if value < 0 else 0, abs(value)]
