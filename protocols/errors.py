"""Typed errors raised by aggregation protocols.

Every error that concerns one client names it (``client_id``) and the protocol stage
at which the problem was found, so the server can exclude exactly that client and go on.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base class: a protocol-level problem, optionally attributable to one client."""

    def __init__(self, message: str, *, client_id: int | None = None, stage: str | None = None):
        self.client_id = client_id
        self.stage = stage
        where = []
        if client_id is not None:
            where.append(f"client {client_id}")
        if stage is not None:
            where.append(f"stage {stage!r}")
        prefix = f"[{', '.join(where)}] " if where else ""
        super().__init__(prefix + message)
        self.reason = message


class MalformedMessage(ProtocolError):
    """The bytes do not parse as the expected, versioned message type."""


class TamperedMessage(ProtocolError):
    """Authentication failed (e.g. an AES-GCM tag mismatch): the content was altered."""


class ReplayedMessage(ProtocolError):
    """A message already seen (in this or an earlier round) was sent again."""


class DuplicateMessage(ProtocolError):
    """A client sent more than one message for the same stage."""


class WrongLength(ProtocolError):
    """A vector or ciphertext does not have the agreed length."""


class WrongRound(ProtocolError):
    """A message is bound to a different round than the one being aggregated."""


class ContextMismatch(ProtocolError):
    """A ciphertext was produced under another key, context or scheme."""


class TooFewClients(ProtocolError):
    """Fewer clients than the threshold survived: the round aborts and reveals nothing."""


class UnexpectedStage(ProtocolError):
    """A message for a stage that is not open: late, repeated, or out of order."""


class UnsafeParameters(ProtocolError):
    """Round parameters a party's own policy refuses (threshold at most half the neighbours,
    fewer participants than its floor, a degree or threshold other than its own)."""


class InvalidShare(ProtocolError):
    """A Shamir share that does not lie on the dealer's polynomial (checked against the
    dealer's commitment or public key)."""


class InconsistentView(ProtocolError):
    """The server showed this client a view of the round that the other clients did not sign
    (malicious-server mode): a different survivor set, or too few signatures on it."""
