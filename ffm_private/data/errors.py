"""The one error type the data layer raises for bad input."""

from __future__ import annotations

from os import PathLike

from ffm_private.errors import FFMPrivateError


class DataError(FFMPrivateError, ValueError):
    """Bad or missing data, located as precisely as the input allows.

    ``str(err)`` reads ``"<file>, line <n>: <reason>"`` so a user can open the file at the
    offending row; ``path`` and ``line`` (1-based) are also kept as attributes for programs.
    """

    def __init__(self, message: str, *, path: str | PathLike[str] | None = None,
                 line: int | None = None) -> None:
        self.reason = message
        self.path = None if path is None else str(path)
        self.line = line
        if self.path is not None and line is not None:
            text = f"{self.path}, line {line}: {message}"
        elif self.path is not None:
            text = f"{self.path}: {message}"
        else:
            text = message
        super().__init__(text)
