"""A whole federated training through ``he`` learns what the plaintext reference learns."""

import json
from pathlib import Path

import pytest

from ffm_private.simulation import run_training

QUALITY = ("valid_hr@10", "valid_ndcg@10", "test_hr@10", "test_ndcg@10", "test_full_hr@10")


def _rows(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_he_training_matches_plaintext(tiny_config, tmp_path):
    """Both schemes against one plaintext reference run (three trainings, ~2 minutes)."""
    reference = tiny_config.replace(run_dir=str(tmp_path / "plaintext"))
    run_training(reference, progress=False)
    plain_rows = _rows(reference.run_dir)
    for name, options in (("ckks", {"scheme": "ckks", "ckks_key_risk_accepted": True}),
                          ("bfv", {})):
        he = tiny_config.replace(**{"run_dir": str(tmp_path / name), "protocol.name": "he",
                                    "protocol.options": options})
        summary = run_training(he, progress=False)
        assert summary["protocol"].startswith("he (")
        he_rows = _rows(he.run_dir)
        assert len(he_rows) == len(plain_rows) == tiny_config.federated.rounds
        for p, h in zip(plain_rows, he_rows, strict=True):
            assert h["contributors"] == p["contributors"] and not h["rejected"], name
            assert h["update_norm"] == pytest.approx(p["update_norm"], rel=1e-4), name
            for key in QUALITY:
                assert h[key] == pytest.approx(p[key], abs=0.02), (name, key)
            assert h["bytes_up"] > p["bytes_up"]  # ciphertexts are larger than float64
