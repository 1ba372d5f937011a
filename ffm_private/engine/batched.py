"""Many clients' local training as one stacked computation, with the loop's mathematics.

:func:`train_batched` returns, for every client, what
:func:`ffm_private.client.train_client` returns (a :class:`~ffm_private.client.ClientResult`),
equal to float tolerance: the same examples and negatives (``train_negative_rng``), the same
mini-batch order (``_batch_seed`` and ``torch.randperm``), the same two phases (personal
parameters with the shared ones frozen, then the shared ones), and Adam reimplemented
functionally with ``torch.optim.Adam``'s update, one optimizer state per client.

How: every client's shared and personal parameters are stacked on a leading client axis
and the model scores a block of clients at once (:meth:`Recommender.stacked_scores`: a
hand-batched formulation for the FFM and FedMF, ``torch.func.vmap`` over ``forward``
otherwise). The sum of the clients' losses is differentiated once per step; since each
client's loss depends only on its own slice of the stacked parameters, its slice of the
gradient is exactly its own gradient, and Adam is elementwise, so one update of the stack
is every client's own step. What the frozen backbone computes from a row's history is
computed once per block (:meth:`Recommender.frozen_rows`), not at every step of both phases.

Clients are sorted by data size, so at step ``s`` the clients still training are a prefix
of the block; a shorter mini-batch is padded with rows whose mask is zero (they add exactly
zero to the loss and its gradient) and each client's loss is divided by its own row count,
as the loop's mean is. A model whose shared parameters have one row per item (FedMF's item
table, :attr:`Recommender.item_rows`) trains each client's copy restricted to the items of
its own rows: the other rows get an exactly zero gradient at every step, so Adam leaves them
exactly unchanged in the loop as well.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.utils.deterministic
from torch.nn import functional as F

from ffm_private.client import (
    ClientData,
    ClientResult,
    LocalTrainingConfig,
    _batch_seed,
    deterministic_torch,
)
from ffm_private.config import ConfigError
from ffm_private.data import sample_train_negatives, train_negative_rng
from ffm_private.defense.projection import project_out
from ffm_private.messages import ClientUpdate, GlobalModelMessage
from ffm_private.models import PERSONAL, SHARED, Recommender, SharedSpec, params_of
from ffm_private.training_data import Examples, build_examples

#: torch.optim.Adam's defaults, which the loop uses.
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8
#: Floats of working memory assumed per stacked parameter (value, gradient, two Adam moments,
#: temporaries of the update); per candidate of a mini-batch row, in units of the embedding
#: width (the gathered item embeddings and the forward and backward temporaries); per row
#: of the block (the frozen row features: history and candidate embeddings; the examples).
_PARAM_COPIES, _CANDIDATE_COPIES, _ROW_COPIES = 8, 3, 2
#: A step's clients are computed in runs whose padded mini-batches are at least this
#: fraction real rows, each run at least ``_MIN_ROWS`` real rows (:func:`_chunks`).
_FILL, _MIN_ROWS, _MAX_ROWS = 0.75, 2048, 8192
#: Clients whose training negatives are mapped to items together (an ``(n, items)`` table).
_SAMPLING_GROUP = 256


@dataclass
class _Block:
    """A block's clients, their personal states and their examples laid end to end."""

    clients: list[ClientData]
    personal: list[dict[str, np.ndarray]]
    examples: Examples
    sizes: list[int]


def _compacts(model: Recommender) -> tuple[str, ...]:
    """The shared item-row parameters trained restricted to each client's own items."""
    return tuple(model.item_rows) if getattr(model, "stacked_item_rows", False) else ()


def _client_cost(model: Recommender, cfg: LocalTrainingConfig) -> Callable[[int], int]:
    """Estimated bytes of working memory for a client with ``rows`` training rows.

    Every shared and personal parameter stacked ``_PARAM_COPIES`` times (an item-row table
    only at the rows such a client can touch), its rows' frozen features and examples, and
    its share of a mini-batch's activations.
    """
    dim = int(getattr(model, "dim", 64))
    history = int(getattr(model, "history_length", 1))
    candidates = 1 + cfg.num_negatives
    compact = _compacts(model)
    fixed, per_item = 0, 0
    for group in (SHARED, PERSONAL):
        for name, p in params_of(model, group).items():
            if name in compact:
                per_item += p[0].numel()
            else:
                fixed += p[0].numel() if group == PERSONAL else p.numel()
    n_rows = params_of(model, SHARED)[compact[0]].shape[0] if compact else 0
    per_step_row = _CANDIDATE_COPIES * candidates * dim
    per_row = _ROW_COPIES * (dim * (1 + candidates) + history + 2 * candidates)

    def cost(rows: int) -> int:
        params = fixed + min(n_rows, rows * candidates) * per_item
        return 4 * (_PARAM_COPIES * params + min(rows, cfg.batch_size) * per_step_row
                    + rows * per_row)

    return cost


def block_size(model: Recommender, cfg: LocalTrainingConfig, memory_budget_mb: int,
               rows: int | None = None) -> int:
    """Clients of ``rows`` training rows (default: one local batch) per block of the budget.

    An estimate, not a bound: it sizes blocks, it does not cap the process.
    """
    rows = cfg.batch_size if rows is None else rows
    return max(1, int(memory_budget_mb * 2**20 // _client_cost(model, cfg)(rows)))


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
    with deterministic_torch(), _uninitialized_memory_left_alone():
        cost = _client_cost(model, cfg)
        for block in _blocks([cost(len(c.train)) for c in order], memory_budget_mb * 2**20):
            # examples are built per block, so only one block's inputs are held at a time
            members = [order[i] for i in block]
            examples, sizes = _block_examples(model, message.round_id, members, cfg, seed)
            personal = [{k: np.asarray(v, dtype=np.float32) for k, v in personal_of(c.user).items()}
                        for c in members]
            prepared = _Block(members, personal, examples, sizes)
            for result in _train_block(model, message, prepared, cfg, seed):
                out[result.update.client_id] = result
    return {c.user: out[c.user] for c in clients}


@contextmanager
def _uninitialized_memory_left_alone() -> Iterator[None]:
    """Deterministic mode without its NaN-filling of every new tensor, then restored.

    With deterministic algorithms on, torch fills each uninitialised allocation with NaN so
    that reading it by mistake shows; the engine's large block tensors would be written
    twice (a fifth of a round's time). Only memory a kernel overwrites is affected.
    """
    before = torch.utils.deterministic.fill_uninitialized_memory
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.utils.deterministic.fill_uninitialized_memory = before


def _block_examples(model: Recommender, round_id: int, clients: list[ClientData],
                    cfg: LocalTrainingConfig, seed: int) -> tuple[Examples, list[int]]:
    """Every client's :func:`build_examples` rows, laid end to end, and their counts.

    Each client's negatives are drawn from its own ``train_negative_rng`` with the loop's
    single ``integers`` call, and mapped to the items that are neither its training items
    nor excluded, as :func:`sample_train_negatives` maps them (the ``k``-th such item in
    increasing order); windows are :func:`prefix_windows` of each client's sequence.
    """
    n_items, neg = model.n_items, cfg.num_negatives
    length = getattr(model, "history_length", 1)
    trains = [np.asarray(c.train, dtype=np.int64) for c in clients]
    sizes = [len(t) for t in trains]
    seq = np.concatenate(trains) if trains else np.zeros(0, dtype=np.int64)
    excluded = [np.asarray(c.excluded, dtype=np.int64) for c in clients
                if c.excluded is not None and len(c.excluded)]
    if neg < 0 or any(len(x) and (x.min() < 0 or x.max() >= n_items) for x in [seq, *excluded]):
        _per_client_examples(model, round_id, clients, cfg, seed)  # raises the loop's error
    negatives = [_block_negatives(model, round_id, clients[lo:lo + _SAMPLING_GROUP],
                                  trains[lo:lo + _SAMPLING_GROUP], cfg, seed)
                 for lo in range(0, len(clients), _SAMPLING_GROUP)]
    total = len(seq)
    negs = (np.concatenate(negatives) if negatives else np.zeros(0, np.int64)).reshape(total, neg)
    start = np.repeat(np.cumsum([0, *sizes[:-1]]).astype(np.int64), sizes)
    row = np.arange(total)
    offsets = np.arange(length) - length
    source = row[:, None] + offsets
    history = np.where((row - start)[:, None] + offsets >= 0, seq[np.maximum(source, 0)],
                       model.pad)
    items = np.concatenate([seq[:, None], negs], axis=1)
    labels = np.zeros(items.shape, dtype=np.float32)
    labels[:, 0] = 1.0
    return Examples(history.reshape(total, length), items, labels), sizes


def _block_negatives(model: Recommender, round_id: int, clients: list[ClientData],
                     trains: list[np.ndarray], cfg: LocalTrainingConfig, seed: int
                     ) -> np.ndarray:
    n_items, neg = model.n_items, cfg.num_negatives
    b = len(clients)
    taken = np.zeros((b, n_items), dtype=bool)
    taken[np.repeat(np.arange(b), [len(t) for t in trains]), np.concatenate(trains)] = True
    for i, c in enumerate(clients):
        if c.excluded is not None:
            taken[i, np.asarray(c.excluded, dtype=np.int64)] = True
    free = n_items - taken.sum(axis=1)
    draws = []
    for i, c in enumerate(clients):
        count = len(trains[i]) * neg
        if count == 0:
            continue
        if free[i] == 0:  # the loop's DataError
            sample_train_negatives(trains[i], n_items, neg, np.random.default_rng(0),
                                   exclude=c.excluded)
        draws.append(train_negative_rng(seed, round_id, c.user).integers(0, free[i], size=count))
    if not draws:
        return np.zeros(0, dtype=np.int64)
    # the k-th free item of client i: where client i's running count of free items is k + 1
    running = np.cumsum(~taken, axis=1) + (n_items * np.arange(b))[:, None]
    owner = np.repeat(np.arange(b), [len(t) * neg for t in trains])
    base = owner * n_items
    return np.searchsorted(running.ravel(), base + np.concatenate(draws) + 1) - base


def _per_client_examples(model: Recommender, round_id: int, clients: list[ClientData],
                         cfg: LocalTrainingConfig, seed: int) -> list[Examples]:
    return [build_examples(c.train, model.n_items, getattr(model, "history_length", 1),
                           cfg.num_negatives, train_negative_rng(seed, round_id, c.user),
                           exclude=c.excluded) for c in clients]


def _blocks(costs: list[int], budget: int) -> list[list[int]]:
    """Consecutive runs (as indices) of the clients whose estimated costs fit the budget.

    Every block holds at least one client. Padding is no concern here: each step groups
    the block's clients by mini-batch size (:func:`_chunks`).
    """
    blocks: list[list[int]] = []
    used = 0
    for i, cost in enumerate(costs):
        if blocks and used + cost <= budget:
            blocks[-1].append(i)
            used += cost
        else:
            blocks.append([i])
            used = cost
    return blocks


@dataclass
class _Inputs:
    """A block's training rows, every client's laid end to end (no padding)."""

    rows: dict[str, torch.Tensor]  # frozen row features (total rows, ...)
    items: torch.Tensor            # (total, K): global item ids, or local ones when compacted
    labels: torch.Tensor           # (total, K)
    sizes: list[int]
    offsets: torch.Tensor          # (B,): the first row of each client


def _train_block(model: Recommender, message: GlobalModelMessage, block: _Block,
                 cfg: LocalTrainingConfig, seed: int) -> list[ClientResult]:
    spec = SharedSpec.of(model)
    n, sizes, examples = len(block.clients), block.sizes, block.examples
    compact = _compacts(model)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    local = _local_items(examples.items, starts, sizes) if compact else None
    with torch.no_grad():
        rows = model.frozen_rows(torch.from_numpy(examples.history),
                                 torch.from_numpy(examples.items))
    inputs = _Inputs(rows, torch.from_numpy(examples.items if local is None else local[0]),
                     torch.from_numpy(examples.labels), sizes, torch.from_numpy(starts))
    received = {k: torch.as_tensor(np.asarray(v), dtype=torch.float32)
                for k, v in message.shared.items()}
    # the received state, as every client's copy (a stride-0 view, compacted rows gathered)
    shared = {k: (_rows_of(v, local[1]) if k in compact else v.expand(n, *v.shape))
              for k, v in received.items()}
    personal = {k: torch.stack([torch.from_numpy(p[k]) for p in block.personal])[:, None]
                for k in params_of(model, PERSONAL)}
    round_id = message.round_id
    if personal and cfg.personal_epochs:
        seeds = _order_seeds(block, seed, round_id, 1, cfg.batch_size)
        personal, personal_loss = _phase(
            model, trained=personal, fixed=shared, inputs=inputs, epochs=cfg.personal_epochs,
            lr=cfg.personal_lr, batch_size=cfg.batch_size, seeds=seeds)
    else:
        personal_loss = [float("nan")] * n
    if shared and cfg.local_epochs:
        seeds = _order_seeds(block, seed, round_id, 2, cfg.batch_size)
        shared, shared_loss = _phase(
            model, trained={k: v.contiguous() for k, v in shared.items()}, fixed=personal,
            inputs=inputs, epochs=cfg.local_epochs, lr=cfg.lr, batch_size=cfg.batch_size,
            seeds=seeds)
    else:
        shared_loss = [float("nan")] * n
    deltas = _deltas(spec, shared, received, local[1] if local is not None else None,
                     local[2] if local is not None else None, message)
    results = []
    for i, client in enumerate(block.clients):
        metrics = {"personal_loss": personal_loss[i], "shared_loss": shared_loss[i]}
        update = ClientUpdate(client_id=client.user, round_id=round_id, delta=deltas[i],
                              num_examples=sizes[i], metrics=dict(metrics))
        results.append(ClientResult(
            update=update, personal={k: v[i, 0].numpy().copy() for k, v in personal.items()},
            metrics=metrics, dp=None))
    return results


def _deltas(spec: SharedSpec, trained: Mapping[str, torch.Tensor],
            received: Mapping[str, torch.Tensor], ids: np.ndarray | None,
            counts: np.ndarray | None, message: GlobalModelMessage) -> np.ndarray:
    """Every client's flat update (one row each), as :func:`client.shared_delta` forms it.

    The new state and the received one in float64, subtracted; with compacted item rows,
    the rows a client never touched are exactly zero (the loop leaves them unchanged).
    With a defense basis in the message, each row is projected as ``shared_delta`` does.
    """
    n = next(iter(trained.values())).shape[0] if trained else 0
    out = np.zeros((n, spec.size), dtype=np.float64)
    offset = 0
    if ids is not None:  # (client, slot) of every slot in use
        client, slot = np.nonzero(np.arange(ids.shape[1])[None, :] < counts[:, None])
    for name, shape in zip(spec.names, spec.shapes, strict=True):
        size = int(np.prod(shape))
        new = trained[name].detach().numpy()
        old = received[name].numpy()
        if ids is None:
            np.subtract(new.reshape(n, size), old.reshape(1, size), dtype=np.float64,
                        out=out[:, offset:offset + size])
        else:
            width = size // shape[0]
            row = ids[client, slot]
            diff = (new[client, slot].reshape(-1, width).astype(np.float64)
                    - old[row].reshape(-1, width).astype(np.float64))
            cols = (client * spec.size + offset + row * width)[:, None] + np.arange(width)
            out.reshape(-1)[cols.reshape(-1)] = diff.reshape(-1)
        offset += size
    if message.defense_basis is not None:
        out = project_out(out, message.defense_basis)
    return out


def _local_items(items: np.ndarray, starts: np.ndarray, sizes: list[int]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each client's candidates renumbered among its own distinct items.

    Returns the local ids of every row's candidates ``(total, K)``, the global id of each
    client's local slots ``(B, T)`` (unused slots repeat a client's first item; they are
    never trained nor written back) and each client's count of distinct items.
    """
    local, uniques = [], []
    for start, size in zip(starts, sizes, strict=True):
        own = items[start:start + size]
        ids, inverse = np.unique(own, return_inverse=True)
        local.append(inverse.reshape(own.shape))
        uniques.append(ids)
    counts = np.array([len(u) for u in uniques], dtype=np.int64)
    table = np.zeros((len(sizes), max(1, int(counts.max(initial=0)))), dtype=np.int64)
    for i, ids in enumerate(uniques):
        table[i, :len(ids)] = ids
        table[i, len(ids):] = ids[0] if len(ids) else 0
    local_ids = np.concatenate(local) if local else np.zeros((0, items.shape[1]))
    return local_ids.astype(np.int64), table, counts


def _order_seeds(block: _Block, seed: int, round_id: int, phase: int,
                 batch_size: int) -> list[int | None]:
    """The loop's mini-batch order seed of each client that has more than one mini-batch."""
    return [_batch_seed(seed, round_id, c.user, phase) if size > batch_size else None
            for c, size in zip(block.clients, block.sizes, strict=True)]


def _schedules(sizes: list[int], seeds: list[int | None], epochs: int,
               batch_size: int) -> list[list[torch.Tensor | None]]:
    """Each client's mini-batches in the loop's order: a fresh permutation per epoch.

    ``None`` stands for a mini-batch of all the client's rows (a client with at most
    ``batch_size`` rows, at every epoch): its loss is their mean in whatever order, so the
    rows are taken as they lie, without drawing (or applying) the loop's permutation.
    """
    out: list[list[torch.Tensor | None]] = []
    for size, seed in zip(sizes, seeds, strict=True):
        if size <= batch_size:
            out.append([None] * epochs if size else [])
            continue
        gen = torch.Generator().manual_seed(seed)
        steps: list[torch.Tensor | None] = []
        for _ in range(epochs):
            order = torch.randperm(size, generator=gen)
            steps += [order[s:s + batch_size] for s in range(0, size, batch_size)]
        out.append(steps)
    return out


def _chunks(lengths: list[int]) -> list[tuple[int, int]]:
    """Runs ``[lo, hi)`` of a step's clients computed together.

    Each run pads its clients' mini-batches to its largest; a run ends where a client's
    mini-batch is under ``_FILL`` of the run's first, once the run holds at least
    ``_MIN_ROWS`` real rows (below that, a separate computation costs more than padding),
    and before it exceeds ``_MAX_ROWS`` (a run's tensors then stay in the processor's
    cache from one operation to the next).
    In one epoch the sizes do not increase along the block (clients are sorted by size);
    with several epochs a client's last, partial mini-batch can come before a smaller
    client's full one, and the run is padded to its largest.
    """
    out, lo, real = [], 0, 0
    for i, rows in enumerate(lengths):
        if i > lo and (real + rows > _MAX_ROWS
                       or rows < _FILL * lengths[lo] and real >= _MIN_ROWS):
            out.append((lo, i))
            lo, real = i, 0
        real += rows
    if lengths:
        out.append((lo, len(lengths)))
    return out


def _phase(model: Recommender, *, trained: dict[str, torch.Tensor],
           fixed: Mapping[str, torch.Tensor], inputs: _Inputs, epochs: int, lr: float,
           batch_size: int, seeds: list[int | None]
           ) -> tuple[dict[str, torch.Tensor], list[float]]:
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
    loss_sum = torch.zeros(len(schedules), dtype=torch.float64)
    candidates = inputs.items.shape[-1]
    for s in range(max(total_steps, default=0)):
        active = sum(1 for t in total_steps if t > s)
        idx = [schedules[i][s] for i in range(active)]
        lengths = [inputs.sizes[i] if x is None else len(x) for i, x in enumerate(idx)]
        for lo, hi in _chunks(lengths):
            width = max(lengths[lo:hi])
            count = torch.tensor(lengths[lo:hi])
            position = torch.arange(width)[None, :]
            mask = position < count[:, None]
            # padding positions read the client's first row (masked out of the loss)
            index = inputs.offsets[lo:hi, None] + torch.where(mask, position, 0)
            for i in range(lo, hi):
                if idx[i] is not None:
                    index[i - lo, :len(idx[i])] = inputs.offsets[i] + idx[i]
            flat = index.view(-1)
            params = {k: v[lo:hi].detach().requires_grad_(True) for k, v in trained.items()}
            scores = model.stacked_scores(
                {k: _take(v, flat, hi - lo) for k, v in inputs.rows.items()},
                _take(inputs.items, flat, hi - lo),
                {**{k: v[lo:hi] for k, v in fixed.items()}, **params})
            bce = F.binary_cross_entropy_with_logits(scores, _take(inputs.labels, flat, hi - lo),
                                                     reduction="none")
            loss = (bce.sum(-1) * mask).sum(-1) / (count * candidates)
            grads = torch.autograd.grad(loss.sum(), list(params.values()))
            with torch.no_grad():
                _adam_step(params, dict(zip(params, grads, strict=True)),
                           {k: v[lo:hi] for k, v in exp_avg.items()},
                           {k: v[lo:hi] for k, v in exp_avg_sq.items()}, step=s + 1, lr=lr)
            loss_sum[lo:hi] += loss.detach().double() * count
    # as the loop: the mean over every trained row (0.0 for a client without rows)
    means = [float(total) / max(size * epochs, 1)
             for total, size in zip(loss_sum, inputs.sizes, strict=True)]
    return trained, means


def _rows_of(table: torch.Tensor, ids: np.ndarray) -> torch.Tensor:
    """``table[ids]`` for a ``(B, T)`` array of row ids: each client's own rows."""
    rows = table.index_select(0, torch.from_numpy(ids.reshape(-1)))
    return rows.view(*ids.shape, *table.shape[1:])


def _take(block: torch.Tensor, flat: torch.Tensor, clients: int) -> torch.Tensor:
    """Rows ``flat`` of the block's rows, as ``(clients, R, ...)``."""
    return block.index_select(0, flat).view(clients, -1, *block.shape[1:])


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
