"""Many clients' local training as one stacked computation, with the loop's mathematics.

:func:`train_batched` returns, for every client, what
:func:`ffm_private.client.train_client` returns (a :class:`~ffm_private.client.ClientResult`),
equal to float tolerance: the same examples and negatives (``train_negative_rng``), the same
mini-batch order (``_batch_seed`` and ``torch.randperm``), the same two phases (personal
parameters with the shared ones frozen, then the shared ones), and Adam reimplemented
functionally with ``torch.optim.Adam``'s update, one optimizer state per client.

How: the model's forward is made a function of its parameters (``torch.func.functional_call``)
and ``torch.func.vmap`` maps the gradient of one client's loss over a block of clients, each
with its own stacked parameters and mini-batch. Clients are sorted by data size, so at step
``s`` the clients still training are a prefix of the block; a shorter mini-batch is padded
with rows whose mask is zero (they add exactly zero to the loss and its gradient) and the
loss is divided by the client's own row count, as the loop's mean is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import functional_call, grad_and_value, vmap
from torch.nn import functional as F

from ffm_private.client import (
    ClientData,
    ClientResult,
    LocalTrainingConfig,
    _batch_seed,
    deterministic_torch,
    shared_delta,
)
from ffm_private.config import ConfigError
from ffm_private.data import train_negative_rng
from ffm_private.messages import ClientUpdate, GlobalModelMessage
from ffm_private.models import FROZEN, PERSONAL, SHARED, Recommender, SharedSpec, params_of
from ffm_private.training_data import Examples, build_examples

#: torch.optim.Adam's defaults, which the loop uses.
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8
#: Floats of working memory assumed per stacked parameter (value, gradient, two Adam moments,
#: temporaries of the update), per history embedding and per candidate embedding element of a
#: mini-batch (forward intermediates and their gradients).
_PARAM_COPIES, _HISTORY_COPIES, _CANDIDATE_COPIES = 8, 2, 8


@dataclass
class _Client:
    data: ClientData
    examples: Examples
    personal: dict[str, np.ndarray]


def block_size(model: Recommender, cfg: LocalTrainingConfig, memory_budget_mb: int,
               rows: int | None = None) -> int:
    """Clients per block so that the block's estimated working memory fits the budget.

    Per client: every shared and personal parameter stacked ``_PARAM_COPIES`` times, plus
    the activations of a mini-batch of ``rows`` rows (default: a full local batch; history
    and candidate embeddings, forward and backward). An estimate, not a bound: it sizes
    blocks, it does not cap the process.
    """
    rows = cfg.batch_size if rows is None else rows
    dim = int(getattr(model, "dim", 64))
    history = int(getattr(model, "history_length", 1))
    per_param = sum(p[0].numel() if name.startswith(PERSONAL) else p.numel()
                    for group in (SHARED, PERSONAL)
                    for name, p in params_of(model, group).items())
    per_row = _HISTORY_COPIES * history + _CANDIDATE_COPIES * (1 + cfg.num_negatives)
    per_client = 4 * (_PARAM_COPIES * per_param + rows * dim * per_row)
    return max(1, int(memory_budget_mb * 2**20 // per_client))


def train_batched(model: Recommender, message: GlobalModelMessage,
                  personal_of: Callable[[int], Mapping[str, np.ndarray]],
                  clients: Sequence[ClientData], cfg: LocalTrainingConfig, seed: int, *,
                  memory_budget_mb: int = 1024) -> dict[int, ClientResult]:
    """Train ``clients`` in blocks; their results by client id (as ``train_client`` gives).

    ``model`` is the loop's workspace (``num_personal = 1``, frozen backbone loaded); it is
    only read. ``personal_of(user)`` gives a client's personal state.
    """
    if cfg.example_dp is not None:
        raise ConfigError("federated.engine = 'batched' does not run example-level DP-SGD; "
                          "use federated.engine = 'loop'")
    if getattr(model, "local_train", None) is not None:
        raise ConfigError(f"federated.engine = 'batched' does not train "
                          f"{type(model).__name__}, which has its own local procedure; use "
                          "federated.engine = 'loop'")
    order = sorted(clients, key=lambda c: -len(c.train))  # stable: ties keep the given order
    out: dict[int, ClientResult] = {}
    with deterministic_torch():
        for block in _blocks([len(c.train) for c in order],
                             lambda rows: block_size(model, cfg, memory_budget_mb, rows),
                             cfg.batch_size):
            # examples are built per block, so only one block's inputs are held at a time
            prepared = [_prepare(model, message, order[i], personal_of, cfg, seed)
                        for i in block]
            for result in _train_block(model, message, prepared, cfg, seed):
                out[result.update.client_id] = result
    return {c.user: out[c.user] for c in clients}


def _prepare(model: Recommender, message: GlobalModelMessage, data: ClientData,
             personal_of: Callable[[int], Mapping[str, np.ndarray]], cfg: LocalTrainingConfig,
             seed: int) -> _Client:
    """The client's examples with the loop's negatives (``train_negative_rng``)."""
    rng = train_negative_rng(seed, message.round_id, data.user)
    examples = build_examples(data.train, model.n_items, getattr(model, "history_length", 1),
                              cfg.num_negatives, rng, exclude=data.excluded)
    personal = {k: np.asarray(v, dtype=np.float32) for k, v in personal_of(data.user).items()}
    return _Client(data, examples, personal)


def _blocks(sizes: list[int], capacity: Callable[[int], int],
            batch_size: int) -> list[list[int]]:
    """Consecutive runs (as indices) of the size-sorted clients, each within the estimate.

    A step pads every client's mini-batch to the block's largest, so a block also ends
    where a client's first mini-batch is under half the block's first one: at least half
    of every padded first step is real rows.
    """
    blocks: list[list[int]] = []
    first_rows = limit = 0
    for i, size in enumerate(sizes):
        rows = min(size, batch_size)
        if blocks and 2 * rows >= first_rows and len(blocks[-1]) < limit:
            blocks[-1].append(i)
        else:
            blocks.append([i])
            first_rows, limit = rows, capacity(rows)
    return blocks


def _train_block(model: Recommender, message: GlobalModelMessage, block: list[_Client],
                 cfg: LocalTrainingConfig, seed: int) -> list[ClientResult]:
    spec = SharedSpec.of(model)
    n = len(block)
    frozen = {k: v.detach() for k, v in model.named_parameters() if k.startswith(FROZEN)}
    frozen.update({k: v.detach() for k, v in model.named_buffers()})
    shared = {k: torch.as_tensor(np.asarray(v), dtype=torch.float32)
              for k, v in message.shared.items()}
    personal_names = list(params_of(model, PERSONAL))
    personal = {k: torch.stack([torch.tensor(c.personal[k]) for c in block])[:, None]
                for k in personal_names}
    inputs = _stack_examples([c.examples for c in block], model.pad)
    round_id = message.round_id
    if personal and cfg.personal_epochs:
        seeds = [_batch_seed(seed, round_id, c.data.user, 1) for c in block]
        personal, personal_loss = _phase(
            model, frozen, trained=personal, fixed=shared, fixed_batched=False, inputs=inputs,
            epochs=cfg.personal_epochs, lr=cfg.personal_lr, batch_size=cfg.batch_size,
            seeds=seeds)
    else:
        personal_loss = [float("nan")] * n
    stacked_shared = {k: v.expand(n, *v.shape).clone() for k, v in shared.items()}
    if stacked_shared and cfg.local_epochs:
        seeds = [_batch_seed(seed, round_id, c.data.user, 2) for c in block]
        stacked_shared, shared_loss = _phase(
            model, frozen, trained=stacked_shared, fixed=personal, fixed_batched=True,
            inputs=inputs, epochs=cfg.local_epochs, lr=cfg.lr, batch_size=cfg.batch_size,
            seeds=seeds)
    else:
        shared_loss = [float("nan")] * n
    results = []
    for i, client in enumerate(block):
        new_shared = {k: v[i].numpy().copy() for k, v in stacked_shared.items()}
        metrics = {"personal_loss": personal_loss[i], "shared_loss": shared_loss[i]}
        update = ClientUpdate(client_id=client.data.user, round_id=round_id,
                              delta=shared_delta(spec, new_shared, message),
                              num_examples=len(client.examples), metrics=dict(metrics))
        results.append(ClientResult(
            update=update, personal={k: v[i, 0].numpy().copy() for k, v in personal.items()},
            metrics=metrics, dp=None))
    return results


@dataclass
class _Inputs:
    history: torch.Tensor  # (B, N, L), padded rows hold the pad item
    items: torch.Tensor    # (B, N, K)
    labels: torch.Tensor   # (B, N, K)
    sizes: list[int]


def _stack_examples(examples: list[Examples], pad: int) -> _Inputs:
    width = max(len(e) for e in examples)
    b, hist_len, k = len(examples), examples[0].history.shape[1], examples[0].items.shape[1]
    history = np.full((b, width, hist_len), pad, dtype=np.int64)
    items = np.zeros((b, width, k), dtype=np.int64)
    labels = np.zeros((b, width, k), dtype=np.float32)
    for i, e in enumerate(examples):
        history[i, :len(e)], items[i, :len(e)], labels[i, :len(e)] = e.history, e.items, e.labels
    return _Inputs(torch.from_numpy(history), torch.from_numpy(items), torch.from_numpy(labels),
                   [len(e) for e in examples])


def _schedules(sizes: list[int], seeds: list[int], epochs: int,
               batch_size: int) -> list[list[torch.Tensor]]:
    """Each client's mini-batches in the loop's order: a fresh permutation per epoch."""
    out = []
    for size, seed in zip(sizes, seeds, strict=True):
        gen = torch.Generator().manual_seed(seed)
        steps = []
        for _ in range(epochs):
            order = torch.randperm(size, generator=gen)
            steps += [order[s:s + batch_size] for s in range(0, size, batch_size)]
        out.append(steps)
    return out


def _phase(model: Recommender, frozen: Mapping[str, torch.Tensor], *,
           trained: dict[str, torch.Tensor], fixed: Mapping[str, torch.Tensor],
           fixed_batched: bool, inputs: _Inputs, epochs: int, lr: float, batch_size: int,
           seeds: list[int]) -> tuple[dict[str, torch.Tensor], list[float]]:
    """Adam on ``trained`` (stacked per client) over each client's own mini-batches.

    Clients are sorted by size (largest first), so the ones still training at step ``s``
    are ``[:active]``; the others keep their parameters and optimizer state untouched.
    """
    schedules = _schedules(inputs.sizes, seeds, epochs, batch_size)
    total_steps = [len(s) for s in schedules]
    if any(a < b for a, b in zip(total_steps, total_steps[1:], strict=False)):
        raise AssertionError("clients must be sorted by decreasing step count")
    trained = {k: v.clone() for k, v in trained.items()}
    exp_avg = {k: torch.zeros_like(v) for k, v in trained.items()}
    exp_avg_sq = {k: torch.zeros_like(v) for k, v in trained.items()}
    loss_sum = [0.0] * len(schedules)
    owner = torch.zeros(1, dtype=torch.long)

    def loss_fn(train_p, fixed_p, history, items, labels, mask, count):
        params = {**frozen, **fixed_p, **train_p}
        logits = functional_call(model, params, (history, items, owner.expand(len(history))))
        bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        loss = (bce * mask[:, None]).sum() / (count * labels.shape[-1])
        return loss, loss

    step_fn = vmap(grad_and_value(loss_fn, has_aux=True),
                   in_dims=(0, 0 if fixed_batched else None, 0, 0, 0, 0, 0))
    for s in range(max(total_steps, default=0)):
        active = sum(1 for t in total_steps if t > s)
        idx = [schedules[i][s] for i in range(active)]
        rows = max(len(x) for x in idx)
        index = torch.zeros(active, rows, dtype=torch.long)
        mask = torch.zeros(active, rows)
        for i, x in enumerate(idx):
            index[i, :len(x)] = x
            mask[i, :len(x)] = 1.0
        count = torch.tensor([float(len(x)) for x in idx])
        client = torch.arange(active)[:, None]
        batch = (inputs.history[client, index], inputs.items[client, index],
                 inputs.labels[client, index])
        train_p = {k: v[:active] for k, v in trained.items()}
        fixed_p = {k: v[:active] for k, v in fixed.items()} if fixed_batched else fixed
        grads, (_, loss) = step_fn(train_p, fixed_p, *batch, mask, count)
        with torch.no_grad():
            _adam_step(train_p, grads, {k: v[:active] for k, v in exp_avg.items()},
                       {k: v[:active] for k, v in exp_avg_sq.items()}, step=s + 1, lr=lr)
        for i, value in enumerate(loss.tolist()):
            loss_sum[i] += value * len(idx[i])
    # as the loop: the mean over every trained row (0.0 for a client without rows)
    means = [total / max(size * epochs, 1) for total, size in zip(loss_sum, inputs.sizes,
                                                                    strict=True)]
    return trained, means


def _adam_step(params: Mapping[str, torch.Tensor], grads: Mapping[str, torch.Tensor],
               exp_avg: Mapping[str, torch.Tensor], exp_avg_sq: Mapping[str, torch.Tensor], *,
               step: int, lr: float) -> None:
    """``torch.optim.Adam``'s update (defaults, single-tensor form), in place on views.

    Every client updated here is at the same step count: the ones still training have
    trained at every earlier step.
    """
    bias_correction1 = 1 - BETA1**step
    bias_correction2_sqrt = (1 - BETA2**step) ** 0.5
    step_size = lr / bias_correction1
    for name, param in params.items():
        g = grads[name]
        exp_avg[name].lerp_(g, 1 - BETA1)
        exp_avg_sq[name].mul_(BETA2).addcmul_(g, g, value=1 - BETA2)
        denom = (exp_avg_sq[name].sqrt() / bias_correction2_sqrt).add_(EPS)
        param.addcdiv_(exp_avg[name], denom, value=-step_size)
