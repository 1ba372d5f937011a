"""Our SecAgg+ over Flower messages: one message exchange per stage, driven by the ServerApp.

Flower starts a fresh ClientApp process for every message, so a node cannot keep its
:class:`~protocols.secagg.client.SecAggClient` in memory between stages. Instead each node
keeps, in ``<node-dir>/secagg/``, the round's update (its own data, mode 0600) and the server
messages it has answered, and rebuilds its client for every stage by replaying the answered
stages. The client's randomness (X25519 keys, the self-mask seed, Shamir coefficients) comes
from AES-256-CTR keyed by HKDF-SHA256 of the node's own protocol secret and the round, so a
replay re-derives exactly the keys and messages it sent; nothing secret is ever written besides
the node's secret itself and the update.

The node enforces the protocol itself: each stage once and in order; a stage asked again with
the same server message gets the same answer (a lost reply), with a different one a refusal
(answering it would reuse AES-GCM nonces with other plaintexts). The SecAgg+ options are the
run configuration's ``[protocol.options]``, which the node validates itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ffm_private.flower.errors import NodeRefusal
from ffm_private.storage import atomic_write_bytes, atomic_write_json

#: The node-side steps, in order, and the server message each answers.
NODE_STAGES = ("advertise_keys", "share_keys", "masked_input", "unmask")


class KeyedEntropy:
    """A CSPRNG stream: AES-256-CTR under a key derived from the node's secret and round."""

    def __init__(self, secret: bytes, round_id: int, client: int) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                   info=f"ffm-private/flower/secagg-entropy/{round_id}/{client}".encode()
                   ).derive(secret)
        self._enc = Cipher(algorithms.AES(key), modes.CTR(b"\0" * 16)).encryptor()

    def __call__(self, n: int) -> bytes:
        return self._enc.update(b"\0" * n)


class NodeSession:
    """One node's SecAgg+ round on disk: its update and the stages it answered."""

    def __init__(self, root: Path, round_id: int) -> None:
        self.dir = root / "secagg"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.round_id = round_id
        self.log_path = self.dir / f"round-{round_id:04d}.json"
        self.update_path = self.dir / f"round-{round_id:04d}-update.npy"

    def log(self) -> list[dict[str, str]]:
        if not self.log_path.exists():
            return []
        return list(json.loads(self.log_path.read_text()))

    def save_update(self, update: np.ndarray) -> None:
        import io

        buf = io.BytesIO()
        np.save(buf, np.asarray(update), allow_pickle=False)
        atomic_write_bytes(self.update_path, buf.getvalue(), mode=0o600)

    def update(self) -> np.ndarray:
        if not self.update_path.exists():
            raise NodeRefusal(f"round {self.round_id}: this node holds no update for the round "
                              "(it did not train in it, or the round is over)")
        return np.load(self.update_path, allow_pickle=False)


def node_stage(session: NodeSession, stage: str, payload: bytes, *, client: int,
               options: Mapping[str, Any], run_seed: int, secret: bytes,
               integer: bool = False) -> bytes:
    """Answer ``stage`` with ``payload`` from the server, rebuilding the client by replay."""
    from protocols.errors import ProtocolError
    from protocols.secagg.client import SecAggClient
    from protocols.secagg.options import SecAggOptions

    if stage not in NODE_STAGES:
        raise NodeRefusal(f"unknown SecAgg+ stage {stage!r}")
    log = session.log()
    done = [entry["stage"] for entry in log]
    if stage in done:
        entry = log[done.index(stage)]
        if entry["input"] == payload.hex():
            return bytes.fromhex(entry["output"])  # the reply was lost: the same answer
        raise NodeRefusal(f"round {session.round_id}: {stage} was already answered with another "
                          "server message; refusing to answer again (each stage runs once)")
    expected = NODE_STAGES[len(done)]
    if stage != expected:
        raise NodeRefusal(f"round {session.round_id}: {stage} requested before {expected} "
                          "(each stage runs once, in order)")
    opts = SecAggOptions.from_mapping(dict(options))
    if opts.malicious_server:
        raise NodeRefusal("SecAgg+ malicious-server mode does not run on Flower nodes yet")
    cl = SecAggClient(client, session.round_id, session.update(), options=opts,
                      run_seed=run_seed, secret=secret,
                      entropy=KeyedEntropy(secret, session.round_id, client), integer=integer)
    steps = {"advertise_keys": cl.advertise_keys, "share_keys": cl.share_keys,
             "masked_input": cl.masked_input, "unmask": cl.unmask}
    try:
        for entry in log:  # replay: the same inputs give the same keys and messages
            steps[entry["stage"]](bytes.fromhex(entry["input"]))
        out = steps[stage](payload)
    except ProtocolError as err:
        raise NodeRefusal(f"round {session.round_id}, {stage}: {err}") from None
    log.append({"stage": stage, "input": payload.hex(), "output": out.hex()})
    atomic_write_json(session.log_path, log)
    if stage == "unmask":
        session.update_path.unlink(missing_ok=True)  # the round is over for this node
    return out
