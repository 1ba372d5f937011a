"""The server's side of a Flower run: the in-process loop with the clients on their nodes.

:class:`FlowerRun` is the :class:`~ffm_private.simulation.Simulation` (same run directory,
pretraining, sampling, protocol, server step, checkpoints, observation log and summary) with
the client work sent to the nodes through a :class:`Transport`. The server holds no personal
state: its checkpoints carry only the global shared state, and evaluation metrics are computed
from the ranks each node reports for its own user.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ffm_private import config as config_mod
from ffm_private.callbacks import RoundResult
from ffm_private.config import Config
from ffm_private.evaluation import hr_ndcg
from ffm_private.flower.errors import FlowerDeploymentError
from ffm_private.flower.node_state import digest_arrays
from ffm_private.messages import ClientUpdate
from ffm_private.server import Server
from ffm_private.simulation import RunState, Simulation
from ffm_private.storage import PersonalStore


@dataclass(frozen=True)
class Request:
    """One message to one node: a kind (query, train, evaluate), arrays and plain values."""

    node: int
    kind: str
    arrays: Mapping[str, Mapping[str, np.ndarray]] = field(default_factory=dict)
    values: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    """A node's answer; ``error`` set when the node refused or failed (the reason it gave)."""

    node: int
    arrays: Mapping[str, Mapping[str, np.ndarray]] = field(default_factory=dict)
    values: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None


class Transport(Protocol):
    """Sends one message to each node of a stage and returns the replies that came back."""

    def nodes(self) -> list[int]: ...

    def exchange(self, requests: Sequence[Request], timeout: float) -> dict[int, Reply]: ...


class FlowerRun(Simulation):
    """A run whose clients live on nodes; everything the server does is the in-process code."""

    def __init__(self, cfg: Config, transport: Transport, *, resume: bool = False,
                 overwrite: bool = False, progress: bool = True,
                 round_timeout: float = 300.0) -> None:
        self.transport = transport
        self.round_timeout = round_timeout
        if cfg.protocol.name not in ("plaintext", "secagg"):  # refused before any write
            raise config_mod.ConfigError(
                f"protocol.name = {cfg.protocol.name!r}: plaintext and secagg run on Flower "
                "nodes; run the others in-process (ffm-private train)")
        if cfg.protocol.options.get("malicious_server"):
            raise config_mod.ConfigError(
                "protocol.options.malicious_server = true does not run on Flower nodes yet; "
                "run it in-process (ffm-private train)")
        if cfg.defense.kind != "none":  # the broadcast to nodes does not carry the basis yet
            raise config_mod.ConfigError(
                f"defense.kind = {cfg.defense.kind!r} does not run on Flower nodes yet; run it "
                "in-process (ffm-private train)")
        super().__init__(cfg, resume=resume, overwrite=overwrite, progress=progress)
        self.config_text = config_mod.to_toml(cfg)
        self.user_node: dict[int, int] = {}
        self.node_backbone: dict[int, str] = {}

    def _start(self) -> None:
        """The in-process start (directory, backbone), then ask the nodes whom they serve."""
        super()._start()
        self.backbone_digest = digest_arrays(self.backbone)
        self.connect()

    @property
    def dim(self) -> int:
        """Length of what a node sends: the shared update plus the mechanism's coordinates."""
        return self.spec.size + int(self.privacy.mechanism.extra_coordinates)

    # -- nodes ---------------------------------------------------------------------------------
    def connect(self) -> None:
        """Ask every node which user it serves; a user claimed twice keeps its first node."""
        nodes = sorted(self.transport.nodes())
        replies = self.transport.exchange(
            [Request(n, "query", values={"config": self.config_text}) for n in nodes],
            self.round_timeout)
        for node in nodes:
            reply = replies.get(node)
            if reply is None or reply.error is not None:
                why = "no reply" if reply is None else reply.error
                self._say(f"node {node} left out: {why}")
                continue
            user = int(reply.values["user"])
            if not 0 <= user < self.split.n_users:
                self._say(f"node {node} left out: user index {user} outside the dataset")
                continue
            if user in self.user_node:
                self._say(f"node {node} left out: user {user} is already served by node "
                          f"{self.user_node[user]}")
                continue
            self.user_node[user] = node
            self.node_backbone[node] = str(reply.values.get("backbone", ""))
        self._say(f"{len(self.user_node)} of {self.split.n_users} users have a node")

    def _arrays(self, node: int, shared: Mapping[str, np.ndarray]) -> dict[str, Any]:
        arrays: dict[str, Any] = {"shared": dict(shared)}
        if self.node_backbone.get(node) != self.backbone_digest:
            arrays["backbone"] = dict(self.backbone)
        return arrays

    def _values(self, round_id: int) -> dict[str, Any]:
        return {"config": self.config_text, "round": round_id,
                "backbone_digest": self.backbone_digest}

    # -- the loop --------------------------------------------------------------------------------
    def initial_state(self) -> RunState:
        state = super().initial_state()
        state.personal = PersonalStore({})  # personal state lives on the nodes
        return state

    def run_round(self, state: RunState, round_id: int) -> RoundResult:
        self._require_started()
        f = self.cfg.federated
        selection = self._select(round_id)  # the server's mirror of the ledgers; nodes enforce
        sampled, declined = list(selection.sampled), list(selection.declined)
        server = Server(self.spec, state.shared, self.protocol, f.server_lr,
                        averager=self.privacy.averager(selection.pool_size, self.spec.size))
        message = server.broadcast(round_id)
        reachable = [u for u in sampled if u in self.user_node]
        secagg = None
        starts: dict[int, bytes] = {}
        if self.cfg.protocol.name == "secagg" and reachable:
            from ffm_private.flower.secagg_server import SecAggDriver

            secagg = SecAggDriver(self, round_id, reachable)
            starts = secagg.round_start()
        requests = [Request(self.user_node[u], "train", self._arrays(self.user_node[u],
                                                                      message.shared),
                            {**self._values(round_id),
                             **({"secagg": starts[u]} if u in starts else {})})
                    for u in reachable]
        replies = self.transport.exchange(requests, self.round_timeout)
        updates: dict[int, ClientUpdate] = {}
        losses: list[float] = []
        refused: dict[int, str] = {}
        for user in reachable:
            node = self.user_node[user]
            reply = replies.get(node)
            if reply is None:
                continue
            if reply.error is not None:
                if "declined" in reply.error:
                    declined.append(user)
                else:
                    refused[user] = reply.error
                self._say(f"round {round_id}: node {node} (user {user}) refused: {reply.error}")
                continue
            try:
                update = (secagg.receive_start(user, node, reply) if secagg is not None
                          else self._update(user, node, round_id, reply))
            except FlowerDeploymentError as err:
                refused[user] = str(err)
                self._say(f"round {round_id}: {err}")
                continue
            self.node_backbone[node] = self.backbone_digest
            if not self.privacy.mirror_charge(user, round_id, update.delta):
                declined.append(user)
                continue
            updates[user] = update
            if "shared_loss" in reply.values:
                losses.append(float(reply.values["shared_loss"]))
        if secagg is not None:  # the remaining stages; the sum is all the server learns
            server.protocol = secagg.run_stages(updates)
        outcome = server.aggregate(round_id, updates, seed=f.seed)
        state.shared = server.shared
        state.round_id = round_id
        # sampled users that never answered (no node, or silent): dropouts, counted once
        missing = set(sampled) - set(updates) - set(refused) - set(declined)
        row = self._round_row(round_id, sampled, outcome, losses, declined,
                              dropped=len(set(outcome.dropped) | missing),
                              rejected=len(outcome.rejected) + len(refused))
        return RoundResult(round_id, row, message.shared, sampled, outcome)

    def _update(self, user: int, node: int, round_id: int, reply: Reply) -> ClientUpdate:
        """The node's update, checked: its user, its round, one finite vector of the right size."""
        values = reply.values
        if int(values.get("user", -1)) != user or int(values.get("round", -1)) != round_id:
            raise FlowerDeploymentError(
                f"node {node} (user {user}) answered for user {values.get('user')!r}, round "
                f"{values.get('round')!r}: rejected")
        delta = np.asarray(reply.arrays.get("update", {}).get("delta", np.zeros(0)))
        if delta.shape != (self.dim,) or not np.all(np.isfinite(delta)):
            raise FlowerDeploymentError(
                f"node {node} (user {user}) sent an update of shape {delta.shape} (expected "
                f"({self.dim},), finite): rejected")
        metrics = {k: float(values[k]) for k in ("personal_loss", "shared_loss") if k in values}
        return ClientUpdate(client_id=user, round_id=round_id, delta=delta,
                            num_examples=int(values.get("num_examples", 0)), metrics=metrics)

    def evaluate(self, state: RunState) -> dict[str, float]:
        """HR@k and NDCG@k over the users whose node reported its ranks."""
        k = self.cfg.evaluation.k
        users = sorted(self.user_node)
        requests = [Request(self.user_node[u], "evaluate",
                            self._arrays(self.user_node[u], state.shared),
                            self._values(state.round_id)) for u in users]
        replies = self.transport.exchange(requests, self.round_timeout)
        ranks: dict[str, list[int]] = {}
        reported = 0
        for user in users:
            reply = replies.get(self.user_node[user])
            if reply is None or reply.error is not None or \
                    int(reply.values.get("user", -1)) != user:
                continue
            self.node_backbone[self.user_node[user]] = self.backbone_digest
            reported += 1
            for key, value in reply.values.items():
                if key.endswith("_rank"):
                    ranks.setdefault(key, []).append(int(value))
        if reported < self.split.n_users:
            self._say(f"evaluation: {reported} of {self.split.n_users} users reported")
        out: dict[str, float] = {}
        for target in ("valid", "test"):
            for kind, prefix in (("rank", target), ("full_rank", f"{target}_full")):
                if f"{target}_{kind}" in ranks or kind == "rank":
                    hr, ndcg = hr_ndcg(np.asarray(ranks.get(f"{target}_{kind}", []), int), k)
                    out[f"{prefix}_hr@{k}"], out[f"{prefix}_ndcg@{k}"] = hr, ndcg
        out["evaluated_users"] = float(reported)
        return out
