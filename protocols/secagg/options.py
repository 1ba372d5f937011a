"""SecAgg+ options (the ``protocol.options`` table), validated with the key's name.

=============== ============ ========================================================================
key             default      meaning
=============== ============ ========================================================================
``clip``        1.0          fixed-point range: each coordinate is clipped to ``[-clip, clip]``
``neighbours``  ``"auto"``   ``k``, neighbours per client; ``"auto"`` is ``4 * ceil(log2 n)``;
                             rounded up to even, at most ``n - 1`` (then the graph is complete)
``threshold``   ``"majority"`` ``t``, shares needed to reconstruct a secret: a count (int >= 2, above
                             half of ``neighbours``), a fraction of ``k`` (float in (0.5, 1],
                             ``t = ceil(f * k)``), or ``"majority"`` (``t = k // 2 + 1``)
``min_clients`` 2            fewest contributors a round may have; below it the round aborts, and a
                             client refuses a round with fewer participants
``report_clipped`` true      append the count of clipped coordinates to the masked vector, so the
                             server learns the total; false: no count is sent at all
``malicious_server`` false   Ed25519-signed key advertisements and a consistency check of the
                             survivor set before any unmasking share is released
=============== ============ ========================================================================

A client applies these options itself (the server's messages cannot change them): every
party of a round must be configured alike, as the run's public parameters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from protocols.secagg.graph import auto_degree, effective_degree

_PREFIX = "protocol.options."
MAX_AUTO_DEGREE = auto_degree(2**31)
"""The largest ``"auto"`` degree of any round: the 32-bit codec holds fewer than 2**31 clients."""


def _error(key: str, problem: str) -> ValueError:
    return ValueError(f"{_PREFIX}{key}: {problem}")


@dataclass(frozen=True)
class SecAggOptions:
    """Validated SecAgg+ parameters; see the module docstring for their meaning."""

    clip: float = 1.0
    neighbours: int | str = "auto"
    threshold: int | float | str = "majority"
    min_clients: int = 2
    report_clipped: bool = True
    malicious_server: bool = False

    def __post_init__(self) -> None:
        clip = self.clip
        if isinstance(clip, bool) or not isinstance(clip, int | float):
            raise _error("clip", f"must be a number, got {clip!r}")
        if not (math.isfinite(clip) and clip > 0):
            raise _error("clip", f"must be a positive finite number, got {clip!r}")
        k = self.neighbours
        if isinstance(k, str):
            if k != "auto":
                raise _error("neighbours", f"must be an integer >= 1 or 'auto', got {k!r}")
        elif isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise _error("neighbours", f"must be an integer >= 1 or 'auto', got {k!r}")
        t = self.threshold
        if isinstance(t, str):
            if t != "majority":
                raise _error("threshold", f"must be a count, a fraction or 'majority', got {t!r}")
        elif isinstance(t, bool):
            raise _error("threshold", f"must be a count, a fraction or 'majority', got {t!r}")
        elif isinstance(t, int):
            if t < 2:
                raise _error("threshold", f"a count must be >= 2, got {t} (with 1 every share "
                             "is the secret itself)")
            if isinstance(k, int):
                even = k + k % 2
                if t > even:
                    raise _error("threshold", f"{t} exceeds neighbours = {k}: no round could "
                                 "ever reconstruct a secret")
                if 2 * t <= even:
                    raise _error("threshold", f"{t} is at most half of neighbours = {even}: "
                                 "the server could collect both secrets of a client from "
                                 "two halves of its neighbours")
            elif t > MAX_AUTO_DEGREE:
                raise _error("threshold", f"{t} exceeds {MAX_AUTO_DEGREE}, the most neighbours "
                             "'auto' gives any round: no round could reconstruct a secret")
        elif isinstance(t, float):
            if not (0.5 < t <= 1.0):
                raise _error("threshold", f"a fraction must be in (0.5, 1], got {t} (at most "
                             "half would let two halves of a client's neighbours reveal both "
                             "of its secrets)")
        else:
            raise _error("threshold", f"must be a count, a fraction or 'majority', got {t!r}")
        m = self.min_clients
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise _error("min_clients", f"must be an integer >= 1, got {m!r}")
        for key in ("report_clipped", "malicious_server"):
            if not isinstance(getattr(self, key), bool):
                raise _error(key, f"must be true or false, got {getattr(self, key)!r}")

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> SecAggOptions:
        options = dict(options)
        known = {"clip", "neighbours", "threshold", "min_clients", "report_clipped",
                 "malicious_server"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"protocol 'secagg' takes no option {unknown[0]!r}; "
                             f"options are {sorted(known)}")
        return cls(**options)

    def degree(self, participants: int) -> int:
        """``k`` for a round with ``participants`` clients that advertised keys."""
        requested = auto_degree(participants) if self.neighbours == "auto" else int(self.neighbours)
        return effective_degree(requested, participants)

    def shares_needed(self, k: int) -> int:
        """``t`` for neighbourhoods of size ``k`` (may exceed ``k``: the round then cannot run)."""
        t = self.threshold
        if t == "majority":
            return k // 2 + 1
        if isinstance(t, float):
            return max(1, math.ceil(t * k))
        return int(t)
