"""What crosses the wire: the bytes of every message, searched for personal tensors and secrets.

Adversary: the server, or anyone on the path between SuperLink and SuperNodes, who records
every message of a run (example-level DP, where each node also holds a noise/DP-SGD secret).
What it must not recover: any run of a node's personal parameters (user embedding, gate) as
they stand after any round, or any byte string of a node's secret.
"""

from __future__ import annotations

import numpy as np
import pytest

from ffm_private.flower.node import Node
from ffm_private.flower.run import FlowerRun
from ffm_private.flower.transport import LocalTransport
from tests.flower.conftest import load, tiny_toml, write_csv
from tests.flower.test_node_budget import EXAMPLE_DP

WINDOW = 16  # bytes: four float32 coordinates in a row


def blob(arrays, values) -> bytes:
    parts = [np.ascontiguousarray(a).tobytes() for group in arrays.values()
             for a in group.values()]
    parts += [repr(sorted(values.items())).encode()]
    return b"".join(parts)


def windows(data: bytes, size: int = WINDOW) -> set[bytes]:
    return {data[i:i + size] for i in range(0, max(0, len(data) - size + 1), 4)}


@pytest.mark.slow
def test_no_message_carries_a_personal_tensor_or_a_node_secret(tmp_path):
    data = write_csv(tmp_path / "ratings.csv", 6)
    path = tmp_path / "run.toml"
    path.write_text(tiny_toml(data, tmp_path / "run", rounds=2, eval_every=2,
                              extra=EXAMPLE_DP))
    nodes = {1000 + i: Node({"user": str(101 + i),
                             "node-dir": str(tmp_path / "nodes" / str(101 + i))})
             for i in range(6)}
    transport = LocalTransport(nodes)
    exchange = transport.exchange
    wire: list[bytes] = []
    personal_after: list[np.ndarray] = []

    def recording(requests, timeout):
        out = exchange(requests, timeout)
        wire.extend(blob(r.arrays, r.values) for r in requests)
        wire.extend(blob(r.arrays, r.values) for r in out.values())
        wire.extend(r.error.encode() for r in out.values() if r.error)
        for node in nodes.values():  # the personal state as it stands after this stage
            state = node.state.personal()
            if state is not None:
                personal_after.extend(np.asarray(v, np.float32).ravel() for v in state.values())
        return out

    transport.exchange = recording  # type: ignore[method-assign]
    FlowerRun(load(path, tmp_path / "run"), transport, progress=False).run()
    everything = b"\0".join(wire)
    assert len(wire) > 20 and personal_after
    # the check can fail: the shared state the server sent is found in the recorded bytes
    shared = np.load(tmp_path / "run" / "checkpoints" / "round-0001" / "global.npz")
    assert any(w in everything for w in windows(shared[shared.files[0]].tobytes()))
    for vector in personal_after:
        hits = [w for w in windows(vector.tobytes()) if len(set(w)) > 1 and w in everything]
        assert not hits, "a personal tensor crossed the wire"
    secrets = sorted((tmp_path / "nodes").glob("*/clients/*/secret.key"))
    assert len(secrets) == 6  # each node holds exactly its own user's secret ...
    for secret in secrets:
        key = secret.read_bytes()
        assert not [w for w in windows(key, 8) if w in everything], secret
        assert key.hex().encode() not in everything
    # ... and the server holds none of them
    assert not list((tmp_path / "run").glob("clients/*/secret.key"))
