"""Our SecAgg+ over the Flower message flow (one exchange per stage), without processes.

The nodes' real code runs each stage in a fresh :class:`Node` (as a fresh ClientApp process
would), rebuilding its client from the node directory; the server is our SecAggServer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ffm_private.flower.errors import NodeRefusal
from ffm_private.flower.node import Node
from ffm_private.flower.run import FlowerRun
from ffm_private.flower.transport import LocalTransport
from ffm_private.simulation import Simulation
from tests.flower.conftest import load, tiny_toml, write_csv
from tests.flower.test_server_and_nodes import latest_global, metrics

SECAGG = '[protocol]\nname = "secagg"\n'


def config(tmp_path: Path, name: str = "run.toml", rounds: int = 2) -> Path:
    data = write_csv(tmp_path / "ratings.csv", 6)
    path = tmp_path / name
    path.write_text(tiny_toml(data, tmp_path / "unused", rounds=rounds, eval_every=rounds,
                              extra=SECAGG))
    return path


def fresh_nodes(root: Path) -> dict[int, Node]:
    return {1000 + i: Node({"user": str(101 + i), "node-dir": str(root / str(101 + i))})
            for i in range(6)}


class FreshNodeTransport(LocalTransport):
    """Every message handled by a new Node object (nothing kept in memory between stages);
    ``drop_at`` silences a node from a given (kind, stage) on, as a killed SuperNode."""

    def __init__(self, root: Path, drop_at: tuple[int, str] | None = None) -> None:
        super().__init__(fresh_nodes(root))
        self.root, self.drop_at = root, drop_at

    def exchange(self, requests, timeout):
        for req in requests:
            stage = str(req.values.get("stage", "advertise_keys"))
            if self.drop_at is not None and req.node == self.drop_at[0] and \
                    stage == self.drop_at[1] and int(req.values.get("round", 0)) == 1:
                self.down.add(req.node)
        self.node_objects = fresh_nodes(self.root)
        return super().exchange(requests, timeout)


def test_secagg_on_flower_ends_where_in_process_secagg_ends(tmp_path):
    path = config(tmp_path)
    Simulation(load(path, tmp_path / "inproc"), progress=False).run()
    FlowerRun(load(path, tmp_path / "flower"), FreshNodeTransport(tmp_path / "nodes"),
              progress=False).run()
    a, b = metrics(tmp_path / "inproc"), metrics(tmp_path / "flower")
    assert [r["contributors"] for r in b] == [6, 6]
    for ra, rb in zip(a, b, strict=True):
        assert ra.keys() == rb.keys()
        for k in ra:  # equal up to each party's own stochastic rounding (32-bit fixed point)
            if isinstance(ra[k], float):
                assert rb[k] == pytest.approx(ra[k], abs=1e-6), k
            else:
                assert rb[k] == ra[k], k
    ga, gb = latest_global(tmp_path / "inproc"), latest_global(tmp_path / "flower")
    for k in ga:
        np.testing.assert_allclose(gb[k], ga[k], rtol=0, atol=1e-6)


@pytest.mark.parametrize("stage", ["share_keys", "masked_input", "unmask"])
def test_a_node_killed_at_any_stage_is_a_dropout_and_the_round_completes(tmp_path, stage):
    path = config(tmp_path, rounds=1)
    transport = FreshNodeTransport(tmp_path / "nodes", drop_at=(1002, stage))
    FlowerRun(load(path, tmp_path / "flower"), transport, progress=False).run()
    row = metrics(tmp_path / "flower")[0]
    assert row["aborted"] is None
    # before masked_input the dead node's update is not in the sum; at unmask it is (its
    # masked input arrived, and its self-mask seed is rebuilt from its neighbours' shares)
    assert row["contributors"] == (6 if stage == "unmask" else 5)
    assert row["dropped"] == 1


def test_the_node_answers_each_stage_once_and_refuses_a_different_replay(tmp_path):
    path = config(tmp_path, rounds=1)
    sent = []
    transport = FreshNodeTransport(tmp_path / "nodes")
    exchange = transport.exchange

    def recording(requests, timeout):
        out = exchange(requests, timeout)
        sent.extend((r, out.get(r.node)) for r in requests)
        return out

    transport.exchange = recording  # type: ignore[method-assign]
    FlowerRun(load(path, tmp_path / "flower"), transport, progress=False).run()
    share = [(r, rep) for r, rep in sent if r.values.get("stage") == "share_keys"]
    req, reply = share[0]
    node = fresh_nodes(tmp_path / "nodes")[req.node]
    text, rnd = req.values["config"], int(req.values["round"])
    # a lost reply: the same server message gets the same bytes back
    assert node.secagg(text, rnd, "share_keys", req.values["payload"]) == reply.values["secagg"]
    # a different server message for an answered stage: refused (it would reuse nonces)
    other = share[1][0].values["payload"]
    with pytest.raises(NodeRefusal, match="already answered"):
        node.secagg(text, rnd, "share_keys", other)
    # the round is over for this node: its update is gone from the node directory
    assert not list((tmp_path / "nodes").glob("*/secagg/*-update.npy"))


def test_no_secagg_message_carries_a_plaintext_update(tmp_path):
    """Adversary: the server recording every message. It must not find any run of four
    coordinates of a node's update (the float vector before masking)."""
    path = config(tmp_path, rounds=1)
    transport = FreshNodeTransport(tmp_path / "nodes")
    exchange = transport.exchange
    wire: list[bytes] = []
    updates: list[np.ndarray] = []

    def recording(requests, timeout):
        out = exchange(requests, timeout)
        for r in [*requests, *out.values()]:
            wire.extend(np.ascontiguousarray(a).tobytes() for g in r.arrays.values()
                        for a in g.values())
            wire.extend(v for v in r.values.values() if isinstance(v, bytes))
        updates.extend(np.load(p) for p in (tmp_path / "nodes").glob("*/secagg/*-update.npy"))
        return out

    transport.exchange = recording  # type: ignore[method-assign]
    FlowerRun(load(path, tmp_path / "flower"), transport, progress=False).run()
    everything = b"\0".join(wire)
    assert updates and all(u.size > 100 for u in updates)
    for u in updates:
        data = np.ascontiguousarray(u).tobytes()
        step = u.dtype.itemsize
        wins = {data[i:i + 4 * step] for i in range(0, len(data) - 4 * step + 1, step)}
        assert not [w for w in wins if len(set(w)) > 1 and w in everything]
    # the check can fail: the masked inputs the server received are in the recording
    assert len(everything) > 6 * 4 * updates[0].size


DISTRIBUTED = '''[protocol]
name = "secagg"
options = {clip = 4.0}

[privacy]
mode = "user"
noise_placement = "distributed"
target_epsilon = 8.0
delta = 0.01
allow_large_delta = true
clipping_norm = 0.5
min_survivors = 3
max_participations = 2
'''


@pytest.mark.slow
def test_distributed_noise_each_node_adds_its_share_from_its_own_secret(tmp_path):
    """User-level DP, distributed: each node clips, adds its noise share from its own secret
    and charges its own ledger before its (masked) update leaves; the server holds no client
    secret and learns only the noisy sum."""
    import sqlite3

    from ffm_private.pretrain import public_users

    data = write_csv(tmp_path / "ratings.csv", 6)
    path = tmp_path / "run.toml"
    path.write_text(tiny_toml(data, tmp_path / "unused", extra=DISTRIBUTED))
    FlowerRun(load(path, tmp_path / "flower"), FreshNodeTransport(tmp_path / "nodes"),
              progress=False).run()
    rows = metrics(tmp_path / "flower")
    assert [r["contributors"] for r in rows] == [6, 6]
    assert all(r["aborted"] is None for r in rows) and rows[-1]["epsilon"] <= 8.0
    public = set(public_users(6, 0.34, 5).tolist())
    for i in range(6):
        user = str(101 + i)
        node = tmp_path / "nodes" / user
        assert (node / "clients" / str(i) / "secret.key").is_file()  # the node's own secret
        with sqlite3.connect(node / "privacy" / "ledger.sqlite") as con:
            charged = [r for (r,) in con.execute("SELECT round FROM spends WHERE user = ?",
                                                 (user,))]
        assert charged == ([] if i in public else [1, 2])
    assert not list((tmp_path / "flower").glob("clients/*/secret.key"))
