"""The ServerApp's side of SecAgg+ over Flower: one exchange per stage, our SecAggServer.

:class:`SecAggDriver` holds the round's :class:`~protocols.secagg.server.SecAggServer` (the
ServerApp is one long-lived process) and moves its bytes through the run's transport. Its
result is handed to :class:`~ffm_private.server.Server` through :class:`FixedResult`, so the
server step (averaging, DP release, the outcome and what the log records) is the in-process one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ffm_private.flower.errors import FlowerDeploymentError
from ffm_private.messages import ClientUpdate
from protocols.base import AggregateResult, AggregationProtocol
from protocols.errors import TooFewClients

if TYPE_CHECKING:
    from ffm_private.flower.run import FlowerRun, Reply

STAGES = (("share_keys", "neighbour_keys"), ("masked_input", "forward_shares"),
          ("unmask", "unmask_requests"))


class FixedResult(AggregationProtocol):
    """The protocol as :class:`Server` sees it after the stages ran: their result, or abort."""

    reveals_individual_updates = False

    def __init__(self, inner: Any, result: AggregateResult | None, abort: str | None) -> None:
        self.name, self.inner = inner.name, inner
        self.result, self.abort = result, abort

    def aggregate(self, round_id: int, updates: Mapping[int, np.ndarray],
                  **kwargs: Any) -> AggregateResult:
        if self.result is None:
            raise TooFewClients(self.abort or "too few clients")
        return self.result

    def describe(self) -> str:
        return self.inner.describe()


class SecAggDriver:
    """One SecAgg+ round across the nodes of ``run``."""

    def __init__(self, run: FlowerRun, round_id: int, users: list[int]) -> None:
        from protocols.secagg.server import SecAggServer

        self.run, self.round_id = run, round_id
        protocol = run.protocol
        self.protocol = protocol
        integer = run.privacy.mechanism.encoding == "integer"
        self.server = SecAggServer(round_id, users, run.dim, protocol.options,
                                   run_seed=run.cfg.federated.seed, replay=protocol._replay,
                                   integer=integer)
        self.bytes_up = 0
        self.rejected: dict[int, str] = {}

    def round_start(self) -> dict[int, bytes]:
        return self.server.round_start()

    def receive_start(self, user: int, node: int, reply: Reply) -> ClientUpdate:
        """The node's advertise_keys upload, given to the server; a placeholder update."""
        return self._receive("advertise_keys", user, node, reply)

    def _receive(self, stage: str, user: int, node: int, reply: Reply) -> ClientUpdate:
        payload = reply.values.get("secagg")
        if not isinstance(payload, bytes | bytearray) or \
                int(reply.values.get("round", -1)) != self.round_id:
            raise FlowerDeploymentError(f"node {node} (user {user}): no {stage} upload for "
                                        f"round {self.round_id}: rejected")
        self.bytes_up += len(payload)
        err = self.server.receive(stage, user, bytes(payload))
        if err is not None:
            self.rejected[user] = str(err)
            raise FlowerDeploymentError(f"node {node} (user {user}), {stage}: {err}")
        return ClientUpdate(client_id=user, round_id=self.round_id,
                            delta=np.zeros(0), num_examples=0)

    def run_stages(self, started: Mapping[int, ClientUpdate]) -> FixedResult:
        """share_keys, masked_input, unmask: one exchange each; the result or the abort."""
        from protocols.secagg.protocol import SecAggResult

        run = self.run
        try:
            for stage, make in STAGES:
                downloads = getattr(self.server, make)()
                requests = [self._request(user, stage, payload)
                            for user, payload in downloads.items()]
                replies = run.transport.exchange(requests, run.round_timeout)
                for user in downloads:
                    node = run.user_node[user]
                    reply = replies.get(node)
                    if reply is None:
                        continue  # a dropout at this stage
                    if reply.error is not None:
                        run._say(f"round {self.round_id}, {stage}: node {node} (user {user}): "
                                 f"{reply.error}")
                        continue
                    try:
                        self._receive(stage, user, node, reply)
                    except FlowerDeploymentError as err:
                        run._say(f"round {self.round_id}: {err}")
            outcome = self.server.finish()
        except TooFewClients as err:
            return FixedResult(self.protocol, None, str(err))
        result = SecAggResult(total=outcome.total, contributors=outcome.contributors,
                              dropped=outcome.dropped, rejected=outcome.rejected,
                              individual=None, bytes_up=self.bytes_up, clipped=outcome.clipped,
                              neighbours=self.server.k, threshold=self.server.t)
        return FixedResult(self.protocol, result, None)

    def _request(self, user: int, stage: str, payload: bytes):
        from ffm_private.flower.run import Request

        return Request(self.run.user_node[user], "secagg",
                       values={"config": self.run.config_text, "round": self.round_id,
                               "stage": stage, "payload": payload})
