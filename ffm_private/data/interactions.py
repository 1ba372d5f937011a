"""The in-memory dataset: implicit-feedback interactions with contiguous ids."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ffm_private.data.errors import DataError

#: Leave-one-out needs one training, one validation and one test item per user.
MIN_INTERACTIONS = 3


@dataclass(frozen=True, eq=False)
class Interactions:
    """Implicit feedback: one row per (user, item) pair, ids remapped to ``0..n-1``.

    Rows keep the order of the source file (after dropping duplicates), which is what the
    leave-one-out split uses to break timestamp ties. Internal ids follow the sorted raw ids,
    so ``raw_user_ids[u]`` is the id user ``u`` has in the file.
    """

    user: np.ndarray       # int64, internal user id per interaction
    item: np.ndarray       # int64, internal item id per interaction
    timestamp: np.ndarray  # int64
    n_users: int
    n_items: int
    raw_user_ids: np.ndarray  # raw id per internal user id
    raw_item_ids: np.ndarray  # raw id per internal item id
    user_attributes: dict[str, np.ndarray] = field(default_factory=dict)
    attribute_names: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.user)
        if len(self.item) != n or len(self.timestamp) != n:
            raise ValueError("user, item and timestamp must have the same length")
        if len(self.raw_user_ids) != self.n_users or len(self.raw_item_ids) != self.n_items:
            raise ValueError("raw id arrays must have n_users / n_items entries")
        for name, codes in self.user_attributes.items():
            if len(codes) != self.n_users:
                raise ValueError(f"user attribute {name!r} must have n_users entries")

    @property
    def n_interactions(self) -> int:
        return len(self.user)


def interactions_from_arrays(
    user: np.ndarray, item: np.ndarray, timestamp: np.ndarray | None = None, *,
    user_table: tuple[np.ndarray, Mapping[str, np.ndarray]] | None = None,
    attribute_names: Mapping[str, list[str]] | None = None,
    source: str = "interactions",
    min_interactions: int = MIN_INTERACTIONS,
) -> Interactions:
    """Build :class:`Interactions` from raw ids (ints or strings) in file order.

    Duplicated (user, item) pairs keep their earliest occurrence (by timestamp, then row).
    Users with fewer than ``min_interactions`` are dropped with a warning that says how many,
    and items seen only by them disappear with them. ``user_table`` is ``(raw ids, {attribute:
    codes aligned with those ids})``; its ids must cover every user (the loaders check this
    with line numbers before calling). ``timestamp=None`` uses the row order.
    """
    user = np.asarray(user)
    item = np.asarray(item)
    n = len(user)
    if len(item) != n:
        raise ValueError("user and item must have the same length")
    ts = (np.arange(n, dtype=np.int64) if timestamp is None
          else np.asarray(timestamp, dtype=np.int64))
    if len(ts) != n:
        raise ValueError("timestamp must have the same length as user")
    if n == 0:
        raise DataError("no interactions", path=source)

    raw_users, uidx = np.unique(user, return_inverse=True)
    raw_items, iidx = np.unique(item, return_inverse=True)
    keep = first_occurrences(uidx, iidx, ts)

    counts = np.bincount(uidx[keep], minlength=len(raw_users))
    sparse = counts < min_interactions
    if sparse.any():
        n_sparse = int(sparse.sum())
        warnings.warn(f"{source}: dropped {n_sparse} user(s) with fewer than {min_interactions} "
                      f"interactions (leave-one-out needs a training, a validation and a test "
                      f"item)", UserWarning, stacklevel=2)
        keep = keep[~sparse[uidx[keep]]]
        if len(keep) == 0:
            raise DataError(f"no user has at least {min_interactions} interactions", path=source)

    if len(keep) == n:  # the common case: nothing dropped, the first remapping stands
        u_new, i_new = uidx, iidx
    else:
        raw_users, u_new = np.unique(user[keep], return_inverse=True)
        raw_items, i_new = np.unique(item[keep], return_inverse=True)

    attributes: dict[str, np.ndarray] = {}
    if user_table is not None:
        listed, table = user_table
        listed = np.asarray(listed)
        order = np.argsort(listed, kind="stable")
        pos = np.searchsorted(listed[order], raw_users)
        pos = np.minimum(pos, len(listed) - 1)
        rows = order[pos]
        if np.any(listed[rows] != raw_users):
            raise ValueError("user_table does not list every user")
        attributes = {name: np.asarray(codes)[rows] for name, codes in table.items()}

    return Interactions(
        user=u_new.astype(np.int64), item=i_new.astype(np.int64), timestamp=ts[keep],
        n_users=len(raw_users), n_items=len(raw_items),
        raw_user_ids=raw_users, raw_item_ids=raw_items,
        user_attributes=attributes,
        attribute_names={k: list(v) for k, v in (attribute_names or {}).items()
                         if k in attributes},
    )


def first_occurrences(user: np.ndarray, item: np.ndarray, timestamp: np.ndarray) -> np.ndarray:
    """Sorted row indices of the earliest row of each (user, item) pair.

    Earliest means smallest timestamp, ties going to the earlier row.
    """
    n_items = int(item.max()) + 1 if len(item) else 0
    pair = user.astype(np.int64) * n_items + item
    pair.sort()
    if not np.any(pair[1:] == pair[:-1]):  # no duplicate: keep every row
        return np.arange(len(user))
    rows = np.arange(len(user))
    order = np.lexsort((rows, timestamp, item, user))
    su, si = user[order], item[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (su[1:] != su[:-1]) | (si[1:] != si[:-1])
    return np.sort(order[first])
