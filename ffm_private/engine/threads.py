"""Torch's intra-op thread count, set for a block of client training and then restored.

A client's tensors are tiny (a few hundred rows), so torch's intra-op threads mostly spin
and wait on each other; when other jobs share the cores they are descheduled and every
small kernel waits for the slowest thread. One thread per client step keeps the round
time proportional to the CPU time it gets. Parallelism across clients belongs to the
batch dimension (the batched engine) or to separate processes, not to tiny kernels.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def client_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` intra-op threads (0: leave torch's setting), then restore."""
    if threads < 0:
        raise ValueError(f"client threads = {threads} must be >= 0")
    before = torch.get_num_threads()
    if threads and threads != before:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
