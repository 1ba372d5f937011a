"""The symmetric and signature primitives of the HE roles, all from ``cryptography``.

- **Receipts**: a client authenticates the SHA-256 digest of its encrypted update to the key
  holder with HMAC-SHA256 under a 32-byte key registered at enrolment, so the key holder adds
  only ciphertexts that enrolled clients sent in this round.
- **Round openings**: the key holder signs each round's public context and parameters with
  Ed25519; clients check the signature with the key holder's public key (known from
  enrolment), so the server cannot hand them a key of its own.
- **Rounding stream**: BFV's stochastic rounding draws its randomness from AES-256-CTR keyed by
  HKDF-SHA256 from the client's own secret, so the rounded values are not a function of
  public values.
"""

from __future__ import annotations

import hashlib
import os
import struct

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32
DIGEST_BYTES = 32
TAG_BYTES = 32
SIGNATURE_BYTES = 64

_RECEIPT = b"ffm-private/he/receipt/v1"
_OPENING = b"ffm-private/he/opening/v1"
_ROUNDING = b"ffm-private/he/rounding/v1"


def new_key() -> bytes:
    """A fresh 32-byte key from the OS CSPRNG."""
    return os.urandom(KEY_BYTES)


def digest(payload: bytes) -> bytes:
    """SHA-256 of a whole message (what a receipt vouches for)."""
    return hashlib.sha256(payload).digest()


def _receipt_input(round_id: int, client_id: int, fingerprint: bytes, dig: bytes) -> bytes:
    return _RECEIPT + struct.pack("<qq", round_id, client_id) + fingerprint + dig


def receipt_tag(key: bytes, round_id: int, client_id: int, fingerprint: bytes,
                dig: bytes) -> bytes:
    """HMAC-SHA256 binding the digest to the round, the client and the round's key."""
    h = hmac.HMAC(key, hashes.SHA256())
    h.update(_receipt_input(round_id, client_id, fingerprint, dig))
    return h.finalize()


def receipt_valid(key: bytes, round_id: int, client_id: int, fingerprint: bytes, dig: bytes,
                  tag: bytes) -> bool:
    """Constant-time check of :func:`receipt_tag`."""
    h = hmac.HMAC(key, hashes.SHA256())
    h.update(_receipt_input(round_id, client_id, fingerprint, dig))
    try:
        h.verify(tag)
    except InvalidSignature:
        return False
    return True


def opening_input(round_id: int, scheme: str, preset: str, length: int, room: int, clip: float,
                  min_contributors: int, public_context: bytes) -> bytes:
    """What the key holder signs when it opens a round."""
    return (_OPENING + struct.pack("<qQQdQ", round_id, length, room, clip, min_contributors)
            + scheme.encode() + b"\0" + preset.encode() + b"\0"
            + hashlib.sha256(public_context).digest())


def new_identity() -> Ed25519PrivateKey:
    """The key holder's long-term signing key."""
    return Ed25519PrivateKey.generate()


def public_identity(key: Ed25519PrivateKey) -> bytes:
    """Raw 32-byte Ed25519 public key (what clients keep from enrolment)."""
    return key.public_key().public_bytes(serialization.Encoding.Raw,
                                         serialization.PublicFormat.Raw)


def signature_valid(public: bytes, message: bytes, signature: bytes) -> bool:
    """Ed25519 verification with a raw public key."""
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def rounding_key(secret: bytes, round_id: int) -> bytes:
    """HKDF-SHA256 of a client's 32-byte secret, bound to this purpose and the round."""
    if len(secret) != KEY_BYTES:
        raise ValueError(f"a client secret must be {KEY_BYTES} bytes, got {len(secret)}")
    return HKDF(hashes.SHA256(), KEY_BYTES, salt=None,
                info=_ROUNDING + struct.pack("<q", round_id)).derive(secret)


class KeystreamUniform:
    """Uniform floats in [0, 1) from an AES-256-CTR keystream: a drop-in for ``rng.random``.

    Successive calls continue the stream, so drawing in blocks gives the values of one draw.
    Each float takes the top 53 bits of a 64-bit keystream word.
    """

    def __init__(self, key: bytes) -> None:
        self._stream = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()

    def random(self, shape) -> np.ndarray:
        n = int(np.prod(shape))
        words = np.frombuffer(self._stream.update(bytes(8 * n)), dtype="<u8")
        return ((words >> np.uint64(11)).astype(np.float64) * 2.0**-53).reshape(shape)
