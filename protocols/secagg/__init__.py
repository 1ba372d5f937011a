"""SecAgg+: the server learns only the sum of the sampled clients' updates, despite dropouts.

Modules, one responsibility each: ``options`` (validated parameters), ``primitives``
(X25519, HKDF, AES-GCM, AES-CTR masks), ``shamir`` (vectorised secret sharing),
``graph`` (the neighbour graph), ``transcript`` (a party's view of the round and its hash),
``messages`` (the wire format), ``client`` and ``server`` (the parties), ``protocol`` (the
in-process round behind the common interface), ``collusion`` (exposure probabilities).
See ``docs/secagg.md``.
"""

from protocols.secagg.options import SecAggOptions
from protocols.secagg.protocol import SecAggPlusProtocol, SecAggResult

__all__ = ["SecAggOptions", "SecAggPlusProtocol", "SecAggResult"]
