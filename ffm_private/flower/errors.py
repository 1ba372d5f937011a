"""Typed errors of the Flower deployment."""

from __future__ import annotations

from ffm_private.errors import FFMPrivateError


class FlowerDeploymentError(FFMPrivateError):
    """The deployment could not be set up or run (processes, ports, node configuration)."""


class NodeConfigError(FlowerDeploymentError, ValueError):
    """A SuperNode's node config is missing a key or holds a bad value (names the key)."""


class NodeRefusal(FlowerDeploymentError):
    """The node declines a request (its own budget, a mismatched run); the reason is sent back."""
