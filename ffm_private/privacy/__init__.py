"""Differential privacy for ffm-private: accounting, budget planning, per-user ledger, mechanisms.

- :mod:`~ffm_private.privacy.accounting`: epsilon of Poisson-subsampled Gaussian compositions
  and the noise for a target epsilon (Opacus PRV / RDP accountants; GDP refused).
- :mod:`~ffm_private.privacy.planner`: :class:`PrivacyPlan` (noise computed once per run),
  epsilon curves, the ``ffm-private budget`` table and plot.
- :mod:`~ffm_private.privacy.ledger`: durable per-user caps and spends (SQLite).
- :mod:`~ffm_private.privacy.mechanisms`: clipping, central and distributed Gaussian noise,
  per-(round, client) noise streams.
- :mod:`~ffm_private.privacy.guarantee`: the guarantee in words for the run summary.
- :mod:`~ffm_private.privacy.config`: the validated ``[privacy]`` table.

Nothing here imports torch at import time (Opacus is loaded on the first accountant call).
See ``docs/privacy.md`` for the semantics.
"""

from ffm_private.privacy.accounting import (
    GaussianEvent,
    epsilon_for,
    epsilon_for_events,
    noise_for_epsilon,
    noise_for_epsilon_phases,
)
from ffm_private.privacy.config import PrivacyConfig
from ffm_private.privacy.errors import (
    AccountingError,
    BudgetExceededError,
    InsufficientNoiseError,
    LedgerConflictError,
    LedgerError,
    PrivacyError,
    UnsupportedClaimError,
)
from ffm_private.privacy.guarantee import check_example_level_coverage, guarantee_statement
from ffm_private.privacy.ledger import PrivacyLedger, SpendDecision, load_caps
from ffm_private.privacy.mechanisms import (
    NoiseSource,
    add_central_noise,
    add_distributed_noise,
    check_survivors,
    clip_to_norm,
    distributed_noise_std,
    dp_sum,
)
from ffm_private.privacy.planner import PrivacyPlan, epsilon_curve

__all__ = [
    "AccountingError",
    "BudgetExceededError",
    "GaussianEvent",
    "InsufficientNoiseError",
    "LedgerConflictError",
    "LedgerError",
    "NoiseSource",
    "PrivacyConfig",
    "PrivacyError",
    "PrivacyLedger",
    "PrivacyPlan",
    "SpendDecision",
    "UnsupportedClaimError",
    "add_central_noise",
    "add_distributed_noise",
    "check_example_level_coverage",
    "check_survivors",
    "clip_to_norm",
    "distributed_noise_std",
    "dp_sum",
    "epsilon_curve",
    "epsilon_for",
    "epsilon_for_events",
    "guarantee_statement",
    "load_caps",
    "noise_for_epsilon",
    "noise_for_epsilon_phases",
]
