"""DP mechanisms as objects: one interface, run by the simulation, the deployment and the A6 audit.

A :class:`Mechanism` says what happens to a shared update on the client before it leaves the
device (:meth:`Mechanism.client_transform`: clip, add this client's noise share) and what the
server does to the protocol's sum before the step is released
(:meth:`Mechanism.server_transform`: add central noise, divide by a *public* constant). It also
says which accounting events one charge adds (:meth:`Mechanism.events`) and what it claims.

Each transform is composed of small steps (``clip``, ``client_noise``, ``decode``,
``server_noise``, ``divisor``). The planted-bug variants of the empirical audit (:mod:`attacks.canaries`) wrap a
production mechanism and override exactly one step, so the audit tests the code the run
executes, not a copy of it.

The server step receives a :class:`ReleaseContext` with the number of contributors (visible to
the server) and the size of the pool of eligible users. The pool size is a statistic of the
private data: a correct mechanism never uses it (the ``denominator-counts-users`` planted bug
does, and the audit must catch it).

Randomness: every ``rng`` argument is a generator with numpy's ``normal(loc, scale, size)``
and ``random(size)``; production passes the client's (or server's) own secret stream (see
:mod:`ffm_private.privacy.client_secrets`). A generator may carry a ``noise_factor`` that
scales the discrete Gaussian's std: the audit's planted bugs use it to scale or remove the
integer noise, as they scale ``normal`` draws for the float mechanisms; production generators
have none (factor 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar

import numpy as np

from ffm_private.privacy import discrete_gaussian as ddg
from ffm_private.privacy.accounting import GaussianEvent
from ffm_private.privacy.errors import UnsupportedClaimError
from ffm_private.privacy.mechanisms import (
    central_noise_std,
    check_survivors,
    clip_to_norm,
    distributed_noise_std,
    to_numpy,
)


@dataclass(frozen=True)
class ReleaseContext:
    """What the server knows when it turns the protocol's sum into a step.

    ``total`` is ``None`` when no sum exists (nobody took part, or the protocol aborted
    below its ``min_clients``): a mechanism that must release every round releases noise only.
    ``pool_size`` is the number of eligible users: data-dependent, never to be used by a
    mechanism that claims add/remove adjacency.
    """

    round_id: int
    contributors: int
    pool_size: int
    dim: int


class NothingToRelease(Exception):  # noqa: N818 - a control-flow signal, not a failure
    """The round releases nothing (no DP noise is owed and no sum exists)."""


class Mechanism:
    """The null mechanism (no privacy): the base every DP mechanism refines step by step."""

    name: ClassVar[str] = "none"
    #: the ``(privacy.mode, privacy.noise_placement)`` pairs a registered mechanism implements
    serves: ClassVar[tuple[tuple[str, str], ...]] = ()
    #: every round releases a step, with or without contributors (noise-only if needed)
    releases_every_round: ClassVar[bool] = False
    #: coordinates a client appends to its update (summed with it, e.g. a clip count)
    extra_coordinates: ClassVar[int] = 0

    @classmethod
    def from_plan(cls, plan: Any, **context: Any) -> Mechanism:
        """Build a registered mechanism for ``plan`` (``privacy.mechanism_kind``).

        ``context`` holds what :func:`mechanism_for` knows: ``clipping_norm``,
        ``min_survivors``, ``expected_clients``, ``rounding_margin``, ``adaptive``,
        ``integer_modulus``, ``dim``, ``max_clients``, ``gamma``.
        """
        raise NotImplementedError(f"{cls.__name__} does not implement from_plan")

    def state(self) -> dict[str, float]:
        """Mechanism state a checkpoint must keep (none for stateless mechanisms)."""
        return {}

    def load_state(self, state: dict[str, float]) -> None:
        """Continue from a checkpointed :meth:`state`."""
    #: the protocol path the client's output takes: ``float`` vectors or exact ``integer``s
    encoding: ClassVar[str] = "float"

    # -- steps (overridden by mechanisms, and by the audit's planted bugs) ----------------------
    def clip(self, update: np.ndarray) -> np.ndarray:
        return update

    def client_noise(self, update: np.ndarray, rng: Any) -> np.ndarray:
        return update

    def check_release(self, ctx: ReleaseContext) -> None:
        """Refuse to release (raise) when the sum would carry less noise than planned."""

    def decode(self, total: np.ndarray) -> np.ndarray:
        """The protocol's sum in original units (float paths: as it is)."""
        return total

    def server_noise(self, total: np.ndarray, rng: Any) -> np.ndarray:
        return total

    def divisor(self, ctx: ReleaseContext) -> float:
        """The public constant the noisy sum is divided by (here: the contributor count)."""
        return float(ctx.contributors)

    # -- composed transforms (what the run calls) ---------------------------------------------
    def client_transform(self, update: Any, rng: Any) -> np.ndarray:
        """On the device, before encoding: what this client sends."""
        return self.client_noise(self.clip(to_numpy(update)), rng)

    def server_transform(self, total: np.ndarray | None, ctx: ReleaseContext,
                         rng: Any) -> np.ndarray:
        """On the server: the mean step to apply and release."""
        if total is None or ctx.contributors == 0:
            if not self.releases_every_round:
                raise NothingToRelease("no client took part")
            total = np.zeros(ctx.dim, dtype=np.float64)
        else:
            self.check_release(ctx)
            total = self.decode(np.asarray(total, dtype=np.float64))
        return self.server_noise(np.asarray(total, dtype=np.float64), rng) / self.divisor(ctx)

    # -- accounting and claim ------------------------------------------------------------------
    def events(self) -> tuple[GaussianEvent, ...]:
        """The accounting events one charge adds to a user's history."""
        return ()

    def describe(self) -> str:
        return "no differential privacy"


NULL_MECHANISM = Mechanism()


@dataclass(frozen=True)
class CentralGaussian(Mechanism):
    """User-level DP-FedAvg, trusted server: ``(sum of clipped + N(0, (sigma C)^2)) / divisor``.

    ``divisor`` is public configuration (``privacy.expected_clients_per_round``), never a count
    of users, so adding or removing a user cannot change the scale of the released noise. A
    round is released even when nobody (or too few for the protocol) took part: a noise-only
    step, so the step's presence reveals nothing about the sample size.
    """

    noise_multiplier: float
    clipping_norm: float
    expected_clients: float
    client_rate: float = 1.0

    name: ClassVar[str] = "user-central"
    releases_every_round: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.expected_clients) and self.expected_clients > 0):
            raise ValueError(f"expected_clients = {self.expected_clients!r} must be > 0")

    def clip(self, update: np.ndarray) -> np.ndarray:
        return clip_to_norm(update, self.clipping_norm)

    def server_noise(self, total: np.ndarray, rng: Any) -> np.ndarray:
        std = central_noise_std(self.noise_multiplier, self.clipping_norm)
        return total + rng.normal(0.0, std, total.shape)

    def divisor(self, ctx: ReleaseContext) -> float:
        return float(self.expected_clients)

    def events(self) -> tuple[GaussianEvent, ...]:
        return (GaussianEvent(self.noise_multiplier, self.client_rate, 1),)

    def describe(self) -> str:
        return (f"clip to {self.clipping_norm:g}, N(0, ({self.noise_multiplier:.4g} x "
                f"{self.clipping_norm:g})^2) on the sum, divided by the public constant "
                f"{self.expected_clients:g}")


class AdaptiveCentralGaussian(Mechanism):
    """Central DP-FedAvg whose clip tracks a quantile of the update norms (Andrew et al. 2021).

    Each client appends one coordinate to what it sends: ``b_i - 1/2`` with ``b_i = 1`` when
    its unclipped norm is ``<= C_t`` (it travels inside the summed, possibly masked, vector).
    The server noises the update sum with ``z_Delta C_t`` and the count with ``sigma_b`` (both
    from its own secret stream), divides by the public constant, and moves the clip. Together
    the two releases are the Gaussian mechanism with the plan's multiplier (their Theorem 1),
    so the ledger charges the plan's events. The clip is state: :meth:`state` goes into every
    checkpoint and :meth:`load_state` restores it, so a replayed round uses the same ``C_t``.
    """

    name: ClassVar[str] = "user-central-adaptive"
    releases_every_round: ClassVar[bool] = True
    extra_coordinates: ClassVar[int] = 1

    def __init__(self, clipper: Any, expected_clients: float, client_rate: float,
                 noise_multiplier: float) -> None:
        self.clipper = clipper
        self.expected_clients = float(expected_clients)
        self.client_rate = client_rate
        self.noise_multiplier = noise_multiplier

    @property
    def clipping_norm(self) -> float:
        return self.clipper.clip

    def clip(self, update: np.ndarray) -> np.ndarray:
        return clip_to_norm(update, self.clipper.clip)

    def client_transform(self, update: Any, rng: Any) -> np.ndarray:
        arr = to_numpy(update)
        indicator = self.clipper.indicator(float(np.linalg.norm(arr)))
        return np.concatenate([self.client_noise(self.clip(arr), rng), [indicator]])

    def server_noise(self, total: np.ndarray, rng: Any) -> np.ndarray:
        return total + rng.normal(0.0, self.clipper.update_noise_std(), total.shape)

    def divisor(self, ctx: ReleaseContext) -> float:
        return self.expected_clients

    def server_transform(self, total: np.ndarray | None, ctx: ReleaseContext,
                         rng: Any) -> np.ndarray:
        if total is None or ctx.contributors == 0:
            updates, count = np.zeros(ctx.dim), 0.0
        else:
            total = np.asarray(total, dtype=np.float64)
            updates, count = total[:ctx.dim], float(total[ctx.dim])
        step = self.server_noise(updates, rng) / self.divisor(ctx)
        self.clipper.advance(self.clipper.noisy_fraction(count, rng))
        return step

    def events(self) -> tuple[GaussianEvent, ...]:
        return (GaussianEvent(self.noise_multiplier, self.client_rate, 1),)

    def state(self) -> dict[str, float]:
        return self.clipper.state()

    def load_state(self, state: dict[str, float]) -> None:
        self.clipper.load_state(state)

    def describe(self) -> str:
        s = self.clipper.settings
        return (f"adaptive clip (now {self.clipper.clip:.4g}, target quantile "
                f"{s.target_quantile:g}), N(0, ({self.clipper.update_multiplier:.4g} x C_t)^2) "
                f"on the sum and N(0, {s.count_noise_std:g}^2) on the count, divided by the "
                f"public constant {self.expected_clients:g}")


@dataclass(frozen=True)
class DistributedGaussian(Mechanism):
    """User-level DP-FedAvg, untrusted server: each client clips and adds its noise share.

    Each share is ``N(0, (sigma C)^2 / m)``; a sum with fewer than ``m`` shares is refused
    before release. ``rounding_margin`` is subtracted from ``C`` before clipping so that the
    protocol's encoding (stochastic rounding) cannot lift the norm above ``C``. The server
    sees who took part (participation is not protected), so dividing by the contributor count
    reveals nothing beyond what the server already sees.
    """

    noise_multiplier: float
    clipping_norm: float
    min_survivors: int
    rounding_margin: float = 0.0

    name: ClassVar[str] = "user-distributed"

    def __post_init__(self) -> None:
        if not 0.0 <= self.rounding_margin < self.clipping_norm:
            raise ValueError(f"rounding margin {self.rounding_margin!r} must be in "
                             f"[0, clipping_norm = {self.clipping_norm})")

    def clip(self, update: np.ndarray) -> np.ndarray:
        return clip_to_norm(update, self.clipping_norm - self.rounding_margin)

    def client_noise(self, update: np.ndarray, rng: Any) -> np.ndarray:
        std = distributed_noise_std(self.noise_multiplier, self.clipping_norm, self.min_survivors)
        return update + rng.normal(0.0, std, update.shape)

    def check_release(self, ctx: ReleaseContext) -> None:
        check_survivors(ctx.contributors, self.min_survivors)

    def events(self) -> tuple[GaussianEvent, ...]:
        return (GaussianEvent(self.noise_multiplier, 1.0, 1),)

    def describe(self) -> str:
        return (f"clip to {self.clipping_norm:g}, each client adds N(0, ({self.noise_multiplier:.4g}"
                f" x {self.clipping_norm:g})^2 / {self.min_survivors}); at least "
                f"{self.min_survivors} shares per released sum")


@dataclass(frozen=True)
class ExampleDPSGD(Mechanism):
    """Example-level DP: the noise is added by DP-SGD during local training, on the device.

    The release steps are the null mechanism's: the DP-SGD output is released as it is (the
    run checks each client's DP-SGD report against the plan before release).
    """

    event_list: tuple[GaussianEvent, ...]

    name: ClassVar[str] = "example-dpsgd"

    def events(self) -> tuple[GaussianEvent, ...]:
        return self.event_list

    def describe(self) -> str:
        return "DP-SGD on the client (per-example clipping and noise during local training)"


@dataclass(frozen=True)
class DistributedDiscreteGaussian(Mechanism):
    """User-level DP, untrusted server: integer shares summed exactly modulo ``M`` (KLS 2021).

    Client: clip to ``C``, conditionally round onto the grid of step ``gamma`` (norm at most
    :func:`~ffm_private.privacy.discrete_gaussian.rounded_norm_bound`), add ``d`` exact
    discrete Gaussians of std ``local_sigma / gamma`` grid steps, reduce modulo ``M``: the
    output is an int64 vector in ``[0, M)``, for the protocol's integer path
    (``encoding = "integer"``). Server: refuse fewer than ``min_survivors`` shares, take the
    centred lift of the modular sum, times ``gamma``, divided by the contributor count.

    ``local_sigma`` is calibrated so that the sum of ``min_survivors`` shares is
    ``1 / (2 z^2)``-zCDP (:func:`~ffm_private.privacy.discrete_gaussian.calibrate_local_sigma`)
    with ``z = noise_multiplier`` from the plan: its Renyi divergences are at most the
    Gaussian's that the plan and the ledger record. ``modulus = 0``: not bound to a protocol
    yet (describes itself, refuses to run).
    """

    noise_multiplier: float
    clipping_norm: float
    min_survivors: int
    modulus: int = 0
    dim: int = 0
    gamma: float = 0.0
    local_sigma: float = 0.0
    beta: float = ddg.DEFAULT_BETA

    name: ClassVar[str] = "user-distributed-discrete"
    encoding: ClassVar[str] = "integer"

    @classmethod
    def calibrated(cls, noise_multiplier: float, clipping_norm: float, min_survivors: int, *,
                   modulus: int, dim: int, max_clients: int,
                   gamma: float = 0.0) -> DistributedDiscreteGaussian:
        """Bound to a protocol's integer path: ``gamma`` (0: :func:`default_gamma` for
        ``max_clients``), then the per-client std for ``noise_multiplier``."""
        if gamma <= 0:
            gamma = ddg.default_gamma(noise_multiplier, clipping_norm, min_survivors, dim,
                                      max_clients, modulus)
        sigma = ddg.calibrate_local_sigma(noise_multiplier, clipping_norm, gamma,
                                          min_survivors, dim)
        return cls(noise_multiplier, clipping_norm, min_survivors, int(modulus), int(dim),
                   float(gamma), sigma)

    @property
    def bound(self) -> bool:
        return self.modulus > 0

    def _check_bound(self) -> None:
        if not self.bound:
            raise UnsupportedClaimError("the discrete Gaussian mechanism is not bound to a "
                                        "protocol's integer path (no modulus)")

    def clip(self, update: np.ndarray) -> np.ndarray:
        return clip_to_norm(update, self.clipping_norm)

    def client_noise(self, update: np.ndarray, rng: Any) -> np.ndarray:
        self._check_bound()
        if update.size != self.dim:
            raise ValueError(f"update has {update.size} values; the mechanism is calibrated "
                             f"for {self.dim}")
        rounded = ddg.conditional_rounding(update, self.clipping_norm, self.gamma, rng,
                                           self.beta)
        s = self.local_sigma / self.gamma * float(getattr(rng, "noise_factor", 1.0))
        noise = (ddg.sample_discrete_gaussian(Fraction(s) ** 2, rounded.size, rng) if s > 0
                 else np.zeros(rounded.size, dtype=np.int64))
        return np.mod(rounded + noise, self.modulus).astype(np.int64)

    def check_release(self, ctx: ReleaseContext) -> None:
        check_survivors(ctx.contributors, self.min_survivors)

    def decode(self, total: np.ndarray) -> np.ndarray:
        """The centred lift of the modular sum, in original units (exact integers x gamma)."""
        self._check_bound()
        r = np.mod(np.asarray(total, dtype=np.float64).astype(np.int64), self.modulus)
        return np.where(r >= (self.modulus + 1) // 2, r - self.modulus, r) * self.gamma

    @property
    def rho(self) -> float:
        """zCDP of one released sum of ``min_survivors`` shares (KLS Theorem 1)."""
        self._check_bound()
        eps = ddg.ddg_epsilon_for(self.clipping_norm, self.gamma, self.local_sigma,
                                  self.min_survivors, self.dim, self.beta)
        return eps * eps / 2

    def events(self) -> tuple[GaussianEvent, ...]:
        """The plan's event: a Gaussian of multiplier ``z``, valid because ``rho <= 1/(2 z^2)``
        (RDP accountant only, no sampling: see ``gaussian_event_for_zcdp``)."""
        return (GaussianEvent(self.noise_multiplier, 1.0, 1),)

    def describe(self) -> str:
        head = (f"clip to {self.clipping_norm:g}, conditional rounding onto a grid, discrete "
                f"Gaussian shares calibrated to zCDP rho <= 1/(2 x {self.noise_multiplier:.4g}"
                f"^2) for {self.min_survivors} shares")
        if not self.bound:
            return head + " (not bound to a protocol yet)"
        return (head + f": grid step {self.gamma:.6g}, per-client std {self.local_sigma:.6g} "
                f"({self.local_sigma / self.gamma:.6g} steps), sums exact modulo "
                f"{self.modulus}; at least {self.min_survivors} shares per released sum")


def mechanism_for(plan: Any, *, clipping_norm: float, min_survivors: int = 0,
                  expected_clients: float = 0.0, rounding_margin: float = 0.0,
                  adaptive: Any = None, integer_modulus: int | None = None, dim: int = 0,
                  max_clients: int = 0, gamma: float = 0.0, kind: str = "auto") -> Mechanism:
    """The production mechanism of a :class:`~ffm_private.privacy.planner.PrivacyPlan`.

    The one place a plan becomes a mechanism: the simulation and the A6 audit both call it.
    ``adaptive`` (an :class:`~ffm_private.privacy.adaptive_clipping.AdaptiveClipSettings`) is
    required when the plan uses adaptive clipping. A discrete-Gaussian plan is calibrated
    here once the protocol's ``integer_modulus``, the vector length ``dim`` and the largest
    round ``max_clients`` are known (``gamma`` 0: the default grid step); without a modulus
    it is returned unbound. ``kind`` other than ``auto`` names a mechanism registered with
    :func:`ffm_private.registry.register_mechanism`; it must serve the plan's mode and
    placement and charge exactly the plan's accounting events (the claim is the plan's).
    """
    if plan is None:
        return NULL_MECHANISM
    if kind != "auto":
        return _registered(kind, plan, clipping_norm=clipping_norm, min_survivors=min_survivors,
                           expected_clients=expected_clients, rounding_margin=rounding_margin,
                           adaptive=adaptive, integer_modulus=integer_modulus, dim=dim,
                           max_clients=max_clients, gamma=gamma)
    if getattr(plan, "adaptive_clipping", False):
        from ffm_private.privacy.adaptive_clipping import AdaptiveClipper

        if adaptive is None:
            raise ValueError("an adaptive-clipping plan needs its AdaptiveClipSettings")
        clipper = AdaptiveClipper(adaptive, initial_clip=clipping_norm,
                                  noise_multiplier=plan.noise_multiplier)
        return AdaptiveCentralGaussian(clipper, expected_clients, plan.client_rate,
                                       plan.noise_multiplier)
    if plan.mode == "example":
        return ExampleDPSGD(plan.charge_events())
    if (plan.noise_placement == "distributed"
            and getattr(plan, "distributed_noise", "gaussian") == "discrete_gaussian"):
        if integer_modulus is None:
            return DistributedDiscreteGaussian(plan.noise_multiplier, clipping_norm,
                                               min_survivors)
        return DistributedDiscreteGaussian.calibrated(
            plan.noise_multiplier, clipping_norm, min_survivors, modulus=integer_modulus,
            dim=dim, max_clients=max(max_clients, min_survivors, 1), gamma=gamma)
    if plan.noise_placement == "distributed":
        return DistributedGaussian(plan.noise_multiplier, clipping_norm, min_survivors,
                                   rounding_margin=rounding_margin)
    return CentralGaussian(plan.noise_multiplier, clipping_norm, expected_clients,
                           client_rate=plan.client_rate)


def _registered(kind: str, plan: Any, **context: Any) -> Mechanism:
    from ffm_private.registry import MECHANISMS

    cls = MECHANISMS.get(kind)
    placement = getattr(plan, "noise_placement", "central")
    if (plan.mode, placement) not in tuple(cls.serves):
        raise UnsupportedClaimError(
            f"privacy.mechanism_kind = {kind!r} serves {list(cls.serves)} (mode, "
            f"noise_placement), not ({plan.mode!r}, {placement!r})")
    mechanism = cls.from_plan(plan, **context)
    if tuple(mechanism.events()) != tuple(plan.charge_events()):
        raise UnsupportedClaimError(
            f"privacy.mechanism_kind = {kind!r} charges {mechanism.events()} per "
            f"participation, the plan accounts for {plan.charge_events()}: the claim would not "
            "be the plan's")
    return mechanism


__all__ = ["NULL_MECHANISM", "AdaptiveCentralGaussian", "CentralGaussian",
           "DistributedDiscreteGaussian", "DistributedGaussian", "ExampleDPSGD",
           "Mechanism", "NothingToRelease", "ReleaseContext", "mechanism_for"]
