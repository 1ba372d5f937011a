"""Generic CSV loader for any (user, item[, timestamp][, rating]) interaction log."""

from __future__ import annotations

import csv
import io
from os import PathLike
from pathlib import Path

import numpy as np

from ffm_private.data._parse import parse_float_column, parse_int_column, read_bytes
from ffm_private.data.errors import DataError
from ffm_private.data.interactions import Interactions, interactions_from_arrays


def load_csv(path: str | PathLike[str], *, user_col: str = "user", item_col: str = "item",
             timestamp_col: str | None = "timestamp", rating_col: str | None = None,
             min_rating: float | None = None, delimiter: str = ",",
             encoding: str = "utf-8") -> Interactions:
    """Load interactions from a delimited file with a header row.

    User and item ids may be integers or arbitrary strings (kept as ``raw_*_ids``).
    Timestamps must be integers (e.g. Unix seconds); ``timestamp_col=None`` orders each user's
    interactions by row. With ``min_rating`` only rows whose ``rating_col`` value is at least
    ``min_rating`` count as interactions; otherwise every row does. Fields may be quoted.
    """
    if min_rating is not None and rating_col is None:
        raise ValueError("min_rating needs rating_col")
    file = Path(path)
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in '"\r\n':
        raise DataError(f"delimiter {delimiter!r} must be one character other than a quote "
                        "or a line break", path=file)
    for col in (user_col, item_col, timestamp_col, rating_col):
        if col is not None and not col.strip():
            raise DataError("column names must be non-empty", path=file)
    text = read_bytes(file).decode(encoding, errors="replace").removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader, None)
        while header is not None and not header:
            header = next(reader, None)
        if header is None:
            raise DataError("empty file: no header row", path=file)
        header_line = reader.line_num
        rows = [r for r in reader if r]
    except csv.Error as err:
        raise DataError(f"malformed CSV: {err}", path=file, line=reader.line_num) from None
    names = [h.strip() for h in header]
    wanted = [c for c in (user_col, item_col, timestamp_col, rating_col) if c is not None]
    for col in wanted:
        if col not in names:
            raise DataError(f"column {col!r} not in header {names}", path=file,
                            line=header_line)
    if not rows:
        raise DataError("no data rows after the header", path=file, line=header_line)

    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    lines = _LineNumbers(text, delimiter, len(rows))
    bad = np.flatnonzero(lengths != len(names))
    if len(bad):
        k = int(bad[0])
        raise DataError(f"expected {len(names)} fields (as in the header), found {lengths[k]}",
                        path=file, line=lines[k])

    def column(name: str) -> list[str]:
        j = names.index(name)
        return [r[j] for r in rows]

    users = _ids(column(user_col))
    items = _ids(column(item_col))
    for ids, col in ((users, user_col), (items, item_col)):
        if ids.dtype.kind == "U":
            empty = np.flatnonzero(ids == "")
            if len(empty):
                raise DataError(f"empty {col} id", path=file, line=lines[int(empty[0])])
    timestamp = None
    if timestamp_col is not None:
        timestamp = parse_int_column(file, column(timestamp_col), lines.array(), timestamp_col)
    if rating_col is not None and min_rating is not None:
        rating = parse_float_column(file, column(rating_col), lines.array(), rating_col)
        keep = rating >= min_rating
        if not keep.any():
            raise DataError(f"no row has {rating_col} >= {min_rating}", path=file)
        users, items = users[keep], items[keep]
        timestamp = (np.flatnonzero(keep).astype(np.int64) if timestamp is None
                     else timestamp[keep])
    return interactions_from_arrays(users, items, timestamp, source=str(file))


def _ids(values: list[str]) -> np.ndarray:
    """Integer ids when every value is an integer, else the stripped strings."""
    try:
        return np.fromiter(map(int, values), dtype=np.int64, count=len(values))
    except (ValueError, OverflowError):
        return np.array([v.strip() for v in values])


class _LineNumbers:
    """1-based line of each data row, computed only when an error needs one.

    Rows can span lines (quoted newlines) and blank lines are skipped, so the mapping comes
    from re-reading the text with the csv module's own line counter.
    """

    def __init__(self, text: str, delimiter: str, n_rows: int) -> None:
        self._text, self._delimiter, self._n = text, delimiter, n_rows
        self._cache: np.ndarray | None = None

    def array(self) -> _LazyArray:
        return _LazyArray(self)

    def __getitem__(self, k: int) -> int:
        return int(self._numbers()[k])

    def _numbers(self) -> np.ndarray:
        if self._cache is None:
            reader = csv.reader(io.StringIO(self._text, newline=""), delimiter=self._delimiter)
            out, header_seen = [], False
            for row in reader:
                if not row:
                    continue
                if header_seen:
                    out.append(reader.line_num)
                header_seen = True
            self._cache = np.asarray(out, dtype=np.int64)
        return self._cache


class _LazyArray:
    """Indexable like the line-number array, resolved on first access."""

    def __init__(self, owner: _LineNumbers) -> None:
        self._owner = owner

    def __len__(self) -> int:
        return self._owner._n

    def __getitem__(self, k: int) -> int:
        return self._owner[k]

    def __iter__(self):
        return iter(self._owner._numbers())
