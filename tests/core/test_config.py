import tomllib

import pytest

from ffm_private import config as C


def test_defaults_are_valid_and_round_trip_through_toml():
    cfg = C.Config().validate()
    assert C.from_dict(tomllib.loads(C.to_toml(cfg))) == cfg


def test_examples_load(tmp_path):
    for name in ("quickstart", "plaintext", "movielens100k", "movielens1m"):
        cfg = C.load(f"examples/{name}.toml")
        assert cfg.federated.rounds >= 1


def test_quickstart_example_equals_the_builtin_first_run():
    assert C.load("examples/quickstart.toml") == C.quickstart()
    assert C.load("examples/plaintext.toml") == C.plaintext()
    assert C.quickstart().privacy["mode"] == "user" and C.Config().privacy == {}


@pytest.mark.parametrize("raw, message", [
    ({"federated": {"rounds": 0}}, "federated.rounds = 0 must be >= 1"),
    ({"model": {"personal_rank": -1}}, "model.personal_rank = -1 must be >= 0"),
    ({"federated": {"roundz": 3}}, "unknown key federated.'roundz'"),
    ({"data": {"kind": "netflix"}}, "data.kind = 'netflix' is not one of"),
    ({"federated": {"lr": "fast"}}, "federated.lr must be a number"),
    ({"federated": {"client_fraction": 0.0}}, "federated.client_fraction = 0.0 must be > 0"),
    ({"model": {"personalization": 1}}, "model.personalization must be true or false"),
    ({"protocol": {"name": "magic"}}, "protocol.name = 'magic' is not one of"),
    ({"data": {"kind": "csv"}}, "data.path is required"),
    ({"federated": 3}, "[federated] must be a table"),
])
def test_bad_values_name_the_key(raw, message):
    with pytest.raises(C.ConfigError) as err:
        C.from_dict(raw)
    assert message in str(err.value)


def test_overrides_parse_toml_values():
    assert C.parse_override("federated.rounds=5") == ("federated.rounds", 5)
    assert C.parse_override("model.personalization=false") == ("model.personalization", False)
    assert C.parse_override("data.path=/x/y") == ("data.path", "/x/y")
    cfg = C.Config().replace(**dict([C.parse_override("federated.lr=0.5")]))
    assert cfg.federated.lr == 0.5
    with pytest.raises(C.ConfigError):
        C.parse_override("no-equals-sign")


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(C.ConfigError, match="does not exist"):
        C.load(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[federated\nrounds = 3")
    with pytest.raises(C.ConfigError, match="not valid TOML"):
        C.load(bad)


def test_every_field_is_documented():
    text = C.describe_fields()
    for line in text.splitlines():
        if "=" in line and not line.startswith("["):
            assert "#" in line and line.split("#", 1)[1].strip(), line
