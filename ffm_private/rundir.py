"""The run directory: claimed with a marker, held with a lock, replaced only where it is ours.

Why: a run directory is where results, the privacy ledger and the observation log live, and
``--overwrite`` deletes. The toolkit therefore writes a marker file (:data:`MARKER`) first when
it claims a directory, deletes on ``--overwrite`` only the entries a run creates (never a user's
other files, never a directory without the marker, never the current directory or one of its
ancestors), and holds an exclusive ``flock`` on :data:`LOCK` for the run's lifetime so a second
process on the same directory is refused instead of interleaving rounds.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

from ffm_private.errors import RunDirectoryError, RunLockedError
from ffm_private.storage import atomic_write_bytes

MARKER = ".ffm-private-run"
LOCK = ".ffm-private.lock"
#: Entries a run creates inside its directory; ``--overwrite`` removes these and nothing else.
RUN_ENTRIES = ("config.toml", "metrics.jsonl", "summary.json", "summary.md", "checkpoints",
               "privacy", "observations", "defense")
#: The synthetic data a run generates into ``<run_dir>/data`` (recognised by this file).
DATA_DIR, DATA_SIGNATURE = "data", "synthetic.json"


def same_path(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two spellings name the same location (``./x``, ``x/``, absolute, symlinks)."""
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


class RunDir:
    """One run directory: inspect, claim, lock, clear for ``--overwrite``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock_fh: int | None = None

    @property
    def marker(self) -> Path:
        return self.path / MARKER

    def is_claimed(self) -> bool:
        return self.marker.is_file()

    def holds_run(self) -> bool:
        """A run started here: its config was written (the point of no silent reuse)."""
        return (self.path / "config.toml").exists()

    def check_usable(self) -> None:
        """Refuse a path that exists but is not a directory."""
        if self.path.exists() and not self.path.is_dir():
            raise RunDirectoryError(f"run_dir {self.path} exists and is not a directory")

    def check_overwrite(self) -> None:
        """Refuse ``--overwrite`` where it could delete what the toolkit did not create."""
        resolved = self.path.resolve()
        cwd = Path.cwd().resolve()
        if resolved == cwd or resolved in cwd.parents:
            raise RunDirectoryError(
                f"--overwrite refuses {self.path}: it is the current directory or one of its "
                "parents; choose a run_dir below it")
        if self.holds_run() and not self.is_claimed():
            raise RunDirectoryError(
                f"--overwrite refuses {self.path}: it has no {MARKER} marker, so it was not "
                "created by ffm-private (or by a version before the marker); remove the run "
                "files yourself or choose another run_dir")

    # -- claiming and locking ------------------------------------------------------------------
    def claim(self) -> None:
        """Create the directory, write the marker (first of all files), take the lock."""
        self.check_usable()
        self.path.mkdir(parents=True, exist_ok=True)
        if not self.is_claimed():
            atomic_write_bytes(self.marker, b"created by ffm-private; --overwrite deletes only "
                                            b"the run's own files here\n")
        self.lock()

    def lock(self) -> None:
        """Take the exclusive lock, or raise :class:`RunLockedError` if another process has it."""
        if self._lock_fh is not None:
            return
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLockedError(
                f"{self.path} is in use by another ffm-private process (lock {LOCK} is held); "
                "wait for it to finish or stop it first") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fh = fd

    def unlock(self) -> None:
        if self._lock_fh is not None:
            fd, self._lock_fh = self._lock_fh, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @property
    def locked(self) -> bool:
        return self._lock_fh is not None

    # -- overwrite ------------------------------------------------------------------------------
    def clear(self) -> list[str]:
        """Delete the run's own entries (the lock must be held); return what was left alone."""
        if not self.locked:
            raise RunDirectoryError(f"{self.path}: clear() needs the run lock")
        self.check_overwrite()
        for name in RUN_ENTRIES:
            _remove(self.path / name)
        data = self.path / DATA_DIR
        if (data / DATA_SIGNATURE).exists():
            _remove(data)
        for tmp in self.path.glob(".*.tmp-*"):
            _remove(tmp)
        keep = {MARKER, LOCK}
        return sorted(p.name for p in self.path.iterdir() if p.name not in keep)


def install_tree(staged: Path, target: Path) -> None:
    """Move a finished directory into place atomically (a rename; copy first across devices).

    ``target`` must not exist; a crash leaves either no ``target`` or the complete one.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(staged, target)
        return
    except OSError:
        pass
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    _remove(tmp)
    shutil.copytree(staged, tmp)
    os.replace(tmp, target)
    shutil.rmtree(staged, ignore_errors=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


__all__ = ["LOCK", "MARKER", "RUN_ENTRIES", "RunDir", "install_tree", "same_path"]
