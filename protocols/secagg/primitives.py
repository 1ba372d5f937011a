"""The cryptographic primitives of SecAgg+, all from ``cryptography`` (OpenSSL).

- X25519 key agreement; private keys are 32 bytes from the party's entropy source
  (``os.urandom`` by default), never from numpy or ``random``.
- HKDF-SHA256 turns every shared secret into a key for exactly one purpose: the ``info``
  string names the protocol version, the purpose, the round and the parties.
- AES-256-GCM authenticates (and encrypts) every upload under a client-server key and
  encrypts the Shamir shares one client relays to another through the server.
- AES-256-CTR is the mask generator: its keystream, read as little-endian uint32 words, is
  a uniformly random vector over Z_2^32 for a uniformly random key.
- Ed25519 identity keys sign key advertisements and the survivor set in the
  malicious-server mode.
"""

from __future__ import annotations

import functools
import hashlib
import os
import struct
from collections.abc import Callable, Sequence

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

Entropy = Callable[[int], bytes]
"""A source of cryptographically secure random bytes: ``entropy(n) -> n bytes``."""

VERSION = 2
KEY_BYTES = 32
TAG_BYTES = 16
SIGNATURE_BYTES = 64
_DOMAIN = b"ffm-secagg/v%d/" % VERSION
_ZERO_IV = bytes(16)
_AES = algorithms.AES  # looked up once: a mask is one short call
_CTR_ZERO = modes.CTR(_ZERO_IV)  # immutable, so one object serves every keystream
_SHA256 = hashes.SHA256()  # immutable too: HKDF takes it for every derivation


def default_entropy(n: int) -> bytes:
    """The operating system's CSPRNG; looked up at call time so tests can observe it."""
    return os.urandom(n)


def _ids(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}q", *values)


def hkdf(secret: bytes, purpose: bytes, *context: int, length: int = KEY_BYTES,
         bound: bytes = b"") -> bytes:
    """HKDF-SHA256 of ``secret`` for one ``purpose`` bound to the round and parties in
    ``context`` (and to ``bound``, e.g. a transcript hash)."""
    info = _DOMAIN + purpose + b"/" + _ids(*context) + bound
    return HKDF(algorithm=_SHA256, length=length, salt=None, info=info).derive(secret)


# -- X25519 -----------------------------------------------------------------------------------
def new_key_pair(entropy: Entropy) -> tuple[X25519PrivateKey, bytes]:
    """A fresh X25519 key pair: any 32 random bytes are a valid private key (RFC 7748)."""
    key = X25519PrivateKey.from_private_bytes(entropy(KEY_BYTES))
    return key, public_bytes(key)


def public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def private_bytes(key: X25519PrivateKey) -> bytes:
    return key.private_bytes_raw()


def load_private(raw: bytes) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(raw)


def agree(private: X25519PrivateKey, peer_public: bytes) -> bytes:
    """The X25519 shared secret with ``peer_public`` (raises ValueError on a degenerate key)."""
    return private.exchange(X25519PublicKey.from_public_bytes(peer_public))


# -- key derivations --------------------------------------------------------------------------
def upload_key(shared: bytes, round_id: int, client_id: int) -> bytes:
    """AES-256-GCM key sealing everything ``client_id`` uploads to the server this round."""
    return hkdf(shared, b"upload", round_id, client_id)


def share_key(shared: bytes, round_id: int, a: int, b: int) -> AESGCM:
    """Encrypts the Shamir shares exchanged between clients ``a`` and ``b`` (both directions)."""
    return AESGCM(hkdf(shared, b"share-encryption", round_id, min(a, b), max(a, b)))


def pair_mask_key(shared: bytes, transcript: bytes, round_id: int, a: int, b: int) -> bytes:
    """Seed of the pairwise mask between ``a`` and ``b``; both derive it, so it cancels, but
    only when both hold the same ``transcript`` hash (the same view of the round)."""
    return hkdf(shared, b"pair-mask", round_id, min(a, b), max(a, b), bound=transcript)


class InvalidPeerKey(ValueError):
    """A neighbour's public key is degenerate or malformed; ``index`` says which."""

    def __init__(self, index: int) -> None:
        super().__init__(f"public key {index} is invalid")
        self.index = index


_THREE_IDS = struct.Struct("<3q")


def neighbour_keys(c_sk: X25519PrivateKey, s_sk: X25519PrivateKey, me: int,
                   neighbours: Sequence[int], keys: Sequence[tuple[bytes, bytes]],
                   transcript: bytes, round_id: int) -> tuple[list[AESGCM], list[bytes]]:
    """``[share_key(...)]`` and ``[pair_mask_key(...)]`` of client ``me`` with each neighbour
    (whose ``(c, s)`` public keys are ``keys``), in one call: the same two X25519 agreements
    and two HKDF derivations per neighbour as those functions, without the per-call overhead.
    Raises :class:`InvalidPeerKey` naming the first neighbour whose key is unusable."""
    share_info = _DOMAIN + b"share-encryption/"
    mask_info = _DOMAIN + b"pair-mask/"
    c_exchange, s_exchange = c_sk.exchange, s_sk.exchange
    load = X25519PublicKey.from_public_bytes
    aeads: list[AESGCM] = []
    masks: list[bytes] = []
    for idx, (j, (c_pk, s_pk)) in enumerate(zip(neighbours, keys, strict=True)):
        try:
            c_shared, s_shared = c_exchange(load(c_pk)), s_exchange(load(s_pk))
        except ValueError:
            raise InvalidPeerKey(idx) from None
        ids = _THREE_IDS.pack(round_id, me, j) if me < j else _THREE_IDS.pack(round_id, j, me)
        aeads.append(AESGCM(HKDF(_SHA256, KEY_BYTES, None, share_info + ids).derive(c_shared)))
        masks.append(HKDF(_SHA256, KEY_BYTES, None, mask_info + ids + transcript)
                     .derive(s_shared))
    return aeads, masks


def self_mask_key(seed: bytes, round_id: int, client_id: int) -> bytes:
    """Key of a client's self mask, from its secret seed ``b``."""
    return hkdf(seed, b"self-mask", round_id, client_id)


def rounding_key(secret: bytes, round_id: int, client_id: int) -> bytes:
    """Key of a client's stochastic-rounding stream, from a 32-byte secret only it holds.

    Keyed from a client secret (not from public values), the rounded vector is not a
    function of the update the server could invert; keyed from a persistent secret, a
    replayed round rounds exactly as before, so the total is reproducible.
    """
    if len(secret) != KEY_BYTES:
        raise ValueError(f"a client secret must be {KEY_BYTES} bytes, got {len(secret)}")
    return hkdf(secret, b"rounding", round_id, client_id)


def commit_seed(seed: bytes, round_id: int, client_id: int) -> bytes:
    """SHA-256 commitment to a self-mask seed (uniform 256-bit, so the hash hides it)."""
    return hashlib.sha256(_DOMAIN + b"commit-b/" + _ids(round_id, client_id) + seed).digest()


# -- Ed25519 identities (malicious-server mode) ------------------------------------------------
def new_identity(entropy: Entropy) -> Ed25519PrivateKey:
    """A fresh Ed25519 identity key (any 32 random bytes are a valid seed, RFC 8032)."""
    return Ed25519PrivateKey.from_private_bytes(entropy(KEY_BYTES))


def identity_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def sign(key: Ed25519PrivateKey, purpose: bytes, data: bytes) -> bytes:
    """Ed25519 signature over ``data`` for one ``purpose`` (domain-separated)."""
    return key.sign(_DOMAIN + b"sign/" + purpose + b"/" + data)


def verify(public: bytes, signature: bytes, purpose: bytes, data: bytes) -> bool:
    """Whether ``signature`` is ``public``'s signature over ``data`` for ``purpose``."""
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(
            signature, _DOMAIN + b"sign/" + purpose + b"/" + data)
    except (InvalidSignature, ValueError):
        return False
    return True


def nonce(kind: int, party: int = 0) -> bytes:
    """A 12-byte GCM nonce, unique per (key, kind, party): each key encrypts one message per kind."""
    return struct.pack("<Iq", kind, party)


# -- the mask generator ---------------------------------------------------------------------
MASK_BLOCK = 65536
"""Words per block when masks are added: 256 KiB of keystream and accumulator stay in cache."""


@functools.lru_cache(maxsize=4)
def _zeros(n_bytes: int) -> bytes:
    """Read-only zero plaintext for the keystream (shared: it holds nothing secret)."""
    return bytes(n_bytes)


class MaskStream:
    """AES-256-CTR keystreams of ``n_words`` uint32 words, produced block by block.

    Adding many masks block by block (all keystreams advance together) keeps the accumulator
    block and the keystream block in cache, so the additions cost little beyond the AES-CTR
    itself, and no mask is ever materialised in full.
    """

    def __init__(self, n_words: int, block: int = MASK_BLOCK) -> None:
        self.n_words = n_words
        self.block = max(1, min(block, n_words))
        self._zeros = memoryview(_zeros(4 * self.block))
        self._out = bytearray(4 * self.block + 15)
        self._view = np.frombuffer(self._out, dtype="<u4", count=self.block)

    def _spans(self):
        for start in range(0, self.n_words, self.block):
            yield start, min(self.block, self.n_words - start)

    def blocks(self, key: bytes):
        """``(start, words)`` for each block of the mask of ``key``; ``words`` is reused."""
        enc = Cipher(_AES(key), _CTR_ZERO).encryptor()
        for start, n in self._spans():
            enc.update_into(self._zeros[:4 * n], self._out)
            yield start, self._view[:n]

    def apply(self, acc: np.ndarray, masks: list[tuple[bytes, int]]) -> None:
        """``acc += sum(sign * mask(key))`` modulo 2**32, in place, for ``(key, sign)`` pairs."""
        encs = [(Cipher(_AES(key), _CTR_ZERO).encryptor(), sign) for key, sign in masks]
        out, view = self._out, self._view
        for start, n in self._spans():
            zeros, words, target = self._zeros[:4 * n], view[:n], acc[start:start + n]
            for enc, sign in encs:
                enc.update_into(zeros, out)
                if sign > 0:
                    np.add(target, words, out=target)
                else:
                    np.subtract(target, words, out=target)

    def add(self, acc: np.ndarray, key: bytes, sign: int = 1) -> None:
        """``acc += sign * mask(key)`` modulo 2**32, in place."""
        self.apply(acc, [(key, sign)])


def mask_words(key: bytes, n_words: int) -> np.ndarray:
    """The whole mask for ``key`` as a fresh array (for tests and one-off use)."""
    out = np.empty(n_words, dtype=np.uint32)
    for start, words in MaskStream(n_words).blocks(key):
        out[start:start + len(words)] = words
    return out
