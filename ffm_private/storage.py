"""Durable files: atomic writes, and the client-indexed store of personal states.

Every file a run depends on is written to a temporary name, flushed, fsynced and renamed,
so a crash leaves either the old or the new version, never a torn one.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ffm_private.errors import CorruptFileError


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes (streamed)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: str | Path, data: bytes, mode: int = 0o666) -> None:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename, fsync directory).

    ``mode`` is applied when the file is created (0o600 for secrets: never readable by others,
    not even for an instant).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with open(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def save_arrays(path: str | Path, arrays: Mapping[str, np.ndarray]) -> str:
    """Save named arrays as one ``.npz`` file, atomically; return the SHA-256 of its bytes."""
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def load_arrays(path: str | Path, sha256: str | None = None) -> dict[str, np.ndarray]:
    """Named arrays of an ``.npz`` file; any damage is a :class:`CorruptFileError`.

    With ``sha256`` the file's bytes must also match that checksum (written beside it).
    """
    path = Path(path)
    if not path.is_file():
        raise CorruptFileError(path, "file not found" if not path.exists() else
                               "not a regular file")
    if sha256 is not None:
        actual = sha256_file(path)
        if actual != sha256:
            raise CorruptFileError(path, f"checksum mismatch (sha256 {actual[:12]}..., "
                                         f"recorded {sha256[:12]}...): the file was altered "
                                         "or truncated")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError, zlib.error) as err:
        raise CorruptFileError(path, f"unreadable array file ({type(err).__name__}: "
                                     f"{err})") from None


def load_json(path: str | Path) -> Any:
    """A JSON file the run wrote; missing, empty, truncated or non-UTF-8 is typed."""
    path = Path(path)
    if not path.is_file():
        raise CorruptFileError(path, "file not found")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise CorruptFileError(path, f"not valid JSON ({err})") from None


class PersonalStore:
    """Every client's personal parameters, stacked on a leading client axis.

    Clients are addressed by index; no per-client Python objects live between rounds,
    and the stacked layout is what batched evaluation (and batched training) consumes.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray]) -> None:
        sizes = {v.shape[0] for v in arrays.values()}
        if len(sizes) > 1:
            raise ValueError(f"personal arrays disagree on the number of clients: {sizes}")
        self.arrays = {k: np.array(v, dtype=np.float32) for k, v in arrays.items()}
        self.n_clients = sizes.pop() if sizes else 0

    def get(self, client: int) -> dict[str, np.ndarray]:
        return {k: v[client].copy() for k, v in self.arrays.items()}

    def put(self, client: int, state: Mapping[str, np.ndarray]) -> None:
        if set(state) != set(self.arrays):
            raise ValueError(f"client {client}: personal state names {sorted(state)} != "
                             f"{sorted(self.arrays)}")
        for k, v in state.items():
            self.arrays[k][client] = v

    def save(self, path: str | Path) -> str:
        return save_arrays(path, self.arrays)

    @classmethod
    def load(cls, path: str | Path, sha256: str | None = None) -> PersonalStore:
        try:
            return cls(load_arrays(path, sha256))
        except ValueError as err:
            raise CorruptFileError(path, str(err)) from None
