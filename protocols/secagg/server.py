"""The SecAgg+ server: relays keys and shares, sums masked inputs, unmasks only the total.

It sees bytes only. Every upload is checked in this order, and the first failure is recorded
as the client's typed error (the client is then treated as dropped for the rest of the round):

1. replay / duplicate: the upload's GCM tag was already accepted (earlier round or stage:
   :class:`ReplayedMessage`; same stage: :class:`DuplicateMessage`);
2. header: magic, version, size (:class:`MalformedMessage`, :class:`WrongLength`), type
   expected at this stage, sender, round (:class:`WrongRound`), a second message from the
   same client (:class:`DuplicateMessage`);
3. authentication under the client's upload key (:class:`TamperedMessage`);
4. content: exactly the expected neighbours, lengths and share kinds.

Between stages the server decides who goes on and aborts with :class:`TooFewClients`
*before* asking for any unmasking share when the survivors cannot be unmasked safely.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from protocols.errors import (
    DuplicateMessage,
    MalformedMessage,
    ProtocolError,
    ReplayedMessage,
    TooFewClients,
    WrongLength,
    WrongRound,
)
from protocols.quantize import FixedPointCodec
from protocols.secagg import primitives as cr
from protocols.secagg import shamir
from protocols.secagg.graph import is_connected, neighbour_graph
from protocols.secagg.messages import (
    B_SHARE,
    HEADER,
    SK_SHARE,
    UPLOAD_STAGES,
    AdvertiseKeys,
    ForwardedShares,
    NeighbourKeys,
    Reader,
    RoundStart,
    ShareKeys,
    UnmaskRequest,
    UnmaskShares,
    read_header,
    tag_of,
    unseal,
)
from protocols.secagg.options import SecAggOptions

STAGES = tuple(UPLOAD_STAGES)


class ReplayCache:
    """GCM tags of accepted uploads for the last ``rounds`` rounds: a tag identifies one
    authenticated message, so seeing it again means the message was replayed or copied."""

    def __init__(self, rounds: int = 16) -> None:
        self.rounds = rounds
        self._by_round: dict[int, dict[bytes, tuple[str, int]]] = {}

    def find(self, tag: bytes) -> tuple[int, str, int] | None:
        for rnd, tags in self._by_round.items():
            hit = tags.get(tag)
            if hit is not None:
                return rnd, hit[0], hit[1]
        return None

    def add(self, round_id: int, stage: str, client_id: int, tag: bytes) -> None:
        self._by_round.setdefault(round_id, {})[tag] = (stage, client_id)
        for old in sorted(self._by_round)[:-self.rounds]:
            del self._by_round[old]


@dataclass
class ServerOutcome:
    """What the server learned: the total, who is in it, who left, and why."""

    total: np.ndarray
    clipped: int
    contributors: tuple[int, ...]
    dropped: tuple[int, ...]
    rejected: dict[int, ProtocolError]
    timings: dict[str, float] = field(default_factory=dict)


class SecAggServer:
    """One round of SecAgg+ from the server's side. Call the stage methods in order."""

    def __init__(self, round_id: int, clients: Sequence[int], length: int,
                 options: SecAggOptions, *, graph_seed: bytes, replay: ReplayCache | None = None,
                 entropy: cr.Entropy = cr.default_entropy) -> None:
        self.round_id = round_id
        self.sampled = tuple(sorted(clients))
        self.length = length
        self.options = options
        self.graph_seed = graph_seed
        self.replay = replay if replay is not None else ReplayCache()
        self.codec = FixedPointCodec(clip=options.clip, max_clients=len(self.sampled))
        self._sk, self.public_key = cr.new_key_pair(entropy)
        self.rejected: dict[int, ProtocolError] = {}
        self.dropped: set[int] = set()
        self.timings: dict[str, float] = {}
        self._stage: str | None = None
        self._expected: set[int] = set()
        self._received: dict[int, object] = {}
        self._upload: dict[int, object] = {}
        self._keys: dict[int, tuple[bytes, bytes]] = {}

    # -- bookkeeping ------------------------------------------------------------------------
    def _time(self, name: str, start: float) -> None:
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start

    def _open_stage(self, stage: str, expected: set[int]) -> None:
        self._stage = stage
        self._expected = set(expected)
        self._received = {}

    def _close_stage(self) -> dict[int, object]:
        """The valid messages of the stage; clients that sent nothing valid are out."""
        got = self._received
        for cid in self._expected - set(got):
            if cid not in self.rejected:
                self.dropped.add(cid)
        self._stage = None
        return got

    # -- uploads --------------------------------------------------------------------------
    def receive(self, stage: str, client_id: int, payload: bytes) -> ProtocolError | None:
        """Take one upload; on a problem record the typed error, exclude the client, return it."""
        start = time.perf_counter()
        try:
            self._receive(stage, client_id, payload)
            return None
        except ProtocolError as err:
            self._received.pop(client_id, None)
            self._expected.discard(client_id)
            self.rejected.setdefault(client_id, err)
            return err
        finally:
            self._time(f"receive_{stage}", start)

    def _receive(self, stage: str, cid: int, payload: bytes) -> None:
        if stage != self._stage:
            raise RuntimeError(f"upload for stage {stage!r} while stage {self._stage!r} is open")
        if cid not in self._expected:
            raise MalformedMessage("not expected at this stage (dropped, rejected or not sampled)",
                                   client_id=cid, stage=stage)
        kind = UPLOAD_STAGES[stage]
        if len(payload) >= HEADER.size + cr.TAG_BYTES:
            seen = self.replay.find(tag_of(payload))
            if seen is not None:
                rnd, old_stage, old_cid = seen
                if rnd == self.round_id and old_stage == stage:
                    who = "this client" if old_cid == cid else f"client {old_cid}"
                    raise DuplicateMessage(f"a copy of the {stage} message {who} already sent",
                                           client_id=cid, stage=stage)
                raise ReplayedMessage(f"replay of client {old_cid}'s {old_stage} message of "
                                      f"round {rnd}", client_id=cid, stage=stage)
        header = read_header(payload, client_id=cid, stage=stage)
        if header.kind != kind:
            raise MalformedMessage(f"expected a {kind.name} message, got type {header.kind}",
                                   client_id=cid, stage=stage)
        if header.client_id != cid:
            raise MalformedMessage(f"message claims to be from client {header.client_id}",
                                   client_id=cid, stage=stage)
        if header.round_id != self.round_id:
            raise WrongRound(f"message is for round {header.round_id}, not {self.round_id}",
                             client_id=cid, stage=stage)
        if cid in self._received:
            raise DuplicateMessage(f"a second {stage} message", client_id=cid, stage=stage)
        handler = getattr(self, f"_take_{stage}")
        self._received[cid] = handler(cid, header, payload)
        self.replay.add(self.round_id, stage, cid, tag_of(payload))

    def _take_advertise_keys(self, cid, header, payload) -> AdvertiseKeys:
        stage = "advertise_keys"
        if header.body_len != AdvertiseKeys.CLEAR_LEN + cr.TAG_BYTES:
            raise WrongLength(f"body of {header.body_len} bytes, expected "
                              f"{AdvertiseKeys.CLEAR_LEN + cr.TAG_BYTES}", client_id=cid,
                              stage=stage)
        clear = payload[HEADER.size:HEADER.size + AdvertiseKeys.CLEAR_LEN]
        keys = AdvertiseKeys(clear[:cr.KEY_BYTES], clear[cr.KEY_BYTES:])
        try:
            aead = cr.upload_key(cr.agree(self._sk, keys.c_pk), self.round_id, cid)
            cr.agree(self._sk, keys.s_pk)  # rejects degenerate (low-order) keys up front
        except ValueError:
            raise MalformedMessage("invalid X25519 public key", client_id=cid, stage=stage) from None
        unseal(payload, header, aead, clear_len=AdvertiseKeys.CLEAR_LEN, stage=stage)
        self._upload[cid] = aead
        return keys

    def _body(self, cid, header, payload, stage) -> Reader:
        body = unseal(payload, header, self._upload[cid], stage=stage)
        return Reader(body, client_id=cid, stage=stage)

    def _take_share_keys(self, cid, header, payload) -> ShareKeys:
        stage = "share_keys"
        r = self._body(cid, header, payload, stage)
        msg = ShareKeys.decode(r, lambda p: DuplicateMessage(p, client_id=cid, stage=stage))
        want = set(self.graph[cid])
        if set(msg.ciphertexts) != want:
            missing, extra = sorted(want - set(msg.ciphertexts)), sorted(set(msg.ciphertexts) - want)
            raise MalformedMessage(f"share ciphertexts must go to exactly its neighbours "
                                   f"(missing {missing}, not neighbours {extra})",
                                   client_id=cid, stage=stage)
        return msg

    def _take_masked_input(self, cid, header, payload) -> np.ndarray:
        stage = "masked_input"
        words = self.length + 1
        if header.body_len != 4 * words + cr.TAG_BYTES:
            got = (header.body_len - cr.TAG_BYTES) / 4
            raise WrongLength(f"masked vector of {got:g} words, expected {words} "
                              f"({self.length} parameters + clipped count)",
                              client_id=cid, stage=stage)
        unseal(payload, header, self._upload[cid], clear_len=4 * words, stage=stage)
        return np.frombuffer(payload, dtype="<u4", count=words, offset=HEADER.size)

    def _take_unmask(self, cid, header, payload) -> UnmaskShares:
        stage = "unmask"
        r = self._body(cid, header, payload, stage)
        msg = UnmaskShares.decode(r, lambda p: DuplicateMessage(p, client_id=cid, stage=stage))
        survivors, dropped = self._requests[cid]
        want = {u: B_SHARE for u in survivors} | {d: SK_SHARE for d in dropped}
        owners = msg.owners.tolist()
        if set(owners) != set(want):
            raise MalformedMessage("shares must be exactly those requested", client_id=cid,
                                   stage=stage)
        expected = np.fromiter((want[o] for o in owners), dtype=np.uint8, count=len(owners))
        if np.any(expected != msg.kinds):
            bad = owners[int(np.argmax(expected != msg.kinds))]
            raise MalformedMessage(f"sent the wrong kind of share for client {bad}",
                                   client_id=cid, stage=stage)
        return msg

    # -- stage transitions --------------------------------------------------------------------
    def _need(self, count: int, stage: str, what: str) -> None:
        if count < self.options.min_clients:
            raise TooFewClients(f"{count} {what}, at least min_clients = "
                                f"{self.options.min_clients} required", stage=stage)

    def round_start(self) -> dict[int, bytes]:
        """Round parameters for every sampled client; opens ``advertise_keys``."""
        start = time.perf_counter()
        msg = RoundStart(self.public_key, self.length, self.options.clip, len(self.sampled))
        out = {cid: msg.encode(self.round_id, cid) for cid in self.sampled}
        self._open_stage("advertise_keys", set(self.sampled))
        self._time("round_start", start)
        return out

    def neighbour_keys(self) -> dict[int, bytes]:
        """Close ``advertise_keys``: build the graph over those who answered, send each its
        neighbours' keys; opens ``share_keys``."""
        start = time.perf_counter()
        self._keys = self._close_stage()
        u1 = sorted(self._keys)
        self._need(len(u1), "advertise_keys", "clients advertised keys")
        self.k = self.options.degree(len(u1))
        self.t = self.options.shares_needed(self.k)
        if self.t > self.k:
            raise TooFewClients(f"{len(u1)} clients give {self.k} neighbours each, fewer than "
                                f"the threshold {self.t}", stage="advertise_keys")
        self.participants = u1
        self.graph = neighbour_graph(u1, self.k, self.graph_seed)
        self.x = {c: i + 1 for i, c in enumerate(u1)}
        out = {}
        for cid in u1:
            keys = {j: (self._keys[j].c_pk, self._keys[j].s_pk) for j in self.graph[cid]}
            out[cid] = NeighbourKeys(self.k, self.t, self.graph_seed, u1, keys).encode(
                self.round_id, cid)
        self._open_stage("share_keys", set(u1))
        self._time("neighbour_keys", start)
        return out

    def forward_shares(self) -> dict[int, bytes]:
        """Close ``share_keys``: keep clients with at least ``t`` neighbours that shared (a
        client with fewer could never be unmasked), forward each its ciphertexts; opens
        ``masked_input``."""
        start = time.perf_counter()
        shared: dict[int, ShareKeys] = self._close_stage()
        u2 = set(shared)
        while True:
            weak = {c for c in u2 if len(u2.intersection(self.graph[c])) < self.t}
            if not weak:
                break
            u2 -= weak
            self.dropped |= weak
        self._need(len(u2), "share_keys", "clients shared keys with enough neighbours")
        self.u2 = u2
        self.commitments = {c: shared[c].commitment for c in u2}
        out = {}
        for cid in sorted(u2):
            cts = {j: shared[j].ciphertexts[cid] for j in self.graph[cid] if j in u2}
            out[cid] = ForwardedShares(cts).encode(self.round_id, cid)
        self._open_stage("masked_input", u2)
        self._time("forward_shares", start)
        return out

    def unmask_requests(self) -> dict[int, bytes]:
        """Close ``masked_input``: sum the masked vectors; check the survivors can be unmasked
        (else abort before any share is revealed); ask each survivor for shares; opens
        ``unmask``."""
        start = time.perf_counter()
        masked: dict[int, np.ndarray] = self._close_stage()
        u3 = set(masked)
        gone = self.u2 - u3
        self._need(len(u3), "masked_input", "masked inputs")
        for c in sorted(u3):
            alive = len(u3.intersection(self.graph[c]))
            if alive < self.t:
                raise TooFewClients(f"client {c} has {alive} surviving neighbours, fewer than "
                                    f"the threshold {self.t}: its self mask cannot be removed",
                                    stage="masked_input")
        needed_dropped = [d for d in sorted(gone) if u3.intersection(self.graph[d])]
        for d in needed_dropped:
            alive = len(u3.intersection(self.graph[d]))
            if alive < self.t:
                raise TooFewClients(f"dropped client {d} has {alive} surviving neighbours, "
                                    f"fewer than the threshold {self.t}: its masks cannot be "
                                    "removed", stage="masked_input")
        if not is_connected(u3, self.graph):
            raise TooFewClients("the survivors' neighbour graph is disconnected: unmasking "
                                "would reveal partial sums", stage="masked_input")
        self.u3 = u3
        self.needed_dropped = needed_dropped
        acc = np.zeros(self.length + 1, dtype=np.uint32)
        for cid in sorted(u3):
            np.add(acc, masked[cid], out=acc)
        self._masked_sum = acc
        self._requests: dict[int, tuple[list[int], list[int]]] = {}
        out = {}
        for cid in sorted(u3):
            survivors = [j for j in self.graph[cid] if j in u3]
            dropped = [j for j in self.graph[cid] if j in gone]
            self._requests[cid] = (survivors, dropped)
            out[cid] = UnmaskRequest(survivors, dropped).encode(self.round_id, cid)
        self._open_stage("unmask", u3)
        self._time("unmask_requests", start)
        return out

    def finish(self) -> ServerOutcome:
        """Close ``unmask``: reconstruct the needed secrets (batched), remove the masks, decode."""
        start = time.perf_counter()
        answers: dict[int, UnmaskShares] = self._close_stage()
        owners = [(u, B_SHARE) for u in sorted(self.u3)]
        owners += [(d, SK_SHARE) for d in self.needed_dropped]
        # every share that arrived, grouped by owner (each owner has one kind), lowest x first
        holders = sorted(answers)
        own = np.concatenate([answers[h].owners for h in holders] or [np.empty(0, np.int64)])
        xs = np.concatenate([np.full(len(answers[h].owners), self.x[h], dtype=np.uint64)
                             for h in holders] or [np.empty(0, np.uint64)])
        rows = np.concatenate([answers[h].shares for h in holders]
                              or [np.empty((0, shamir.CHUNKS), np.uint64)])
        order = np.lexsort((xs, own))
        own, xs, rows = own[order], xs[order], rows[order]
        present, first, counts = np.unique(own, return_index=True, return_counts=True)
        where = dict(zip(present.tolist(), zip(first.tolist(), counts.tolist(), strict=True),
                         strict=True))
        firsts = []
        for owner, kind in owners:
            start_at, count = where.get(owner, (0, 0))
            if count < self.t:
                what = "self-mask seed" if kind == B_SHARE else "mask key"
                raise TooFewClients(f"{count} shares of client {owner}'s {what} arrived, "
                                    f"the threshold is {self.t}", stage="unmask")
            firsts.append(start_at)
        pick = np.asarray(firsts, dtype=np.int64)[:, None] + np.arange(self.t)
        self._time("unmask_collect", start)
        start = time.perf_counter()
        secrets = shamir.reconstruct(xs[pick], rows[pick])
        self._time("unmask_reconstruct", start)

        start = time.perf_counter()
        masks: list[tuple[bytes, int]] = []
        for (owner, kind), chunks in zip(owners, secrets, strict=True):
            raw = shamir.field_to_secret(chunks)
            if kind == B_SHARE:
                if raw is None or cr.commit_seed(raw, self.round_id, owner) != self.commitments[owner]:
                    raise TooFewClients(f"client {owner}'s self-mask seed does not match its "
                                        "commitment: a neighbour sent a wrong share; aborting",
                                        stage="unmask")
                masks.append((cr.self_mask_key(raw, self.round_id, owner), -1))
                continue
            s_pk = self._keys[owner].s_pk
            if raw is None or cr.public_bytes(sk := cr.load_private(raw)) != s_pk:
                raise TooFewClients(f"client {owner}'s mask key does not match its public key: "
                                    "a neighbour sent a wrong share; aborting", stage="unmask")
            for u in self.graph[owner]:
                if u in self.u3:
                    key = cr.pair_mask_key(cr.agree(sk, self._keys[u].s_pk), self.round_id,
                                           u, owner)
                    # u added +mask if u < owner, -mask otherwise: undo it
                    masks.append((key, -1 if u < owner else 1))
        self._time("unmask_derive_keys", start)
        start = time.perf_counter()
        acc = self._masked_sum
        cr.MaskStream(self.length + 1).apply(acc, masks)
        self.masks_regenerated = len(masks)
        total = self.codec.decode_sum(acc[:self.length])
        clipped = int(acc[self.length])
        self._time("unmask_remove_masks", start)
        return ServerOutcome(total=total, clipped=clipped, contributors=tuple(sorted(self.u3)),
                             dropped=tuple(sorted(self.dropped)), rejected=dict(self.rejected),
                             timings=dict(self.timings))
