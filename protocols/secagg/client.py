"""One SecAgg+ client: holds its update and its secrets, sees only bytes from the server.

Each method consumes the server's message for a stage and returns the client's upload, so
the same object works in-process or behind a network transport. A client that finds
something wrong (a message for another round, a share ciphertext that fails
authentication, a request that would reveal both secrets of a neighbour, too few
neighbours left) raises a typed :class:`~protocols.errors.ProtocolError` and stops: it sends
nothing more this round, which the server handles as a dropout.

Secrets held here and nowhere else: the two X25519 private keys, the self-mask seed ``b``,
and the shares of neighbours' secrets it received. All come from ``entropy`` (the OS CSPRNG
by default).
"""

from __future__ import annotations

import numpy as np
from cryptography.exceptions import InvalidTag

from protocols.errors import (
    MalformedMessage,
    TamperedMessage,
    TooFewClients,
    WrongLength,
    WrongRound,
)
from protocols.quantize import FixedPointCodec
from protocols.secagg import primitives as cr
from protocols.secagg import shamir
from protocols.secagg.graph import neighbour_graph
from protocols.secagg.messages import (
    B_SHARE,
    HEADER,
    SHARE_PLAIN,
    SK_SHARE,
    STAGE_OF,
    AdvertiseKeys,
    ForwardedShares,
    Kind,
    NeighbourKeys,
    Reader,
    RoundStart,
    ShareKeys,
    UnmaskRequest,
    UnmaskShares,
    read_header,
    seal,
    share_associated_data,
)


def clipped_cap(max_clients: int) -> int:
    """Largest clipped-coordinate count a client reports, so the sum of counts cannot wrap."""
    return (2**32 - 1) // max(1, max_clients)


class SecAggClient:
    """A participant in one round. ``update`` is its float vector; nothing else leaves it masked."""

    def __init__(self, client_id: int, round_id: int, update: np.ndarray, *,
                 rounding_key: bytes, entropy: cr.Entropy = cr.default_entropy) -> None:
        self.id = client_id
        self.round_id = round_id
        self._update = update
        self._rounding_key = rounding_key
        self._entropy = entropy
        self.clipped = 0

    # -- incoming messages ------------------------------------------------------------------
    def _open(self, payload: bytes, kind: Kind) -> Reader:
        stage = STAGE_OF[kind]
        header = read_header(payload, client_id=self.id, stage=stage)
        if header.kind != kind:
            raise MalformedMessage(f"expected a {kind.name} message, got type {header.kind}",
                                   client_id=self.id, stage=stage)
        if header.round_id != self.round_id:
            raise WrongRound(f"message is for round {header.round_id}, not {self.round_id}",
                             client_id=self.id, stage=stage)
        if header.client_id != self.id:
            raise MalformedMessage(f"message is addressed to client {header.client_id}",
                                   client_id=self.id, stage=stage)
        return Reader(payload[HEADER.size:], client_id=self.id, stage=stage)

    # -- stage 1 ------------------------------------------------------------------------------
    def advertise_keys(self, round_start: bytes) -> bytes:
        """Read the round's parameters; answer with two fresh public keys."""
        start = RoundStart.decode(self._open(round_start, Kind.ROUND_START))
        stage = "round_start"
        if start.length != self._update.shape[0]:
            raise WrongLength(f"round expects vectors of length {start.length}, this update has "
                              f"{self._update.shape[0]}", client_id=self.id, stage=stage)
        try:
            self._codec = FixedPointCodec(clip=start.clip, max_clients=start.max_clients)
        except ValueError as err:
            raise MalformedMessage(f"unusable codec parameters: {err}", client_id=self.id,
                                   stage=stage) from None
        self._length = start.length
        self._c_sk, c_pk = cr.new_key_pair(self._entropy)
        self._s_sk, s_pk = cr.new_key_pair(self._entropy)
        self._my_keys = (c_pk, s_pk)
        try:
            self._upload = cr.upload_key(cr.agree(self._c_sk, start.server_pk), self.round_id,
                                         self.id)
        except ValueError:
            raise MalformedMessage("the server's public key is invalid", client_id=self.id,
                                   stage=stage) from None
        keys = AdvertiseKeys(c_pk, s_pk)
        return seal(Kind.ADVERTISE_KEYS, self.round_id, self.id, self._upload, b"", keys.clear())

    # -- stage 2 ------------------------------------------------------------------------------
    def share_keys(self, neighbour_keys: bytes) -> bytes:
        """Check the neighbourhood, Shamir-share ``b`` and the mask key, encrypt one share per
        neighbour, and derive the pairwise mask seeds."""
        msg = NeighbourKeys.decode(self._open(neighbour_keys, Kind.NEIGHBOUR_KEYS))
        stage = "neighbour_keys"

        def bad(problem: str) -> MalformedMessage:
            return MalformedMessage(problem, client_id=self.id, stage=stage)

        participants = msg.participants
        if participants != sorted(set(participants)) or self.id not in participants:
            raise bad("participant list is not sorted, has repeats, or omits this client")
        m = len(participants)
        if not (msg.k == m - 1 or (msg.k % 2 == 0 and 2 <= msg.k < m - 1)):
            raise bad(f"degree {msg.k} is not valid for {m} participants")
        if not 1 <= msg.t <= msg.k:
            raise bad(f"threshold {msg.t} is not in 1..{msg.k}")
        neighbours = neighbour_graph(participants, msg.k, msg.graph_seed)[self.id]
        if set(msg.keys) != set(neighbours):
            raise bad("the keys sent are not those of this client's neighbours in the graph")
        self._t = msg.t
        self._neighbour_keys = msg.keys
        self._x = {c: i + 1 for i, c in enumerate(participants)}

        self._b = self._entropy(shamir.SECRET_BYTES)
        secrets = shamir.secrets_to_field([self._b, cr.private_bytes(self._s_sk)])
        xs = np.array([self._x[j] for j in neighbours], dtype=np.uint64)
        shares = shamir.split(secrets, xs, msg.t, self._entropy)  # (k, 2, CHUNKS)

        self._share_keys: dict[int, object] = {}
        self._pair_keys: dict[int, bytes] = {}
        cts = {}
        for idx, j in enumerate(neighbours):
            c_pk, s_pk = msg.keys[j]
            try:
                aead = cr.share_key(cr.agree(self._c_sk, c_pk), self.round_id, self.id, j)
                self._pair_keys[j] = cr.pair_mask_key(cr.agree(self._s_sk, s_pk), self.round_id,
                                                      self.id, j)
            except ValueError:
                raise bad(f"neighbour {j}'s public key is invalid") from None
            self._share_keys[j] = aead
            plain = SHARE_PLAIN.pack(self.id, j, shamir.share_to_bytes(shares[idx, 0]),
                                     shamir.share_to_bytes(shares[idx, 1]))
            ad = share_associated_data(self.round_id, self.id, j, self._my_keys, msg.keys[j])
            cts[j] = aead.encrypt(cr.nonce(Kind.SHARE_KEYS, self.id), plain, ad)
        body = ShareKeys(cr.commit_seed(self._b, self.round_id, self.id), cts).body()
        return seal(Kind.SHARE_KEYS, self.round_id, self.id, self._upload, body)

    # -- stage 3 ------------------------------------------------------------------------------
    def receive_shares(self, forwarded: bytes) -> None:
        """Decrypt and check the shares the neighbours sent; fix the set masked against."""
        msg = ForwardedShares.decode(self._open(forwarded, Kind.FORWARDED_SHARES))
        self._held: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for j, ct in msg.ciphertexts.items():
            if j not in self._share_keys:
                raise MalformedMessage(f"forwarded a share from client {j}, not a neighbour",
                                       client_id=self.id, stage="forwarded_shares")
            ad = share_associated_data(self.round_id, j, self.id, self._neighbour_keys[j],
                                       self._my_keys)
            try:
                plain = self._share_keys[j].decrypt(cr.nonce(Kind.SHARE_KEYS, j), ct, ad)
            except InvalidTag:
                raise TamperedMessage(
                    f"share ciphertext to client {self.id} failed authentication (AES-GCM): "
                    "altered, replayed from another round, or keys differ",
                    client_id=j, stage="share_keys") from None
            sender, receiver, b_raw, sk_raw = SHARE_PLAIN.unpack(plain)
            b_share, sk_share = shamir.share_from_bytes(b_raw), shamir.share_from_bytes(sk_raw)
            if sender != j or receiver != self.id or b_share is None or sk_share is None:
                raise MalformedMessage(f"share plaintext from client {j} is inconsistent",
                                       client_id=j, stage="share_keys")
            self._held[j] = (b_share, sk_share)
        if len(self._held) < self._t:
            raise TooFewClients(f"only {len(self._held)} neighbours shared keys, the threshold "
                                f"is {self._t}: refusing to send a masked input",
                                client_id=self.id, stage="forwarded_shares")

    def masked_input(self, forwarded: bytes) -> bytes:
        """Quantize the update and add the self mask and the pairwise masks (mod 2**32)."""
        self.receive_shares(forwarded)
        return self.mask()

    def mask(self) -> bytes:
        """The masked-input upload (after :meth:`receive_shares`): the timed masking step."""
        n = self._length
        stream = cr.MaskStream(n + 1)
        acc = np.empty(n + 1, dtype=np.uint32)
        for start, words in stream.blocks(self._rounding_key):
            stop = min(start + len(words), n)
            if stop <= start:
                break  # the last word is the clipped count, not a coordinate
            self._codec.encode_words(self._update[start:stop], words[:stop - start],
                                     out=acc[start:stop])
        self.clipped = self._codec.count_clipped(self._update)
        acc[n] = min(self.clipped, clipped_cap(self._codec.max_clients))
        masks = [(cr.self_mask_key(self._b, self.round_id, self.id), 1)]
        masks += [(self._pair_keys[j], 1 if self.id < j else -1) for j in self._held]
        stream.apply(acc, masks)
        self._update = None  # the plain update is no longer needed
        return seal(Kind.MASKED_INPUT, self.round_id, self.id, self._upload,
                    clear=acc.astype("<u4", copy=False))

    # -- stage 4 ------------------------------------------------------------------------------
    def unmask(self, request: bytes) -> bytes:
        """Send the ``b`` share of each surviving neighbour and the mask-key share of each
        dropped one: never both for the same neighbour."""
        msg = UnmaskRequest.decode(self._open(request, Kind.UNMASK_REQUEST))
        stage = "unmask_request"
        survivors, dropped = set(msg.survivors), set(msg.dropped)
        if len(survivors) != len(msg.survivors) or len(dropped) != len(msg.dropped):
            raise MalformedMessage("a neighbour is listed twice", client_id=self.id, stage=stage)
        if survivors & dropped:
            raise MalformedMessage(
                f"clients {sorted(survivors & dropped)} are listed as both survived and dropped: "
                "answering would reveal both their secrets", client_id=self.id, stage=stage)
        if survivors | dropped != set(self._held):
            raise MalformedMessage("the request does not account for exactly the neighbours "
                                   "this client masked against", client_id=self.id, stage=stage)
        if len(survivors) < self._t:
            raise TooFewClients(f"only {len(survivors)} neighbours survived, the threshold is "
                                f"{self._t}: refusing to help unmask", client_id=self.id,
                                stage=stage)
        owners = sorted(survivors) + sorted(dropped)
        kinds = [B_SHARE] * len(survivors) + [SK_SHARE] * len(dropped)
        rows = [self._held[o][k] for o, k in zip(owners, kinds, strict=True)]
        msg = UnmaskShares(np.array(owners, dtype=np.int64), np.array(kinds, dtype=np.uint8),
                           np.array(rows, dtype=np.uint64).reshape(len(owners), shamir.CHUNKS))
        return seal(Kind.UNMASK_SHARES, self.round_id, self.id, self._upload,
                    msg.body())
