"""HE-specific refusals, subclasses of the shared protocol errors."""

from __future__ import annotations

from protocols.errors import TamperedMessage


class UnverifiedContribution(TamperedMessage):
    """The key holder cannot tie a ciphertext to an authenticated receipt of that client for
    this round (no receipt, a bad tag, an unknown client, or a digest that does not match)."""
