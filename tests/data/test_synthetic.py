"""The synthetic presets: ``ml100k-seq`` meets its MovieLens-100K calibration targets, and the
older presets write exactly what they wrote before it existed."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, datetime

import numpy as np
import pytest

from ffm_private.config import Config, ConfigError
from ffm_private.data import (
    SyntheticConfig,
    generate_synthetic,
    leave_one_out,
    load_dataset,
    load_personality,
)
from ffm_private.data.synthetic import CONFIG_FILE, sequence_stats


@pytest.fixture(scope="module")
def seq_dir(tmp_path_factory):
    """The full ml100k-seq preset (a few CPU seconds), generated once."""
    path = tmp_path_factory.mktemp("ml100k-seq")
    generate_synthetic(path, SyntheticConfig.preset("ml100k-seq"))
    return path


@pytest.fixture(scope="module")
def seq_stats(seq_dir):
    data = load_dataset("synthetic", seq_dir)
    genres = np.loadtxt(seq_dir / "u.item", delimiter="|", usecols=range(5, 24), dtype=np.int64,
                        encoding="latin-1")
    raw_items = data.raw_item_ids.astype(np.int64) - 1  # internal id -> row of u.item
    return data, sequence_stats(data.user, data.item, data.timestamp, genres[raw_items])


def test_shape_matches_movielens_100k(seq_stats):
    """Counts published with the dataset (GroupLens README; LensKit codex ML100K page)."""
    data, st = seq_stats
    assert (data.n_users, data.n_items, st["interactions"]) == (943, 1682, 100_000)
    assert st["per_user_min"] == 20  # "each user has rated at least 20 movies"
    assert st["density"] == pytest.approx(0.06305, abs=1e-4)
    assert st["repeat_share"] == 0.0  # one rating per (user, movie)


def test_popularity_and_activity_are_calibrated(seq_stats):
    _, st = seq_stats
    assert st["item_gini"] == pytest.approx(0.629, abs=0.03)  # LensKit codex: 0.629
    assert 55 <= st["per_user_median"] <= 75
    assert 400 <= st["per_item_max"] <= 800


def test_sequential_structure_is_present(seq_stats):
    """What the static softmax preset lacks: sessions, transitions, popularity over time."""
    _, st = seq_stats
    assert st["gap_under_hour_share"] > 0.6  # most consecutive interactions: one session
    assert st["consecutive_genre_share"] > 2.5 * st["random_pair_genre_share"]
    assert 0.3 < st["popularity_half_rank_correlation"] < 0.95


def test_static_preset_has_none_of_it(tmp_path):
    """Contrast: in the softmax generator consecutive items share a genre at chance level."""
    cfg = dataclasses.replace(SyntheticConfig.preset("ml100k"), n_users=300, n_items=800,
                              n_interactions=30_000)
    generate_synthetic(tmp_path, cfg)
    data = load_dataset("synthetic", tmp_path)
    genres = np.loadtxt(tmp_path / "u.item", delimiter="|", usecols=range(5, 24),
                        dtype=np.int64, encoding="latin-1")
    st = sequence_stats(data.user, data.item, data.timestamp,
                        genres[data.raw_item_ids.astype(np.int64) - 1])
    assert st["consecutive_genre_share"] < 1.5 * st["random_pair_genre_share"]


def test_timestamps_lie_in_the_collection_period(seq_dir):
    ts = np.loadtxt(seq_dir / "u.data", dtype=np.int64, usecols=3)
    first = datetime(1997, 9, 19, tzinfo=UTC).timestamp()
    last = datetime(1998, 4, 23, tzinfo=UTC).timestamp()
    assert first <= ts.min() and ts.max() <= last


def test_summary_records_the_statistics_and_the_personality_loads(seq_dir, seq_stats):
    data, st = seq_stats
    summary = json.loads((seq_dir / CONFIG_FILE).read_text())
    assert summary["config"]["generator"] == "sequential"
    assert summary["stats"]["item_gini"] == pytest.approx(st["item_gini"])
    personality = load_personality(seq_dir, data)
    # attributes are still planted from the traits: the attribute attacks keep a ground truth
    corr = np.corrcoef(personality.traits[:, 0], personality.gender)[0, 1]
    assert corr > 0.3


def test_isolated_protocol_serves_the_preset(seq_dir):
    split = leave_one_out(load_dataset("synthetic", seq_dir), protocol="isolated")
    for u in range(0, split.n_users, 97):
        assert not np.isin(split.evaluation_candidates(u), split.train[u]).any()


def test_sequential_generation_is_deterministic(tmp_path):
    cfg = dataclasses.replace(SyntheticConfig.preset("ml100k-seq", seed=3), n_users=60,
                              n_items=300, n_interactions=3_000)
    a, b = generate_synthetic(tmp_path / "a", cfg), generate_synthetic(tmp_path / "b", cfg)
    for name in ("u.data", "u.item", "u.user", CONFIG_FILE):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    other = generate_synthetic(tmp_path / "c", dataclasses.replace(cfg, seed=4))
    assert (a / "u.data").read_bytes() != (other / "u.data").read_bytes()


def test_small_preset_is_unchanged(tmp_path):
    """Byte-identical to what the generator wrote before the sequential preset existed."""
    out = generate_synthetic(tmp_path, SyntheticConfig.preset("small"))
    digest = hashlib.sha256((out / "u.data").read_bytes()).hexdigest()
    assert digest == "d7380a9055b4690ba3af48375801229855f384a905f1e48d3cf9708fcc640e55"
    assert "generator" not in json.loads((out / CONFIG_FILE).read_text())["config"]


def test_preset_names_and_bad_values():
    assert Config().replace(**{"data.synthetic_preset": "ml100k-seq"}).data.synthetic_preset
    with pytest.raises(ConfigError, match="data.synthetic_preset"):
        Config().replace(**{"data.synthetic_preset": "ml1m-seq"})
    with pytest.raises(ValueError, match="generator"):
        SyntheticConfig(generator="markov")
    with pytest.raises(ValueError, match="transition_prob"):
        SyntheticConfig(generator="sequential", transition_prob=1.5)
