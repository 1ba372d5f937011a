"""The SecAgg+ server: relays keys and shares, sums masked inputs, unmasks only the total.

It sees bytes only. Every upload is checked in this order:

1. stage: an upload for a stage that is not open (late, or early) is refused with
   :class:`UnexpectedStage`, and so is one from a client not expected at this stage;
2. replay / duplicate: the upload's GCM tag was already accepted (earlier round or stage:
   :class:`ReplayedMessage`; same stage: :class:`DuplicateMessage`);
3. header: magic, version, size (:class:`MalformedMessage`, :class:`WrongLength`), type
   expected at this stage, sender, round (:class:`WrongRound`);
4. authentication under the client's upload key (:class:`TamperedMessage`), and in
   malicious-server mode the client's registered Ed25519 signature on its key advertisement;
5. a second authenticated message for a stage already answered (:class:`DuplicateMessage`);
6. content: exactly the expected neighbours, lengths, share kinds and signatures.

Failures at 1-5 change nothing: the bytes are dropped and the genuine message may still
arrive (a stage that closes without one records the client's first such error in
``rejected``). Only an authenticated message with bad content (6) excludes its sender.

Between stages the server decides who goes on and aborts with :class:`TooFewClients`
*before* asking for any unmasking share when the survivors cannot be unmasked safely.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from protocols.base import centred_lift
from protocols.errors import (
    DuplicateMessage,
    InvalidShare,
    MalformedMessage,
    ProtocolError,
    ReplayedMessage,
    TamperedMessage,
    TooFewClients,
    UnexpectedStage,
    UnsafeParameters,
    WrongLength,
    WrongRound,
)
from protocols.secagg import primitives as cr
from protocols.secagg import shamir
from protocols.secagg.graph import is_connected
from protocols.secagg.messages import (
    B_SHARE,
    HEADER,
    SK_SHARE,
    UPLOAD_STAGES,
    AdvertiseKeys,
    ForwardedShares,
    Header,
    NeighbourKeys,
    Reader,
    RoundStart,
    ShareKeys,
    SurvivorSet,
    UnmaskRequest,
    UnmaskShares,
    advertisement,
    read_header,
    survivor_statement,
    tag_of,
    unseal,
)
from protocols.secagg.options import SecAggOptions
from protocols.secagg.transcript import RoundView

STAGES = ("advertise_keys", "share_keys", "masked_input", "unmask")
"""Upload stages of a round; malicious-server mode adds ``consistency`` before ``unmask``."""
MALICIOUS_STAGES = ("advertise_keys", "share_keys", "masked_input", "consistency", "unmask")
ROBUST_DECODE_ATTEMPTS = 2000
"""Subsets of spare shares tried per secret whose first reconstruction fails its check."""


def _fewest_exclusions(order: list[int], t: int):
    """``t``-subsets of ``order``, those leaving out fewest of its first elements first: every
    subset that skips ``e`` shares comes before any that skips ``e + 1``, so ``e`` liars cost
    at most ``sum of C(t + i - 1, i) for i <= e`` tries, wherever they sit."""
    for e in range(len(order) - t + 1):
        last = t + e - 1  # the subset's last element, so no subset is produced twice
        for skipped in itertools.combinations(range(last), e):
            gone = set(skipped)
            yield [order[i] for i in range(last + 1) if i not in gone]


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
    clipped: int | None
    contributors: tuple[int, ...]
    dropped: tuple[int, ...]
    rejected: dict[int, ProtocolError]
    timings: dict[str, float] = field(default_factory=dict)


class SecAggServer:
    """One round of SecAgg+ from the server's side. Call the stage methods in order.

    ``run_seed`` is the run's public seed (bound into the transcript); ``registry`` maps
    every enrolled client to its Ed25519 identity public key (malicious-server mode only).
    """

    def __init__(self, round_id: int, clients: Sequence[int], length: int,
                 options: SecAggOptions, *, run_seed: int = 0,
                 replay: ReplayCache | None = None, entropy: cr.Entropy = cr.default_entropy,
                 registry: Mapping[int, bytes] | None = None, integer: bool = False) -> None:
        self.round_id = round_id
        self.integer = integer  # the exact integer path: the total is the centred lift
        self.sampled = tuple(sorted(clients))
        self.length = length
        self.options = options
        self.run_seed = run_seed
        self.malicious = options.malicious_server
        if self.malicious and registry is None:
            raise ValueError("malicious_server mode needs the registry of enrolled identities")
        self.registry = dict(registry or {})
        self.replay = replay if replay is not None else ReplayCache()
        self._sk, self.public_key = cr.new_key_pair(entropy)
        self.rejected: dict[int, ProtocolError] = {}
        self.dropped: set[int] = set()
        self.timings: dict[str, float] = {}
        self.k = self.t = 0
        self._stage: str | None = None
        self._expected: set[int] = set()
        self._received: dict[int, object] = {}
        self._unauthenticated: dict[int, ProtocolError] = {}
        self._upload: dict[int, bytes] = {}
        self._keys: dict[int, AdvertiseKeys] = {}
        self._body_of = b""  # the decrypted body of the upload being taken
        self._pending_advert: tuple[bytes, AdvertiseKeys] | None = None

    # -- bookkeeping ------------------------------------------------------------------------
    def _time(self, name: str, start: float) -> None:
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start

    def _open_stage(self, stage: str, expected: set[int]) -> None:
        self._stage = stage
        self._expected = set(expected)
        self._received = {}
        self._unauthenticated = {}

    def _close_stage(self) -> dict[int, object]:
        """The valid messages of the stage; clients that sent nothing valid are out (with the
        first error their bytes raised, if any arrived)."""
        got = self._received
        for cid in sorted(self._expected - set(got)):
            if cid in self._unauthenticated:
                self.rejected.setdefault(cid, self._unauthenticated[cid])
            elif cid not in self.rejected:
                self.dropped.add(cid)
        self._stage = None
        return got

    # -- uploads --------------------------------------------------------------------------
    def receive(self, stage: str, client_id: int, payload: bytes) -> ProtocolError | None:
        """Take one upload. Returns ``None`` when accepted, else the typed error: bytes that do
        not authenticate (or come late, or twice) are dropped without touching the round's
        state; an authenticated message with bad content excludes its sender."""
        start = time.perf_counter()
        try:
            return self._receive(stage, client_id, payload)
        finally:
            self._time(f"receive_{stage}", start)

    def _receive(self, stage: str, cid: int, payload: bytes) -> ProtocolError | None:
        if stage != self._stage:
            what = "closed or not yet open" if self._stage else "not open (no stage is)"
            return UnexpectedStage(f"upload for stage {stage!r}, which is {what}; the open "
                                   f"stage is {self._stage!r}", client_id=cid, stage=stage)
        if cid not in self._expected:
            return UnexpectedStage("not expected at this stage (dropped, rejected or not "
                                   "sampled)", client_id=cid, stage=stage)
        try:
            header = self._authenticate(stage, cid, payload)
        except ProtocolError as err:
            self._unauthenticated.setdefault(cid, err)
            return err
        if cid in self._received:
            return DuplicateMessage(f"a second {stage} message; the first is kept",
                                    client_id=cid, stage=stage)
        try:
            self._received[cid] = getattr(self, f"_take_{stage}")(cid, header, payload)
        except ProtocolError as err:
            self._expected.discard(cid)
            self.rejected.setdefault(cid, err)
            return err
        self._unauthenticated.pop(cid, None)
        self.replay.add(self.round_id, stage, cid, tag_of(payload))
        return None

    def _authenticate(self, stage: str, cid: int, payload: bytes) -> Header:
        """Replay, header and AES-GCM checks; returns the header (and keeps the decrypted body
        of a sealed upload in ``self._body_of``). Raises before anything is stored."""
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
        if stage == "advertise_keys":
            self._auth_advertisement(cid, header, payload)
        elif stage == "masked_input":
            clear = header.body_len - cr.TAG_BYTES
            if clear < 0 or clear % 4:
                raise WrongLength(f"masked vector of {clear} bytes is not whole words",
                                  client_id=cid, stage=stage)
            unseal(payload, header, self._upload[cid], clear_len=clear, stage=stage)
        else:
            self._body_of = unseal(payload, header, self._upload[cid], stage=stage)
        return header

    def _auth_advertisement(self, cid, header, payload) -> None:
        stage = "advertise_keys"
        clear_len = AdvertiseKeys.clear_len(self.malicious)
        if header.body_len != clear_len + cr.TAG_BYTES:
            raise WrongLength(f"body of {header.body_len} bytes, expected "
                              f"{clear_len + cr.TAG_BYTES}", client_id=cid, stage=stage)
        keys = AdvertiseKeys.parse(payload[HEADER.size:HEADER.size + clear_len])
        try:
            aead = cr.upload_key(cr.agree(self._sk, keys.c_pk), self.round_id, cid)
        except ValueError:
            raise MalformedMessage("invalid X25519 public key", client_id=cid, stage=stage) from None
        unseal(payload, header, aead, clear_len=clear_len, stage=stage)
        if self.malicious:
            public = self.registry.get(cid)
            signed = advertisement(self.round_id, cid, keys.c_pk, keys.s_pk)
            if public is None or not cr.verify(public, keys.signature, b"advertise", signed):
                raise TamperedMessage("key advertisement does not carry the client's "
                                      "registered Ed25519 signature", client_id=cid, stage=stage)
        self._pending_advert = (aead, keys)

    def _take_advertise_keys(self, cid, header, payload) -> AdvertiseKeys:
        assert self._pending_advert is not None
        aead, keys = self._pending_advert
        try:
            cr.agree(self._sk, keys.s_pk)  # rejects degenerate (low-order) keys up front
        except ValueError:
            raise MalformedMessage("invalid X25519 public key", client_id=cid,
                                   stage="advertise_keys") from None
        self._upload[cid] = aead
        return keys

    def _reader(self, cid: int, stage: str) -> Reader:
        return Reader(self._body_of, client_id=cid, stage=stage)

    def _take_share_keys(self, cid, header, payload) -> ShareKeys:
        stage = "share_keys"
        msg = ShareKeys.decode(self._reader(cid, stage),
                               lambda p: DuplicateMessage(p, client_id=cid, stage=stage))
        want = set(self.graph[cid])
        if set(msg.ciphertexts) != want:
            missing, extra = sorted(want - set(msg.ciphertexts)), sorted(set(msg.ciphertexts) - want)
            raise MalformedMessage(f"share ciphertexts must go to exactly its neighbours "
                                   f"(missing {missing}, not neighbours {extra})",
                                   client_id=cid, stage=stage)
        return msg

    def _take_masked_input(self, cid, header, payload) -> np.ndarray:
        stage = "masked_input"
        words = self.view.words
        if header.body_len != 4 * words + cr.TAG_BYTES:
            got = (header.body_len - cr.TAG_BYTES) / 4
            extra = " + clipped count" if self.view.report_clipped else ""
            raise WrongLength(f"masked vector of {got:g} words, expected {words} "
                              f"({self.length} parameters{extra})", client_id=cid, stage=stage)
        return np.frombuffer(payload, dtype="<u4", count=words, offset=HEADER.size)

    def _take_consistency(self, cid, header, payload) -> bytes:
        stage = "consistency"
        r = self._reader(cid, stage)
        signature = r.take(cr.SIGNATURE_BYTES, "signature")
        r.done()
        if not cr.verify(self.registry[cid], signature, b"survivors", self._statement):
            raise TamperedMessage("signature is not on the survivor set this server sent",
                                  client_id=cid, stage=stage)
        return signature

    def _take_unmask(self, cid, header, payload) -> UnmaskShares:
        stage = "unmask"
        msg = UnmaskShares.decode(self._reader(cid, stage),
                                  lambda p: DuplicateMessage(p, client_id=cid, stage=stage))
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
        """The server's key and the vector length for every sampled client; opens
        ``advertise_keys``."""
        start = time.perf_counter()
        msg = RoundStart(self.public_key, self.length)
        out = {cid: msg.encode(self.round_id, cid) for cid in self.sampled}
        self._open_stage("advertise_keys", set(self.sampled))
        self._time("round_start", start)
        return out

    def neighbour_keys(self) -> dict[int, bytes]:
        """Close ``advertise_keys``: fix the participant set and the transcript, build the
        graph over those who answered, send each its neighbours' keys; opens ``share_keys``."""
        start = time.perf_counter()
        self._keys = self._close_stage()
        u1 = sorted(self._keys)
        self._need(len(u1), "advertise_keys", "clients advertised keys")
        view = RoundView.derive(self.options, self.round_id, self.run_seed, self.length, u1,
                                integer=self.integer)
        self.view, self.k, self.t = view, view.k, view.t
        try:
            view.check_policy(self.options, stage="advertise_keys")
        except UnsafeParameters as err:
            raise UnsafeParameters(f"this server's own options are unsafe for the round: "
                                   f"{err.reason}", stage="advertise_keys") from None
        self.codec = view.codec
        self.participants = u1
        self.graph = view.graph
        self.x = {c: i + 1 for i, c in enumerate(u1)}
        out = {}
        for cid in u1:
            nbrs = self.graph[cid]
            keys = {j: (self._keys[j].c_pk, self._keys[j].s_pk) for j in nbrs}
            sigs = {j: self._keys[j].signature for j in nbrs} if self.malicious else None
            out[cid] = NeighbourKeys(self.k, self.t, u1, keys, sigs).encode(self.round_id, cid)
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

    def _close_masked_input(self) -> None:
        """Sum the masked vectors; check the survivors can be unmasked, else abort before any
        share is revealed."""
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
        self.gone = gone
        self.needed_dropped = needed_dropped
        acc = np.zeros(self.view.words, dtype=np.uint32)
        for cid in sorted(u3):
            np.add(acc, masked[cid], out=acc)
        self._masked_sum = acc

    def survivor_sets(self) -> dict[int, bytes]:
        """Malicious-server mode: close ``masked_input`` and send every survivor the survivor
        set to sign; opens ``consistency``."""
        if not self.malicious:
            raise UnexpectedStage("the consistency check runs only in malicious_server mode",
                                  stage="consistency")
        start = time.perf_counter()
        self._close_masked_input()
        survivors = sorted(self.u3)
        self._statement = survivor_statement(self.view.digest, survivors)
        out = {c: SurvivorSet(survivors).encode(self.round_id, c) for c in survivors}
        self._open_stage("consistency", self.u3)
        self._time("survivor_sets", start)
        return out

    def unmask_requests(self) -> dict[int, bytes]:
        """Close ``masked_input`` (or, in malicious-server mode, ``consistency``: the signers
        must be a majority of the participants); ask each survivor for shares; opens
        ``unmask``."""
        start = time.perf_counter()
        signatures = None
        if self.malicious:
            signatures = self._close_stage()
            askable = set(signatures)
            need = max(len(self.participants) // 2 + 1, self.options.min_clients)
            if len(askable) < need:
                raise TooFewClients(f"{len(askable)} survivors signed the survivor set, at "
                                    f"least {need} needed (a majority of the participants)",
                                    stage="consistency")
        else:
            self._close_masked_input()
            askable = self.u3
        self._requests: dict[int, tuple[list[int], list[int]]] = {}
        out = {}
        for cid in sorted(askable):
            survivors = [j for j in self.graph[cid] if j in self.u3]
            dropped = [j for j in self.graph[cid] if j in self.gone]
            self._requests[cid] = (survivors, dropped)
            out[cid] = UnmaskRequest(survivors, dropped, signatures).encode(self.round_id, cid)
        self._open_stage("unmask", askable)
        self._time("unmask_requests", start)
        return out

    # -- unmasking ----------------------------------------------------------------------------
    def _open_secret(self, owner: int, kind: int, chunks: np.ndarray) -> bytes | None:
        """The reconstructed secret if it passes its check (commitment or public key)."""
        raw = shamir.field_to_secret(chunks)
        if raw is None:
            return None
        if kind == B_SHARE:
            ok = cr.commit_seed(raw, self.round_id, owner) == self.commitments[owner]
        else:
            ok = cr.public_bytes(cr.load_private(raw)) == self._keys[owner].s_pk
        return raw if ok else None

    def _robust_open(self, owner: int, kind: int, xs: np.ndarray, rows: np.ndarray,
                     holders: np.ndarray) -> bytes:
        """Decode from spare shares when the first ``t`` fail the check: try ``t``-subsets
        (known liars last), then name every holder whose share is off the polynomial."""
        what = "self-mask seed" if kind == B_SHARE else "mask key"
        liars = {c for c, e in self.rejected.items() if isinstance(e, InvalidShare)}
        order = sorted(range(len(xs)), key=lambda i: (int(holders[i]) in liars, int(xs[i])))
        for attempt, subset in enumerate(_fewest_exclusions(order, self.t)):
            if attempt >= ROBUST_DECODE_ATTEMPTS:
                break
            pick = np.asarray(subset)
            raw = self._open_secret(owner, kind, shamir.reconstruct(xs[pick][None],
                                                                    rows[pick][None])[0])
            if raw is None:
                continue
            for i in sorted(set(range(len(xs))) - set(subset)):
                at = (xs[pick] + shamir.PRIME - xs[i]) % shamir.PRIME  # evaluate at xs[i]
                if not np.array_equal(shamir.reconstruct(at[None], rows[pick][None])[0], rows[i]):
                    h = int(holders[i])
                    self.rejected.setdefault(h, InvalidShare(
                        f"its share of client {owner}'s {what} is not on the polynomial the "
                        "other shares and the dealer's check agree on", client_id=h,
                        stage="unmask"))
            return raw
        raise TooFewClients(f"client {owner}'s {what} does not match its "
                            f"{'commitment' if kind == B_SHARE else 'public key'} from any "
                            f"{self.t} of the {len(xs)} shares that arrived: neighbours sent "
                            "wrong shares; aborting", stage="unmask")

    def finish(self) -> ServerOutcome:
        """Close ``unmask``: reconstruct the needed secrets (batched), remove the masks, decode.

        A secret whose first ``t`` shares fail its check is decoded from the spare shares,
        and the holders of wrong shares are listed in ``rejected`` (:class:`InvalidShare`)."""
        start = time.perf_counter()
        answers: dict[int, UnmaskShares] = self._close_stage()
        owners = [(u, B_SHARE) for u in sorted(self.u3)]
        owners += [(d, SK_SHARE) for d in self.needed_dropped]
        # every share that arrived, grouped by owner (each owner has one kind), lowest x first
        holders = sorted(answers)
        own = np.concatenate([answers[h].owners for h in holders] or [np.empty(0, np.int64)])
        sizes = [len(answers[h].owners) for h in holders]
        hid = np.repeat(np.asarray(holders, dtype=np.int64), sizes)
        xs = np.repeat(np.asarray([self.x[h] for h in holders], dtype=np.uint64), sizes)
        rows = np.concatenate([answers[h].shares for h in holders]
                              or [np.empty((0, shamir.CHUNKS), np.uint64)])
        order = np.lexsort((xs, own))
        own, xs, rows, hid = own[order], xs[order], rows[order], hid[order]
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
            raw = self._open_secret(owner, kind, chunks)
            if raw is None:
                lo, count = where[owner]
                span = slice(lo, lo + count)
                raw = self._robust_open(owner, kind, xs[span], rows[span], hid[span])
            if kind == B_SHARE:
                masks.append((cr.self_mask_key(raw, self.round_id, owner), -1))
                continue
            sk = cr.load_private(raw)
            for u in self.graph[owner]:
                if u in self.u3:
                    key = cr.pair_mask_key(cr.agree(sk, self._keys[u].s_pk), self.view.digest,
                                           self.round_id, u, owner)
                    # u added +mask if u < owner, -mask otherwise: undo it
                    masks.append((key, -1 if u < owner else 1))
        self._time("unmask_derive_keys", start)
        start = time.perf_counter()
        acc = self._masked_sum
        cr.MaskStream(self.view.words).apply(acc, masks)
        self.masks_regenerated = len(masks)
        total = (centred_lift(acc[:self.length], 2**32) if self.integer
                 else self.codec.decode_sum(acc[:self.length]))
        clipped = int(acc[self.length]) if self.view.report_clipped else None
        self._time("unmask_remove_masks", start)
        return ServerOutcome(total=total, clipped=clipped, contributors=tuple(sorted(self.u3)),
                             dropped=tuple(sorted(self.dropped)), rejected=dict(self.rejected),
                             timings=dict(self.timings))
