"""One SecAgg+ client: holds its update and its secrets, sees only bytes from the server.

Each method consumes the server's message for a stage and returns the client's upload, so
the same object works in-process or behind a network transport. The client trusts nothing
the server says beyond what it can check:

- **Stages run once each, in order** (a state machine): a second request for any stage, or a
  request out of order, is refused with :class:`~protocols.errors.UnexpectedStage`. So the
  client answers one unmask request per round and never reveals both the self-mask-seed
  share and the mask-key share of the same neighbour, and it never seals two messages under
  one AES-GCM key and nonce.
- **Its own parameters**: the degree ``k``, the threshold ``t``, the codec (its own ``clip``;
  room for every participant) and the ``min_clients`` floor come from its own
  :class:`~protocols.secagg.options.SecAggOptions`; the server's ``k`` and ``t`` must equal
  them, ``2 t > k`` must hold, and fewer participants than ``min_clients`` are refused
  (:class:`~protocols.errors.UnsafeParameters`).
- **A transcript hash** (:class:`~protocols.secagg.transcript.RoundView`) of all round
  parameters, the participant set included, is bound into its pairwise-mask keys and share
  ciphertexts, and the neighbour graph's seed is derived from it.
- In malicious-server mode, its neighbours' key advertisements must carry their registered
  Ed25519 signatures, and before unmasking it signs the survivor set and checks that more than
  half of the participants signed the same set.

A client that finds something wrong raises a typed :class:`~protocols.errors.ProtocolError`
and stops: every later request is refused, which the server sees as a dropout.

Secrets held here and nowhere else: the two X25519 private keys, the self-mask seed ``b``,
the shares of neighbours' secrets it received, the rounding key and (malicious-server mode)
the identity key. Keys and ``b`` come from ``entropy`` (the OS CSPRNG by default), fresh for
every execution of a round; the rounding key from the caller's per-client ``secret``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocols.errors import (
    InconsistentView,
    MalformedMessage,
    ProtocolError,
    TamperedMessage,
    TooFewClients,
    UnexpectedStage,
    UnsafeParameters,
    WrongLength,
    WrongRound,
)
from protocols.secagg import primitives as cr
from protocols.secagg import shamir
from protocols.secagg.messages import (
    B_SHARE,
    HEADER,
    SHARE_IDS,
    SHARE_RECORD,
    SK_SHARE,
    STAGE_OF,
    AdvertiseKeys,
    ForwardedShares,
    Kind,
    NeighbourKeys,
    Reader,
    RoundStart,
    ShareKeys,
    SurvivorSet,
    UnmaskRequest,
    UnmaskShares,
    advertisement,
    read_header,
    seal,
    share_associated_data,
    survivor_statement,
)
from protocols.secagg.options import SecAggOptions
from protocols.secagg.transcript import RoundView


def _inconsistent(sender: int) -> MalformedMessage:
    return MalformedMessage(f"share plaintext from client {sender} is inconsistent",
                            client_id=sender, stage="share_keys")


def clipped_cap(max_clients: int) -> int:
    """Largest clipped-coordinate count a client reports, so the sum of counts cannot wrap."""
    return (2**32 - 1) // max(1, max_clients)


class SecAggClient:
    """A participant in one round. ``update`` is its float vector; nothing else leaves it masked.

    ``options`` are the run's public SecAgg+ parameters as this client holds them; ``run_seed``
    the run's public seed (bound into the transcript); ``secret`` a 32-byte secret only this
    client holds, from which its rounding randomness is keyed (``None``: fresh randomness from
    ``entropy``). Malicious-server mode needs ``identity`` (this client's Ed25519 key,
    registered at enrolment) and ``registry`` (every enrolled client's identity public key).
    """

    def __init__(self, client_id: int, round_id: int, update: np.ndarray, *,
                 options: SecAggOptions | None = None, run_seed: int = 0,
                 secret: bytes | None = None, entropy: cr.Entropy = cr.default_entropy,
                 identity: Ed25519PrivateKey | None = None,
                 registry: Mapping[int, bytes] | None = None, integer: bool = False) -> None:
        self.id = client_id
        self.integer = integer  # the exact integer path: ``update`` holds residues mod 2**32
        self.round_id = round_id
        self.options = options or SecAggOptions()
        if self.options.malicious_server and (identity is None or registry is None):
            raise ValueError("malicious_server mode needs the client's identity key and the "
                             "registry of enrolled identities")
        self.run_seed = run_seed
        self._update = update
        self._entropy = entropy
        self._rounding_key = (cr.rounding_key(secret, round_id, client_id) if secret is not None
                              else entropy(cr.KEY_BYTES))
        self._identity = identity
        self._registry = registry or {}
        self.clipped: int | None = None
        self._steps = ["advertise_keys", "share_keys", "receive_shares", "mask"]
        if self.options.malicious_server:
            self._steps.append("consistency")
        self._steps.append("unmask")
        self._done = 0
        self._failed: ProtocolError | None = None
        self._sealed: set[Kind] = set()

    # -- the state machine ----------------------------------------------------------------
    @property
    def next_step(self) -> str | None:
        """The one step this client will perform next (``None``: finished or stopped)."""
        if self._failed is not None or self._done >= len(self._steps):
            return None
        return self._steps[self._done]

    def _enter(self, step: str) -> None:
        if self._failed is not None:
            raise UnexpectedStage(f"{step} requested after this client stopped "
                                  f"({self._failed.reason})", client_id=self.id, stage=step)
        expected = self.next_step
        if step != expected:
            done = step in self._steps[:self._done]
            problem = "was already answered this round" if done else f"comes before {expected!r}"
            raise UnexpectedStage(f"{step} requested, but it {problem}: each stage runs once, "
                                  "in order", client_id=self.id, stage=step)

    def _run(self, step: str, fn, *args):
        try:
            self._enter(step)
            out = fn(*args)
        except ProtocolError as err:
            if self._failed is None:
                self._failed = err
            raise
        self._done += 1
        return out

    def _seal(self, kind: Kind, body: bytes = b"", clear=b"") -> bytes:
        if kind in self._sealed:  # unreachable through the state machine; never reuse a nonce
            raise UnexpectedStage(f"a second {kind.name} message would reuse an AES-GCM nonce",
                                  client_id=self.id, stage=STAGE_OF[kind])
        self._sealed.add(kind)
        return seal(kind, self.round_id, self.id, self._upload, body, clear)

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
        """Read the server's key and the length; answer with two fresh public keys."""
        return self._run("advertise_keys", self._advertise_keys, round_start)

    def _advertise_keys(self, round_start: bytes) -> bytes:
        start = RoundStart.decode(self._open(round_start, Kind.ROUND_START))
        stage = "round_start"
        if start.length != self._update.shape[0]:
            raise WrongLength(f"round expects vectors of length {start.length}, this update has "
                              f"{self._update.shape[0]}", client_id=self.id, stage=stage)
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
        signature = b""
        if self.options.malicious_server:
            signature = cr.sign(self._identity, b"advertise",
                                advertisement(self.round_id, self.id, c_pk, s_pk))
        keys = AdvertiseKeys(c_pk, s_pk, signature)
        return self._seal(Kind.ADVERTISE_KEYS, clear=keys.clear())

    # -- stage 2 ------------------------------------------------------------------------------
    def share_keys(self, neighbour_keys: bytes) -> bytes:
        """Fix this client's view of the round (its own parameters and the announced
        participants), check the neighbourhood, Shamir-share ``b`` and the mask key, encrypt
        one share per neighbour, and derive the pairwise mask seeds."""
        return self._run("share_keys", self._share_keys, neighbour_keys)

    def _share_keys(self, neighbour_keys: bytes) -> bytes:
        msg = NeighbourKeys.decode(self._open(neighbour_keys, Kind.NEIGHBOUR_KEYS))
        stage = "neighbour_keys"

        def bad(problem: str) -> MalformedMessage:
            return MalformedMessage(problem, client_id=self.id, stage=stage)

        participants = msg.participants
        if participants != sorted(set(participants)) or self.id not in participants:
            raise bad("participant list is not sorted, has repeats, or omits this client")
        view = RoundView.derive(self.options, self.round_id, self.run_seed, self._length,
                                participants, integer=self.integer)
        if (msg.k, msg.t) != (view.k, view.t):
            raise UnsafeParameters(
                f"the server asks for degree {msg.k} and threshold {msg.t}; this client's own "
                f"options give {view.k} and {view.t} for {len(participants)} participants",
                client_id=self.id, stage=stage)
        view.check_policy(self.options, client_id=self.id, stage=stage)
        if (msg.signatures is not None) != self.options.malicious_server:
            raise UnsafeParameters("key advertisements are signed only in malicious_server "
                                   "mode, and must be there", client_id=self.id, stage=stage)
        neighbours = view.graph[self.id]
        if set(msg.keys) != set(neighbours):
            raise bad("the keys sent are not those of this client's neighbours in the graph")
        if msg.signatures is not None:
            for j in neighbours:
                public = self._registry.get(j)
                signed = advertisement(self.round_id, j, *msg.keys[j])
                if public is None or not cr.verify(public, msg.signatures[j], b"advertise",
                                                   signed):
                    raise TamperedMessage(f"client {j}'s key advertisement does not carry its "
                                          "registered signature", client_id=j, stage=stage)
        self._view = view
        self._neighbour_keys = keys = msg.keys

        self._b = self._entropy(shamir.SECRET_BYTES)
        secrets = shamir.secrets_to_field([self._b, cr.private_bytes(self._s_sk)])
        # a participant's share point is its 1-based position in the sorted participant list
        xs = np.searchsorted(np.asarray(participants, dtype=np.int64), neighbours) + 1
        shares = shamir.split(secrets, xs.astype(np.uint64), view.t, self._entropy)
        raw = shares.astype("<u4").tobytes()  # (k, 2, CHUNKS): b's share, then the key's
        step = 2 * shamir.SHARE_BYTES

        rid, me, digest = self.round_id, self.id, view.digest
        try:
            aeads, pair_keys = cr.neighbour_keys(self._c_sk, self._s_sk, me, neighbours,
                                                 [keys[j] for j in neighbours], digest, rid)
        except cr.InvalidPeerKey as err:
            raise bad(f"neighbour {neighbours[err.index]}'s public key is invalid") from None
        self._aeads = dict(zip(neighbours, aeads, strict=True))
        self._pair_keys = dict(zip(neighbours, pair_keys, strict=True))
        nonce = cr.nonce(Kind.SHARE_KEYS, me)
        mine = b"".join(self._my_keys)
        cts = {}
        for idx, (j, aead) in enumerate(zip(neighbours, aeads, strict=True)):
            plain = SHARE_IDS.pack(me, j) + raw[idx * step:(idx + 1) * step]  # SHARE_PLAIN
            ad = share_associated_data(rid, me, j, mine, keys[j], digest)
            cts[j] = aead.encrypt(nonce, plain, ad)
        body = ShareKeys(cr.commit_seed(self._b, rid, me), cts).body()
        return self._seal(Kind.SHARE_KEYS, body)

    # -- stage 3 ------------------------------------------------------------------------------
    def receive_shares(self, forwarded: bytes) -> None:
        """Decrypt and check the shares the neighbours sent; fix the set masked against."""
        return self._run("receive_shares", self._receive_shares, forwarded)

    def _receive_shares(self, forwarded: bytes) -> None:
        msg = ForwardedShares.decode(self._open(forwarded, Kind.FORWARDED_SHARES))
        rid, me, digest = self.round_id, self.id, self._view.digest
        mine = b"".join(self._my_keys)
        senders: list[int] = []
        plains: list[bytes] = []
        problem: ProtocolError | None = None
        for j, ct in msg.ciphertexts.items():
            aead = self._aeads.get(j)
            if aead is None:
                problem = MalformedMessage(f"forwarded a share from client {j}, not a "
                                           "neighbour", client_id=me, stage="forwarded_shares")
                break
            ad = share_associated_data(rid, j, me, self._neighbour_keys[j], mine, digest)
            try:
                plain = aead.decrypt(cr.nonce(Kind.SHARE_KEYS, j), ct, ad)
            except InvalidTag:
                problem = TamperedMessage(
                    f"share ciphertext to client {me} failed authentication (AES-GCM): "
                    "altered, replayed from another round, or keys or views differ",
                    client_id=j, stage="share_keys")
                break
            if SHARE_IDS.unpack_from(plain) != (j, me):
                problem = _inconsistent(j)
                break
            senders.append(j)
            plains.append(plain)
        # every share element must be in GF(p); checked at once, reported in arrival order
        # (before a later problem, as a share-by-share check would)
        rows = np.frombuffer(b"".join(plains), dtype=SHARE_RECORD)["shares"].astype(np.uint64)
        outside = np.any(rows >= shamir.PRIME, axis=(1, 2))
        if outside.any():
            raise _inconsistent(senders[int(np.argmax(outside))])
        if problem is not None:
            raise problem
        self._held: dict[int, tuple[np.ndarray, np.ndarray]] = {
            j: (rows[i, 0], rows[i, 1]) for i, j in enumerate(senders)}
        if len(self._held) < self._view.t:
            raise TooFewClients(f"only {len(self._held)} neighbours shared keys, the threshold "
                                f"is {self._view.t}: refusing to send a masked input",
                                client_id=self.id, stage="forwarded_shares")

    def masked_input(self, forwarded: bytes) -> bytes:
        """Quantize the update and add the self mask and the pairwise masks (mod 2**32)."""
        self.receive_shares(forwarded)
        return self.mask()

    def mask(self) -> bytes:
        """The masked-input upload (after :meth:`receive_shares`): the timed masking step."""
        return self._run("mask", self._mask)

    def _mask(self) -> bytes:
        view = self._view
        n, words = self._length, view.words
        codec = view.codec
        stream = cr.MaskStream(words)
        acc = np.empty(words, dtype=np.uint32)
        if view.integer:  # residues as they are: no codec, no rounding, no clipped count
            acc[:n] = self._update
        for start, block in ([] if view.integer else stream.blocks(self._rounding_key)):
            stop = min(start + len(block), n)
            if stop <= start:
                break  # the last word is the clipped count, not a coordinate
            codec.encode_words(self._update[start:stop], block[:stop - start],
                               out=acc[start:stop])
        if view.report_clipped:
            self.clipped = codec.count_clipped(self._update)
            acc[n] = min(self.clipped, clipped_cap(codec.max_clients))
        masks = [(cr.self_mask_key(self._b, self.round_id, self.id), 1)]
        masks += [(self._pair_keys[j], 1 if self.id < j else -1) for j in self._held]
        stream.apply(acc, masks)
        self._update = None  # the plain update is no longer needed
        return self._seal(Kind.MASKED_INPUT, clear=acc.astype("<u4", copy=False))

    # -- stage 3b (malicious-server mode) ----------------------------------------------------
    def consistency(self, survivor_set: bytes) -> bytes:
        """Sign the survivor set with this client's transcript: its signature is what lets
        other clients check that everyone was shown the same set."""
        return self._run("consistency", self._consistency, survivor_set)

    def _consistency(self, survivor_set: bytes) -> bytes:
        msg = SurvivorSet.decode(self._open(survivor_set, Kind.SURVIVOR_SET))
        stage = "survivor_set"
        u3 = msg.survivors
        if u3 != sorted(set(u3)) or self.id not in u3:
            raise MalformedMessage("survivor set is not sorted, has repeats, or omits this "
                                   "client", client_id=self.id, stage=stage)
        if not set(u3) <= set(self._view.participants):
            raise MalformedMessage("survivor set names clients that did not take part",
                                   client_id=self.id, stage=stage)
        self._check_quorum(len(u3), "survivors", stage)
        self._survivors = u3
        signature = cr.sign(self._identity, b"survivors",
                            survivor_statement(self._view.digest, u3))
        return self._seal(Kind.CONSISTENCY, signature)

    def _check_quorum(self, count: int, what: str, stage: str) -> None:
        """More than half of the participants (and at least ``min_clients``): two disjoint
        sets of honest signers cannot both reach it."""
        m = len(self._view.participants)
        need = max(m // 2 + 1, self.options.min_clients)
        if count < need:
            raise InconsistentView(f"{count} {what} of {m} participants; at least {need} "
                                   "needed (a majority and min_clients)", client_id=self.id,
                                   stage=stage)

    # -- stage 4 ------------------------------------------------------------------------------
    def unmask(self, request: bytes) -> bytes:
        """Send the ``b`` share of each surviving neighbour and the mask-key share of each
        dropped one, once per round: never both for the same neighbour."""
        return self._run("unmask", self._unmask, request)

    def _unmask(self, request: bytes) -> bytes:
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
        if len(survivors) < self._view.t:
            raise TooFewClients(f"only {len(survivors)} neighbours survived, the threshold is "
                                f"{self._view.t}: refusing to help unmask", client_id=self.id,
                                stage=stage)
        if self.options.malicious_server:
            self._check_signed_view(survivors, msg.signatures or {}, stage)
        owners = sorted(survivors) + sorted(dropped)
        kinds = [B_SHARE] * len(survivors) + [SK_SHARE] * len(dropped)
        rows = [self._held[o][k] for o, k in zip(owners, kinds, strict=True)]
        out = UnmaskShares(np.array(owners, dtype=np.int64), np.array(kinds, dtype=np.uint8),
                           np.array(rows, dtype=np.uint64).reshape(len(owners), shamir.CHUNKS))
        return self._seal(Kind.UNMASK_SHARES, out.body())

    def _check_signed_view(self, survivors: set[int], signatures: Mapping[int, bytes],
                           stage: str) -> None:
        """The request must follow the survivor set this client signed, and more than half of
        the participants must have signed that same set under the same transcript."""
        u3 = set(self._survivors)
        if survivors != set(self._held) & u3:
            raise InconsistentView("the survivors named differ from the survivor set this "
                                   "client signed", client_id=self.id, stage=stage)
        statement = survivor_statement(self._view.digest, self._survivors)
        valid = 0
        for cid, sig in signatures.items():
            public = self._registry.get(cid)
            if cid not in u3 or public is None or not cr.verify(public, sig, b"survivors",
                                                                statement):
                raise InconsistentView(f"client {cid}'s signature is not on the survivor set "
                                       "this client signed", client_id=self.id, stage=stage)
            valid += 1
        self._check_quorum(valid, "valid signatures on the survivor set", stage)
