"""One client's local step: a pure function of its inputs.

``train_client(model, message, personal_state, data, cfg, seed)`` depends on nothing else:
no hidden globals, no state kept between rounds (personal state is passed in and returned),
so the loop can run clients in any order, on any machine, or later many at once.

Local training has two phases, which is what lets privacy accounting tell them apart:
1. the personal parameters (user embedding, personal adapter, gate) are trained with the
   shared ones frozen; they never leave the device;
2. the shared parameters (global adapter) are trained with the personal ones frozen; the
   difference to the received state is the update that is sent.

With ``cfg.example_dp`` set, both phases run example-level DP-SGD
(:mod:`ffm_private.privacy.dpsgd`): Poisson-sampled rows without histories, per-row clipping
and Gaussian noise drawn from the caller's ``generator``; the result says what was run.

With a sensitive-subspace basis in the message (``[defense]``), the update is projected onto
its orthogonal complement here, before anything (clipping, noise, encoding) touches it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

from ffm_private.data import train_negative_rng
from ffm_private.defense.projection import project_out
from ffm_private.messages import ClientUpdate, GlobalModelMessage
from ffm_private.models import PERSONAL, SHARED, Recommender, SharedSpec, load_group, params_of
from ffm_private.models.partition import state_of
from ffm_private.privacy.dpsgd import (
    DPRunReport,
    ExampleDP,
    check_coverage,
    history_free_frozen,
    run_dp_phase,
)
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
    example_dp: ExampleDP | None = None  # example-level DP-SGD for both phases (None: off)


@dataclass(frozen=True)
class ClientData:
    """A user's own training interactions (item ids in time order).

    ``excluded``: items the user's training negatives never include (its own evaluation
    candidates under the isolated protocol; ``None``: the pfedrec protocol). Held on the device.
    """

    user: int
    train: np.ndarray
    excluded: np.ndarray | None = None


@dataclass(frozen=True)
class ClientResult:
    """What a local step produces: the update to send and the personal state to keep.

    ``metrics`` (losses) stay on the device: under example-level DP they are not protected.
    ``dp`` says what DP-SGD the client ran (``None`` without example-level DP).
    """

    update: ClientUpdate
    personal: dict[str, np.ndarray]
    metrics: dict[str, float] = field(default_factory=dict)
    dp: DPRunReport | None = None


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
                 cfg: LocalTrainingConfig, seed: int, *,
                 generator: torch.Generator | None = None,
                 accountant: object | None = None) -> ClientResult:
    """Train one client from the global message and its personal state.

    ``model`` is a workspace with ``num_personal = 1`` whose frozen backbone is already
    loaded; its shared and personal parameters are overwritten here. With
    ``cfg.example_dp`` set, ``generator`` (secret, per round and client: see
    :func:`ffm_private.privacy.dpsgd.torch_generator`) drives the sampling, negatives and
    noise, and ``accountant`` (an Opacus accountant, tests only) records each noisy step.
    """
    spec = SharedSpec.of(model)
    load_group(model, SHARED, message.shared)
    load_group(model, PERSONAL, {k: np.asarray(v)[None] for k, v in personal.items()})
    model.train()
    personal_params = params_of(model, PERSONAL)
    shared_params = params_of(model, SHARED)
    for p in model.parameters():
        p.requires_grad_(False)
    if cfg.example_dp is not None:
        personal_loss, shared_loss, report = _dp_phases(
            model, personal_params, shared_params, data, cfg, cfg.example_dp, generator,
            accountant)
        num_examples, sent_metrics = 0, {}  # the count and losses are not protected: kept local
    else:
        report = None
        rng = train_negative_rng(seed, message.round_id, data.user)
        examples = build_examples(data.train, model.n_items, getattr(model, "history_length", 1),
                                  cfg.num_negatives, rng, exclude=data.excluded)
        local_train = getattr(model, "local_train", None)
        if local_train is not None:  # a model with its own published local procedure
            with deterministic_torch():
                personal_loss, shared_loss = local_train(
                    examples, epochs=cfg.local_epochs, lr=cfg.lr, personal_lr=cfg.personal_lr,
                    batch_size=cfg.batch_size,
                    seed=_batch_seed(seed, message.round_id, data.user, 2))
        else:
            personal_loss = _plain_phase(model, personal_params, examples, cfg.personal_epochs,
                                         cfg.personal_lr, cfg.batch_size,
                                         _batch_seed(seed, message.round_id, data.user, 1))
            shared_loss = _plain_phase(model, shared_params, examples, cfg.local_epochs, cfg.lr,
                                       cfg.batch_size,
                                       _batch_seed(seed, message.round_id, data.user, 2))
        num_examples = len(examples)
        sent_metrics = {"personal_loss": personal_loss, "shared_loss": shared_loss}
    model.after_local_training(message.shared)
    new_shared = state_of(model, SHARED)
    delta = shared_delta(spec, new_shared, message)
    new_personal = {k: v[0] for k, v in state_of(model, PERSONAL).items()}
    update = ClientUpdate(
        client_id=data.user,
        round_id=message.round_id,
        delta=delta,
        num_examples=num_examples,
        metrics=sent_metrics,
    )
    return ClientResult(update=update, personal=new_personal,
                        metrics={"personal_loss": personal_loss, "shared_loss": shared_loss},
                        dp=report)


def shared_delta(spec: SharedSpec, new_shared: Mapping[str, np.ndarray],
                 message: GlobalModelMessage) -> np.ndarray:
    """The flat update a client would send: its new shared state minus the broadcast.

    With a defense basis in the message the update is projected onto its orthogonal
    complement first, so clipping, noise and encoding all act on the projected vector.
    Every engine forms its updates here.
    """
    delta = spec.flatten(new_shared) - spec.flatten(message.shared)
    if message.defense_basis is not None:
        delta = project_out(delta, message.defense_basis)
    return delta


def _plain_phase(model: Recommender, params: Mapping[str, torch.nn.Parameter],
                 examples: Examples, epochs: int, lr: float, batch_size: int, seed: int) -> float:
    """Non-private local training of ``params`` (all others frozen)."""
    plist = list(params.values())
    for p in plist:
        p.requires_grad_(True)
    try:
        return run_epochs(model, plist, examples, epochs, lr, batch_size, seed)
    finally:
        for p in plist:
            p.requires_grad_(False)


def _dp_phases(model: Recommender, personal_params: Mapping[str, torch.nn.Parameter],
               shared_params: Mapping[str, torch.nn.Parameter], data: ClientData,
               cfg: LocalTrainingConfig, dp: ExampleDP, generator: torch.Generator | None,
               accountant: object | None) -> tuple[float, float, DPRunReport]:
    """Both phases with example-level DP-SGD; refuses what the claim would not cover."""
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"client {data.user}: example-level DP-SGD needs the round's secret "
                         "torch.Generator (dpsgd.torch_generator); none was given")
    has_personal = bool(personal_params)
    check_coverage(has_personal=has_personal, personal_epochs=cfg.personal_epochs,
                   personal_steps=dp.personal_steps)
    frozen = set(history_free_frozen(model))
    shared = {k: p for k, p in shared_params.items() if k not in frozen}
    common = dict(expected_batch_size=dp.expected_batch_size, num_negatives=cfg.num_negatives,
                  generator=generator, noise_multiplier=dp.noise_multiplier,
                  optimizer=dp.optimizer, accountant=accountant)
    personal_loss, personal_steps = float("nan"), 0
    with deterministic_torch():
        if has_personal and dp.personal_steps:
            out = _dp_phase(model, personal_params, data, engine="functorch",
                            clipping_norm=dp.personal_norm, sample_rate=dp.personal_sample_rate,
                            steps=dp.personal_steps, lr=cfg.personal_lr, **common)
            personal_loss, personal_steps, empty = out.loss, out.steps, out.empty_steps
        else:
            empty = 0
        out = _dp_phase(model, shared, data, engine=dp.engine, clipping_norm=dp.clipping_norm,
                        sample_rate=dp.sample_rate, steps=dp.steps, lr=cfg.lr, **common)
    report = DPRunReport(noise_multiplier=dp.noise_multiplier, example_rate=dp.sample_rate,
                         local_steps=out.steps,
                         personal_rate=dp.personal_sample_rate if personal_steps else 0.0,
                         personal_steps=personal_steps, empty_steps=empty + out.empty_steps)
    return personal_loss, out.loss, report


def _dp_phase(model: Recommender, params: Mapping[str, torch.nn.Parameter], data: ClientData,
              **kwargs: object):
    for p in params.values():
        p.requires_grad_(True)
    try:
        return run_dp_phase(model, params, data.train, **kwargs)  # type: ignore[arg-type]
    finally:
        for p in params.values():
            p.requires_grad_(False)
