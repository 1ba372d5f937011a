"""The user's budget lives on their node: the node refuses past its own cap, whatever the server.

Adversary: the server (operator) deletes its mirror record of a user's spends, so that its own
ledger says the user has budget left, and keeps asking the node to train. What it recovers past
the node's cap: nothing (no update leaves the node), and the node's ledger is untouched.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from ffm_private.flower.node import Node
from ffm_private.flower.run import FlowerRun
from ffm_private.flower.transport import LocalTransport
from ffm_private.pretrain import public_users
from ffm_private.privacy.accounting import epsilon_for_events
from tests.flower.conftest import load, tiny_toml, write_csv

EXAMPLE_DP = """
[privacy]
mode = "example"
target_epsilon = 8.0
clipping_norm = 0.1
"""


def spends(db: Path, user: str) -> list[tuple[int, float]]:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT round, epsilon_after FROM spends WHERE user = ? ORDER BY "
                           "round", (user,)).fetchall()


def setup(tmp_path: Path, name: str, rounds: int):
    data = write_csv(tmp_path / "ratings.csv", 6)
    path = tmp_path / f"{name}.toml"
    path.write_text(tiny_toml(data, tmp_path / name, rounds=rounds, eval_every=rounds,
                              extra=EXAMPLE_DP))
    nodes = {}
    for i in range(6):
        user = str(101 + i)
        nodes[1000 + i] = Node({"user": user, "node-dir": str(tmp_path / f"{name}-nodes" / user)})
    return path, nodes


@pytest.mark.slow
def test_node_refuses_past_its_own_cap_even_when_the_server_forgets_its_spends(tmp_path):
    protected = [u for u in range(6) if u not in set(public_users(6, 0.34, 5).tolist())]
    target_index = protected[0]
    target = str(101 + target_index)
    path, nodes = setup(tmp_path, "capped", rounds=4)
    # what k participations cost under the run's plan, as the node's own accountant says
    probe = Node({"user": target, "node-dir": str(tmp_path / "probe")})
    cfg = probe.config(path.read_text())
    priv = probe.privacy(cfg, probe.rows(cfg))
    events = list(priv.plan.charge_events())
    eps = [epsilon_for_events(events * k, priv.cfg.delta, priv.cfg.accountant)
           for k in (1, 2, 3)]
    priv.close()
    assert eps[0] < eps[1] < eps[2] < priv.cfg.target_epsilon
    cap = (eps[1] + eps[2]) / 2  # two participations fit, the third does not
    nodes[1000 + target_index] = Node({"user": target, "epsilon-cap": cap,
                                       "node-dir": str(tmp_path / "capped-nodes" / target)})
    transport = LocalTransport(nodes)
    run = FlowerRun(load(path, tmp_path / "capped"), transport, progress=False).start()
    server_db = tmp_path / "capped" / "privacy" / "ledger.sqlite"
    exchange = transport.exchange
    replies_to_target = []

    def tampering_exchange(requests, timeout):
        if any(r.kind == "train" and int(r.values["round"]) >= 3 for r in requests):
            with sqlite3.connect(server_db) as con:  # the server forgets the user's spends
                con.execute("DELETE FROM spends WHERE user = ?", (target,))
        out = exchange(requests, timeout)
        replies_to_target.extend((r.values.get("round"), out.get(r.node)) for r in requests
                                 if r.kind == "train" and r.node == 1000 + target_index)
        return out

    transport.exchange = tampering_exchange  # type: ignore[method-assign]
    run.run()
    # the server asked in every round (its mirror said there was budget) ...
    assert [rnd for rnd, _ in replies_to_target] == [1, 2, 3, 4]
    # ... and got an update only while the node's own ledger allowed it
    got = [(rnd, reply.error is None and "update" in reply.arrays)
           for rnd, reply in replies_to_target]
    assert got == [(1, True), (2, True), (3, False), (4, False)]
    assert all("declined" in reply.error for _, reply in replies_to_target[2:])
    node_db = tmp_path / "capped-nodes" / target / "privacy" / "ledger.sqlite"
    assert [r for r, _ in spends(node_db, target)] == [1, 2]
    assert spends(server_db, target) == []  # the tampered mirror: the node did not rely on it


def test_a_bad_cap_in_the_node_config_is_a_typed_error_naming_the_key(tmp_path):
    from ffm_private.flower.errors import NodeConfigError

    for bad in ("lots", "-1"):
        with pytest.raises(NodeConfigError, match="epsilon-cap"):
            Node({"user": "101", "node-dir": str(tmp_path), "epsilon-cap": bad})
