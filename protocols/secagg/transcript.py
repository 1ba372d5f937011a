"""The round's parameters as one party sees them, and their hash (the transcript).

Every value that shapes a client's masked vector is here: round id, the run's public seed,
vector length, codec parameters, whether the clipped count is appended, the mode, the degree
``k``, the threshold ``t``, the participant set and the encoding (the float codec, or the
exact integer path, whose vectors are residues modulo ``2**32`` as they are). A client builds its view from its *own*
options and the participant set the server announces; the degree and threshold follow from
its options, the codec from its clip and the number of participants, and the neighbour-graph
seed from the hash itself (so it is fixed only once the participant set is). The hash is
bound into every pairwise-mask key and every share ciphertext: two clients with different
views derive unrelated pairwise masks, which then do not cancel, and cannot read each
other's shares.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from protocols.errors import TooFewClients, UnsafeParameters
from protocols.quantize import FixedPointCodec
from protocols.secagg import primitives as cr
from protocols.secagg.graph import neighbour_graph
from protocols.secagg.options import SecAggOptions

_FIXED = struct.Struct("<BqqqdBBHHI")


@dataclass(frozen=True)
class RoundView:
    """One party's view of a round's public parameters; see the module docstring."""

    round_id: int
    run_seed: int
    length: int
    clip: float
    report_clipped: bool
    malicious_server: bool
    k: int
    t: int
    participants: tuple[int, ...]
    integer: bool = False

    @classmethod
    def derive(cls, options: SecAggOptions, round_id: int, run_seed: int, length: int,
               participants: Sequence[int], *, integer: bool = False) -> RoundView:
        """The view that ``options`` imply for this participant set (nothing from the server
        but the set itself); ``integer``: the exact integer path (no codec, no count)."""
        m = len(participants)
        k = options.degree(m)
        return cls(round_id, run_seed, length, float(options.clip),
                   options.report_clipped and not integer, options.malicious_server, k,
                   options.shares_needed(k), tuple(sorted(participants)), integer)

    def check_policy(self, options: SecAggOptions, *, client_id: int | None = None,
                     stage: str | None = None) -> None:
        """Refuse parameters that would let a server reconstruct both secrets of a client from
        honest answers (``2 t <= k``), or a round smaller than the ``min_clients`` floor."""
        m = len(self.participants)
        if m < options.min_clients:
            raise UnsafeParameters(f"{m} participants, fewer than min_clients = "
                                   f"{options.min_clients}", client_id=client_id, stage=stage)
        if self.t > self.k:
            raise TooFewClients(f"{m} clients give {self.k} neighbours each, fewer than the "
                                f"threshold {self.t}", client_id=client_id, stage=stage)
        if 2 * self.t <= self.k:
            raise UnsafeParameters(f"threshold {self.t} is at most half of the {self.k} "
                                   "neighbours: two disjoint halves of a client's neighbours "
                                   "could then reveal both of its secrets", client_id=client_id,
                                   stage=stage)

    @functools.cached_property
    def digest(self) -> bytes:
        """SHA-256 of every field, domain-separated and length-prefixed."""
        seed = self.run_seed.to_bytes(16, "little", signed=True)
        fixed = _FIXED.pack(cr.VERSION, self.round_id, self.length, len(self.participants),
                            self.clip, self.report_clipped, self.malicious_server, self.k,
                            self.t, len(seed))
        ids = np.asarray(self.participants, dtype="<i8").tobytes()
        domain = b"ffm-secagg/transcript/" + (b"integer/" if self.integer else b"")
        return hashlib.sha256(domain + fixed + seed + ids).digest()

    @functools.cached_property
    def graph_seed(self) -> bytes:
        """The neighbour-graph seed: a function of the transcript, so of public values only."""
        return cr.hkdf(self.digest, b"graph", self.round_id)

    @functools.cached_property
    def graph(self) -> Mapping[int, tuple[int, ...]]:
        """Every participant's neighbours (read-only; see :func:`neighbour_graph`)."""
        return neighbour_graph(self.participants, self.k, self.graph_seed)

    @functools.cached_property
    def codec(self) -> FixedPointCodec:
        """Clip from the options, room for every participant: sums of contributors never wrap."""
        return FixedPointCodec(clip=self.clip, max_clients=len(self.participants))

    @property
    def words(self) -> int:
        """uint32 words in a masked input: the coordinates, plus the clipped count if reported."""
        return self.length + int(self.report_clipped)
