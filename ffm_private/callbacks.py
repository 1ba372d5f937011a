"""The round loop's concerns as callbacks: observation log, checks, evaluation, checkpoints.

:meth:`ffm_private.simulation.Simulation.run` is a small loop: for each round it plays the
round (:meth:`~ffm_private.simulation.Simulation.run_round`, which returns a
:class:`RoundResult`), appends the round's metrics row to the run state's history and hands
the result to each callback in order. Everything else a run does around its rounds lives here,
one concern per class, so a new concern (a logger, an early stop, a tuner's report) is one
callback rather than another branch of the loop. Order matters and is the default order of
:func:`default_callbacks`: the observation log records what the parties saw, the divergence
check refuses a non-finite model before anything is saved, evaluation and the console line
come next, then the round's wall-clock time, the checkpoint and the metrics line (a metrics
line is written only once its round is checkpointed, so a resumed run rewrites it exactly).

A callback may raise to stop the run; the checkpoint of the last completed round stays.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ffm_private.errors import DivergedError
from ffm_private.storage import atomic_write_bytes

if TYPE_CHECKING:  # pragma: no cover
    from ffm_private.simulation import RunState, Simulation


@dataclass
class RoundResult:
    """One played round: its metrics row and what the parties observed of it.

    ``row`` is the round's line of ``metrics.jsonl`` (callbacks add to it: evaluation
    metrics, seconds); ``broadcast`` the shared state the server sent; ``sampled`` the
    clients asked; ``outcome`` the protocol's :class:`~protocols.AggregateResult`.
    """

    round_id: int
    row: dict[str, Any]
    broadcast: Mapping[str, np.ndarray] = field(default_factory=dict)
    sampled: Sequence[int] = ()
    outcome: Any = None


class RoundCallback:
    """A concern of the round loop; every hook is optional (the default does nothing)."""

    def on_start(self, run: Simulation, state: RunState) -> None:
        """Before the first round of this invocation (after a resume: the next round)."""

    def before_round(self, run: Simulation, state: RunState, round_id: int) -> None:
        """Before ``round_id`` is played."""

    def after_round(self, run: Simulation, state: RunState, result: RoundResult) -> None:
        """After the round was played and its row appended to ``state.history``."""

    def on_end(self, run: Simulation, state: RunState) -> None:
        """After the last round, before the summary is written."""


class ObservationLog(RoundCallback):
    """What the server and the public saw (``observations/``, read by the audits)."""

    def on_start(self, run: Simulation, state: RunState) -> None:
        run.observer.truncate_after(state.round_id)  # rounds past the checkpoint are replayed

    def after_round(self, run: Simulation, state: RunState, result: RoundResult) -> None:
        run.observer.record(result.round_id, result.broadcast, list(result.sampled),
                            result.outcome, state.shared)

    def on_end(self, run: Simulation, state: RunState) -> None:
        run.observer.release(state.shared, state.round_id)


class DivergenceCheck(RoundCallback):
    """Stop a diverged run: NaN or infinite shared parameters make every metric void."""

    def after_round(self, run: Simulation, state: RunState, result: RoundResult) -> None:
        bad = [k for k, v in state.shared.items() if not np.all(np.isfinite(v))]
        if bad:
            f = run.cfg.federated
            raise DivergedError(
                f"round {result.round_id}: the shared model became non-finite (NaN or infinity "
                f"in {', '.join(bad[:3])}); the last finite checkpoint is kept. Lower "
                f"federated.server_lr (= {f.server_lr!r}) or federated.lr (= {f.lr!r}) and "
                "start a new run")


class Evaluation(RoundCallback):
    """Every ``federated.eval_every`` rounds and at the last round: validation and test."""

    def after_round(self, run: Simulation, state: RunState, result: RoundResult) -> None:
        f = run.cfg.federated
        if result.round_id % f.eval_every == 0 or result.round_id == f.rounds:
            result.row.update(run.evaluate(state))


class ConsoleReport(RoundCallback):
    """One line per evaluated or aborted round, and a line when a run resumes."""

    def on_start(self, run: Simulation, state: RunState) -> None:
        if state.round_id > 0:
            run._say(f"resuming {run.run_dir} after round {state.round_id}/"
                     f"{run.cfg.federated.rounds}")

    def after_round(self, run: Simulation, state: RunState, result: RoundResult) -> None:
        row = result.row
        if row.get("aborted"):
            run._say(f"round {result.round_id}/{run.cfg.federated.rounds} aborted: "
                     f"{row['aborted']}")
        if f"valid_hr@{run.cfg.evaluation.k}" in row:
            run._say(run._line(row))


class RoundTimer(RoundCallback):
    """The round's wall-clock seconds (training, aggregation and evaluation) in its row."""

    def __init__(self) -> None:
        self._start = 0.0

    def before_round(self, run: Simulation, state: RunState, round_id: int) -> None:
        self._start = time.perf_counter()

    def after_round(self, run: Simulation, state: RunState, result: RoundResult) -> None:
        result.row["seconds"] = round(time.perf_counter() - self._start, 3)


class Checkpointing(RoundCallback):
    """A checkpoint after every round (atomic; see ``Simulation.save_checkpoint``)."""

    def after_round(self, run: Simulation, state: RunState, result: RoundResult) -> None:
        run.save_checkpoint(state)


class MetricsLog(RoundCallback):
    """``metrics.jsonl``: rewritten from the checkpoint's history at start, one line per round."""

    def on_start(self, run: Simulation, state: RunState) -> None:
        # drops any line past the last checkpoint (written by a run killed after it)
        atomic_write_bytes(run.run_dir / "metrics.jsonl",
                           "".join(json.dumps(r) + "\n" for r in state.history).encode())

    def after_round(self, run: Simulation, state: RunState, result: RoundResult) -> None:
        with open(run.run_dir / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(result.row) + "\n")


def default_callbacks() -> list[RoundCallback]:
    """The loop's concerns in the order they must run (see the module docstring)."""
    return [ObservationLog(), DivergenceCheck(), Evaluation(), ConsoleReport(), RoundTimer(),
            Checkpointing(), MetricsLog()]


__all__ = ["Checkpointing", "ConsoleReport", "DivergenceCheck", "Evaluation", "MetricsLog",
           "ObservationLog", "RoundCallback", "RoundResult", "RoundTimer", "default_callbacks"]
