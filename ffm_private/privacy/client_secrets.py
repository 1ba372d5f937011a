"""Secrets that live with their owner: one 32-byte root per client, one for the server.

Every random choice that protects a party's data derives from that party's own secret: a
client's distributed noise share, its DP-SGD sampling and noise, its protocol randomness
(stochastic rounding); the server's central noise and its secret Poisson sample. Nobody else's
secret can regenerate (and subtract) them.

Layout (in the in-process simulation all parties share one machine, so all of these sit in
the run directory; the statement says so, and a deployment keeps each on its own node)::

    clients/<index>/secret.key    client <index>'s root (mode 0600), created on first use
    server/secret.key             the server's root (mode 0600)

A secret is written durably (fsync of the file and its folder) *before* its first use, so a
round replayed after a crash regenerates exactly what was released (the ledger's digest check
relies on it). A secret is never silently recreated: once a party's spends are on record, a
missing secret is an error (:meth:`SecretStore.secret` with ``must_exist``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ffm_private.errors import PrivacyStateError
from ffm_private.privacy.errors import PrivacyError
from ffm_private.privacy.mechanisms import NoiseSource
from ffm_private.storage import atomic_write_bytes

SECRET_BYTES = 32
SERVER = "server"


class MissingSecretError(PrivacyError, PrivacyStateError):
    """A party's secret is gone although what it protects is already on record."""


def derive(secret: bytes, label: str, round_id: int, size: int = SECRET_BYTES) -> bytes:
    """HKDF-SHA256 of ``secret`` for one use (``label``) in one round."""
    return HKDF(algorithm=hashes.SHA256(), length=size, salt=None,
                info=f"ffm-private/{label}/round={round_id}".encode()).derive(secret)


class SecretStore:
    """The parties' secret roots. ``test_seed`` derives them from a public seed (NO privacy)."""

    def __init__(self, root: str | Path | None, *, test_seed: int | None = None) -> None:
        if root is None and test_seed is None:
            raise ValueError("a SecretStore needs a directory or a test seed")
        self.root = None if root is None else Path(root)
        self.test_seed = test_seed
        self._cache: dict[str, bytes] = {}

    @property
    def is_test_seeded(self) -> bool:
        return self.test_seed is not None

    def path(self, party: int | str) -> Path:
        assert self.root is not None
        if party == SERVER:
            return self.root / SERVER / "secret.key"
        return self.root / "clients" / str(int(party)) / "secret.key"

    def secret(self, party: int | str, *, must_exist: bool = False) -> bytes:
        """The party's root secret; created (durably, before use) unless ``must_exist``."""
        key = str(party)
        if key in self._cache:
            return self._cache[key]
        if self.test_seed is not None:
            value = hashlib.sha256(f"ffm-private/test-seed/{self.test_seed}/{key}".encode()).digest()
        else:
            path = self.path(party)
            try:
                value = path.read_bytes()
            except FileNotFoundError:
                if must_exist:
                    raise MissingSecretError(
                        f"{path} is missing, but {'the server' if party == SERVER else f'client {party}'}"
                        " has already released data protected by it: the secret cannot be "
                        "recreated (a new one would release different noise for replayed rounds)"
                    ) from None
                atomic_write_bytes(path, os.urandom(SECRET_BYTES), mode=0o600)
                value = path.read_bytes()
            if len(value) != SECRET_BYTES:
                raise MissingSecretError(f"{path}: expected {SECRET_BYTES} bytes of secret, "
                                         f"found {len(value)}")
        self._cache[key] = value
        return value

    def noise(self, party: int | str, *, must_exist: bool = False) -> NoiseSource:
        """The party's noise streams (:class:`NoiseSource` keyed by its own secret)."""
        return NoiseSource.from_secret(derive(self.secret(party, must_exist=must_exist),
                                              "noise", 0))

    def protocol_secret(self, client: int, round_id: int, *, must_exist: bool = False) -> bytes:
        """The 32 bytes a protocol's client side keys its randomness from in ``round_id``."""
        return derive(self.secret(client, must_exist=must_exist), "protocol", round_id)

    def protocol_secrets(self, round_id: int, clients: list[int]) -> dict[int, bytes]:
        """:meth:`protocol_secret` of each of ``clients``."""
        return {c: self.protocol_secret(c, round_id) for c in clients}

    def fingerprint(self, parties: list[int | str]) -> dict[str, str]:
        """SHA-256 of each existing secret among ``parties`` (reveals nothing of the secret)."""
        out: dict[str, str] = {}
        for party in parties:
            if self.test_seed is None and not self.path(party).exists():
                continue
            out[str(party)] = hashlib.sha256(b"fingerprint:" + self.secret(party)).hexdigest()
        return out

    def __repr__(self) -> str:  # never print a secret
        return f"SecretStore(root={self.root}, test_seeded={self.is_test_seeded})"


__all__ = ["SERVER", "MissingSecretError", "SecretStore", "derive"]
