"""The one interface every aggregation protocol implements.

A protocol turns many clients' flat update vectors into their sum. It knows nothing about
models: it sees float vectors, integer client ids, a round number, and a :class:`Channel`
that may lose or alter messages. The federated loop calls :meth:`AggregationProtocol.aggregate`
and never needs to know which protocol it holds.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from protocols.channel import Channel
from protocols.errors import ProtocolError, WrongLength


@dataclass(frozen=True)
class AggregateResult:
    """The outcome of one aggregation round.

    Attributes:
        total: float64 sum of the contributors' vectors (within the protocol's documented
            error), the only quantity the server learns under secure protocols.
        contributors: sorted ids of the clients whose vectors are in ``total``.
        dropped: sorted ids of clients that stopped answering during the round.
        rejected: clients excluded because of a bad message, with the typed error.
        individual: what the server saw of each client's update in the clear (plaintext
            only); ``None`` when the protocol hides individual updates.
        bytes_up: bytes carried from clients to the server (and key holder), all stages.
        bytes_down: bytes carried to clients, all stages.
    """

    total: np.ndarray
    contributors: tuple[int, ...]
    dropped: tuple[int, ...] = ()
    rejected: Mapping[int, ProtocolError] = field(default_factory=dict)
    individual: Mapping[int, np.ndarray] | None = None
    bytes_up: int = 0
    bytes_down: int = 0


class AggregationProtocol(ABC):
    """Base class. Subclasses set ``name``, ``stages`` and the capabilities below.

    ``stages`` names the client-to-server uploads in order; a :class:`~protocols.channel.FaultyChannel`
    uses these names to drop or alter messages at a given stage.

    Capabilities (read by the privacy layer from the object, never from the protocol's name):

    - ``reveals_individual_updates``: the server sees each client's vector in the clear.
    - ``min_clients``: the fewest contributors a round may have; below it the protocol aborts
      *before* anything about the sum is revealed.
    - ``supports_distributed_noise``: the protocol hides individual vectors and enforces
      ``min_clients`` itself, so per-client noise shares protect the released sum.
    - ``value_range``: the largest absolute coordinate the encoding carries without clamping
      (``None``: unbounded float vectors).
    - ``private_statistics_option``: the option that stops clients from sending un-noised
      statistics beside their vector (e.g. a count of clipped coordinates), set false by the
      privacy layer when the server is untrusted (``None``: the protocol sends none).
    - ``integer_modulus``: the modulus ``M`` of the exact integer path (``None``: no such
      path). With ``encoding="integer"`` each update is an int64 vector already reduced into
      ``[0, M)``; the protocol sums the vectors exactly modulo ``M`` (no codec, no clamp, no
      rounding) and ``total`` is the centred lift of that sum (:func:`centred_lift`).
    """

    name: ClassVar[str]
    stages: ClassVar[tuple[str, ...]]
    reveals_individual_updates: ClassVar[bool]
    supports_distributed_noise: ClassVar[bool] = False
    min_clients: int = 1
    value_range: float | None = None
    private_statistics_option: ClassVar[str | None] = None
    integer_modulus: int | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> AggregationProtocol:
        """Build from a config table; unknown keys are an error naming the key."""
        options = dict(options)
        if options:
            raise ValueError(f"protocol {cls.name!r} takes no option {sorted(options)[0]!r}")
        return cls()

    @abstractmethod
    def aggregate(
        self,
        round_id: int,
        updates: Mapping[int, np.ndarray],
        *,
        channel: Channel | None = None,
        seed: int = 0,
        secrets: Mapping[int, bytes] | None = None,
        encoding: str = "float",
    ) -> AggregateResult:
        """Sum ``updates`` (client id -> 1-D float vector) as the protocol allows.

        ``encoding="integer"`` (protocols with an :attr:`integer_modulus` only): updates are
        int64 vectors in ``[0, M)``, summed exactly modulo ``M``; see :func:`check_encoding`.

        ``secrets[c]`` is a 32-byte secret that only client ``c`` holds (derived by the caller
        from the client's own persistent secret for this round): every random choice the
        client makes (stochastic rounding, key generation where it must be reproducible) is
        keyed from it, so the server's view is not a function of public values and a replayed
        round re-sends the same bytes. ``None`` draws fresh ``os.urandom`` randomness per call
        (not reproducible). ``seed`` is public and fixes nothing secret. Raises
        :class:`~protocols.errors.TooFewClients` when too few clients survive.
        """

    def rounding_bound(self, length: int, max_clients: int) -> float:
        """Largest L2 distance the encoding can move a ``length``-vector (stochastic rounding)
        in a round of up to ``max_clients`` participants.

        The privacy layer clips to ``C`` minus this bound, so an encoded update's norm stays
        at most ``C``. Float protocols move nothing: 0.
        """
        return 0.0

    def describe(self) -> str:
        """One line for run summaries: what the server learns under this protocol."""
        if self.reveals_individual_updates:
            return f"{self.name}: the server sees every client's shared update"
        return f"{self.name}: the server learns only the sum of the sampled clients' shared updates"


ENCODINGS = ("float", "integer")


def check_encoding(protocol: AggregationProtocol, encoding: str) -> bool:
    """Whether ``encoding`` selects the exact integer path; refuse what the protocol lacks."""
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding = {encoding!r} is not one of {list(ENCODINGS)}")
    if encoding == "integer" and protocol.integer_modulus is None:
        raise ValueError(f"protocol {protocol.name!r} has no exact integer path "
                         "(integer_modulus is None)")
    return encoding == "integer"


def centred_lift(residues: np.ndarray, modulus: int) -> np.ndarray:
    """Residues modulo ``modulus`` lifted to ``[-floor(M/2), ceil(M/2))`` as float64 integers.

    Exact: ``M <= 2**53`` and every value is an integer, so float64 holds it.
    """
    r = np.mod(np.asarray(residues).astype(np.int64), np.int64(modulus))
    return np.where(r >= (modulus + 1) // 2, r - modulus, r).astype(np.float64)


def _check_vectors(updates: Mapping[int, np.ndarray],
                   check_values: Callable[[int, np.ndarray], None]) -> tuple[list[int], int]:
    """1-D vectors of one common length, each passing ``check_values``; sorted ids, length."""
    if not updates:
        raise ValueError("no client updates to aggregate")
    ids = sorted(updates)
    length = None
    for cid in ids:
        vec = np.asarray(updates[cid])
        if vec.ndim != 1:
            raise WrongLength(f"update must be 1-D, got shape {vec.shape}", client_id=cid)
        check_values(cid, vec)
        if length is None:
            length = vec.shape[0]
        elif vec.shape[0] != length:
            raise WrongLength(
                f"update has length {vec.shape[0]}, others have {length}", client_id=cid
            )
    assert length is not None
    return ids, length


def check_integer_updates(updates: Mapping[int, np.ndarray],
                          modulus: int) -> tuple[list[int], int]:
    """Validate integer-path inputs: 1-D int64 vectors in ``[0, modulus)``, one length.

    Like :func:`check_updates`: the caller's own vectors, so problems are :class:`WrongLength`
    or :class:`ValueError` naming the client.
    """
    def in_range(cid: int, vec: np.ndarray) -> None:
        if vec.dtype != np.int64:
            raise ValueError(f"client {cid}: an integer-path update must be int64, got "
                             f"{vec.dtype}")
        if vec.size and (int(vec.min()) < 0 or int(vec.max()) >= modulus):
            raise ValueError(f"client {cid}: integer-path values must lie in [0, {modulus}) "
                             "(reduce them modulo the protocol's integer_modulus)")

    return _check_vectors(updates, in_range)


def check_updates(updates: Mapping[int, np.ndarray]) -> tuple[list[int], int]:
    """Validate client-side inputs: 1-D finite float vectors of one common length.

    Returns the sorted client ids and the vector length. These are the caller's own
    vectors, so a problem here is a programming error, reported as :class:`WrongLength`
    or :class:`ValueError` naming the client.
    """
    def finite_floats(cid: int, vec: np.ndarray) -> None:
        if not np.issubdtype(vec.dtype, np.floating):
            raise ValueError(f"client {cid}: update must be a float vector, got {vec.dtype}")
        if not np.all(np.isfinite(vec)):
            raise ValueError(f"client {cid}: update contains NaN or infinity")

    return _check_vectors(updates, finite_floats)
