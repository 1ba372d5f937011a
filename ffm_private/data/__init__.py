"""Data layer: loaders, implicit-feedback conversion, leave-one-out split, negatives, and the
synthetic generator with a planted per-user personality. See docs/data.md."""

from __future__ import annotations

from os import PathLike
from typing import TYPE_CHECKING

from ffm_private.data.errors import DataError
from ffm_private.data.interactions import (
    MIN_INTERACTIONS,
    Interactions,
    interactions_from_arrays,
)
from ffm_private.data.movielens import (
    AGE_GROUPS,
    GENDERS,
    ML1M_OCCUPATIONS,
    ML100K_OCCUPATIONS,
    load_movielens_1m,
    load_movielens_100k,
)
from ffm_private.data.split import (
    LeaveOneOutSplit,
    leave_one_out,
    popularity,
    sample_train_negatives,
    train_negative_rng,
)
from ffm_private.data.synthetic import (
    Personality,
    SyntheticConfig,
    generate_synthetic,
    load_personality,
)
from ffm_private.data.tabular import load_csv
from ffm_private.registry import DATASETS, register_dataset

if TYPE_CHECKING:
    from ffm_private.config import DataConfig


# The built-in kinds: each a loader ``(data config, path) -> Interactions``.
@register_dataset("movielens-100k")
def _movielens_100k(data: DataConfig | None, path: str | PathLike[str]) -> Interactions:
    return load_movielens_100k(path)


@register_dataset("movielens-1m")
def _movielens_1m(data: DataConfig | None, path: str | PathLike[str]) -> Interactions:
    return load_movielens_1m(path)


@register_dataset("csv")
def _csv(data: DataConfig | None, path: str | PathLike[str]) -> Interactions:
    if data is None:
        return load_csv(path)
    return load_csv(path, user_col=data.csv_user_col, item_col=data.csv_item_col,
                    timestamp_col=data.csv_timestamp_col, delimiter=data.csv_delimiter)


@register_dataset("synthetic")
def _synthetic(data: DataConfig | None, path: str | PathLike[str]) -> Interactions:
    """A generated directory (ML-100K format; the run generates it when it is missing)."""
    return load_movielens_100k(path)


DATASET_KINDS = DATASETS.names()


def load_dataset(kind: str, path: str | PathLike[str], data: DataConfig | None = None
                 ) -> Interactions:
    """Load a dataset by its registered kind (``data``: its config, e.g. csv column names).

    Without ``data``, ``"csv"`` uses :func:`load_csv`'s defaults (columns user, item,
    timestamp). An unknown kind is a :class:`DataError` listing the registered ones.
    """
    if kind not in DATASETS:
        raise DataError(f"unknown dataset kind {kind!r}; expected one of "
                        f"{list(DATASETS.names())}")
    return DATASETS.get(kind)(data, path)


__all__ = [
    "AGE_GROUPS", "DATASET_KINDS", "GENDERS", "MIN_INTERACTIONS", "ML100K_OCCUPATIONS",
    "ML1M_OCCUPATIONS", "DataError", "Interactions", "LeaveOneOutSplit", "Personality",
    "SyntheticConfig", "generate_synthetic", "interactions_from_arrays", "leave_one_out",
    "load_csv", "load_dataset", "load_movielens_100k", "load_movielens_1m", "load_personality",
    "popularity", "register_dataset", "sample_train_negatives", "train_negative_rng",
]
