"""Which parameters are frozen, shared or personal: declared here, once, and enforced.

Every recommender is an ``nn.Module`` with exactly three submodules:

- ``backbone`` — the frozen foundation backbone (pretrained on public users, never trained
  or sent by clients);
- ``shared`` — the global adapter (FFM) or shared item embeddings (baselines): the only
  parameters a client may send, as an update, and the server aggregates;
- ``personal`` — the user's personal adapter, user embedding and gate: trained on the
  device and never sent.

:func:`check_partition` rejects a model with a parameter outside these groups, and
:func:`flatten_shared` refuses any name that is not shared, so no personal tensor can reach
a message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

FROZEN, SHARED, PERSONAL = "backbone", "shared", "personal"
GROUPS = (FROZEN, SHARED, PERSONAL)


class PartitionError(ValueError):
    """A parameter is in the wrong group, or a non-shared tensor was about to be sent."""


def group_of(name: str) -> str:
    """The group a parameter name belongs to, from its top-level submodule."""
    head = name.split(".", 1)[0]
    if head not in GROUPS:
        raise PartitionError(f"parameter {name!r} is in none of the groups {GROUPS}")
    return head


def check_partition(model: nn.Module) -> None:
    """Raise if any parameter or buffer lies outside ``backbone``/``shared``/``personal``."""
    for name, _ in list(model.named_parameters()) + list(model.named_buffers()):
        group_of(name)


def params_of(model: nn.Module, group: str) -> dict[str, nn.Parameter]:
    """The model's parameters of one group, by full name, in a stable order."""
    return {n: p for n, p in model.named_parameters() if group_of(n) == group}


def state_of(model: nn.Module, group: str) -> dict[str, np.ndarray]:
    """A detached float64-free copy (float32 numpy) of one group's parameters."""
    return {n: p.detach().cpu().numpy().copy() for n, p in params_of(model, group).items()}


def load_group(model: nn.Module, group: str, state: Mapping[str, np.ndarray]) -> None:
    """Copy ``state`` into the model's parameters of ``group`` (names must match exactly)."""
    params = params_of(model, group)
    if set(state) != set(params):
        missing, extra = sorted(set(params) - set(state)), sorted(set(state) - set(params))
        raise PartitionError(f"{group} state mismatch: missing {missing}, unexpected {extra}")
    with torch.no_grad():
        for name, p in params.items():
            value = torch.as_tensor(np.asarray(state[name]), dtype=p.dtype)
            if value.shape != p.shape:
                raise PartitionError(f"{name}: shape {tuple(value.shape)} != {tuple(p.shape)}")
            p.copy_(value)


@dataclass(frozen=True)
class SharedSpec:
    """Order and shapes of the shared parameters: how a shared state becomes a flat vector."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, model: nn.Module) -> SharedSpec:
        params = params_of(model, SHARED)
        return cls(tuple(params), tuple(tuple(p.shape) for p in params.values()))

    @property
    def size(self) -> int:
        return int(sum(int(np.prod(s)) for s in self.shapes))

    def flatten(self, state: Mapping[str, np.ndarray]) -> np.ndarray:
        """Concatenate a shared state into one float64 vector; any other name is refused."""
        for name in state:
            if group_of(name) != SHARED:
                raise PartitionError(f"refusing to send non-shared tensor {name!r}")
        if set(state) != set(self.names):
            raise PartitionError(
                f"shared state names {sorted(state)} differ from the spec {sorted(self.names)}"
            )
        parts = []
        for name, shape in zip(self.names, self.shapes, strict=True):
            arr = np.asarray(state[name], dtype=np.float64)
            if arr.shape != shape:
                raise PartitionError(f"{name}: shape {arr.shape} != {shape}")
            parts.append(arr.ravel())
        return np.concatenate(parts) if parts else np.zeros(0)

    def unflatten(self, vector: np.ndarray) -> dict[str, np.ndarray]:
        """Split a flat vector back into named float32 arrays."""
        vector = np.asarray(vector)
        if vector.shape != (self.size,):
            raise PartitionError(f"vector of shape {vector.shape}, expected ({self.size},)")
        out, offset = {}, 0
        for name, shape in zip(self.names, self.shapes, strict=True):
            n = int(np.prod(shape))
            out[name] = vector[offset:offset + n].reshape(shape).astype(np.float32)
            offset += n
        return out
