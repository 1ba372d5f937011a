"""Low-rank adapters (LoRA, Hu et al. 2022) for frozen linear layers, and FFA-LoRA.

A LoRA pair adds ``B(A(x))`` to a frozen projection ``W x``: ``A`` maps ``d_in -> r``, ``B``
maps ``r -> d_out`` and starts at zero, so a fresh adapter leaves the backbone unchanged.
Both are ``nn.Linear`` layers without bias, so Opacus computes their per-example gradients.

With FFA-LoRA (Sun et al., ICLR 2024) ``A`` is frozen at its seeded initialisation and
belongs to the backbone; only ``B`` is trained and sent. The aggregate is then exact: the
mean of the clients' ``B_k`` gives ``mean(B_k) A = mean(B_k A)``, the mean of their weight
updates, where plain LoRA's ``mean(B_k) mean(A_k)`` is not ``mean(B_k A_k)``.
"""

from __future__ import annotations

import torch
from torch import nn


def lora_down(d_in: int, rank: int) -> nn.Linear:
    """The ``A`` factor: Gaussian with variance ``1 / d_in`` from torch's current RNG."""
    a = nn.Linear(d_in, rank, bias=False)
    with torch.no_grad():
        a.weight.normal_(0.0, d_in ** -0.5)
    return a


def lora_up(rank: int, d_out: int) -> nn.Linear:
    """The ``B`` factor: zero, so the adapted layer starts as the frozen one."""
    b = nn.Linear(rank, d_out, bias=False)
    with torch.no_grad():
        b.weight.zero_()
    return b


def weight_update(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The dense weight change ``B A`` a LoRA pair adds (``(d_out, d_in)``)."""
    return b @ a
