"""What-if observation logs: the same run as the server would have seen it under another
protection, so audits can compare protections on identical training data.

- :func:`privatize`: every recorded update clipped to ``C`` and released with Gaussian noise
  ``N(0, (sigma C)^2)`` (the user-level mechanism of :mod:`ffm_private.privacy.mechanisms`
  applied to each user's update: what a DP claim covers when each release is noised);
- :func:`hide_individual`: only the round sums remain (what secagg or he reveal).
"""

from __future__ import annotations

import numpy as np

from ffm_private.observation import ObservationLog
from ffm_private.privacy import mechanisms as mech


def privatize(log: ObservationLog, *, clipping_norm: float, noise_multiplier: float,
              seed: int = 0) -> ObservationLog:
    """Each recorded update clipped to ``clipping_norm`` plus ``N(0, (sigma C)^2)`` noise."""
    rounds = {}
    for obs in log:
        noisy = {}
        for cid, vec in obs.vectors():
            rng = np.random.default_rng(np.random.SeedSequence([seed, obs.round_id, cid, 0xD9]))
            clipped = mech.clip_to_norm(vec, clipping_norm)
            noisy[cid] = mech.add_central_noise(clipped, noise_multiplier, clipping_norm, rng)
        rounds[obs.round_id] = obs.with_individual(noisy) if noisy else obs
    return log.with_rounds(rounds)


def hide_individual(log: ObservationLog) -> ObservationLog:
    """The log as a server running secure aggregation would have it: sums only."""
    return log.with_rounds({obs.round_id: obs.without_individual() for obs in log},
                           reveals_individual=False)


__all__ = ["hide_individual", "privatize"]
