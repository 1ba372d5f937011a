"""Typed errors of the defenses."""

from __future__ import annotations

from ffm_private.errors import FFMPrivateError


class SubspaceError(FFMPrivateError, ValueError):
    """A sensitive subspace cannot be estimated or applied (says which input and why)."""
