"""The project's error root and the run-level errors every command can raise.

Every error the toolkit raises on purpose for bad input or a damaged run directory derives
from :class:`FFMPrivateError`, so a caller (the CLI, a notebook) can tell "the toolkit refused,
with a message naming what is wrong" apart from a bug.
"""

from __future__ import annotations


class FFMPrivateError(Exception):
    """Root of every typed error of ffm-private."""


class RunDirectoryError(FFMPrivateError, RuntimeError):
    """The run directory is in a state that would lose or mix up results."""


class RunLockedError(RunDirectoryError):
    """Another process holds the run directory (its lock file is taken)."""


class CorruptFileError(FFMPrivateError, RuntimeError):
    """A file the run wrote is missing, truncated or altered; ``path`` names it."""

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        super().__init__(f"{path}: {problem}")


class CheckpointError(FFMPrivateError, RuntimeError):
    """A checkpoint file is missing, truncated or does not match its recorded checksum."""


class PrivacyStateError(FFMPrivateError, RuntimeError):
    """The privacy state (ledger, a party's secret, observation log) differs from what the
    checkpoint recorded: resuming would forget or rewrite spent budget or released data."""


class DivergedError(FFMPrivateError, RuntimeError):
    """The shared model became non-finite (NaN or infinity): every later metric is meaningless."""


class NoRoundAppliedError(FFMPrivateError, RuntimeError):
    """Every round of the run aborted: the model was never updated by federated training."""


__all__ = [
    "CheckpointError", "CorruptFileError", "DivergedError", "FFMPrivateError", "NoRoundAppliedError",
    "PrivacyStateError", "RunDirectoryError", "RunLockedError",
]
