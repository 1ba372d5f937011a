"""Protocol registry: names in configs map to classes, imported only when used.

Heavy optional dependencies (TenSEAL) are imported by the protocol module itself, so
``import protocols`` stays fast and a plaintext run never loads them.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from protocols.base import AggregationProtocol

_REGISTRY: dict[str, str] = {
    "plaintext": "protocols.plaintext:PlaintextProtocol",
    "secagg": "protocols.secagg:SecAggPlusProtocol",
    "he": "protocols.he:HEProtocol",
}


def available() -> list[str]:
    """Names accepted by :func:`create`."""
    return sorted(_REGISTRY)


def register(name: str, target: str) -> None:
    """Register ``"module.path:ClassName"`` under ``name`` (for extensions)."""
    _REGISTRY[name] = target


def protocol_class(name: str) -> type[AggregationProtocol]:
    """Import and return the class registered under ``name``."""
    try:
        target = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown protocol {name!r}; choose one of {available()}") from None
    module_name, _, cls_name = target.partition(":")
    return getattr(importlib.import_module(module_name), cls_name)


def create(name: str, options: Mapping[str, Any] | None = None) -> AggregationProtocol:
    """Build the protocol ``name`` from its config options."""
    return protocol_class(name).from_options(options or {})
