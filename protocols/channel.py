"""The in-process network between clients and the server.

Protocols send every message through a :class:`Channel` as bytes. The default channel
delivers everything; :class:`FaultyChannel` drops clients at a chosen stage or rewrites
their messages in transit, which is how tests and simulations exercise dropouts,
tampering, replay and malformed input without any protocol knowing it is being tested.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

Tamper = Callable[[bytes], bytes]


class Channel:
    """Reliable delivery. Subclasses may drop or alter messages.

    A client that drops at one stage stays dropped for the rest of the round.
    """

    def __init__(self) -> None:
        self.bytes_up = 0
        self.bytes_down = 0
        self._gone: set[int] = set()

    def is_gone(self, client_id: int) -> bool:
        """Whether the client has dropped out of the current round."""
        return client_id in self._gone

    def upload(self, stage: str, client_id: int, payload: bytes) -> bytes | None:
        """Carry ``payload`` from a client to the server; ``None`` means it never arrived."""
        if client_id in self._gone or self._drops(stage, client_id):
            self._gone.add(client_id)
            return None
        payload = self._alter(stage, client_id, payload)
        self.bytes_up += len(payload)
        return payload

    def download(self, stage: str, client_id: int, payload: bytes) -> bytes | None:
        """Carry ``payload`` from the server to a client; ``None`` if the client is gone."""
        if client_id in self._gone:
            return None
        self.bytes_down += len(payload)
        return payload

    def _drops(self, stage: str, client_id: int) -> bool:
        return False

    def _alter(self, stage: str, client_id: int, payload: bytes) -> bytes:
        return payload


@dataclass
class FaultSpec:
    """What goes wrong in one round: who drops at which stage, whose message is altered."""

    drop: Mapping[str, Iterable[int]] = field(default_factory=dict)
    tamper: Mapping[tuple[str, int], Tamper] = field(default_factory=dict)


class FaultyChannel(Channel):
    """A channel that drops clients at given stages and rewrites chosen uploads.

    ``drop={"share_keys": {3, 7}}`` makes clients 3 and 7 vanish when they would upload at
    stage ``share_keys``; ``tamper={("masked_input", 5): flip_last_byte}`` rewrites client
    5's upload at that stage.
    """

    def __init__(self, faults: FaultSpec | None = None, **kwargs) -> None:
        super().__init__()
        faults = faults or FaultSpec(**kwargs)
        self.drop = {stage: set(ids) for stage, ids in faults.drop.items()}
        self.tamper = dict(faults.tamper)

    def _drops(self, stage: str, client_id: int) -> bool:
        return client_id in self.drop.get(stage, ())

    def _alter(self, stage: str, client_id: int, payload: bytes) -> bytes:
        fn = self.tamper.get((stage, client_id))
        return fn(payload) if fn is not None else payload
