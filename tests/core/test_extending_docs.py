"""The model, dataset and attack examples of docs/extending.md run as written, together.

Each block is executed from the document; then a run trains the new model on the new dataset
kind for one round, and the audit runs the new attack on it.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from attacks.registry import ATTACKS
from ffm_private.registry import DATASETS, MODELS

DOC = Path(__file__).resolve().parents[2] / "docs" / "extending.md"


def _example(heading: str) -> str:
    section = DOC.read_text().split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, f"docs/extending.md, section {heading!r}: one python example"
    return blocks[0]


@pytest.fixture
def examples():
    """Run the three examples; unregister what they registered afterwards."""
    namespace: dict = {}
    for heading in ("A model", "A dataset", "An attack"):
        exec(compile(_example(heading), str(DOC), "exec"), namespace)  # noqa: S102 - our doc
    yield namespace
    MODELS.unregister("mf-nobias")
    DATASETS.unregister("movielens-latest")
    ATTACKS.unregister("a7")


def _ratings_csv(tiny_data_dir: Path, out: Path) -> Path:
    rows = np.loadtxt(tiny_data_dir / "u.data", dtype=np.int64)
    out.mkdir()
    lines = ["userId,movieId,rating,timestamp"] + [f"{u},{i},{r}.0,{t}" for u, i, r, t in rows]
    (out / "ratings.csv").write_text("\n".join(lines) + "\n")
    return out


def test_the_examples_train_and_audit_one_run(examples, tiny_data_dir, tmp_path):
    from attacks.audit import AuditOptions, run_audit
    from ffm_private.config import Config
    from ffm_private.models import build_model
    from ffm_private.simulation import run_training

    assert MODELS.get("mf-nobias") is examples["NoBiasMF"]
    data = _ratings_csv(tiny_data_dir, tmp_path / "latest")
    cfg = Config(run_dir=str(tmp_path / "run")).replace(**{
        "data.kind": "movielens-latest", "data.path": str(data), "data.protocol": "pfedrec",
        "model.kind": "mf-nobias", "model.dim": 8, "pretrain.epochs": 0,
        "federated.rounds": 1, "evaluation.full_ranking": False,
        "observation.rounds": [1], "observation.max_clients": 1000})
    interactions = examples["load_movielens_latest"](cfg.data, cfg.data.path)
    raw = np.loadtxt(tiny_data_dir / "u.data", dtype=np.int64)
    assert interactions.n_interactions == len({(u, i) for u, i, r, _ in raw if r >= 4})
    assert build_model(cfg.model, 10).item_rows == ("shared.item_emb.weight",)
    summary = run_training(cfg, progress=False)
    assert summary["model"] == "mf-nobias" and summary["rounds_applied"] == 1
    report = run_audit(cfg.run_dir, AuditOptions(attacks=("a1", "a7"), views=("server",),
                                                 bootstrap=5, progress=False))
    census = next(r for r in report.results if r.attack == "A7")
    assert census.metrics["targets"] > 0 and census.metrics["rounds_per_target"] == 1.0
    # A1 reads the shared item rows the new model declares (no name guessing)
    item_inference = next(r for r in report.results if r.attack == "A1")
    assert item_inference.estimate is not None, item_inference.verdict.text
