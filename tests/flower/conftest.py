"""A tiny dataset and configuration: one user per node, a few seconds per run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from ffm_private import config as config_mod


def write_csv(path: Path, n_users: int, n_items: int = 40, per_user: int = 14,
              seed: int = 3) -> Path:
    """User ids 101.. (not 0-based, so the node's id is not the internal index)."""
    rng = np.random.default_rng(seed)
    lines = ["user,item,timestamp"]
    for u in range(n_users):
        items = rng.choice(n_items, size=per_user, replace=False)
        lines += [f"{101 + u},{int(i) + 1},{1000 * u + t}" for t, i in enumerate(items)]
    path.write_text("\n".join(lines) + "\n")
    return path


def tiny_toml(data: Path, run_dir: Path, *, rounds: int = 2, fraction: float = 1.0,
              eval_every: int = 2, extra: str = "") -> str:
    return f"""run_dir = "{run_dir}"

[data]
kind = "csv"
path = "{data}"
public_fraction = 0.34
num_eval_negatives = 10

[model]
kind = "ffm"
dim = 8
history_length = 4
global_rank = 4

[pretrain]
epochs = 2

[federated]
rounds = {rounds}
client_fraction = {fraction}
eval_every = {eval_every}
batch_size = 32
seed = 5

[evaluation]
k = 3
{extra}
"""


@pytest.fixture
def tiny(tmp_path: Path):
    """(config path, csv path, user ids) for 6 users."""
    data = write_csv(tmp_path / "ratings.csv", 6)
    path = tmp_path / "tiny.toml"
    path.write_text(tiny_toml(data, tmp_path / "run"))
    return path, data, [str(101 + u) for u in range(6)]


def load(path: Path, run_dir: Path) -> config_mod.Config:
    return dataclasses.replace(config_mod.load(path), run_dir=str(run_dir))
