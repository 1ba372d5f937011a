"""Aggregation protocols: turn many clients' update vectors into their sum.

``plaintext`` (reference), ``secagg`` (SecAgg+ with dropout robustness) and ``he``
(TenSEAL CKKS / BFV). All implement :class:`protocols.base.AggregationProtocol`.
"""

from protocols.base import AggregateResult, AggregationProtocol
from protocols.channel import Channel, FaultSpec, FaultyChannel
from protocols.registry import available, create

__all__ = [
    "AggregateResult",
    "AggregationProtocol",
    "Channel",
    "FaultSpec",
    "FaultyChannel",
    "available",
    "create",
]
