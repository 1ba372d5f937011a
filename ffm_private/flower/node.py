"""What one SuperNode does for its one user, without any transport.

The ClientApp (:mod:`.client_app`) only converts Flower records to the plain arguments and
return values of :class:`Node`, so the node's behaviour is tested here without processes.

A node knows, from its own node config: the user it serves (``user``, the dataset's id), where
that user's data lives (``data-path``) and its own directory (``node-dir``). From the server it
receives only the run configuration (public: mechanism settings, model shape), the frozen
backbone and, each round, the global shared state. It returns only the shared update (and,
on evaluation rounds, the ranks of its held-out items: diagnostic metrics outside any claim).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ffm_private import config as config_mod
from ffm_private.config import Config
from ffm_private.flower.errors import NodeConfigError, NodeRefusal
from ffm_private.flower.node_state import NodeState, UserRows

#: Node-config keys (``flower-supernode --node-config 'user="7" node-dir="..."'``).
USER_KEY, DATA_KEY, DIR_KEY = "user", "data-path", "node-dir"
#: The user's own epsilon cap, set on the node; the node's ledger enforces it.
CAP_KEY = "epsilon-cap"


def _require(node_config: Mapping[str, Any], key: str) -> str:
    value = node_config.get(key)
    if value is None or str(value) == "":
        raise NodeConfigError(f"node config lacks {key!r} (flower-supernode --node-config "
                              f"'{key}=...')")
    return str(value)


class Node:
    """One user's node: its data rows, personal state and replies to the server's requests."""

    def __init__(self, node_config: Mapping[str, Any]) -> None:
        self.user = _require(node_config, USER_KEY)
        self.data_path = str(node_config.get(DATA_KEY, "") or "")
        self.state = NodeState(_require(node_config, DIR_KEY))
        self.node_config = dict(node_config)
        cap = node_config.get(CAP_KEY)
        try:
            self.cap = None if cap in (None, "") else float(cap)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise NodeConfigError(f"node config {CAP_KEY} = {cap!r} is not a number") from None
        if self.cap is not None and not self.cap > 0:
            raise NodeConfigError(f"node config {CAP_KEY} = {cap!r} must be > 0")

    # -- configuration -------------------------------------------------------------------------
    def config(self, text: str) -> Config:
        """The run configuration sent by the server, read with this node's own data path."""
        try:
            cfg = config_mod.from_dict(config_mod.parse_toml(text, "the server's run config"))
        except config_mod.ConfigError as err:
            raise NodeRefusal(f"node for user {self.user}: the server's run config is "
                              f"invalid: {err}") from None
        if self.data_path:
            cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data,
                                                                    path=self.data_path))
        return cfg

    def rows(self, cfg: Config) -> UserRows:
        """The user's rows of the split, computed once from the node's own data and cached."""
        d = cfg.data
        key = hashlib.sha256(repr((d.kind, d.path, d.synthetic_preset, d.num_eval_negatives,
                                   d.protocol, d.csv_user_col, d.csv_item_col,
                                   d.csv_timestamp_col, d.csv_delimiter,
                                   cfg.federated.seed, self.user)).encode()).hexdigest()
        cached = self.state.user_rows(key)
        if cached is not None:
            return cached
        from ffm_private.simulation import load_split

        split = load_split(cfg, self.state.root)  # synthetic data without a path: generated here
        ids = ([str(u) for u in split.raw_user_ids] if split.raw_user_ids is not None
               else [str(u) for u in range(split.n_users)])
        if self.user not in ids:
            raise NodeConfigError(f"node config user = {self.user!r} is not a user of the "
                                  f"dataset at {d.path or self.state.root} ({split.n_users} "
                                  "users)")
        index = ids.index(self.user)
        rows = UserRows(index=index, n_users=split.n_users, n_items=split.n_items,
                        train=np.asarray(split.train[index], dtype=np.int64),
                        valid=int(split.valid[index]), test=int(split.test[index]),
                        eval_negatives=np.asarray(split.eval_negatives[index], dtype=np.int64),
                        excluded=split.negative_exclusions(index))
        self.state.save_user_rows(key, rows)
        return rows

    # -- requests --------------------------------------------------------------------------------
    def query(self, config_text: str) -> dict[str, Any]:
        """Who this node serves (the internal index the server samples) and its backbone."""
        rows = self.rows(self.config(config_text))
        return {"user": rows.index, "user_id": self.user,
                "backbone": self.state.backbone_digest()}

    def _workspace(self, cfg: Config, rows: UserRows, backbone: Mapping[str, np.ndarray] | None,
                   digest: str):
        from ffm_private.models import FROZEN, build_model
        from ffm_private.models.partition import load_group

        if backbone:
            self.state.save_backbone(dict(backbone))
        if not digest or self.state.backbone_digest() != digest:
            raise NodeRefusal(f"node for user {self.user}: no backbone with digest "
                              f"{digest[:12]!r} on the node (the server must send it)")
        model = build_model(cfg.model, rows.n_items, 1)
        load_group(model, FROZEN, self.state.backbone())
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    def _personal(self, cfg: Config, rows: UserRows) -> dict[str, np.ndarray]:
        """The stored personal state; on first use the run's initial state for this user."""
        stored = self.state.personal()
        if stored is not None:
            return stored
        import torch

        from ffm_private.models import build_model

        torch.manual_seed(cfg.federated.seed)
        init = build_model(cfg.model, rows.n_items, 1)
        # each user's initial row depends only on (seed, user): the rows before it are discarded
        states = init.init_personal_states(rows.index + 1, cfg.federated.seed)
        return {k: v[rows.index].copy() for k, v in states.items()}

    def privacy(self, cfg: Config, rows: UserRows):
        """The node's own privacy: the run's plan, its own secret, its own ledger and cap.

        :class:`~ffm_private.privacy.run.NoPrivacy` without DP. The plan is derived from the public configuration exactly as the
        server derives it (and saved in the node directory); the noise and DP-SGD secret is
        generated here and never leaves; the ledger under ``<node-dir>/privacy/`` charges
        this user's spends with the cap from the node config (the plan's budget otherwise).
        """
        from ffm_private.models import PERSONAL, SharedSpec, build_model, params_of
        from ffm_private.pretrain import public_users
        from ffm_private.privacy.client_secrets import SecretStore
        from ffm_private.privacy.run import PRIVACY_DIR, NoPrivacy, RunPrivacy

        if not cfg.privacy or str(cfg.privacy.get("mode", "none")) == "none":
            return NoPrivacy(cfg.protocol.name)
        from ffm_private.simulation import local_config
        from protocols import registry

        # caps come from the node, not from a file on the server; the node's secret is its own
        raw = {k: v for k, v in cfg.privacy.items() if k not in ("per_user_caps_file",
                                                                 "noise_seed")}
        ids = [f"#{i}" for i in range(rows.n_users)]
        ids[rows.index] = self.user
        probe = build_model(cfg.model, rows.n_items, 1)
        resume = (self.state.root / PRIVACY_DIR / "plan.json").exists()
        priv = RunPrivacy.prepare(
            raw, self.state.root, user_ids=ids, rounds=cfg.federated.rounds,
            client_fraction=cfg.federated.client_fraction, protocol=cfg.protocol.name,
            resume=resume, train_sizes=[len(rows.train)] * rows.n_users,
            local_cfg=local_config(cfg), has_personal=bool(params_of(probe, PERSONAL)),
            public=public_users(rows.n_users, cfg.data.public_fraction, cfg.federated.seed),
            protocol_options=cfg.protocol.options)
        assert priv is not None
        priv.bind_protocol(registry.create(cfg.protocol.name, protocol_options(cfg, priv)),
                           SharedSpec.of(probe).size)
        if self.cap is not None:
            priv.caps = {self.user: self.cap}
        # resuming=False: start() would then insist on the server's secret, which a node never
        # holds; the saved plan was reloaded above and the ledger reopens as it is
        return priv.start(SecretStore(self.state.root), resuming=False)

    def train(self, config_text: str, round_id: int, shared: Mapping[str, np.ndarray],
              backbone: Mapping[str, np.ndarray] | None, backbone_digest: str,
              secagg_start: bytes | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """One local step; returns the shared update and what may be said about it.

        Under DP the node checks its own ledger first and declines (:class:`NodeRefusal`)
        when the spend would exceed its cap, whatever the server asked; the spend is recorded
        before the update is returned, and the update is the mechanism's output only.
        """
        from ffm_private.client import ClientData, train_client
        from ffm_private.messages import GlobalModelMessage
        from ffm_private.simulation import local_config

        cfg = self.config(config_text)
        rows = self.rows(cfg)
        priv = self.privacy(cfg, rows)
        try:
            local = local_config(cfg)
            refused = priv.charge_rounds_up_to(rows.index, round_id)
            if refused is not None:
                raise NodeRefusal(f"node for user {self.user}: declined round {round_id}: its "
                                  f"own ledger says round {refused}'s spend would exceed its cap")
            if priv.example_dp is not None:
                local = dataclasses.replace(local, example_dp=priv.example_dp)
            generator = priv.client_generator(round_id, rows.index)
            if cfg.protocol.name == "secagg" and secagg_start is None:
                raise NodeRefusal(f"node for user {self.user}: a SecAgg+ round must start with "
                                  "the server's round_start message")
            model = self._workspace(cfg, rows, backbone, backbone_digest)
            message = GlobalModelMessage(round_id=round_id, shared=dict(shared))
            result = train_client(model, message, self._personal(cfg, rows),
                                  ClientData(rows.index, rows.train, rows.excluded),
                                  local, cfg.federated.seed, generator=generator)
            update = priv.protect(round_id, rows.index, result.update, result.dp)
            if update is None:  # nothing leaves; the personal state is discarded
                raise NodeRefusal(f"node for user {self.user}: declined round {round_id}: "
                                  "its own ledger says this spend would exceed its cap")
            delta = np.asarray(update.delta)
            reply: dict[str, Any] = {"user": rows.index, "round": round_id}
            if update.num_examples:  # only without DP: a protected update carries no count
                reply["num_examples"] = int(update.num_examples)
            reply.update({k: float(v) for k, v in update.metrics.items()})
        finally:
            priv.close()
        self.state.save_personal(result.personal, round_id)
        if secagg_start is not None:  # the update stays here; only its masked form will leave
            from ffm_private.flower.secagg import NodeSession

            NodeSession(self.state.root, round_id).save_update(delta)
            reply["secagg"] = self.secagg(config_text, round_id, "advertise_keys", secagg_start)
            return {}, reply
        return {"delta": delta}, reply

    def secagg(self, config_text: str, round_id: int, stage: str, payload: bytes) -> bytes:
        """One SecAgg+ stage of this node's client (see :mod:`.secagg`)."""
        from ffm_private.flower.secagg import NodeSession, node_stage
        from ffm_private.privacy.client_secrets import SecretStore

        cfg = self.config(config_text)
        if cfg.protocol.name != "secagg":
            raise NodeRefusal(f"node for user {self.user}: the run's protocol is "
                              f"{cfg.protocol.name!r}, not secagg")
        rows = self.rows(cfg)
        priv = self.privacy(cfg, rows)
        try:
            options = protocol_options(cfg, priv)
            integer = priv.mechanism.encoding == "integer"
        finally:
            priv.close()
        secret = SecretStore(self.state.root).protocol_secret(rows.index, round_id)
        return node_stage(NodeSession(self.state.root, round_id), stage, payload,
                          client=rows.index, options=options, integer=integer,
                          run_seed=cfg.federated.seed, secret=secret)

    def evaluate(self, config_text: str, round_id: int, shared: Mapping[str, np.ndarray],
                 backbone: Mapping[str, np.ndarray] | None, backbone_digest: str
                 ) -> dict[str, Any]:
        """Ranks of the user's held-out items under the current shared and personal state."""
        from ffm_private.models import PERSONAL, SHARED
        from ffm_private.models.partition import load_group

        cfg = self.config(config_text)
        rows = self.rows(cfg)
        model = self._workspace(cfg, rows, backbone, backbone_digest)
        load_group(model, SHARED, dict(shared))
        load_group(model, PERSONAL, {k: np.asarray(v)[None]
                                     for k, v in self._personal(cfg, rows).items()})
        ranks = user_ranks(model, rows, full_ranking=cfg.evaluation.full_ranking)
        return {"user": rows.index, "round": round_id, **ranks}


def protocol_options(cfg: Config, priv: Any) -> dict[str, Any]:
    """The protocol options as the server derives them (``RunPrivacy.protocol_options``)."""
    from protocols import registry

    statistics = registry.protocol_class(cfg.protocol.name).private_statistics_option
    return priv.protocol_options(cfg.protocol.options, statistics)


def handle(node: Node, kind: str, arrays: Mapping[str, Mapping[str, np.ndarray]],
           values: Mapping[str, Any]) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """One request of the server, as plain records in and out (the ClientApp's whole job)."""
    text = str(values.get("config", ""))
    if kind == "query":
        return {}, node.query(text)
    round_id = int(values.get("round", -1))
    shared = arrays.get("shared", {})
    backbone = arrays.get("backbone")
    digest = str(values.get("backbone_digest", ""))
    if kind == "train":
        start = values.get("secagg")
        update, reply = node.train(text, round_id, shared, backbone, digest,
                                   None if start is None else bytes(start))
        return ({"update": update} if update else {}), reply
    if kind == "secagg":
        out = node.secagg(text, round_id, str(values.get("stage", "")),
                          bytes(values.get("payload", b"")))
        return {}, {"round": round_id, "secagg": out}
    if kind == "evaluate":
        return {}, node.evaluate(text, round_id, shared, backbone, digest)
    raise NodeRefusal(f"node for user {node.user}: unknown request {kind!r}")


def user_ranks(model: Any, rows: UserRows, *, full_ranking: bool) -> dict[str, int]:
    """The 0-based ranks :func:`ffm_private.evaluation.evaluate_model` computes, for one user."""
    import torch

    from ffm_private.evaluation import pessimistic_rank
    from ffm_private.training_data import last_window

    model.eval()
    length = getattr(model, "history_length", 1)
    owner = torch.zeros(1, dtype=torch.long)
    out: dict[str, int] = {}
    with torch.no_grad():
        for target in ("valid", "test"):
            heldout = rows.valid if target == "valid" else rows.test
            seq = rows.train if target == "valid" else np.append(rows.train, rows.valid)
            hist = torch.from_numpy(last_window(seq, length, model.pad)[None])
            cand = np.concatenate([[heldout], rows.eval_negatives])[None]
            s = model(hist, torch.from_numpy(cand), owner).numpy()
            out[f"{target}_rank"] = int(pessimistic_rank(s[:, 0], s[:, 1:])[0])
            if full_ranking:
                s = model(hist, torch.arange(rows.n_items)[None], owner).numpy()
                valid = np.ones_like(s, dtype=bool)
                valid[0, rows.train] = False
                if target == "test":
                    valid[0, rows.valid] = False
                valid[0, heldout] = False
                out[f"{target}_full_rank"] = int(pessimistic_rank(s[:, heldout], s, valid)[0])
    return out


def node_dir_of(node_config: Mapping[str, Any]) -> Path:
    return Path(_require(node_config, DIR_KEY))
