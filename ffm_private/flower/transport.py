"""A transport without Flower: every node object in this process (tests and references).

It runs the nodes' real code (:func:`ffm_private.flower.node.handle`) on the same requests the
Flower transport carries, so the server loop can be checked against the in-process simulation
quickly, and a node failure is turned into the error reply Flower would deliver.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ffm_private.errors import FFMPrivateError
from ffm_private.flower.node import Node, handle
from ffm_private.flower.run import Reply, Request


class LocalTransport:
    """Nodes addressed by an integer id, called one after another."""

    def __init__(self, nodes: Mapping[int, Node], *, down: set[int] | None = None) -> None:
        self.node_objects = dict(nodes)
        self.down = down if down is not None else set()  # nodes that never answer
        self.sent: list[Request] = []

    def nodes(self) -> list[int]:
        return sorted(self.node_objects)

    def exchange(self, requests: Sequence[Request], timeout: float) -> dict[int, Reply]:
        out = {}
        for req in requests:
            self.sent.append(req)
            if req.node in self.down:
                continue
            try:
                arrays, values = handle(self.node_objects[req.node], req.kind, req.arrays,
                                        req.values)
            except FFMPrivateError as err:
                out[req.node] = Reply(req.node, error=str(err))
                continue
            out[req.node] = Reply(req.node, arrays, values)
        return out
