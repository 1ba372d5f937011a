"""The reference protocol: clients send their vectors in the clear, the server adds them.

Every other protocol must produce the same sum (within its documented error). Messages are
still serialized and validated, so the plaintext path exercises the same failure handling.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from protocols.base import (
    AggregateResult,
    AggregationProtocol,
    centred_lift,
    check_encoding,
    check_integer_updates,
    check_updates,
)
from protocols.channel import Channel
from protocols.errors import (
    DuplicateMessage,
    MalformedMessage,
    ProtocolError,
    TooFewClients,
    WrongLength,
    WrongRound,
)

_MAGIC = b"FFMP"
_VERSION = 1
_INT_VERSION = 2  # the integer path: int64 residues, so a message cannot be read as the other
INTEGER_MODULUS = 2**32
_HEADER = struct.Struct("<4sBqqI")  # magic, version, round, client, length


def encode_update(round_id: int, client_id: int, vector: np.ndarray, *,
                  integer: bool = False) -> bytes:
    """Serialize one client's vector (little-endian float64, or int64 on the integer path)."""
    vec = np.ascontiguousarray(vector, dtype="<i8" if integer else "<f8")
    version = _INT_VERSION if integer else _VERSION
    return _HEADER.pack(_MAGIC, version, round_id, client_id, vec.shape[0]) + vec.tobytes()


def decode_update(payload: bytes, *, round_id: int, client_id: int, length: int,
                  modulus: int | None = None) -> np.ndarray:
    """Parse and validate one upload; raise a typed error naming the client.

    ``modulus`` given: an integer-path upload, whose values must lie in ``[0, modulus)``.
    """
    stage = PlaintextProtocol.stages[0]
    if len(payload) < _HEADER.size:
        raise MalformedMessage("message shorter than its header", client_id=client_id, stage=stage)
    magic, version, rnd, cid, n = _HEADER.unpack_from(payload)
    if magic != _MAGIC or version != (_VERSION if modulus is None else _INT_VERSION):
        raise MalformedMessage("unknown message type or version", client_id=client_id, stage=stage)
    if cid != client_id:
        raise MalformedMessage(f"message claims to be from client {cid}", client_id=client_id, stage=stage)
    if rnd != round_id:
        raise WrongRound(f"message is for round {rnd}, not {round_id}", client_id=client_id, stage=stage)
    if n != length or len(payload) != _HEADER.size + 8 * length:
        raise WrongLength(f"vector length {n} (payload {len(payload)} bytes), expected {length}",
                          client_id=client_id, stage=stage)
    if modulus is not None:
        ints = np.frombuffer(payload, dtype="<i8", offset=_HEADER.size)
        if ints.size and (int(ints.min()) < 0 or int(ints.max()) >= modulus):
            raise MalformedMessage(f"integer values outside [0, {modulus})", client_id=client_id,
                                   stage=stage)
        return ints.astype(np.int64)
    vec = np.frombuffer(payload, dtype="<f8", offset=_HEADER.size)
    if not np.all(np.isfinite(vec)):
        raise MalformedMessage("vector contains NaN or infinity", client_id=client_id, stage=stage)
    return vec


_OPTIONS = ("min_clients",)


def _min_clients(value: Any) -> int:
    """``min_clients`` as SecAgg+ checks it: an int >= 1, never a bool, float or string."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"protocol.options.min_clients must be an integer >= 1, got {value!r}")
    return value


class PlaintextProtocol(AggregationProtocol):
    """No protection: the server sees each update. The reference for all other protocols.

    Capabilities: it reveals every update, so per-client noise shares protect nothing
    (``supports_distributed_noise`` is false); ``min_clients`` aborts a round below it.
    Its integer path (modulus ``2**32``, like SecAgg+) is the reference for the secure ones.
    """

    name = "plaintext"
    stages = ("update",)
    reveals_individual_updates = True
    supports_distributed_noise = False
    integer_modulus = INTEGER_MODULUS

    def __init__(self, min_clients: int = 1) -> None:
        self.min_clients = _min_clients(min_clients)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> PlaintextProtocol:
        """Only ``min_clients``; unknown keys are refused with their name."""
        options = dict(options)
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise ValueError(f"protocol 'plaintext' takes no option {unknown[0]!r}; options: "
                             f"{list(_OPTIONS)}")
        return cls(min_clients=options.get("min_clients", 1))

    def aggregate(
        self,
        round_id: int,
        updates: Mapping[int, np.ndarray],
        *,
        channel: Channel | None = None,
        seed: int = 0,
        secrets: Mapping[int, bytes] | None = None,
        encoding: str = "float",
    ) -> AggregateResult:
        channel = channel or Channel()
        integer = check_encoding(self, encoding)
        modulus = self.integer_modulus if integer else None
        ids, length = (check_integer_updates(updates, INTEGER_MODULUS) if integer
                       else check_updates(updates))
        stage = self.stages[0]
        received: dict[int, np.ndarray] = {}
        rejected: dict[int, ProtocolError] = {}
        dropped: list[int] = []
        for cid in ids:
            payload = channel.upload(stage, cid, encode_update(round_id, cid, updates[cid],
                                                               integer=integer))
            if payload is None:
                dropped.append(cid)
                continue
            try:
                vec = decode_update(payload, round_id=round_id, client_id=cid, length=length,
                                    modulus=modulus)
                if cid in received:
                    raise DuplicateMessage("second update in one round", client_id=cid, stage=stage)
                received[cid] = vec
            except ProtocolError as err:
                rejected[cid] = err
        if len(received) < self.min_clients:
            raise TooFewClients(
                f"{len(received)} valid updates, at least {self.min_clients} required", stage=stage
            )
        contributors = tuple(sorted(received))
        if integer:
            acc = np.zeros(length, dtype=np.int64)
            for cid in contributors:  # each term < 2**32: no int64 overflow before reducing
                acc = np.mod(acc + received[cid], INTEGER_MODULUS)
            total = centred_lift(acc, INTEGER_MODULUS)
        else:
            total = np.zeros(length, dtype=np.float64)
            for cid in contributors:
                total += received[cid]
        return AggregateResult(
            total=total,
            contributors=contributors,
            dropped=tuple(dropped),
            rejected=rejected,
            # read-only views of the uploads (float path) or fresh arrays: no copy needed
            individual={cid: received[cid] for cid in contributors},
            bytes_up=channel.bytes_up,
            bytes_down=channel.bytes_down,
        )
