"""Durable files: atomic writes, and the client-indexed store of personal states.

Every file a run depends on is written to a temporary name, flushed, fsynced and renamed,
so a crash leaves either the old or the new version, never a torn one.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename, fsync directory)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
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


def save_arrays(path: str | Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Save named arrays as one ``.npz`` file, atomically."""
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    atomic_write_bytes(path, buf.getvalue())


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


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

    def save(self, path: str | Path) -> None:
        save_arrays(path, self.arrays)

    @classmethod
    def load(cls, path: str | Path) -> PersonalStore:
        return cls(load_arrays(path))
