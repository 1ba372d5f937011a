"""A SecAgg+ server that deviates at will, driving real :class:`SecAggClient` objects.

It holds what a real server holds (its X25519 key, every upload key, everything clients
upload) and can send any sequence of well-formed messages: any participant set, degree or
threshold, per-client views, the same request twice, contradictory survivor sets. It keeps
every share it is given and tries to reconstruct secrets and unmask individual inputs, so a
test asserts on what the adversary *recovers*, not only on the exceptions clients raise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from protocols.errors import ProtocolError
from protocols.quantize import FixedPointCodec
from protocols.secagg import SecAggOptions, shamir
from protocols.secagg import primitives as cr
from protocols.secagg.client import SecAggClient
from protocols.secagg.messages import (
    B_SHARE,
    HEADER,
    SK_SHARE,
    AdvertiseKeys,
    ForwardedShares,
    NeighbourKeys,
    Reader,
    RoundStart,
    ShareKeys,
    SurvivorSet,
    UnmaskRequest,
    UnmaskShares,
    read_header,
    unseal,
)
from protocols.secagg.transcript import RoundView
from tests.protocols.secagg_helpers import DeterministicEntropy


class AdversarialServer:
    """Plays the server of one round against real clients built with ``options``."""

    def __init__(self, updates: Mapping[int, np.ndarray], *, options: SecAggOptions | None = None,
                 round_id: int = 3, run_seed: int = 0) -> None:
        self.options = options or SecAggOptions()
        self.round_id = round_id
        self.run_seed = run_seed
        self.updates = {c: np.asarray(u) for c, u in updates.items()}
        self.ids = sorted(updates)
        self.length = len(next(iter(updates.values())))
        self._sk, self.public_key = cr.new_key_pair(DeterministicEntropy(999))
        identities = {}
        self.registry: dict[int, bytes] = {}
        if self.options.malicious_server:  # enrolment: keys stay with the clients
            for c in self.ids:
                identities[c] = cr.new_identity(DeterministicEntropy(5000 + c))
                self.registry[c] = cr.identity_public(identities[c])
        self.clients = {c: SecAggClient(c, round_id, self.updates[c], options=self.options,
                                        run_seed=run_seed, secret=bytes([c % 256]) * 32,
                                        entropy=DeterministicEntropy(c),
                                        identity=identities.get(c),
                                        registry=self.registry or None) for c in self.ids}
        self.errors: dict[int, ProtocolError] = {}
        self.upload_keys: dict[int, bytes] = {}
        self.adverts: dict[int, AdvertiseKeys] = {}
        self.views: dict[int, RoundView] = {}
        self.share_msgs: dict[int, ShareKeys] = {}
        self.masked: dict[int, np.ndarray] = {}
        self.held_by: dict[int, set[int]] = {}
        self.signatures: dict[int, bytes] = {}
        self.shares: dict[tuple[int, int], dict[int, np.ndarray]] = {}

    # -- talking to clients -------------------------------------------------------------------
    def call(self, cid: int, method: str, *args) -> bytes | None:
        """One client step; a typed refusal is recorded (first one per client) and returned
        as ``None``."""
        try:
            return getattr(self.clients[cid], method)(*args)
        except ProtocolError as err:
            self.errors.setdefault(cid, err)
            self.last_error = err
            return None

    def _body(self, cid: int, upload: bytes) -> Reader:
        header = read_header(upload, client_id=cid, stage="any")
        return Reader(unseal(upload, header, self.upload_keys[cid], stage="any"),
                      client_id=cid, stage="any")

    # -- stages -------------------------------------------------------------------------------
    def start(self) -> None:
        """Round start to every client; keep their keys and derive their upload keys."""
        signed = self.options.malicious_server
        for c in self.ids:
            up = self.call(c, "advertise_keys", RoundStart(self.public_key, self.length).encode(
                self.round_id, c))
            if up is None:
                continue
            clear = up[HEADER.size:HEADER.size + AdvertiseKeys.clear_len(signed)]
            keys = AdvertiseKeys.parse(clear)
            self.adverts[c] = keys
            self.upload_keys[c] = cr.upload_key(cr.agree(self._sk, keys.c_pk), self.round_id, c)

    def view_for(self, participants: Sequence[int]) -> RoundView:
        """The view a client configured like this server's clients derives from ``participants``."""
        return RoundView.derive(self.options, self.round_id, self.run_seed, self.length,
                                sorted(participants))

    def share(self, *, participants: Mapping[int, Sequence[int]] | None = None,
              k: Mapping[int, int] | None = None, t: Mapping[int, int] | None = None) -> None:
        """Neighbour keys to every client: by default the honest view; ``participants``,
        ``k`` and ``t`` override what chosen clients are told."""
        participants, k, t = participants or {}, k or {}, t or {}
        for c in sorted(self.adverts):
            view = self.view_for(participants.get(c, sorted(self.adverts)))
            self.views[c] = view
            nbrs = view.graph[c]
            keys = {j: (self.adverts[j].c_pk, self.adverts[j].s_pk) for j in nbrs}
            sigs = ({j: self.adverts[j].signature for j in nbrs}
                    if self.options.malicious_server else None)
            msg = NeighbourKeys(k.get(c, view.k), t.get(c, view.t), list(view.participants),
                                keys, sigs)
            up = self.call(c, "share_keys", msg.encode(self.round_id, c))
            if up is not None:
                self.share_msgs[c] = ShareKeys.decode(self._body(c, up), ValueError)

    def forward_and_mask(self) -> None:
        """Forward each client the ciphertexts addressed to it; collect masked inputs."""
        for c in sorted(self.share_msgs):
            cts = {j: self.share_msgs[j].ciphertexts[c] for j in self.views[c].graph[c]
                   if j in self.share_msgs and c in self.share_msgs[j].ciphertexts}
            up = self.call(c, "masked_input", ForwardedShares(cts).encode(self.round_id, c))
            if up is not None:
                self.held_by[c] = set(cts)
                words = self.views[c].words
                self.masked[c] = np.frombuffer(up, dtype="<u4", count=words,
                                               offset=HEADER.size).copy()

    def run_to_masked(self, **share_overrides) -> None:
        self.start()
        self.share(**share_overrides)
        self.forward_and_mask()

    def survivor_set(self, cid: int, survivors: Sequence[int]) -> bytes | None:
        """Malicious-server mode: show ``cid`` a survivor set; keep its signature."""
        up = self.call(cid, "consistency", SurvivorSet(sorted(survivors)).encode(
            self.round_id, cid))
        if up is not None:
            self.signatures[cid] = self._body(cid, up).take(cr.SIGNATURE_BYTES, "signature")
        return up

    def ask(self, cid: int, survivors, dropped, signatures: Mapping[int, bytes] | None = None
            ) -> UnmaskShares | None:
        """An unmask request; keep every share the client answers with."""
        req = UnmaskRequest(sorted(survivors), sorted(dropped), dict(signatures or {}))
        up = self.call(cid, "unmask", req.encode(self.round_id, cid))
        if up is None:
            return None
        msg = UnmaskShares.decode(self._body(cid, up), ValueError)
        for owner, kind, share in zip(msg.owners.tolist(), msg.kinds.tolist(), msg.shares,
                                      strict=True):
            x = self.views[owner].participants.index(cid) + 1  # the point the owner dealt at
            self.shares.setdefault((owner, kind), {})[x] = share
        return msg

    def ask_honestly(self, cid: int, dropped: set[int] = frozenset()) -> UnmaskShares | None:
        held = self.held_by[cid]
        return self.ask(cid, held - set(dropped), held & set(dropped))

    # -- what the adversary recovers ----------------------------------------------------------
    def share_count(self, owner: int, kind: int) -> int:
        return len(self.shares.get((owner, kind), {}))

    def secret(self, owner: int, kind: int) -> bytes | None:
        """The owner's secret if the shares held reconstruct it (checked like a server would:
        commitment for ``b``, public key for the mask key)."""
        got = self.shares.get((owner, kind), {})
        t = self.views[owner].t
        if len(got) < t:
            return None
        xs = sorted(got)[:t]
        chunks = shamir.reconstruct(np.array([xs], dtype=np.uint64),
                                    np.array([[got[x] for x in xs]]))[0]
        raw = shamir.field_to_secret(chunks)
        if raw is None:
            return None
        if kind == B_SHARE:
            ok = cr.commit_seed(raw, self.round_id, owner) == self.share_msgs[owner].commitment
        else:
            ok = cr.public_bytes(cr.load_private(raw)) == self.adverts[owner].s_pk
        return raw if ok else None

    def recover(self, target: int, *, partner_keys: Mapping[int, bytes] | None = None
                ) -> np.ndarray | None:
        """The target's update from its masked input, if the adversary holds its self-mask
        seed and, for every neighbour it masked against, the target's or that neighbour's
        mask key. ``None`` when it cannot."""
        b = self.secret(target, B_SHARE)
        if b is None or target not in self.masked:
            return None
        view = self.views[target]
        sk = self.secret(target, SK_SHARE)
        acc = self.masked[target].copy()
        stream = cr.MaskStream(view.words)
        stream.add(acc, cr.self_mask_key(b, self.round_id, target), -1)
        for j in sorted(self.held_by[target]):
            if sk is not None:
                shared = cr.agree(cr.load_private(sk), self.adverts[j].s_pk)
            else:
                sk_j = self.secret(j, SK_SHARE)
                if sk_j is None:
                    return None
                shared = cr.agree(cr.load_private(sk_j), self.adverts[target].s_pk)
            key = cr.pair_mask_key(shared, view.digest, self.round_id, target, j)
            stream.add(acc, key, -1 if target < j else 1)
        return view.codec.decode_sum(acc[:self.length])

    def honest_total(self, codec: FixedPointCodec | None = None) -> np.ndarray | None:
        """Sum of all masked inputs minus every survivor's self mask (no dropouts: pairwise
        masks cancel only if views agreed), decoded with ``codec`` (default: the common view's)."""
        acc = None
        for c in sorted(self.masked):
            b = self.secret(c, B_SHARE)
            if b is None:
                return None
            vec = self.masked[c].copy()
            cr.MaskStream(len(vec)).add(vec, cr.self_mask_key(b, self.round_id, c), -1)
            acc = vec if acc is None else acc + vec
        if acc is None:
            return None
        codec = codec or self.views[min(self.masked)].codec
        return codec.decode_sum(acc[:self.length])


__all__ = ["B_SHARE", "SK_SHARE", "AdversarialServer"]
