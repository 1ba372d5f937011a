"""Homomorphic aggregation with TenSEAL: CKKS for float sums, BFV for exact fixed-point sums.

Modules: :mod:`~protocols.he.params` (presets, options), :mod:`~protocols.he.wire` (the
versioned frame), :mod:`~protocols.he.crypto` (receipts, signed openings, rounding stream) and
:mod:`~protocols.he.errors` import without TenSEAL; :mod:`~protocols.he.codec` (chunking,
ciphertext checks), :mod:`~protocols.he.keys` (key holder, public context),
:mod:`~protocols.he.parties` (client and server roles) and :mod:`~protocols.he.protocol` load
it. The names below are
resolved lazily, so ``import protocols.he.params`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "KEY_HOLDER": "protocols.he.keys",
    "KeyHolder": "protocols.he.keys",
    "PublicContext": "protocols.he.keys",
    "PRESETS": "protocols.he.params",
    "HEOptions": "protocols.he.params",
    "HEParams": "protocols.he.params",
    "parse_options": "protocols.he.params",
    "HEClient": "protocols.he.parties",
    "HEServer": "protocols.he.parties",
    "HEProtocol": "protocols.he.protocol",
    "HEResult": "protocols.he.protocol",
    "UnverifiedContribution": "protocols.he.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'protocols.he' has no attribute {name!r}") from None
    return getattr(importlib.import_module(module), name)
