"""Configuration: every accepted config survives to_toml -> load; any input is a config or a
ConfigError naming the field; no other exception, bounded time."""

from __future__ import annotations

import math
import tomllib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ffm_private import config as C
from ffm_private.errors import FFMPrivateError

TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
               min_size=1, max_size=30).filter(lambda s: s.strip())
PATHY = st.one_of(TEXT, st.sampled_from([
    "C:\\Users\\me\\runs\\a", 'dir "quoted"/x', "naïve/ünïcode/路径", "back\\slash\\", "a'b\"c",
    "tab\there", "new\nline", "#hash", "[brackets]", "= equals"]))
POS = st.floats(min_value=1e-12, max_value=1e6, allow_nan=False, allow_infinity=False)

ACCEPTED = st.fixed_dictionaries({
    "run_dir": PATHY,
    "data.path": PATHY,
    "data.public_fraction": st.floats(min_value=1e-6, max_value=0.9),
    "data.num_eval_negatives": st.integers(1, 100_000),
    "data.csv_user_col": PATHY,
    "data.csv_delimiter": st.sampled_from([",", ";", "\t", "|", "\\", "'"]),
    "model.dim": st.integers(1, 4096),
    "pretrain.checkpoint": st.one_of(st.just(""), PATHY),
    "pretrain.weight_decay": st.floats(min_value=0, max_value=1e3),
    "federated.lr": POS,
    "federated.server_lr": POS,
    "federated.seed": st.integers(0, C.MAX_INT),
    "federated.rounds": st.integers(1, 1_000_000),
    "protocol.options": st.one_of(st.just({}), st.fixed_dictionaries(
        {"min_clients": st.integers(1, 1000)})),
    "observation.rounds": st.lists(st.integers(-C.MAX_INT, C.MAX_INT).filter(bool), max_size=5),
})


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(ACCEPTED)
def test_every_accepted_config_survives_write_and_reload(tmp_path_factory, overrides):
    cfg = C.Config().replace(**overrides)
    path = tmp_path_factory.mktemp("cfg") / "config.toml"
    path.write_bytes(C.to_toml(cfg).encode())
    assert C.load(path) == cfg


def test_windows_path_round_trip(tmp_path):
    cfg = C.Config(run_dir="C:\\runs\\my \"best\" run").validate()
    path = tmp_path / "config.toml"
    path.write_text(C.to_toml(cfg), encoding="utf-8")
    assert C.load(path).run_dir == "C:\\runs\\my \"best\" run"


# -- any value in any field ----------------------------------------------------------------------
def _fields():
    import dataclasses

    out = [("", f.name) for f in dataclasses.fields(C.Config) if f.name in ("run_dir",)]
    for section, cls in C._SECTIONS.items():
        out += [(section, f.name) for f in dataclasses.fields(cls)]
    return out


FIELDS = _fields()
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-2**70, 2**70),
    st.floats(), st.sampled_from([0.0, -0.0, 5e-324, 1e308, math.inf, -math.inf, math.nan]),
    st.text(max_size=8), st.sampled_from(["", " ", "\x00", "a\x00b", "\ufeff", ",,", "\n"]),
)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=6)


@settings(max_examples=600, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(FIELDS), VALUES), min_size=1, max_size=4))
def test_any_field_value_gives_a_config_or_a_config_error_naming_it(assignments):
    raw: dict = {}
    for (section, key), value in assignments:
        (raw.setdefault(section, {}) if section else raw)[key] = value
    try:
        cfg = C.from_dict(raw)
    except C.ConfigError as err:
        named = [f"{s}.{k}" if s else k for (s, k), _ in assignments]
        assert any(n in str(err) for n in named) or "[" in str(err), str(err)
        return
    # accepted: it is finite and survives its own serialisation
    assert C.from_dict(tomllib.loads(C.to_toml(cfg))) == cfg


@settings(max_examples=300, deadline=2000)
@given(st.binary(max_size=200))
def test_any_config_file_bytes_give_a_config_or_a_config_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("bytes") / "c.toml"
    path.write_bytes(data)
    try:
        C.load(path)
    except C.ConfigError as err:
        assert str(path) in str(err) or "." in str(err)


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfe\x00binary", "not UTF-8"),
    ("run_dir = 'caf\xe9'".encode("latin-1"), "not UTF-8"),
    (b"x = " + b"[" * 5000 + b"]" * 5000, "not valid TOML"),
    (b"[federated]\nlr = nan\n", "federated.lr = nan must be a finite number"),
    (b"[federated]\nlr = inf\n", "federated.lr = inf must be a finite number"),
    (b"[data]\npublic_fraction = 0.0\n", "data.public_fraction = 0.0 must be > 0"),
    (b"[data]\nnum_eval_negatives = 9223372036854775808\n", "data.num_eval_negatives"),
    (b"[data]\nnum_train_negatives = 9223372036854775807\n", "data.num_train_negatives"),
    (b"[data]\ncsv_user_col = ''\n", "data.csv_user_col must be a non-empty"),
    (b"[data]\ncsv_delimiter = ''\n", "data.csv_delimiter"),
    (b"[data]\ncsv_delimiter = ';;'\n", "data.csv_delimiter"),
    (b'[data]\npath = "a\\u0000b"\n', "data.path contains a NUL"),
    (b"run_dir = ''\n", "run_dir must be a non-empty path"),
    (b"[federated]\nseed = -1\n", "federated.seed = -1 must be >= 0"),
    (b"[protocol]\noptions = {min_clients = [1]}\n", "protocol.options.min_clients"),
    (b"[protocol]\noptions = {min_clients = inf}\n", "protocol.options.min_clients"),
    ("\ufeffrun_dir = 'bom'\n".encode(), None),
])
def test_bad_config_files_are_config_errors(tmp_path, content, message):
    path = tmp_path / "c.toml"
    path.write_bytes(content)
    if message is None:
        assert C.load(path).run_dir == "bom"
        return
    with pytest.raises(C.ConfigError, match=message.replace("[", r"\[")):
        C.load(path)


def test_a_directory_as_config_is_a_config_error(tmp_path):
    with pytest.raises(C.ConfigError, match="not a regular file"):
        C.load(tmp_path)


def test_config_error_is_under_the_error_root():
    assert issubclass(C.ConfigError, FFMPrivateError) and issubclass(C.ConfigError, ValueError)
