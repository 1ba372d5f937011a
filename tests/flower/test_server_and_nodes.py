"""The Flower server loop and node logic without processes: same run as in-process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ffm_private.flower.node import Node
from ffm_private.flower.run import FlowerRun
from ffm_private.flower.transport import LocalTransport
from ffm_private.simulation import Simulation
from ffm_private.storage import load_arrays
from tests.flower.conftest import load


def metrics(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("seconds")
        r.pop("evaluated_users", None)
    return rows


def latest_global(run_dir: Path) -> dict[str, np.ndarray]:
    name = (run_dir / "checkpoints" / "LATEST").read_text().strip()
    return load_arrays(run_dir / "checkpoints" / name / "global.npz")


def nodes_for(users: list[str], root: Path) -> dict[int, Node]:
    return {1000 + i: Node({"user": u, "node-dir": str(root / f"node-{u}")})
            for i, u in enumerate(users)}


def test_flower_loop_ends_where_the_in_process_run_ends(tiny, tmp_path):
    path, _, users = tiny
    Simulation(load(path, tmp_path / "inproc"), progress=False).run()
    nodes = nodes_for(users, tmp_path)
    FlowerRun(load(path, tmp_path / "flower"), LocalTransport(nodes), progress=False).run()
    assert metrics(tmp_path / "flower") == metrics(tmp_path / "inproc")
    a, b = latest_global(tmp_path / "inproc"), latest_global(tmp_path / "flower")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=1e-7)
    # the personal state lives on the nodes, equal to the in-process client's, never on the server
    name = (tmp_path / "inproc" / "checkpoints" / "LATEST").read_text().strip()
    inproc_personal = load_arrays(tmp_path / "inproc" / "checkpoints" / name / "personal.npz")
    server_personal = load_arrays(tmp_path / "flower" / "checkpoints" / name / "personal.npz")
    assert server_personal == {}
    for node in nodes.values():
        index = node.query((tmp_path / "flower" / "config.toml").read_text())["user"]
        mine = node.state.personal()
        assert mine is not None
        for k, v in mine.items():
            np.testing.assert_allclose(v, inproc_personal[k][index], rtol=0, atol=1e-7)


def test_a_silent_node_is_a_dropout_and_the_round_goes_on(tiny, tmp_path):
    path, _, users = tiny
    nodes = nodes_for(users, tmp_path)
    transport = LocalTransport(nodes)
    run = FlowerRun(load(path, tmp_path / "flower"), transport, progress=False).start()
    transport.down.add(1003)
    run.run()
    rows = metrics(tmp_path / "flower")
    assert [r["contributors"] for r in rows] == [5, 5]
    assert [r["dropped"] for r in rows] == [1, 1]


def test_a_node_answering_for_another_user_is_rejected_naming_it(tiny, tmp_path):
    path, _, users = tiny
    nodes = nodes_for(users, tmp_path)
    run = FlowerRun(load(path, tmp_path / "flower"), LocalTransport(nodes), progress=False).start()
    liar = next(iter(nodes.values()))
    honest_train = liar.train

    def train(*args, **kwargs):
        arrays, values = honest_train(*args, **kwargs)
        return arrays, {**values, "user": (values["user"] + 1) % 6}

    liar.train = train  # type: ignore[method-assign]
    run.run()
    rows = metrics(tmp_path / "flower")
    assert [r["contributors"] for r in rows] == [5, 5]
    assert [r["rejected"] for r in rows] == [1, 1]


def test_two_nodes_claiming_one_user_keep_only_the_first(tiny, tmp_path):
    path, _, users = tiny
    nodes = nodes_for(users, tmp_path)
    nodes[2000] = Node({"user": users[0], "node-dir": str(tmp_path / "impostor")})
    run = FlowerRun(load(path, tmp_path / "flower"), LocalTransport(nodes), progress=False).start()
    assert sorted(run.user_node.values()) == sorted(k for k in nodes if k != 2000)
    run.close()


def test_node_config_without_a_user_is_a_typed_error_naming_the_key(tmp_path):
    from ffm_private.flower.errors import NodeConfigError

    with pytest.raises(NodeConfigError, match="'user'"):
        Node({"node-dir": str(tmp_path)})
    with pytest.raises(NodeConfigError, match="'node-dir'"):
        Node({"user": "101"})


def test_a_node_for_an_unknown_user_refuses_naming_it(tiny, tmp_path):
    from ffm_private.flower.errors import NodeConfigError

    path, _, _ = tiny
    node = Node({"user": "999", "node-dir": str(tmp_path / "n")})
    with pytest.raises(NodeConfigError, match="'999'"):
        node.query(path.read_text())


@pytest.mark.parametrize(("extra", "field"), [
    ('[protocol]\nname = "he"\n', "protocol"),
    ('[protocol]\nname = "secagg"\noptions = {malicious_server = true}\n', "protocol"),
    ('[defense]\nkind = "subspace"\n', "defense.kind")])
def test_a_setting_flower_cannot_run_is_refused_before_anything_is_written(tmp_path, extra,
                                                                           field):
    from ffm_private.config import ConfigError
    from tests.flower.conftest import tiny_toml, write_csv

    data = write_csv(tmp_path / "ratings.csv", 6)
    path = tmp_path / "run.toml"
    path.write_text(tiny_toml(data, tmp_path / "run", extra=extra))
    with pytest.raises(ConfigError, match=field):
        FlowerRun(load(path, tmp_path / "run"), LocalTransport({}), progress=False)
    assert not (tmp_path / "run").exists()


def test_the_launcher_without_the_flower_extra_is_a_typed_error_naming_the_tools(monkeypatch):
    import shutil

    from ffm_private.flower.errors import FlowerDeploymentError
    from ffm_private.flower.local import run_local

    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(FlowerDeploymentError, match="flower-superlink.*flower extra"):
        run_local("unused.toml", 2)
