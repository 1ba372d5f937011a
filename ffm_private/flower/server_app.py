"""The Flower ServerApp: :class:`~.run.FlowerRun` driving the nodes through Flower's Grid.

Run configuration (``flwr run --run-config``): ``config`` (the run's TOML file on the SuperLink
host), ``resume`` / ``overwrite`` (as ``ffm-private train``), ``min-nodes`` (wait for this
many SuperNodes, at most ``wait-s`` seconds) and ``round-timeout-s`` (how long a stage waits
for replies; a node that does not answer in time is a dropout of that stage).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from flwr.app import Context, Message
from flwr.serverapp import Grid, ServerApp

from ffm_private import config as config_mod
from ffm_private.flower.errors import FlowerDeploymentError
from ffm_private.flower.records import from_record, payload_bytes, to_record
from ffm_private.flower.run import FlowerRun, Reply, Request

app = ServerApp()

#: Flower message types: the three categories, SecAgg+ stages as an action of ``train``.
MESSAGE_TYPES = {"query": "query", "train": "train", "evaluate": "evaluate",
                 "secagg": "train.secagg"}


class GridTransport:
    """One Flower message per node per stage, through ``grid.send_and_receive``."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self.bytes_down = 0  # payload bytes (arrays and values) sent to nodes
        self.bytes_up = 0  # ... and received from them

    def nodes(self) -> list[int]:
        return sorted(int(n) for n in self.grid.get_node_ids())

    def exchange(self, requests: Sequence[Request], timeout: float) -> dict[int, Reply]:
        messages = [Message(to_record(r.arrays, r.values), dst_node_id=r.node,
                            message_type=MESSAGE_TYPES[r.kind]) for r in requests]
        self.bytes_down += sum(payload_bytes(r.arrays, r.values) for r in requests)
        out: dict[int, Reply] = {}
        for msg in self.grid.send_and_receive(messages, timeout=timeout):
            node = int(msg.metadata.src_node_id)
            if msg.has_error():
                out[node] = Reply(node, error=f"node {node}: {msg.error.reason}")
                continue
            arrays, values = from_record(msg.content)
            self.bytes_up += payload_bytes(arrays, values)
            out[node] = Reply(node, arrays, values)
        return out


def wait_for_nodes(grid: Grid, count: int, wait_s: float) -> list[int]:
    """The connected nodes once ``count`` are there; a typed error after ``wait_s`` seconds."""
    end = time.monotonic() + wait_s
    while True:
        nodes = sorted(int(n) for n in grid.get_node_ids())
        if len(nodes) >= count:
            return nodes
        if time.monotonic() > end:
            raise FlowerDeploymentError(f"only {len(nodes)} of the {count} SuperNodes asked for "
                                        f"(min-nodes) connected within {wait_s:g} s")
        time.sleep(0.5)


@app.main()
def main(grid: Grid, context: Context) -> None:
    rc = context.run_config
    path = str(rc.get("config", ""))
    if not path:
        raise FlowerDeploymentError("run config lacks 'config' (flwr run --run-config "
                                    "\"config='/path/run.toml'\")")
    cfg = config_mod.load(path)
    wait_for_nodes(grid, int(rc.get("min-nodes", 1)), float(rc.get("wait-s", 120.0)))
    transport = GridTransport(grid)
    run = FlowerRun(cfg, transport, resume=bool(rc.get("resume", False)),
                    overwrite=bool(rc.get("overwrite", False)),
                    round_timeout=float(rc.get("round-timeout-s", 300.0)))
    summary = run.run()
    print(f"ffm-private: run written to {summary['run_dir']}; payload bytes to nodes "
          f"{transport.bytes_down}, from nodes {transport.bytes_up}", flush=True)
