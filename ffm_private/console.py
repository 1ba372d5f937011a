"""Console output that suits a terminal and a log file alike.

Progress bars redraw one line with carriage returns: useful on a terminal, thousands of
frames in a redirected log. So bars are drawn only when stderr is a terminal, and status
lines (one per evaluated round) are plain lines written to the current line stream
(stdout unless a caller, e.g. ``--json``, redirects them). ``enabled = False`` silences both.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TextIO, TypeVar

T = TypeVar("T")

_line_stream: TextIO | None = None


def bars_on(enabled: bool = True) -> bool:
    """Draw progress bars: output is wanted and stderr (where tqdm draws) is a terminal."""
    if not enabled:
        return False
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (OSError, ValueError):  # a closed or odd stream is not a terminal
        return False


def bar(iterable: Iterable[T], *, enabled: bool = True, **kwargs: Any) -> Any:
    """A tqdm bar over ``iterable`` on a terminal; otherwise a silent pass-through tqdm."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=not bars_on(enabled), **kwargs)


def say(text: str, *, enabled: bool = True) -> None:
    """One status line: above the bars on a terminal, a plain flushed line in a log."""
    if not enabled:
        return
    stream = _line_stream or sys.stdout
    if bars_on(True) and stream is sys.stdout:
        from tqdm.auto import tqdm

        tqdm.write(text, file=stream)
    else:
        print(text, file=stream, flush=True)


@contextlib.contextmanager
def lines_to(stream: TextIO) -> Iterator[None]:
    """Send status lines to ``stream`` (e.g. stderr, so stdout carries only JSON)."""
    global _line_stream
    previous, _line_stream = _line_stream, stream
    try:
        yield
    finally:
        _line_stream = previous


__all__ = ["bar", "bars_on", "lines_to", "say"]
