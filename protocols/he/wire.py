"""The versioned frame around every HE message, checked before TenSEAL parses anything.

Layout (little-endian)::

    header   magic "FFHE" | version u8 | kind u8 | scheme u8 | flags u8 | round i64 |
             party i64 | length u64 | chunks u32 | scale f64 | context fingerprint 16 bytes |
             header CRC-32 u32
    table    per chunk: byte length u32, CRC-32 u32
    extra    aggregate request and decrypted sum: the contributors' ids, i64 each (``party``
             holds their count)
    bodies   the chunks

Kinds: ``UPDATE`` (client -> server -> key holder: one client's ciphertext chunks),
``RECEIPT`` (client -> key holder: the update's SHA-256 digest and its HMAC tag), ``OPENING``
(key holder -> clients: the round's public context, parameters and Ed25519 signature),
``AGGREGATE`` (server -> key holder: the request to decrypt the round, with the contributor
list; no chunks) and ``SUM`` (key holder -> server: the decrypted sum). ``round`` is always the
key holder's round number. ``party`` is the sender's client id in an update or receipt and
the contributor count in an aggregate request or a sum. The header CRC covers header, table
and extra; each chunk has its own CRC. CRCs catch corruption in transit; authenticity comes
from the receipts and the signed openings (see :mod:`protocols.he.crypto`).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from protocols.errors import (
    ContextMismatch,
    MalformedMessage,
    TamperedMessage,
    WrongLength,
    WrongRound,
)

MAGIC = b"FFHE"
VERSION = 2

UPDATE = 1  # client -> server: one client's encrypted update
AGGREGATE = 2  # server -> key holder: decrypt this round's sum of these contributors
SUM = 3  # key holder -> server: the decrypted sum
OPENING = 4  # key holder -> clients (through the server): the round's signed public context
RECEIPT = 5  # client -> key holder: digest of the client's update, authenticated
_KIND_NAMES = {UPDATE: "an encrypted update", AGGREGATE: "an aggregate request",
               SUM: "a decrypted sum", OPENING: "a round opening", RECEIPT: "a receipt"}
_WITH_CONTRIBUTORS = (AGGREGATE, SUM)

SCHEME_CODES = {"ckks": 1, "bfv": 2}
_SCHEME_NAMES = {v: k for k, v in SCHEME_CODES.items()}

_HEAD = struct.Struct("<4sBBBBqqQId16s")
_CRC = struct.Struct("<I")
_ENTRY = struct.Struct("<II")
_ID = struct.Struct("<q")
HEADER_SIZE = _HEAD.size + _CRC.size


@dataclass(frozen=True)
class Expect:
    """What the receiver requires of a frame; any mismatch is a typed error."""

    kind: int
    scheme: str
    round_id: int
    length: int | None  # None: any (the receiver checks it against ``n_chunks`` itself)
    n_chunks: int | None
    scale: float | None  # None: any (BFV aggregates: the key holder ignores the codec scale)
    fingerprint: bytes
    party: int | None = None  # the sender's id (updates); None: not checked


@dataclass(frozen=True)
class Frame:
    """A parsed frame whose header and table are checked; chunk checksums are checked on access.

    :meth:`chunk` copies one body out of the payload and verifies its CRC right before the
    caller parses it, so each ciphertext passes through the cache once instead of twice
    (checking every CRC first, then parsing, read a whole multi-megabyte message twice).
    """

    party: int
    length: int
    scale: float
    crcs: list[int]
    contributors: tuple[int, ...]
    _payload: bytes = field(repr=False)
    _spans: list[tuple[int, int]] = field(repr=False)
    _where: dict = field(repr=False)

    @property
    def n_chunks(self) -> int:
        return len(self._spans)

    def chunk(self, i: int) -> bytes:
        """Body ``i``, after its checksum matched (``TamperedMessage`` otherwise)."""
        start, size = self._spans[i]
        body = self._payload[start:start + size]
        if zlib.crc32(body) != self.crcs[i]:
            raise TamperedMessage(f"chunk {i} checksum mismatch: the ciphertext was corrupted "
                                  "in transit", **self._where)
        return body

    @property
    def chunks(self) -> list[bytes]:
        """Every body, checked."""
        return [self.chunk(i) for i in range(self.n_chunks)]


def encode(kind: int, *, scheme: str, round_id: int, party: int, length: int, scale: float,
           fingerprint: bytes, chunks: Sequence[bytes],
           contributors: Sequence[int] = ()) -> bytes:
    """Frame ``chunks`` (already serialized) with header, table and CRCs."""
    table = b"".join(_ENTRY.pack(len(c), zlib.crc32(c)) for c in chunks)
    extra = b"".join(_ID.pack(cid) for cid in contributors)
    head = _HEAD.pack(MAGIC, VERSION, kind, SCHEME_CODES[scheme], 0, round_id, party, length,
                      len(chunks), scale, fingerprint)
    crc = zlib.crc32(extra, zlib.crc32(table, zlib.crc32(head)))
    return b"".join((head, _CRC.pack(crc), table, extra, *chunks))


def decode(payload: bytes, expect: Expect, *, client_id: int | None, stage: str) -> Frame:
    """Parse and check a frame; raise the typed error naming ``client_id`` and ``stage``.

    Checks run from the cheapest to the most expensive: everything that can be checked on the
    header and the table is checked here, before any chunk is touched; each chunk's checksum
    when it is read (:meth:`Frame.chunk`).
    """
    where = {"client_id": client_id, "stage": stage}
    if len(payload) < HEADER_SIZE:
        raise MalformedMessage(f"message of {len(payload)} bytes is shorter than the "
                               f"{HEADER_SIZE}-byte header", **where)
    (magic, version, kind, scheme, _flags, rnd, party, length, n_chunks, scale,
     fingerprint) = _HEAD.unpack_from(payload)
    if magic != MAGIC:
        raise MalformedMessage("not an HE message (bad magic bytes)", **where)
    if version != VERSION:
        raise MalformedMessage(f"message format version {version}, expected {VERSION}", **where)
    if kind != expect.kind:
        raise MalformedMessage(f"expected {_KIND_NAMES[expect.kind]}, got message kind {kind}",
                               **where)
    n_extra = party if kind in _WITH_CONTRIBUTORS else 0
    if n_extra < 0:
        raise MalformedMessage(f"negative contributor count {n_extra}", **where)
    table_end = HEADER_SIZE + _ENTRY.size * n_chunks
    extra_end = table_end + _ID.size * n_extra
    if len(payload) < extra_end:
        raise WrongLength(f"message of {len(payload)} bytes is truncated: its header announces "
                          f"{n_chunks} chunks and {n_extra} contributors", **where)
    (crc,) = _CRC.unpack_from(payload, _HEAD.size)
    view = memoryview(payload)
    actual = zlib.crc32(view[table_end:extra_end], zlib.crc32(
        view[HEADER_SIZE:table_end], zlib.crc32(view[:_HEAD.size])))
    if crc != actual:
        raise TamperedMessage("header checksum mismatch: the header was corrupted in transit",
                              **where)
    if scheme != SCHEME_CODES[expect.scheme]:
        raise ContextMismatch(f"encrypted with scheme {_SCHEME_NAMES.get(scheme, scheme)!r}, "
                              f"expected {expect.scheme!r}", **where)
    if fingerprint != expect.fingerprint:
        raise ContextMismatch(f"encrypted under another context (fingerprint {fingerprint.hex()},"
                              f" expected {expect.fingerprint.hex()}): other keys or parameters",
                              **where)
    if expect.scale is not None and scale != expect.scale:
        raise ContextMismatch(f"encoded with scale {scale!r}, expected {expect.scale!r}", **where)
    if rnd != expect.round_id:
        raise WrongRound(f"message is for round {rnd}, not {expect.round_id}", **where)
    if expect.party is not None and party != expect.party:
        if kind in (UPDATE, RECEIPT):
            raise MalformedMessage(f"message claims to be from client {party}", **where)
        raise MalformedMessage(f"message covers {party} contributors, expected {expect.party}",
                               **where)
    if expect.length is not None and length != expect.length:
        raise WrongLength(f"vector length {length}, expected {expect.length}", **where)
    if expect.n_chunks is not None and n_chunks != expect.n_chunks:
        raise WrongLength(f"{n_chunks} ciphertext chunks, expected {expect.n_chunks} for "
                          f"{expect.length} values", **where)
    entries = [_ENTRY.unpack_from(payload, HEADER_SIZE + _ENTRY.size * i) for i in range(n_chunks)]
    total = extra_end + sum(size for size, _ in entries)
    if len(payload) != total:
        raise WrongLength(f"message is {len(payload)} bytes, its table announces {total}",
                          **where)
    spans, offset = [], extra_end
    for size, _ in entries:
        spans.append((offset, size))
        offset += size
    contributors = tuple(_ID.unpack_from(payload, table_end + _ID.size * i)[0]
                         for i in range(n_extra))
    return Frame(party=party, length=length, scale=scale, crcs=[crc for _, crc in entries],
                 contributors=contributors, _payload=payload, _spans=spans, _where=where)
