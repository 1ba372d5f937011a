"""Adaptive clipping for user-level DP-FedAvg: the clip tracks a quantile of update norms.

Andrew, Thakkar, McMahan and Ramaswamy, "Differentially Private Learning with Adaptive
Clipping" (NeurIPS 2021). In round ``t`` with clip ``C_t`` and target quantile ``gamma``:

1. each participating client ``i`` clips its update to ``C_t`` as usual and also reports one
   value ``b_i - 1/2`` where ``b_i = 1`` if its *unclipped* update norm is ``<= C_t``
   (:func:`clip_indicator`). Shifting by ``1/2`` makes one user's contribution to the sum at
   most ``1/2`` in absolute value (sensitivity ``1/2`` under add/remove);
2. the server releases ``b = (sum_i (b_i - 1/2) + N(0, sigma_b^2)) / m + 1/2``, the noisy
   fraction of unclipped clients, where ``m`` is the public expected number of clients per
   round (:meth:`AdaptiveClipper.noisy_fraction`);
3. the clip moves geometrically toward the quantile: ``C_{t+1} = C_t exp(-eta (b - gamma))``
   (:func:`next_clip`).

Privacy (their Theorem 1): the round's update sum with noise ``z_Delta C_t`` and the count
with noise ``sigma_b`` together are the Gaussian mechanism with noise multiplier
``z = (z_Delta^-2 + (2 sigma_b)^-2)^-1/2``. So a plan sized for ``z`` keeps its epsilon when
the update noise is raised to ``z_Delta = (z^-2 - (2 sigma_b)^-2)^-1/2``
(:func:`update_noise_multiplier`); this needs ``2 sigma_b > z``. The ledger's charge per
round is unchanged. The statement holds for central noise (the server adds both noises);
both noises must be drawn from the run's secret generator, which the caller passes in.

Everything here is plain numpy and math: the federated loop owns the current clip and
persists :meth:`AdaptiveClipper.state` with its checkpoint, so a resumed run continues from
the same ``C_t``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ffm_private.privacy.errors import AccountingError

DEFAULT_TARGET_QUANTILE = 0.5
DEFAULT_LEARNING_RATE = 0.2
"""Defaults of Andrew et al. (and of TFF's adaptive Gaussian aggregator)."""
COUNT_NOISE_FRACTION = 0.05
"""Suggested ``sigma_b``: this fraction of the expected clients per round (Andrew et al.)."""


class NormalSource(Protocol):
    """What the noise generator must offer (``numpy.random.Generator``'s ``normal``)."""

    def normal(self, loc: float, scale: float, size: Any = ...) -> Any: ...  # pragma: no cover


def _finite_positive(name: str, value: float) -> float:
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or value <= 0):
        raise AccountingError(f"{name} = {value!r} must be a finite number > 0")
    return float(value)


def update_noise_multiplier(total_noise_multiplier: float, count_noise_std: float) -> float:
    """``z_Delta = (z^-2 - (2 sigma_b)^-2)^-1/2``: update noise that keeps the plan's epsilon.

    ``total_noise_multiplier`` is the plan's ``z``; ``count_noise_std`` is ``sigma_b``, the std
    of the noise on the sum of the clients' ``b_i - 1/2``. Refused when ``2 sigma_b <= z``:
    the count alone would then spend the whole budget.
    """
    z = _finite_positive("noise_multiplier", total_noise_multiplier)
    sigma_b = _finite_positive("clip_count_noise", count_noise_std)
    if 2.0 * sigma_b <= z:
        raise AccountingError(
            f"clip_count_noise = {sigma_b:g} is too small for noise_multiplier = {z:g}: "
            f"adaptive clipping needs 2 * clip_count_noise > noise_multiplier (here "
            f"{2 * sigma_b:g} <= {z:g}); raise clip_count_noise (about "
            f"{COUNT_NOISE_FRACTION:g} x clients per round) or lower the noise")
    return (z ** -2 - (2.0 * sigma_b) ** -2) ** -0.5


def combined_noise_multiplier(update_multiplier: float, count_noise_std: float) -> float:
    """``z = (z_Delta^-2 + (2 sigma_b)^-2)^-1/2``: the Gaussian mechanism the round is."""
    zd = _finite_positive("update noise multiplier", update_multiplier)
    sigma_b = _finite_positive("clip_count_noise", count_noise_std)
    return (zd ** -2 + (2.0 * sigma_b) ** -2) ** -0.5


def clip_indicator(update_norm: float, clip: float) -> float:
    """The client's contribution to the count: ``b_i - 1/2`` with ``b_i = [norm <= C]``."""
    if not math.isfinite(update_norm) or update_norm < 0:
        raise AccountingError(f"update norm = {update_norm!r} must be a finite number >= 0")
    return (1.0 if update_norm <= clip else 0.0) - 0.5


def next_clip(clip: float, noisy_fraction: float, target_quantile: float,
              learning_rate: float) -> float:
    """Geometric step ``C exp(-eta (b - gamma))``: shrink if too many are unclipped."""
    return float(clip * math.exp(-learning_rate * (noisy_fraction - target_quantile)))


@dataclass(frozen=True)
class AdaptiveClipSettings:
    """Public parameters of the quantile estimate (checked on construction)."""

    target_quantile: float = DEFAULT_TARGET_QUANTILE
    learning_rate: float = DEFAULT_LEARNING_RATE
    count_noise_std: float = 1.0
    expected_clients: float = 1.0

    def __post_init__(self) -> None:
        q = self.target_quantile
        if isinstance(q, bool) or not isinstance(q, int | float) or not 0.0 < q < 1.0:
            raise AccountingError(f"clip_target_quantile = {q!r} must satisfy 0 < q < 1")
        _finite_positive("clip_learning_rate", self.learning_rate)
        _finite_positive("clip_count_noise", self.count_noise_std)
        _finite_positive("expected clients per round", self.expected_clients)


class AdaptiveClipper:
    """The current clip ``C_t`` and its update from one noisy count per round."""

    def __init__(self, settings: AdaptiveClipSettings, initial_clip: float,
                 noise_multiplier: float) -> None:
        self.settings = settings
        self.clip = _finite_positive("clipping_norm", initial_clip)
        self.noise_multiplier = _finite_positive("noise_multiplier", noise_multiplier)
        self.update_multiplier = update_noise_multiplier(noise_multiplier,
                                                         settings.count_noise_std)

    def update_noise_std(self) -> float:
        """Std of the Gaussian noise on this round's sum of updates: ``z_Delta C_t``."""
        return self.update_multiplier * self.clip

    def indicator(self, update_norm: float) -> float:
        """What a client adds to the count this round (see :func:`clip_indicator`)."""
        return clip_indicator(update_norm, self.clip)

    def noisy_fraction(self, indicator_sum: float, rng: NormalSource) -> float:
        """``(sum (b_i - 1/2) + N(0, sigma_b^2)) / m + 1/2``, released by the server.

        Always noised, also with no participant: the denominator is the public ``m``.
        """
        s = self.settings
        noise = float(np.asarray(rng.normal(0.0, s.count_noise_std, 1)).reshape(-1)[0])
        return (float(indicator_sum) + noise) / s.expected_clients + 0.5

    def advance(self, noisy_fraction: float) -> float:
        """Move ``C_t`` to ``C_{t+1}`` from the released fraction; returns the new clip."""
        s = self.settings
        self.clip = next_clip(self.clip, noisy_fraction, s.target_quantile, s.learning_rate)
        return self.clip

    def step(self, update_norms: Any, rng: NormalSource) -> float:
        """One round on the server's side, from the participants' unclipped norms."""
        total = sum(self.indicator(float(n)) for n in np.asarray(update_norms).reshape(-1))
        return self.advance(self.noisy_fraction(total, rng))

    def state(self) -> dict[str, float]:
        """What a checkpoint must keep (the current clip)."""
        return {"clip": self.clip}

    def load_state(self, state: dict[str, float]) -> None:
        """Continue from a checkpointed clip."""
        self.clip = _finite_positive("saved clip", float(state["clip"]))


__all__ = [
    "COUNT_NOISE_FRACTION",
    "DEFAULT_LEARNING_RATE",
    "DEFAULT_TARGET_QUANTILE",
    "AdaptiveClipSettings",
    "AdaptiveClipper",
    "clip_indicator",
    "combined_noise_multiplier",
    "next_clip",
    "update_noise_multiplier",
]
