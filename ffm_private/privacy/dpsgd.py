"""Example-level DP-SGD on the client, with Opacus (see ``docs/privacy.md``, "Example-level DP-SGD").

The protected unit is one training interaction of one user. One DP-SGD *phase* trains a set
of parameters for a fixed number of steps; each step

1. Poisson-samples the user's training interactions with a fixed rate ``q`` (each one
   independently, from the secure sampling stream of the :class:`DPGenerator`);
2. turns each sampled interaction into exactly one training row: the positive item, fresh
   negatives drawn uniformly from the other items (from the secure negatives stream, so they
   depend on nothing but that row's own item), and an **empty history** (all padding), so
   that no row reads any other interaction;
3. computes per-row gradients, clips each to L2 norm ``C`` and adds ``N(0, (sigma C)^2)`` to
   their sum (Opacus ``DPOptimizer`` for clipping; the noise is float64 from the secure noise
   stream, cast to the parameter's dtype), divides by a public constant
   (``expected_batch_size``) and takes an Adam step.

Randomness: :func:`torch_generator` gives a :class:`DPGenerator`, a ``torch.Generator`` that
carries three ChaCha20 streams (:mod:`ffm_private.privacy.secure_random`) derived from the
client's :class:`~ffm_private.privacy.mechanisms.NoiseSource` stream: the Poisson sample, the
negatives and the Gaussian noise. All three must be secret (which rows were sampled, and
which negatives each got, are part of the mechanism's randomness). Its MT19937 state draws
nothing on this path, and Opacus's own noise draw (``torch.normal`` on the generator) is never
used. A plain ``torch.Generator`` (tests, benchmarks, audits) is accepted: the secure streams
are then keyed by 256 bits drawn from it, so they are only as secret as its seed.

The rate ``q``, the step counts and the normaliser are the same for every client and fixed
once per run (:func:`example_plan_inputs`) from the training configuration and the public
``privacy.reference_size``, never from the users' data, so the mechanism is exactly the
Poisson-subsampled Gaussian the plan accounts for. The noise
multiplier comes from the :class:`~ffm_private.privacy.planner.PrivacyPlan`; Opacus's own
noise search is never called here.

Per-row gradients, by what the parameters are:

- ``hooks``: Opacus's layer hooks materialise per-row gradients (``nn.Linear`` adapters of
  the FFM model: a few thousand numbers per row);
- ``ghost``: Opacus's ghost clipping computes per-row *norms* only, then a second backward
  pass on the re-weighted loss gives the clipped sum; for ``nn.Embedding`` tables (FedMF's
  shared item table) it never builds the ``(rows, n_items + 1, dim)`` per-row gradients;
- ``functorch``: ``torch.func.vmap(grad(...))`` for parameters that the model indexes
  directly rather than through a layer (the personal parameters, indexed by ``owner``);
  the per-row gradients are handed to Opacus's ``DPOptimizer`` for clipping and noise.

Every hook and attribute Opacus puts on the model is removed when a phase ends, so the same
workspace model can serve the next client.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ffm_private.privacy.accounting import GaussianEvent
from ffm_private.privacy.config import DEFAULT_REFERENCE_SIZE
from ffm_private.privacy.errors import UnsupportedClaimError
from ffm_private.privacy.secure_random import SecureGenerator, context_label

if TYPE_CHECKING:  # pragma: no cover
    from ffm_private.client import LocalTrainingConfig
    from ffm_private.privacy.mechanisms import NoiseSource
    from ffm_private.privacy.planner import PrivacyPlan

ENGINES = ("auto", "hooks", "ghost", "functorch")
"""How per-row gradients are obtained (``auto``: ghost if an ``nn.Embedding`` is trained,
Opacus hooks if every trained parameter sits in a supported layer, else functorch)."""

OPTIMIZERS = ("adam", "sgd")
"""Optimizers applied to the noisy gradient (post-processing: any choice keeps the claim)."""

DP_GENERATOR_PURPOSE = 2
"""``NoiseSource`` purpose of the example-level DP-SGD stream (0: user-level noise)."""

_OPACUS_PARAM_ATTRS = ("grad_sample", "summed_grad", "_forward_counter", "_current_grad_sample",
                       "_norm_sample", "_processed")
_OPACUS_MODULE_ATTRS = ("activations", "max_batch_len", "autograd_grad_sample_hooks",
                        "ft_compute_sample_grad")


# -- what a client runs ------------------------------------------------------------------------
def _positive(name: str, value: float) -> float:
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or value <= 0):
        raise ValueError(f"ExampleDP.{name} = {value!r} must be a finite number > 0")
    return float(value)


def _rate(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value <= 1.0:
        raise ValueError(f"ExampleDP.{name} = {value!r} must satisfy 0 < rate <= 1")
    return float(value)


def _steps(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"ExampleDP.{name} = {value!r} must be an integer >= {minimum}")
    return value


@dataclass(frozen=True)
class ExampleDP:
    """Example-level DP-SGD settings of a run: identical for every client, fixed per run.

    ``sample_rate``/``steps`` describe the shared phase, ``personal_sample_rate``/
    ``personal_steps`` the personal phase (0 steps: the personal parameters are not trained,
    which is allowed only when the local config trains none). ``expected_batch_size`` is the
    public constant the noisy gradient sum is divided by. ``engine`` picks how per-row
    gradients are computed for the shared phase (see :data:`ENGINES`).
    """

    noise_multiplier: float
    clipping_norm: float
    sample_rate: float
    steps: int
    expected_batch_size: float
    personal_sample_rate: float = 0.0
    personal_steps: int = 0
    personal_clipping_norm: float | None = None
    engine: str = "auto"
    optimizer: str = "adam"

    def __post_init__(self) -> None:
        _positive("noise_multiplier", self.noise_multiplier)
        _positive("clipping_norm", self.clipping_norm)
        _rate("sample_rate", self.sample_rate)
        _steps("steps", self.steps, 1)
        _positive("expected_batch_size", self.expected_batch_size)
        _steps("personal_steps", self.personal_steps, 0)
        if self.personal_steps:
            _rate("personal_sample_rate", self.personal_sample_rate)
        if self.personal_clipping_norm is not None:
            _positive("personal_clipping_norm", self.personal_clipping_norm)
        if self.engine not in ENGINES:
            raise ValueError(f"ExampleDP.engine = {self.engine!r} must be one of {list(ENGINES)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"ExampleDP.optimizer = {self.optimizer!r} must be one of "
                             f"{list(OPTIMIZERS)}")

    @property
    def personal_norm(self) -> float:
        """Clipping norm of the personal phase (the shared one unless set)."""
        return self.personal_clipping_norm or self.clipping_norm

    @classmethod
    def from_plan(cls, plan: PrivacyPlan, *, clipping_norm: float, expected_batch_size: float,
                  **kwargs: Any) -> ExampleDP:
        """The settings an example-level plan sized (steps, rates, noise multiplier)."""
        if plan.mode != "example":
            raise UnsupportedClaimError(f"ExampleDP needs an example-level plan, got mode "
                                        f"{plan.mode!r}")
        return cls(noise_multiplier=plan.noise_multiplier, clipping_norm=clipping_norm,
                   sample_rate=plan.example_rate, steps=plan.local_steps,
                   expected_batch_size=expected_batch_size,
                   personal_sample_rate=plan.personal_rate if plan.personal_steps else 0.0,
                   personal_steps=plan.personal_steps, **kwargs)


@dataclass(frozen=True)
class DPRunReport:
    """What one client actually ran: the input of ``plan.check_client`` and of the ledger."""

    noise_multiplier: float
    example_rate: float
    local_steps: int
    personal_rate: float = 0.0
    personal_steps: int = 0
    empty_steps: int = 0  # local diagnostic: steps whose Poisson sample was empty

    def check_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :meth:`PrivacyPlan.check_client`."""
        return {"example_rate": self.example_rate, "local_steps": self.local_steps,
                "personal_rate": self.personal_rate, "personal_steps": self.personal_steps}

    def events(self) -> tuple[GaussianEvent, ...]:
        """The subsampled-Gaussian compositions this participation ran."""
        out = [GaussianEvent(self.noise_multiplier, self.example_rate, self.local_steps)]
        if self.personal_steps:
            out.append(GaussianEvent(self.noise_multiplier, self.personal_rate,
                                     self.personal_steps))
        return tuple(out)


@dataclass(frozen=True)
class ExamplePlanInputs:
    """What :func:`example_plan_inputs` derives once per run (see its docstring)."""

    local_steps: int
    example_rate: float
    personal_steps: int
    personal_rate: float
    expected_batch_size: float
    reference_size: int

    def plan_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``PrivacyConfig.plan`` / ``PrivacyPlan``."""
        return {"local_steps": self.local_steps, "example_rate": self.example_rate,
                "personal_steps": self.personal_steps,
                "personal_rate": self.personal_rate if self.personal_steps else 0.0}


def example_plan_inputs(train_sizes: Sequence[int] | np.ndarray | None,
                        local_cfg: LocalTrainingConfig, *, has_personal: bool = True,
                        reference_size: int = DEFAULT_REFERENCE_SIZE) -> ExamplePlanInputs:
    """Size example-level DP-SGD once per run: one rate and step counts for every client.

    - reference size ``n_ref = reference_size`` (``privacy.reference_size``): the number of
      training interactions per user the plan assumes, public knowledge, not measured on
      the data (a statistic of the users' data published in the plan would be unaccounted);
    - example rate ``q = min(1, batch_size / n_ref)``, the same for every client (a rate
      ``b / N_u`` per user would make the mechanism depend on ``N_u``, which adding or
      removing one interaction changes); a user with ``N_u`` interactions draws about
      ``q N_u`` rows per step;
    - ``local_steps = ceil(local_epochs / q)`` (so ``q * steps >= local_epochs``: a client
      with ``n_ref`` interactions sees each ``local_epochs`` times in expectation), and
      likewise ``personal_steps`` from ``personal_epochs`` (0 without personal parameters);
      the personal phase uses the same rate;
    - ``expected_batch_size = q * n_ref``: the public constant the noisy sum is divided by.

    A client with more or fewer interactions than ``n_ref`` runs the same rate and steps, so
    each of its interactions gets the planned ``(sigma, q, steps)`` and ``check_client``
    admits it; only utility changes (larger users take larger steps, smaller ones smaller).
    ``train_sizes`` sizes nothing: when given it is only checked (>= 1 interaction each).
    """
    if train_sizes is not None:
        sizes = np.asarray(train_sizes, dtype=np.int64)
        if sizes.size == 0 or sizes.min() < 1:
            raise ValueError("train_sizes must list at least one user, each with >= 1 "
                             "interaction")
    if isinstance(reference_size, bool) or not isinstance(reference_size, int | np.integer) \
            or reference_size < 1:
        raise ValueError(f"privacy.reference_size = {reference_size!r} must be an integer >= 1")
    n_ref, batch = int(reference_size), int(local_cfg.batch_size)
    if local_cfg.local_epochs < 1:
        raise UnsupportedClaimError(
            "example-level DP-SGD needs local_epochs >= 1: with no shared training there is "
            "nothing to protect (use privacy mode 'none')")

    def steps_for(epochs: int) -> int:
        return epochs if batch >= n_ref else -(-epochs * n_ref // batch)  # ceil(epochs / q)

    rate = 1.0 if batch >= n_ref else batch / n_ref
    personal_epochs = local_cfg.personal_epochs if has_personal else 0
    personal_steps = steps_for(personal_epochs) if personal_epochs > 0 else 0
    return ExamplePlanInputs(local_steps=steps_for(local_cfg.local_epochs), example_rate=rate,
                             personal_steps=personal_steps,
                             personal_rate=rate if personal_steps else 0.0,
                             expected_batch_size=rate * n_ref, reference_size=n_ref)


class DPGenerator(torch.Generator):
    """A ``torch.Generator`` that carries the secure DP-SGD streams.

    ``sampling`` draws the Poisson sample, ``negatives`` the rows' negatives and ``noise`` the
    Gaussian noise (each a :class:`~ffm_private.privacy.secure_random.SecureGenerator`). It is
    a ``torch.Generator`` so that callers can pass it where one is expected; its MT19937 state
    (seeded from the secure stream) draws nothing in this module. Build it with
    :func:`torch_generator` or :func:`as_dp_generator`.
    """

    sampling: SecureGenerator
    negatives: SecureGenerator
    noise: SecureGenerator


def _dp_generator(root: SecureGenerator) -> DPGenerator:
    """Split ``root`` into the sampling, negatives and noise streams (and an MT19937 seed)."""
    secret = root.bytes(32)
    gen = DPGenerator()
    gen.manual_seed(int(root.integers(0, 2**63)))
    gen.sampling = SecureGenerator.from_secret(secret, context_label("dp-sgd", "poisson"))
    gen.negatives = SecureGenerator.from_secret(secret, context_label("dp-sgd", "negatives"))
    gen.noise = SecureGenerator.from_secret(secret, context_label("dp-sgd", "gaussian-noise"))
    return gen


def as_dp_generator(generator: torch.Generator) -> DPGenerator:
    """``generator`` itself if it is a :class:`DPGenerator`, else one keyed from its draws.

    The second case is for tests and benchmarks: 256 bits drawn from the MT19937 state key
    the secure streams, which are then no more secret than that state.
    """
    if isinstance(generator, DPGenerator):
        return generator
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"DP-SGD needs a torch.Generator (dpsgd.torch_generator), got "
                        f"{type(generator).__name__}")
    key = bytes(torch.randint(0, 256, (32,), dtype=torch.uint8, generator=generator).tolist())
    return _dp_generator(SecureGenerator.from_secret(key, context_label("dp-sgd", "torch-seed")))


def torch_generator(source: NoiseSource, round_id: int, client: int | str) -> DPGenerator:
    """The client's DP-SGD generator for ``round_id``, derived from its noise source.

    Replaying a round gives the same generator, hence the same sampling, negatives, noise and
    update. Sampling, negatives and noise come from ChaCha20 streams keyed from the client's
    secret :class:`~ffm_private.privacy.mechanisms.NoiseSource` stream.
    """
    return _dp_generator(source.generator(round_id, client, DP_GENERATOR_PURPOSE))


def secure_gaussian_like(reference: torch.Tensor, std: float,
                         rng: SecureGenerator) -> torch.Tensor:
    """``N(0, std^2)`` noise shaped like ``reference``: float64 from ``rng``, then cast."""
    if std == 0:
        return torch.zeros_like(reference)
    noise = rng.normal(0.0, float(std), tuple(reference.shape))
    return torch.from_numpy(noise).to(dtype=reference.dtype, device=reference.device)


@lru_cache(maxsize=2)
def _secure_optimizer(ghost: bool) -> type:
    """Opacus's DP optimizer (or its ghost-clipping variant) with the secure noise draw."""
    from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping
    from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed

    base = DPOptimizerFastGradientClipping if ghost else DPOptimizer

    class SecureNoiseDPOptimizer(base):  # type: ignore[misc, valid-type]
        """Clipping and scaling as Opacus does; the noise from :attr:`noise_stream`."""

        noise_stream: SecureGenerator

        def add_noise(self) -> None:
            std = self.noise_multiplier * self.max_grad_norm
            for p in self.params:
                _check_processed_flag(p.summed_grad)
                noise = secure_gaussian_like(p.summed_grad, std, self.noise_stream)
                p.grad = (p.summed_grad + noise).view_as(p)
                _mark_as_processed(p.summed_grad)

    SecureNoiseDPOptimizer.__name__ = f"SecureNoise{base.__name__}"
    return SecureNoiseDPOptimizer


# -- which parameters each phase trains -------------------------------------------------------
def history_free_frozen(model: nn.Module) -> tuple[str, ...]:
    """Shared parameters that only ever see the history (frozen under example-level DP).

    With empty histories the FFM user adapter maps 0 to 0 whatever its weights: its gradient
    is identically zero, so DP-SGD would only random-walk it with noise. It stays as it is.
    """
    from ffm_private.models import FFMRecommender

    if isinstance(model, FFMRecommender):
        return tuple(n for n, _ in model.named_parameters() if n.startswith("shared.user."))
    return ()


def check_coverage(*, has_personal: bool, personal_epochs: int, personal_steps: int) -> None:
    """Refuse an example-level run whose personal phase would train without DP."""
    from ffm_private.privacy.guarantee import check_example_level_coverage

    check_example_level_coverage(
        personal_trains_on_client_data=has_personal and personal_epochs > 0,
        personal_feeds_shared_update=has_personal,
        personal_uses_dp=personal_steps > 0)


# -- one DP-SGD phase --------------------------------------------------------------------------
@dataclass(frozen=True)
class PhaseOutcome:
    """What one phase did (``loss``: mean over sampled rows; local, never sent)."""

    steps: int
    sample_rate: float
    empty_steps: int
    rows: int
    loss: float


@dataclass(frozen=True)
class RowBatch:
    """Model inputs of one Poisson sample: one row per sampled interaction."""

    history: torch.Tensor
    items: torch.Tensor
    owner: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.items.shape[0]


def make_rows(positives: torch.Tensor, n_items: int, history_length: int, num_negatives: int,
              generator: torch.Generator) -> RowBatch:
    """Rows for ``positives``: fresh uniform negatives (never the row's own item), no history.

    Each row depends only on its own interaction and on the generator, so removing an
    interaction removes exactly one row and changes no other. A :class:`DPGenerator` draws the
    negatives from its secure stream; a plain ``torch.Generator`` (tests) from MT19937.
    """
    n = positives.shape[0]
    if n_items < 2:
        raise ValueError("example-level DP-SGD needs at least 2 items to draw negatives")
    if isinstance(generator, DPGenerator):
        neg = torch.from_numpy(generator.negatives.integers(0, n_items - 1, (n, num_negatives)))
    else:
        neg = torch.randint(0, n_items - 1, (n, num_negatives), generator=generator)
    neg = neg + (neg >= positives[:, None]).long()  # skip the positive: uniform over the rest
    items = torch.cat([positives[:, None], neg], dim=1)
    labels = torch.zeros(items.shape, dtype=torch.float32)
    labels[:, 0] = 1.0
    history = torch.full((n, history_length), n_items, dtype=torch.long)  # all padding
    return RowBatch(history, items, torch.zeros(n, dtype=torch.long), labels)


def row_losses(model: nn.Module, rows: RowBatch) -> torch.Tensor:
    """Per-row loss: binary cross-entropy averaged over the row's candidates."""
    logits = model(rows.history, rows.items, rows.owner)
    return F.binary_cross_entropy_with_logits(logits, rows.labels, reduction="none").mean(dim=1)


def choose_engine(model: nn.Module, params: Mapping[str, nn.Parameter], engine: str) -> str:
    """Resolve ``auto``: see :data:`ENGINES`."""
    if engine != "auto":
        return engine
    owners = {}
    for mod in model.modules():
        for p in mod.parameters(recurse=False):
            owners[id(p)] = mod
    mods = [owners.get(id(p)) for p in params.values()]
    if any(isinstance(m, nn.Embedding) for m in mods):
        return "ghost"
    if all(isinstance(m, nn.Linear | nn.Embedding) for m in mods):
        return "hooks"
    return "functorch"


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence the warnings Opacus's hooks trigger on every step (frozen inputs)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing",
                                category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="opacus")
        yield


def strip_opacus(model: nn.Module) -> None:
    """Remove every attribute Opacus leaves on parameters and modules, and stale gradients."""
    for p in model.parameters():
        for attr in _OPACUS_PARAM_ATTRS:
            if attr in p.__dict__:
                delattr(p, attr)
        p.grad = None
    for mod in model.modules():
        for attr in _OPACUS_MODULE_ATTRS:
            if attr in mod.__dict__:
                delattr(mod, attr)


def has_opacus_traces(model: nn.Module) -> list[str]:
    """Names of hooks or Opacus attributes still on ``model`` (empty when clean)."""
    found = []
    for name, mod in model.named_modules():
        if mod._forward_hooks or mod._backward_hooks or mod._forward_pre_hooks:
            found.append(f"hooks on {name or '<root>'}")
        found += [f"{name or '<root>'}.{a}" for a in _OPACUS_MODULE_ATTRS if a in mod.__dict__]
    for name, p in model.named_parameters():
        found += [f"{name}.{a}" for a in _OPACUS_PARAM_ATTRS if a in p.__dict__]
    return found


def _functorch_grad_samples(model: nn.Module, params: Mapping[str, nn.Parameter],
                            rows: RowBatch) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per-row gradients of ``params`` (and per-row losses) with ``torch.func``."""
    from torch.func import functional_call, grad_and_value, vmap

    names = list(params)

    def one(values: tuple[torch.Tensor, ...], history: torch.Tensor, items: torch.Tensor,
            owner: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, dict(zip(names, values, strict=True)),
                                 (history[None], items[None], owner[None]))
        return F.binary_cross_entropy_with_logits(logits, labels[None]).sum()

    values = tuple(p.detach() for p in params.values())
    grads, losses = vmap(grad_and_value(one), in_dims=(None, 0, 0, 0, 0))(
        values, rows.history, rows.items, rows.owner, rows.labels)
    return list(grads), losses


class DPStepper:
    """The noisy-step machinery of one phase: Opacus hooks or functorch, and a DP optimizer.

    :meth:`step` takes one Poisson sample's rows (``None``: an empty sample, a step of noise
    alone) and applies one noisy optimizer step. Use as a context manager, or call
    :meth:`close`: it removes every hook and attribute Opacus put on the model.
    """

    def __init__(self, model: nn.Module, params: Mapping[str, nn.Parameter], *,
                 noise_multiplier: float, clipping_norm: float, expected_batch_size: float,
                 lr: float, generator: torch.Generator, engine: str = "auto",
                 optimizer: str = "adam", accountant: Any = None,
                 sample_rate: float | None = None) -> None:
        from opacus.grad_sample import GradSampleHooks, GradSampleHooksFastGradientClipping

        self.model, self.params = model, dict(params)
        self.plist = list(self.params.values())
        if not self.plist:
            raise ValueError("a DP-SGD phase needs at least one parameter to train")
        ids = {id(p) for p in self.plist}
        if any(not p.requires_grad for p in self.plist) or any(
                p.requires_grad and id(p) not in ids for p in model.parameters()):
            raise ValueError("exactly the phase's parameters must require grad")
        self.engine = choose_engine(model, self.params, engine)
        if self.engine not in ENGINES[1:]:
            raise ValueError(f"engine = {engine!r} must be one of {list(ENGINES)}")
        if optimizer == "adam":
            base: torch.optim.Optimizer = torch.optim.Adam(self.plist, lr=lr)
        elif optimizer == "sgd":
            base = torch.optim.SGD(self.plist, lr=lr)
        else:
            raise ValueError(f"optimizer = {optimizer!r} must be one of {list(OPTIMIZERS)}")
        self.generator = as_dp_generator(generator)
        opt_cls = _secure_optimizer(self.engine == "ghost")
        # generator=None: Opacus's torch.normal draw is replaced by the secure one (add_noise)
        self.optimizer = opt_cls(base, noise_multiplier=noise_multiplier,
                                 max_grad_norm=clipping_norm,
                                 expected_batch_size=expected_batch_size, loss_reduction="mean",
                                 generator=None)
        self.optimizer.noise_stream = self.generator.noise
        if accountant is not None:
            if sample_rate is None:
                raise ValueError("an accountant needs the phase's sample_rate")
            self.optimizer.attach_step_hook(accountant.get_optimizer_hook_fn(sample_rate))
        self.hooks: Any = None
        self.peak_grad_sample_bytes = 0  # largest per-row gradient storage of one step
        with _quiet():
            if self.engine == "hooks":
                self.hooks = GradSampleHooks(model, batch_first=True, loss_reduction="sum")
            elif self.engine == "ghost":
                self.hooks = GradSampleHooksFastGradientClipping(
                    model, batch_first=True, loss_reduction="sum", max_grad_norm=clipping_norm,
                    use_ghost_clipping=True)

    def __enter__(self) -> DPStepper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Detach from the model: no hook, no Opacus attribute, no gradient left."""
        if self.hooks is not None:
            self.hooks.cleanup()
            self.hooks = None
        strip_opacus(self.model)

    def step(self, rows: RowBatch | None) -> torch.Tensor:
        """One noisy step on ``rows``; returns the per-row losses (empty for no rows)."""
        opt = self.optimizer
        with _quiet():
            opt.zero_grad(set_to_none=True)
            if rows is None or len(rows) == 0:
                for p in self.plist:
                    if self.engine == "ghost":
                        p.grad = torch.zeros_like(p)
                    else:
                        p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype)
                losses = torch.zeros(0)
            elif self.engine == "functorch":
                grads, losses = _functorch_grad_samples(self.model, self.params, rows)
                for p, g in zip(self.plist, grads, strict=True):
                    p.grad_sample = g
            elif self.engine == "hooks":
                losses = row_losses(self.model, rows)
                losses.sum().backward()
            else:  # ghost: per-row norms, then the clipped sum by a re-weighted backward
                losses = row_losses(self.model, rows)
                losses.sum().backward(retain_graph=True)
                coef = self.hooks.get_clipping_coef().detach()
                opt.zero_grad(set_to_none=True)
                self.hooks.disable_hooks()
                try:
                    (coef * losses).sum().backward()
                finally:
                    self.hooks.enable_hooks()
            if self.engine != "ghost":
                held = sum(p.grad_sample.numel() * p.grad_sample.element_size()
                           for p in self.plist if isinstance(p.grad_sample, torch.Tensor))
                self.peak_grad_sample_bytes = max(self.peak_grad_sample_bytes, held)
            opt.step()
        return losses.detach()


def run_dp_phase(model: nn.Module, params: Mapping[str, nn.Parameter], positives: np.ndarray, *,
                 noise_multiplier: float, clipping_norm: float, sample_rate: float, steps: int,
                 expected_batch_size: float, lr: float, num_negatives: int,
                 generator: torch.Generator, engine: str = "auto", optimizer: str = "adam",
                 accountant: Any = None) -> PhaseOutcome:
    """Train ``params`` (which alone require grad) with DP-SGD on rows built from ``positives``.

    ``model`` must be in training mode. Randomness, per step: the Poisson sample, the
    negatives of the sampled rows and the noise, each from its own secure stream of
    ``generator`` (see :func:`as_dp_generator`). ``accountant`` (an
    Opacus accountant) is a cross-check for tests; the claim comes from the plan.
    """
    pos = torch.as_tensor(np.asarray(positives, dtype=np.int64))
    if pos.ndim != 1 or len(pos) == 0:
        raise ValueError("positives must be a non-empty 1-d array of item ids")
    n_items = int(model.n_items)
    length = int(getattr(model, "history_length", 1))
    gen = as_dp_generator(generator)
    total, rows_seen, empty = 0.0, 0, 0
    with DPStepper(model, params, noise_multiplier=noise_multiplier, clipping_norm=clipping_norm,
                   expected_batch_size=expected_batch_size, lr=lr, generator=gen,
                   engine=engine, optimizer=optimizer, accountant=accountant,
                   sample_rate=sample_rate) as stepper:
        for _ in range(steps):
            # Poisson sampling: each interaction independently with probability q
            idx = np.flatnonzero(gen.sampling.random(len(pos)) < sample_rate)
            if idx.size == 0:
                empty += 1
                stepper.step(None)
                continue
            rows = make_rows(pos[torch.from_numpy(idx)], n_items, length, num_negatives, gen)
            total += float(stepper.step(rows).sum())
            rows_seen += len(rows)
    return PhaseOutcome(steps=steps, sample_rate=sample_rate, empty_steps=empty, rows=rows_seen,
                        loss=total / rows_seen if rows_seen else float("nan"))


__all__ = [
    "DP_GENERATOR_PURPOSE",
    "ENGINES",
    "OPTIMIZERS",
    "DPGenerator",
    "DPRunReport",
    "DPStepper",
    "ExampleDP",
    "ExamplePlanInputs",
    "PhaseOutcome",
    "RowBatch",
    "as_dp_generator",
    "check_coverage",
    "choose_engine",
    "example_plan_inputs",
    "has_opacus_traces",
    "history_free_frozen",
    "make_rows",
    "row_losses",
    "run_dp_phase",
    "secure_gaussian_like",
    "strip_opacus",
    "torch_generator",
]
