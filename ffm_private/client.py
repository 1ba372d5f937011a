"""One client's local step: a pure function of its inputs.

``train_client(model, message, personal_state, data, cfg, seed)`` depends on nothing else:
no hidden globals, no state kept between rounds (personal state is passed in and returned),
so the loop can run clients in any order, on any machine, or later many at once.

Local training has two phases, which is what lets privacy accounting tell them apart:
1. the personal parameters (user embedding, personal adapter, gate) are trained with the
   shared ones frozen; they never leave the device;
2. the shared parameters (global adapter) are trained with the personal ones frozen; the
   difference to the received state is the update that is sent.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from ffm_private.data import train_negative_rng
from ffm_private.messages import ClientUpdate, GlobalModelMessage
from ffm_private.models import PERSONAL, SHARED, Recommender, SharedSpec, load_group, params_of
from ffm_private.models.partition import state_of
from ffm_private.training_data import Examples, build_examples


@dataclass(frozen=True)
class LocalTrainingConfig:
    """What a client needs to know to train locally (sent with the round's instructions)."""

    personal_epochs: int = 1
    local_epochs: int = 1
    personal_lr: float = 0.05
    lr: float = 0.01
    batch_size: int = 256
    num_negatives: int = 4


@dataclass(frozen=True)
class ClientData:
    """A user's own training interactions (item ids in time order)."""

    user: int
    train: np.ndarray


@dataclass(frozen=True)
class ClientResult:
    """What a local step produces: the update to send and the personal state to keep."""

    update: ClientUpdate
    personal: dict[str, np.ndarray]


def _batch_seed(seed: int, round_id: int, user: int, phase: int) -> int:
    return int(np.random.SeedSequence([seed, round_id, user, phase, 7]).generate_state(1)[0])


@contextmanager
def deterministic_torch() -> Iterator[None]:
    """Use torch's deterministic kernels inside the block, then restore the caller's setting.

    On CPU the backward of an indexed embedding lookup accumulates with several threads in
    an order that varies from call to call; without this, two runs with the same seed differ
    in the last bits, and a resumed run would not end where an uninterrupted one does.
    """
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def run_epochs(model: Recommender, params: list[torch.nn.Parameter], examples: Examples,
               epochs: int, lr: float, batch_size: int, seed: int, *,
               owner: torch.Tensor | None = None,
               optimizer: torch.optim.Optimizer | None = None) -> float:
    """Adam on ``params`` over shuffled mini-batches; returns the mean loss.

    A fresh optimizer is made unless one is passed; ``owner`` selects personal rows per
    example (all zeros, the single client's row, by default).
    """
    if epochs == 0 or not params:
        return float("nan")
    history = torch.from_numpy(examples.history)
    items = torch.from_numpy(examples.items)
    labels = torch.from_numpy(examples.labels)
    if owner is None:
        owner = torch.zeros(len(examples), dtype=torch.long)
    opt = optimizer or torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    with deterministic_torch():
        for _ in range(epochs):
            order = torch.randperm(len(examples), generator=gen)
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                logits = model(history[idx], items[idx], owner[idx])
                loss = F.binary_cross_entropy_with_logits(logits, labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
                count += len(idx)
    return total / max(count, 1)


def train_client(model: Recommender, message: GlobalModelMessage,
                 personal: Mapping[str, np.ndarray], data: ClientData,
                 cfg: LocalTrainingConfig, seed: int) -> ClientResult:
    """Train one client from the global message and its personal state.

    ``model`` is a workspace with ``num_personal = 1`` whose frozen backbone is already
    loaded; its shared and personal parameters are overwritten here.
    """
    spec = SharedSpec.of(model)
    load_group(model, SHARED, message.shared)
    load_group(model, PERSONAL, {k: np.asarray(v)[None] for k, v in personal.items()})
    rng = train_negative_rng(seed, message.round_id, data.user)
    examples = build_examples(data.train, model.n_items, getattr(model, "history_length", 1),
                              cfg.num_negatives, rng)
    model.train()
    personal_params = list(params_of(model, PERSONAL).values())
    shared_params = list(params_of(model, SHARED).values())
    for p in model.parameters():
        p.requires_grad_(False)
    for p in personal_params:
        p.requires_grad_(True)
    personal_loss = run_epochs(model, personal_params, examples, cfg.personal_epochs,
                               cfg.personal_lr, cfg.batch_size,
                               _batch_seed(seed, message.round_id, data.user, 1))
    for p in personal_params:
        p.requires_grad_(False)
    for p in shared_params:
        p.requires_grad_(True)
    shared_loss = run_epochs(model, shared_params, examples, cfg.local_epochs, cfg.lr,
                             cfg.batch_size, _batch_seed(seed, message.round_id, data.user, 2))
    for p in shared_params:
        p.requires_grad_(False)
    new_shared = state_of(model, SHARED)
    delta = spec.flatten(new_shared) - spec.flatten(message.shared)
    new_personal = {k: v[0] for k, v in state_of(model, PERSONAL).items()}
    update = ClientUpdate(
        client_id=data.user,
        round_id=message.round_id,
        delta=delta,
        num_examples=len(examples),
        metrics={"personal_loss": personal_loss, "shared_loss": shared_loss},
    )
    return ClientResult(update=update, personal=new_personal)
