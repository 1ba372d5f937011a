"""A SuperNode's own directory: its user's data rows, personal state, backbone copy, ledger.

Nothing here is ever sent: the node reads its personal state before training and writes it
back afterwards; the server only ever receives the shared update. Every file is written
atomically, so a node killed at any point keeps the previous complete state.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ffm_private.errors import CorruptFileError
from ffm_private.storage import atomic_write_json, load_arrays, load_json, save_arrays

PERSONAL_FILE = "personal.npz"
BACKBONE_FILE = "backbone.npz"
USER_FILE = "user.npz"
STATE_FILE = "node.json"


def digest_arrays(arrays: dict[str, np.ndarray]) -> str:
    """A content digest of named arrays (names, dtypes, shapes and bytes)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(json.dumps([name, str(a.dtype), list(a.shape)]).encode())
        h.update(a.tobytes())
    return h.hexdigest()


@dataclass
class UserRows:
    """The user's own rows of the split, as this node computed them from its own data."""

    index: int
    n_users: int
    n_items: int
    train: np.ndarray
    valid: int
    test: int
    eval_negatives: np.ndarray
    excluded: np.ndarray | None

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {"index": np.int64(self.index), "n_users": np.int64(self.n_users),
               "n_items": np.int64(self.n_items), "train": self.train,
               "valid": np.int64(self.valid), "test": np.int64(self.test),
               "eval_negatives": self.eval_negatives}
        if self.excluded is not None:
            out["excluded"] = self.excluded
        return {k: np.asarray(v) for k, v in out.items()}

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> UserRows:
        return cls(index=int(a["index"]), n_users=int(a["n_users"]), n_items=int(a["n_items"]),
                   train=a["train"], valid=int(a["valid"]), test=int(a["test"]),
                   eval_negatives=a["eval_negatives"], excluded=a.get("excluded"))


class NodeState:
    """The files of one node directory (created on first use)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    # -- the run this directory belongs to ---------------------------------------------------
    def meta(self) -> dict[str, Any]:
        path = self.root / STATE_FILE
        if not path.exists():
            return {}
        meta = load_json(path)
        return meta if isinstance(meta, dict) else {}

    def set_meta(self, **values: Any) -> None:
        atomic_write_json(self.root / STATE_FILE, {**self.meta(), **values})

    # -- the user's rows -----------------------------------------------------------------------
    def user_rows(self, key: str) -> UserRows | None:
        """The cached rows computed for data key ``key`` (``None`` when absent or other)."""
        path = self.root / USER_FILE
        if self.meta().get("data_key") != key or not path.exists():
            return None
        try:
            return UserRows.from_arrays(load_arrays(path))
        except (CorruptFileError, KeyError):
            return None

    def save_user_rows(self, key: str, rows: UserRows) -> None:
        save_arrays(self.root / USER_FILE, rows.to_arrays())
        self.set_meta(data_key=key)

    # -- the frozen backbone sent by the server --------------------------------------------------
    def backbone_digest(self) -> str:
        return str(self.meta().get("backbone", ""))

    def backbone(self) -> dict[str, np.ndarray]:
        return load_arrays(self.root / BACKBONE_FILE, self.meta().get("backbone_file"))

    def save_backbone(self, arrays: dict[str, np.ndarray]) -> str:
        digest = digest_arrays(arrays)
        file_sha = save_arrays(self.root / BACKBONE_FILE, arrays)
        self.set_meta(backbone=digest, backbone_file=file_sha)
        return digest

    # -- the personal state: read before training, written after, never sent ---------------
    def personal(self) -> dict[str, np.ndarray] | None:
        path = self.root / PERSONAL_FILE
        if not path.exists():
            return None
        return load_arrays(path, self.meta().get("personal_file"))

    def save_personal(self, arrays: dict[str, np.ndarray], round_id: int) -> None:
        file_sha = save_arrays(self.root / PERSONAL_FILE, arrays)
        self.set_meta(personal_file=file_sha, personal_round=round_id)
