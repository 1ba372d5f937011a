"""Every loader: any file content gives interactions or a DataError naming the file (and the
line where one applies); never another exception, always in bounded time."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ffm_private.data import DataError, load_csv, load_movielens_100k
from ffm_private.errors import FFMPrivateError

USERS = b"1|24|M|technician|85711\n2|53|F|other|94043\n"
ITEMS = b"1|Toy Story (1995)|01-Jan-1995||x|0\n2|GoldenEye (1995)|01-Jan-1995||x|0\n" \
        b"3|Four Rooms (1995)|01-Jan-1995||x|0\n"
RATINGS = b"".join(f"{u}\t{i}\t3\t{100 + 10 * u + i}\n".encode() for u in (1, 2)
                   for i in (1, 2, 3))

LINES = st.lists(st.one_of(
    st.binary(max_size=30),
    st.sampled_from([b"1\t1\t3\t5", b"1 2 3 4", b"\xef\xbb\xbf1\t1\t3\t5", b"1\t1\t3\t5\r",
                     b"99999999999999999999\t1\t1\t1", b"-1\t1\t1\t1", b"1\t\x001\t1\t1",
                     b"1|24|M|technician|85711", b"1|-5|M|none|0", b"", b"\t\t\t"])),
    max_size=8)


def _ml_dir(root: Path, **files: bytes) -> Path:
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for name, default in (("u.user", USERS), ("u.item", ITEMS), ("u.data", RATINGS)):
        (root / name).write_bytes(files.get(name.replace(".", "_"), default))
    return root


def _outcome(fn, *args, **kwargs) -> str:
    try:
        fn(*args, **kwargs)
    except DataError as err:
        assert err.path is not None, str(err)
        return "typed"
    return "ok"


@pytest.mark.parametrize("which", ["u_data", "u_user", "u_item"])
@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.
                                                                  function_scoped_fixture])
@given(lines=LINES)
def test_movielens_files_fuzz(tmp_path, which, lines):
    root = _ml_dir(tmp_path / "ml", **{which: b"\n".join(lines)})
    _outcome(load_movielens_100k, root)


CSV_CELLS = st.one_of(st.text(max_size=6), st.sampled_from(["1", "2", "", '"', "a,b", "\x00",
                                                            "x" * 140_000, "\ufeff1"]))


@settings(max_examples=200, deadline=3000, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.
                                                                  function_scoped_fixture])
@given(rows=st.lists(st.lists(CSV_CELLS, min_size=1, max_size=4), max_size=6),
       delimiter=st.sampled_from([",", ";", "\t", "", ";;", "\n", '"']))
def test_csv_fuzz(tmp_path, rows, delimiter):
    path = tmp_path / "log.csv"
    sep = delimiter if len(delimiter) == 1 else ","
    body = "user,item,timestamp\n".replace(",", sep) + "\n".join(sep.join(r) for r in rows)
    path.write_text(body, encoding="utf-8")
    _outcome(load_csv, path, delimiter=delimiter)


def test_bom_at_the_start_of_u_data_is_accepted(tmp_path):
    root = _ml_dir(tmp_path / "bom", u_data=b"\xef\xbb\xbf" + RATINGS)
    assert load_movielens_100k(root).n_interactions == 6


@pytest.mark.parametrize("which, content, where", [
    ("u_user", USERS.replace(b"technician", b"tech\x00nician"), "u.user, line 1"),
    ("u_item", ITEMS + b"4|\x00|x\n", "u.item, line 4"),
    ("u_data", RATINGS + b"1\t\x003\t1\t1\n", "u.data, line 7"),
    ("u_user", USERS.replace(b"|24|", b"|-3|"), "u.user, line 1: age"),
])
def test_nul_bytes_and_negative_ages_are_refused_with_the_line(tmp_path, which, content, where):
    with pytest.raises(DataError, match=where):
        load_movielens_100k(_ml_dir(tmp_path / "m", **{which: content}))


@pytest.mark.parametrize("body, delimiter, message", [
    ("user,item,timestamp\n" + "x" * 140_000 + ",1,1\n", ",", "line 2: malformed CSV"),
    ("user,item,timestamp\n1,2,3\n", "", "delimiter"),
    ("user,item,timestamp\n1,2,3\n", ";;", "delimiter"),
    ("user,item,timestamp\n,2,3\n1,2,4\n1,3,5\n", ",", "line 2: empty user id"),
])
def test_csv_errors_are_typed(tmp_path, body, delimiter, message):
    path = tmp_path / "x.csv"
    path.write_text(body)
    with pytest.raises(DataError, match=message) as err:
        load_csv(path, delimiter=delimiter)
    assert isinstance(err.value, FFMPrivateError)
