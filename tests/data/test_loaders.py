"""The loaders on generated files (ML-100K, ML-1M and CSV formats) and on malformed ones.

Each malformed file must be refused with a :class:`DataError` naming the file and the line a
user has to open; a well-formed file must come back exactly as written (ids, order,
attributes), whichever format holds it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ffm_private.data import (
    AGE_GROUPS,
    ML1M_OCCUPATIONS,
    ML100K_OCCUPATIONS,
    DataError,
    load_csv,
    load_dataset,
    load_movielens_1m,
    load_movielens_100k,
)

#: (user, item, rating, timestamp): three users, four items; user 3 rates item 20 twice.
RATINGS = [(1, 10, 5, 100), (1, 20, 3, 101), (1, 30, 4, 99),
           (2, 20, 4, 200), (2, 40, 1, 201), (2, 10, 2, 202),
           (3, 30, 5, 300), (3, 20, 4, 301), (3, 40, 3, 302), (3, 20, 2, 303)]
#: (user, age, gender, ML-100K occupation, ML-1M occupation code)
USERS = [(1, 24, "M", "technician", 17), (2, 53, "F", "writer", 20), (3, 35, "M", "student", 4)]
ITEMS = [10, 20, 30, 40, 50]  # item 50 is listed without ratings: allowed, left out


def write_100k(root: Path, ratings=RATINGS, users=USERS, items=ITEMS) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ratings))
    (root / "u.user").write_text("".join(f"{u}|{a}|{g}|{o}|12345\n" for u, a, g, o, _ in users))
    (root / "u.item").write_text("".join(f"{i}|Movie {i} (1995)|01-Jan-1995||http://x|0\n"
                                         for i in items), encoding="latin-1")
    return root


def write_1m(root: Path, ratings=RATINGS, users=USERS, items=ITEMS) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    groups = {24: 18, 53: 50, 35: 35}  # ML-1M stores the lower bound of the age group
    (root / "ratings.dat").write_text("".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in ratings))
    (root / "users.dat").write_text("".join(f"{u}::{g}::{groups[a]}::{c}::12345\n"
                                            for u, a, g, _, c in users))
    (root / "movies.dat").write_text("".join(f"{i}::Movie: {i} (1995)::Drama|Comedy\n"
                                             for i in items), encoding="latin-1")
    return root


def _by_raw(data) -> dict[int, list[int]]:
    """Each raw user's raw items in interaction (time) order."""
    out: dict[int, list[int]] = {}
    order = np.lexsort((np.arange(len(data.user)), data.timestamp, data.user))
    for k in order:
        out.setdefault(int(data.raw_user_ids[data.user[k]]), []).append(
            int(data.raw_item_ids[data.item[k]]))
    return out


EXPECTED = {1: [30, 10, 20], 2: [20, 40, 10], 3: [30, 20, 40]}  # duplicates keep the first


@pytest.mark.parametrize("fmt", ["100k", "1m"])
def test_both_movielens_formats_load_the_same_interactions_and_attributes(tmp_path, fmt):
    root = (write_100k if fmt == "100k" else write_1m)(tmp_path / fmt)
    data = (load_movielens_100k if fmt == "100k" else load_movielens_1m)(root)
    assert data.n_users == 3 and data.n_items == 4  # item 50 has no rating
    assert _by_raw(data) == EXPECTED
    gender = data.user_attributes["gender"]
    assert [data.attribute_names["gender"][g] for g in gender] == ["M", "F", "M"]
    groups = [AGE_GROUPS[g] for g in data.user_attributes["age_group"]]
    assert groups == ["18-24", "50-55", "35-44"]
    occupations = ML100K_OCCUPATIONS if fmt == "100k" else ML1M_OCCUPATIONS
    assert [occupations[o] for o in data.user_attributes["occupation"]] == (
        ["technician", "writer", "student"] if fmt == "100k"
        else ["technician/engineer", "writer", "college/grad student"])


def test_the_registered_kinds_read_their_own_format(tmp_path):
    assert _by_raw(load_dataset("movielens-100k", write_100k(tmp_path / "a"))) == EXPECTED
    assert _by_raw(load_dataset("movielens-1m", write_1m(tmp_path / "b"))) == EXPECTED
    with pytest.raises(DataError, match="unknown dataset kind 'netflix'"):
        load_dataset("netflix", tmp_path)


def test_csv_with_string_ids_quotes_and_another_delimiter(tmp_path):
    path = tmp_path / "log.tsv"
    path.write_text('who\twhat\twhen\n"alice"\tx\t3\nbob\ty\t1\nalice\ty\t1\n'
                    'alice\tz\t2\nbob\tx\t2\nbob\tz\t5\ncarol\tx\t1\ncarol\ty\t2\ncarol\tz\t3\n')
    data = load_csv(path, user_col="who", item_col="what", timestamp_col="when",
                    delimiter="\t")
    assert data.n_users == 3 and data.n_items == 3
    order = np.lexsort((np.arange(len(data.user)), data.timestamp, data.user))
    seqs: dict[str, list[str]] = {}
    for k in order:
        seqs.setdefault(str(data.raw_user_ids[data.user[k]]), []).append(
            str(data.raw_item_ids[data.item[k]]))
    assert seqs == {"alice": ["y", "z", "x"], "bob": ["y", "x", "z"], "carol": ["x", "y", "z"]}


# -- malformed files: a typed error naming the file and the line ----------------------------------
def _corrupt(path: Path, line: int, text: str) -> None:
    lines = path.read_text(encoding="latin-1").splitlines()
    lines[line - 1] = text
    path.write_text("\n".join(lines) + "\n", encoding="latin-1")


MALFORMED = [
    ("100k", "u.data", 4, "2\t20\t4", "u.data, line 4"),             # a missing field
    ("100k", "u.data", 2, "1\tabc\t3\t101", "u.data, line 2"),       # a non-integer item id
    ("100k", "u.data", 5, "9\t20\t4\t200", "u.data, line 5: unknown user id 9"),
    ("100k", "u.user", 2, "2|53|X|writer|12345", "u.user, line 2: gender"),
    ("100k", "u.user", 3, "3|-4|M|student|12345", "u.user, line 3: age"),
    ("100k", "u.item", 2, "10|Duplicate|x||y|0", "u.item, line 2: item id 10 is listed twice"),
    ("1m", "ratings.dat", 3, "1::30::4", "ratings.dat, line 3"),
    ("1m", "users.dat", 1, "1::M::24::17::12345", "users.dat, line 1: age must be one of"),
    ("1m", "users.dat", 2, "2::F::50::21::12345", "users.dat, line 2: occupation"),
    ("1m", "movies.dat", 4, "x40::Movie::Drama", "movies.dat, line 4"),
]


@pytest.mark.parametrize("fmt,name,line,text,where", MALFORMED)
def test_a_malformed_movielens_file_names_the_file_and_line(tmp_path, fmt, name, line, text,
                                                            where):
    root = (write_100k if fmt == "100k" else write_1m)(tmp_path / fmt)
    _corrupt(root / name, line, text)
    loader = load_movielens_100k if fmt == "100k" else load_movielens_1m
    with pytest.raises(DataError) as err:
        loader(root)
    assert where in str(err.value)
    assert err.value.path == str(root / name) and err.value.line == line


def test_a_listed_user_without_ratings_and_a_missing_file_are_refused(tmp_path):
    root = write_100k(tmp_path / "a", users=[*USERS, (4, 30, "F", "other", 0)])
    with pytest.raises(DataError, match=r"u.user, line 4: user 4 is listed but has no rating"):
        load_movielens_100k(root)
    (root / "u.item").unlink()
    with pytest.raises(DataError, match="u.item"):
        load_movielens_100k(root)
    with pytest.raises(DataError, match="dataset directory not found"):
        load_movielens_1m(tmp_path / "nowhere")


@pytest.mark.parametrize("body,where", [
    ("user,item,timestamp\n1,2,3\n1,3\n", "line 3: expected 3 fields"),
    ("user,item,timestamp\n1,2,3\n1,3,soon\n", "line 3"),
    ("user,thing,timestamp\n1,2,3\n", "line 1: column 'item' not in header"),
    ("user,item,timestamp\n", "line 1: no data rows"),
    ("user,item,timestamp\n1,2,3\n,4,5\n", "line 3: empty user id"),
])
def test_a_malformed_csv_names_the_file_and_line(tmp_path, body, where):
    path = tmp_path / "log.csv"
    path.write_text(body)
    with pytest.raises(DataError) as err:
        load_csv(path)
    assert str(err.value).startswith(str(path)) and where in str(err.value)
