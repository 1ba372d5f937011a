"""SecAgg+ wire format: versioned, explicit message types, parsed strictly.

Every message starts with one header::

    magic "FSA+" | version u8 | type u8 | round i64 | client i64 | body length u32   (26 bytes)

``client`` is the sender of an upload or the recipient of a download. All integers are
little-endian. Uploads (client -> server) are sealed with AES-256-GCM under the client's
upload key: the header (and, for ``AdvertiseKeys``, the two public keys, which must be
readable to derive that key; and the masked vector, uniformly random already) is associated
data, the rest of the body is encrypted, and the 16-byte tag ends the message. The nonce is
the message type and client id: each key seals one message of each type, and a client's
stage state machine makes sure it never seals a second. Downloads (server -> client) are plain: they carry public keys, ciphertexts
between clients and lists of ids. Parsing never trusts a length field: a message whose size
does not match its declared layout is rejected.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from protocols.errors import MalformedMessage, TamperedMessage, WrongLength
from protocols.secagg.primitives import KEY_BYTES, SIGNATURE_BYTES, TAG_BYTES, VERSION, nonce
from protocols.secagg.shamir import CHUNKS, PRIME, SHARE_BYTES

MAGIC = b"FSA+"
HEADER = struct.Struct("<4sBBqqI")


class Kind(IntEnum):
    """Message types; uploads are even, downloads odd."""

    ROUND_START = 1
    ADVERTISE_KEYS = 2
    NEIGHBOUR_KEYS = 3
    SHARE_KEYS = 4
    FORWARDED_SHARES = 5
    MASKED_INPUT = 6
    UNMASK_REQUEST = 7
    UNMASK_SHARES = 8
    SURVIVOR_SET = 9
    CONSISTENCY = 10


UPLOAD_STAGES: dict[str, Kind] = {
    "advertise_keys": Kind.ADVERTISE_KEYS,
    "share_keys": Kind.SHARE_KEYS,
    "masked_input": Kind.MASKED_INPUT,
    "consistency": Kind.CONSISTENCY,
    "unmask": Kind.UNMASK_SHARES,
}
DOWNLOAD_STAGES: dict[Kind, str] = {
    Kind.ROUND_START: "round_start",
    Kind.NEIGHBOUR_KEYS: "neighbour_keys",
    Kind.FORWARDED_SHARES: "forwarded_shares",
    Kind.SURVIVOR_SET: "survivor_set",
    Kind.UNMASK_REQUEST: "unmask_request",
}
STAGE_OF: dict[Kind, str] = {**{k: s for s, k in UPLOAD_STAGES.items()}, **DOWNLOAD_STAGES}

SHARE_PLAIN = struct.Struct(f"<qq{SHARE_BYTES}s{SHARE_BYTES}s")
"""sender, receiver, share of the self-mask seed ``b``, share of the mask private key."""
SHARE_IDS = struct.Struct("<qq")
"""The first two fields of :data:`SHARE_PLAIN` (sender, receiver)."""
SHARE_RECORD = np.dtype([("sender", "<i8"), ("receiver", "<i8"), ("shares", "<u4", (2, CHUNKS))])
""":data:`SHARE_PLAIN` as a numpy record: both shares as ``(2, CHUNKS)`` field elements."""
assert SHARE_RECORD.itemsize == SHARE_PLAIN.size
SHARE_CIPHER_BYTES = SHARE_PLAIN.size + TAG_BYTES
B_SHARE, SK_SHARE = 0, 1


@dataclass(frozen=True)
class Header:
    kind: int
    round_id: int
    client_id: int
    body_len: int


def header_bytes(kind: Kind, round_id: int, client_id: int, body_len: int) -> bytes:
    return HEADER.pack(MAGIC, VERSION, int(kind), round_id, client_id, body_len)


def read_header(payload: bytes, *, client_id: int, stage: str) -> Header:
    """Parse the header; reject other protocols, versions, and sizes that disagree with it."""
    if len(payload) < HEADER.size:
        raise MalformedMessage(f"{len(payload)} bytes, shorter than the {HEADER.size}-byte header",
                               client_id=client_id, stage=stage)
    magic, version, kind, round_id, cid, body_len = HEADER.unpack_from(payload)
    if magic != MAGIC:
        raise MalformedMessage("not a SecAgg+ message (bad magic)", client_id=client_id, stage=stage)
    if version != VERSION:
        raise MalformedMessage(f"protocol version {version}, expected {VERSION}",
                               client_id=client_id, stage=stage)
    if kind not in Kind._value2member_map_:
        raise MalformedMessage(f"unknown message type {kind}", client_id=client_id, stage=stage)
    if len(payload) != HEADER.size + body_len:
        raise WrongLength(f"{len(payload)} bytes, header declares {HEADER.size + body_len}",
                          client_id=client_id, stage=stage)
    return Header(kind, round_id, cid, body_len)


class Reader:
    """Consumes a body field by field; any shortfall or leftover is a :class:`MalformedMessage`."""

    def __init__(self, data: bytes, *, client_id: int, stage: str) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.client_id = client_id
        self.stage = stage

    def error(self, problem: str) -> MalformedMessage:
        return MalformedMessage(problem, client_id=self.client_id, stage=self.stage)

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise self.error(f"truncated {what}")
        out = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        return out

    def unpack(self, fmt: struct.Struct, what: str) -> tuple:
        return fmt.unpack(self.take(fmt.size, what))

    def ids(self, what: str) -> list[int]:
        (count,) = self.unpack(_COUNT, f"{what} count")
        raw = self.take(8 * count, what)
        return np.frombuffer(raw, dtype="<i8").tolist()

    def done(self) -> None:
        if self.pos != len(self.data):
            raise self.error(f"{len(self.data) - self.pos} unexpected trailing bytes")


_COUNT = struct.Struct("<I")
_ID = struct.Struct("<q")


def _first_repeat(pairs: list[tuple]) -> int:
    """The first key that appears a second time in ``(key, value)`` pairs."""
    seen: set[int] = set()
    for key, _ in pairs:
        if key in seen:
            return key
        seen.add(key)
    raise ValueError("no repeated key")


def _ids(values: list[int]) -> bytes:
    return _COUNT.pack(len(values)) + np.asarray(values, dtype="<i8").tobytes()


# -- uploads: sealing and opening --------------------------------------------------------------
def seal(kind: Kind, round_id: int, client_id: int, key: bytes, body: bytes = b"",
         clear=b"") -> bytes:
    """An upload ``header | clear | encrypted body | tag`` under AES-256-GCM with ``key``.

    ``clear`` (any buffer) is authenticated but not encrypted: public keys, and the masked
    vector, which is uniformly random already. One AES-GCM call seals it all (the header and
    ``clear`` are its associated data).
    """
    clear = memoryview(clear).cast("B")
    header = header_bytes(kind, round_id, client_id, len(clear) + len(body) + TAG_BYTES)
    sealed = AESGCM(key).encrypt(nonce(kind, client_id), body, header + clear)
    return b"".join((header, clear, sealed))


def unseal(payload: bytes, header: Header, key: bytes, *, clear_len: int = 0,
           stage: str) -> bytes:
    """The decrypted body of an upload; a failed tag is a :class:`TamperedMessage`."""
    view = memoryview(payload)
    split = HEADER.size + clear_len
    if len(view) < split + TAG_BYTES:
        raise TamperedMessage("authentication failed: the message is shorter than its tag",
                              client_id=header.client_id, stage=stage)
    try:
        return AESGCM(key).decrypt(nonce(header.kind, header.client_id), view[split:],
                                   view[:split])
    except InvalidTag:
        raise TamperedMessage("authentication failed (AES-GCM tag mismatch): the message was "
                              "altered in transit or sealed under another key",
                              client_id=header.client_id, stage=stage) from None


def tag_of(payload: bytes) -> bytes:
    """The GCM tag that ends an upload: it identifies the message for replay detection."""
    return bytes(payload[-TAG_BYTES:])


# -- bodies -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RoundStart:
    """Server -> each sampled client: the server's key and the vector length (which the client
    checks against its own update). Codec parameters are not sent: each client takes them
    from its own options."""

    server_pk: bytes
    length: int

    LAYOUT = struct.Struct(f"<{KEY_BYTES}sq")

    def encode(self, round_id: int, client_id: int) -> bytes:
        body = self.LAYOUT.pack(self.server_pk, self.length)
        return header_bytes(Kind.ROUND_START, round_id, client_id, len(body)) + body

    @classmethod
    def decode(cls, r: Reader) -> RoundStart:
        out = cls(*r.unpack(cls.LAYOUT, "round parameters"))
        r.done()
        return out


@dataclass(frozen=True)
class AdvertiseKeys:
    """Client -> server: the public keys for share encryption (``c``) and masking (``s``),
    and (malicious-server mode) the client's Ed25519 signature over them."""

    c_pk: bytes
    s_pk: bytes
    signature: bytes = b""

    CLEAR_LEN = 2 * KEY_BYTES

    def clear(self) -> bytes:
        return self.c_pk + self.s_pk + self.signature

    @staticmethod
    def clear_len(signed: bool) -> int:
        return AdvertiseKeys.CLEAR_LEN + (SIGNATURE_BYTES if signed else 0)

    @classmethod
    def parse(cls, clear: bytes) -> AdvertiseKeys:
        return cls(clear[:KEY_BYTES], clear[KEY_BYTES:2 * KEY_BYTES], clear[2 * KEY_BYTES:])


def advertisement(round_id: int, client_id: int, c_pk: bytes, s_pk: bytes) -> bytes:
    """What a client signs when it advertises its keys (malicious-server mode)."""
    return struct.pack("<qq", round_id, client_id) + c_pk + s_pk


def survivor_statement(digest: bytes, survivors: list[int]) -> bytes:
    """What a survivor signs in the consistency check: its transcript and the survivor set."""
    return digest + _ids(sorted(survivors))


@dataclass(frozen=True)
class NeighbourKeys:
    """Server -> client: who took part, the degree and threshold the server uses (a client
    checks them against its own), and its neighbours' public keys (with their signatures in
    malicious-server mode). The graph seed is not sent: every party derives it from the
    transcript."""

    k: int
    t: int
    participants: list[int]
    keys: dict[int, tuple[bytes, bytes]]
    signatures: dict[int, bytes] | None = None

    LAYOUT = struct.Struct("<HHB")
    ENTRY = struct.Struct(f"<q{KEY_BYTES}s{KEY_BYTES}s")
    SIGNED = struct.Struct(f"<q{KEY_BYTES}s{KEY_BYTES}s{SIGNATURE_BYTES}s")

    def encode(self, round_id: int, client_id: int) -> bytes:
        signed = self.signatures is not None
        body = [self.LAYOUT.pack(self.k, self.t, signed), _ids(self.participants),
                _COUNT.pack(len(self.keys))]
        if signed:
            body += [self.SIGNED.pack(c, *self.keys[c], self.signatures[c]) for c in sorted(self.keys)]
        else:
            body += [self.ENTRY.pack(cid, *self.keys[cid]) for cid in sorted(self.keys)]
        body = b"".join(body)
        return header_bytes(Kind.NEIGHBOUR_KEYS, round_id, client_id, len(body)) + body

    @classmethod
    def decode(cls, r: Reader) -> NeighbourKeys:
        k, t, signed = r.unpack(cls.LAYOUT, "graph parameters")
        if signed > 1:
            raise r.error(f"signed flag {signed} is not 0 or 1")
        participants = r.ids("participants")
        (count,) = r.unpack(_COUNT, "key count")
        layout = cls.SIGNED if signed else cls.ENTRY
        keys: dict[int, tuple[bytes, bytes]] = {}
        sigs: dict[int, bytes] = {}
        for cid, c_pk, s_pk, *sig in layout.iter_unpack(r.take(count * layout.size,
                                                                "neighbour keys")):
            if cid in keys:
                raise r.error(f"keys of client {cid} listed twice")
            keys[cid] = (c_pk, s_pk)
            if signed:
                sigs[cid] = sig[0]
        r.done()
        return cls(k, t, participants, keys, sigs if signed else None)


@dataclass(frozen=True)
class ShareKeys:
    """Client -> server: commitment to its self-mask seed, and one ciphertext per neighbour."""

    commitment: bytes
    ciphertexts: dict[int, bytes]

    ENTRY = struct.Struct(f"<q{SHARE_CIPHER_BYTES}s")

    def body(self) -> bytes:
        parts = [self.commitment, _COUNT.pack(len(self.ciphertexts))]
        parts += [self.ENTRY.pack(j, ct) for j, ct in sorted(self.ciphertexts.items())]
        return b"".join(parts)

    @classmethod
    def decode(cls, r: Reader, duplicate) -> ShareKeys:
        commitment = r.take(32, "commitment")
        (count,) = r.unpack(_COUNT, "ciphertext count")
        pairs = list(cls.ENTRY.iter_unpack(r.take(count * cls.ENTRY.size, "share ciphertext")))
        cts = dict(pairs)
        if len(cts) != count:
            raise duplicate(f"two share ciphertexts for client {_first_repeat(pairs)}")
        r.done()
        return cls(commitment, cts)


@dataclass(frozen=True)
class ForwardedShares:
    """Server -> client: the share ciphertexts its neighbours addressed to it."""

    ciphertexts: dict[int, bytes]

    def encode(self, round_id: int, client_id: int) -> bytes:
        parts = [_COUNT.pack(len(self.ciphertexts))]
        parts += [ShareKeys.ENTRY.pack(j, ct) for j, ct in sorted(self.ciphertexts.items())]
        body = b"".join(parts)
        return header_bytes(Kind.FORWARDED_SHARES, round_id, client_id, len(body)) + body

    @classmethod
    def decode(cls, r: Reader) -> ForwardedShares:
        (count,) = r.unpack(_COUNT, "ciphertext count")
        entry = ShareKeys.ENTRY
        pairs = list(entry.iter_unpack(r.take(count * entry.size, "share ciphertext")))
        cts = dict(pairs)
        if len(cts) != count:
            raise r.error(f"two ciphertexts from client {_first_repeat(pairs)}")
        r.done()
        return cls(cts)


@dataclass(frozen=True)
class SurvivorSet:
    """Server -> each survivor (malicious-server mode): every client whose masked input
    arrived. Each survivor signs it with its transcript before any share is released."""

    survivors: list[int]

    def encode(self, round_id: int, client_id: int) -> bytes:
        body = _ids(self.survivors)
        return header_bytes(Kind.SURVIVOR_SET, round_id, client_id, len(body)) + body

    @classmethod
    def decode(cls, r: Reader) -> SurvivorSet:
        survivors = r.ids("survivors")
        r.done()
        return cls(survivors)


_SIGNATURE = struct.Struct(f"<q{SIGNATURE_BYTES}s")


@dataclass(frozen=True)
class UnmaskRequest:
    """Server -> client: which neighbours survived (send their ``b`` share) and which dropped
    (send their mask-key share). A neighbour is in at most one list. In malicious-server mode
    it also carries the survivors' signatures over the survivor set."""

    survivors: list[int]
    dropped: list[int]
    signatures: dict[int, bytes] | None = None

    def encode(self, round_id: int, client_id: int) -> bytes:
        sigs = self.signatures or {}
        body = b"".join([_ids(self.survivors), _ids(self.dropped), _COUNT.pack(len(sigs))]
                        + [_SIGNATURE.pack(c, sigs[c]) for c in sorted(sigs)])
        return header_bytes(Kind.UNMASK_REQUEST, round_id, client_id, len(body)) + body

    @classmethod
    def decode(cls, r: Reader) -> UnmaskRequest:
        survivors, dropped = r.ids("survivors"), r.ids("dropped")
        (count,) = r.unpack(_COUNT, "signature count")
        sigs: dict[int, bytes] = {}
        for _ in range(count):
            cid, sig = r.unpack(_SIGNATURE, "signature")
            if cid in sigs:
                raise r.error(f"two signatures of client {cid}")
            sigs[cid] = sig
        r.done()
        return cls(survivors, dropped, sigs)


@dataclass(frozen=True)
class UnmaskShares:
    """Client -> server: the requested shares, one per listed neighbour, as arrays."""

    owners: np.ndarray  # int64 (m,): whose secret each share is of
    kinds: np.ndarray  # uint8 (m,): B_SHARE or SK_SHARE
    shares: np.ndarray  # uint64 (m, CHUNKS): field elements

    ENTRY = np.dtype([("owner", "<i8"), ("kind", "u1"), ("share", "<u4", (CHUNKS,))])

    def body(self) -> bytes:
        rec = np.empty(len(self.owners), dtype=self.ENTRY)
        rec["owner"], rec["kind"], rec["share"] = self.owners, self.kinds, self.shares
        return _COUNT.pack(len(rec)) + rec.tobytes()

    @classmethod
    def decode(cls, r: Reader, duplicate) -> UnmaskShares:
        (count,) = r.unpack(_COUNT, "share count")
        rec = np.frombuffer(r.take(count * cls.ENTRY.itemsize, "shares"), dtype=cls.ENTRY)
        r.done()
        owners = rec["owner"].astype(np.int64)
        if np.unique(owners).size != count:
            raise duplicate("two shares of one client's secrets")
        if np.any(rec["kind"] > SK_SHARE):
            raise r.error("unknown share kind")
        shares = rec["share"].astype(np.uint64)
        if np.any(shares >= PRIME):
            raise r.error("a share is not an element of the field")
        return cls(owners, rec["kind"].copy(), shares)


_SHARE_AD = MAGIC + bytes([VERSION, Kind.SHARE_KEYS])
_SHARE_AD_IDS = struct.Struct("<qqq")


def share_associated_data(round_id: int, sender: int, receiver: int,
                          sender_keys: tuple[bytes, bytes] | bytes,
                          receiver_keys: tuple[bytes, bytes] | bytes, transcript: bytes) -> bytes:
    """What a share ciphertext is bound to: version, round, stage, both parties, the public
    keys each saw and the sender's transcript hash. A mismatch in any of them (another round,
    a relabelled sender, a swapped key, a different view of the round) fails authentication
    at the receiver. Keys are ``(c, s)`` pairs or already concatenated ``c + s``."""
    if not isinstance(sender_keys, bytes):
        sender_keys = b"".join(sender_keys)
    if not isinstance(receiver_keys, bytes):
        receiver_keys = b"".join(receiver_keys)
    return (_SHARE_AD + _SHARE_AD_IDS.pack(round_id, sender, receiver) + sender_keys
            + receiver_keys + transcript)
