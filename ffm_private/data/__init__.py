"""Data layer: loaders, implicit-feedback conversion, leave-one-out split, negatives, and the
synthetic generator with a planted per-user personality. See docs/data.md."""

from __future__ import annotations

from os import PathLike

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

DATASET_KINDS = ("movielens-100k", "movielens-1m", "csv", "synthetic")


def load_dataset(kind: str, path: str | PathLike[str]) -> Interactions:
    """Load a dataset by kind; ``"synthetic"`` reads a generated directory (ML-100K format).

    ``"csv"`` uses :func:`load_csv`'s defaults (columns user, item, timestamp); call
    :func:`load_csv` directly for other column names.
    """
    if kind in ("movielens-100k", "synthetic"):
        return load_movielens_100k(path)
    if kind == "movielens-1m":
        return load_movielens_1m(path)
    if kind == "csv":
        return load_csv(path)
    raise DataError(f"unknown dataset kind {kind!r}; expected one of {list(DATASET_KINDS)}")


__all__ = [
    "AGE_GROUPS", "DATASET_KINDS", "GENDERS", "MIN_INTERACTIONS", "ML100K_OCCUPATIONS",
    "ML1M_OCCUPATIONS", "DataError", "Interactions", "LeaveOneOutSplit", "Personality",
    "SyntheticConfig", "generate_synthetic", "interactions_from_arrays", "leave_one_out",
    "load_csv", "load_dataset", "load_movielens_100k", "load_movielens_1m", "load_personality",
    "popularity", "sample_train_negatives", "train_negative_rng",
]
