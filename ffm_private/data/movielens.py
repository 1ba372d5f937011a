"""MovieLens-100K and MovieLens-1M loaders (GroupLens file formats, latin-1).

Every rating becomes an implicit interaction. The user files are checked against the rating
file both ways: a rating by a user (or of an item) that is not listed is an error, and so is a
listed user with no rating, because both datasets guarantee every listed user rated at least
20 movies. Items listed without ratings are allowed (MovieLens-1M has 177 of them) and are
left out, as in the standard protocol (MovieLens-1M has 3706 rated items).
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np

from ffm_private.data._parse import (
    parse_int,
    read_bytes,
    read_int_table,
    split_lines,
    split_rows,
)
from ffm_private.data.errors import DataError
from ffm_private.data.interactions import Interactions, interactions_from_arrays

GENDERS = ["F", "M"]  # code 0 = F, code 1 = M
#: MovieLens-1M's age groups (the lower bounds it stores), also used to bin ML-100K ages.
AGE_GROUP_BOUNDS = [1, 18, 25, 35, 45, 50, 56]
AGE_GROUPS = ["Under 18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+"]
#: ML-100K's u.occupation, in its own (alphabetical) order: the codes are indices into it.
ML100K_OCCUPATIONS = [
    "administrator", "artist", "doctor", "educator", "engineer", "entertainment", "executive",
    "healthcare", "homemaker", "lawyer", "librarian", "marketing", "none", "other",
    "programmer", "retired", "salesman", "scientist", "student", "technician", "writer",
]
#: ML-1M's occupation codes 0..20, as documented in its README.
ML1M_OCCUPATIONS = [
    "other or not specified", "academic/educator", "artist", "clerical/admin",
    "college/grad student", "customer service", "doctor/health care", "executive/managerial",
    "farmer", "homemaker", "K-12 student", "lawyer", "programmer", "retired",
    "sales/marketing", "scientist", "self-employed", "technician/engineer",
    "tradesman/craftsman", "unemployed", "writer",
]

RATING_FIELDS = ("user id", "item id", "rating", "timestamp")


def age_group(age: np.ndarray) -> np.ndarray:
    """ML-1M age-group code (0..6) of raw ages in years."""
    bounds = np.asarray(AGE_GROUP_BOUNDS[1:])
    return np.searchsorted(bounds, np.asarray(age), side="right").astype(np.int64)


def load_movielens_100k(path: str | PathLike[str]) -> Interactions:
    """Load MovieLens-100K from a directory holding u.data, u.user and u.item.

    Attributes: ``gender`` (0 = F, 1 = M), ``age_group`` (ML-1M's seven groups),
    ``occupation`` (index into :data:`ML100K_OCCUPATIONS`, unknown labels appended sorted).
    """
    root = _directory(path)
    users_path, items_path, ratings_path = root / "u.user", root / "u.item", root / "u.data"
    rows, lines = _rows(users_path, "|", 5, ("user id", "age", "gender", "occupation", "zip"))
    user_ids = np.array([parse_int(users_path, r[0], ln, "user id")
                         for r, ln in zip(rows, lines, strict=True)], dtype=np.int64)
    ages = np.array([parse_int(users_path, r[1], ln, "age")
                     for r, ln in zip(rows, lines, strict=True)], dtype=np.int64)
    bad_age = np.flatnonzero((ages < 0) | (ages > 150))
    if len(bad_age):
        k = int(bad_age[0])
        raise DataError(f"age must be in 0..150, found {ages[k]}", path=users_path,
                        line=int(lines[k]))
    gender = _codes(users_path, [r[2].strip() for r in rows], lines, GENDERS, "gender")
    labels = [r[3].strip() for r in rows]
    occupations = ML100K_OCCUPATIONS + sorted(set(labels) - set(ML100K_OCCUPATIONS) - {""})
    occupation = _codes(users_path, labels, lines, occupations, "occupation")
    table = {"gender": gender, "age_group": age_group(ages), "occupation": occupation}
    names = {"gender": GENDERS, "age_group": AGE_GROUPS, "occupation": occupations}
    item_ids, item_lines = _item_ids(items_path, "|")
    return _assemble(ratings_path, None, users_path, user_ids, lines, table, names,
                     items_path, item_ids, item_lines)


def load_movielens_1m(path: str | PathLike[str]) -> Interactions:
    """Load MovieLens-1M from a directory holding ratings.dat, users.dat and movies.dat.

    Attributes: ``gender`` (0 = F, 1 = M), ``age_group`` (0..6 for the stored 1, 18, ..., 56)
    and ``occupation`` (the stored code 0..20, labels in :data:`ML1M_OCCUPATIONS`).
    """
    root = _directory(path)
    users_path, items_path = root / "users.dat", root / "movies.dat"
    ratings_path = root / "ratings.dat"
    rows, lines = _rows(users_path, "::", 5, ("user id", "gender", "age", "occupation", "zip"))
    user_ids = np.empty(len(rows), dtype=np.int64)
    groups = np.empty(len(rows), dtype=np.int64)
    occupation = np.empty(len(rows), dtype=np.int64)
    for k, (r, ln) in enumerate(zip(rows, lines, strict=True)):
        user_ids[k] = parse_int(users_path, r[0], ln, "user id")
        age = parse_int(users_path, r[2], ln, "age")
        if age not in AGE_GROUP_BOUNDS:
            raise DataError(f"age must be one of {AGE_GROUP_BOUNDS}, found {age}",
                            path=users_path, line=int(ln))
        groups[k] = AGE_GROUP_BOUNDS.index(age)
        occupation[k] = parse_int(users_path, r[3], ln, "occupation")
        if not 0 <= occupation[k] < len(ML1M_OCCUPATIONS):
            raise DataError(f"occupation must be a code in 0..{len(ML1M_OCCUPATIONS) - 1}, "
                            f"found {occupation[k]}", path=users_path, line=int(ln))
    gender = _codes(users_path, [r[1].strip() for r in rows], lines, GENDERS, "gender")
    table = {"gender": gender, "age_group": groups, "occupation": occupation}
    names = {"gender": GENDERS, "age_group": AGE_GROUPS, "occupation": ML1M_OCCUPATIONS}
    item_ids, item_lines = _item_ids(items_path, "::")
    return _assemble(ratings_path, "::", users_path, user_ids, lines, table, names,
                     items_path, item_ids, item_lines)


def _directory(path: str | PathLike[str]) -> Path:
    root = Path(path)
    if not root.exists():
        raise DataError("dataset directory not found", path=root)
    if not root.is_dir():
        raise DataError("expected a directory holding the dataset files", path=root)
    return root


def _rows(path: Path, delimiter: str, n_fields: int, names: tuple[str, ...], *,
          exact: bool = True) -> tuple[list[list[str]], np.ndarray]:
    return split_rows(path, split_lines(read_bytes(path), "latin-1"), delimiter, n_fields,
                      exact=exact, field_names=names)


def _item_ids(path: Path, delimiter: str) -> tuple[np.ndarray, np.ndarray]:
    # Titles are free text, so only the leading id field is required to be well-formed.
    rows, lines = _rows(path, delimiter, 2, ("item id", "title"), exact=False)
    ids = np.array([parse_int(path, r[0], ln, "item id") for r, ln in zip(rows, lines,
                                                                         strict=True)],
                   dtype=np.int64)
    return ids, lines


def _codes(path: Path, values: list[str], lines: np.ndarray, labels: list[str],
           what: str) -> np.ndarray:
    index = {label: k for k, label in enumerate(labels)}
    out = np.empty(len(values), dtype=np.int64)
    for k, value in enumerate(values):
        code = index.get(value)
        if code is None:
            raise DataError(f"{what} must be one of {labels}, found {value!r}", path=path,
                            line=int(lines[k]))
        out[k] = code
    return out


def _first_duplicate(ids: np.ndarray) -> int | None:
    """Position of the first id that repeats an earlier one, if any."""
    _, first = np.unique(ids, return_index=True)
    if len(first) == len(ids):
        return None
    mask = np.ones(len(ids), dtype=bool)
    mask[first] = False
    return int(np.flatnonzero(mask)[0])


def _assemble(ratings_path: Path, delimiter: str | None, users_path: Path,
              user_ids: np.ndarray, user_lines: np.ndarray, table: dict[str, np.ndarray],
              names: dict[str, list[str]], items_path: Path, item_ids: np.ndarray,
              item_lines: np.ndarray) -> Interactions:
    for ids, lines, path, what in ((user_ids, user_lines, users_path, "user"),
                                   (item_ids, item_lines, items_path, "item")):
        dup = _first_duplicate(ids)
        if dup is not None:
            raise DataError(f"{what} id {ids[dup]} is listed twice", path=path,
                            line=int(lines[dup]))

    ratings, lines = read_int_table(ratings_path, delimiter, RATING_FIELDS)
    user, item, timestamp = ratings[:, 0], ratings[:, 1], ratings[:, 3]
    for raw, listed, listing, what in ((user, user_ids, users_path, "user"),
                                       (item, item_ids, items_path, "item")):
        unknown = np.flatnonzero(~np.isin(raw, listed))
        if len(unknown):
            k = int(unknown[0])
            raise DataError(f"unknown {what} id {raw[k]}: not listed in {listing.name}",
                            path=ratings_path, line=int(lines[k]))
    silent = np.flatnonzero(~np.isin(user_ids, user))
    if len(silent):
        k = int(silent[0])
        raise DataError(f"user {user_ids[k]} is listed but has no rating in "
                        f"{ratings_path.name}", path=users_path, line=int(user_lines[k]))
    return interactions_from_arrays(user, item, timestamp, user_table=(user_ids, table),
                                    attribute_names=names, source=str(ratings_path))
