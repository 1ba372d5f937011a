"""The result every attack returns, and the rule that turns a measurement into a verdict."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from attacks.metrics import Interval

LEAK, NO_LEAK, INCONCLUSIVE, PASS, FAIL, NOT_APPLICABLE = (
    "leak", "no leak detected", "inconclusive", "pass", "FAIL", "n/a")
COLORS = {LEAK: "red", FAIL: "red", NO_LEAK: "green", PASS: "green", INCONCLUSIVE: "amber",
          NOT_APPLICABLE: "grey"}


@dataclass(frozen=True)
class Verdict:
    """One word for the reader (``level``), its colour, and the sentence behind it."""

    level: str
    text: str

    @property
    def color(self) -> str:
        return COLORS[self.level]

    @property
    def failed(self) -> bool:
        return self.level == FAIL

    def to_dict(self) -> dict[str, str]:
        return {"level": self.level, "color": self.color, "text": self.text}


def judge(estimate: Interval, reference: float, tolerance: float, what: str) -> Verdict:
    """``leak`` when the whole interval lies above ``reference + tolerance``; ``no leak
    detected`` when it lies at or below it; ``inconclusive`` when it straddles it.

    ``reference`` is the better of chance and a no-information attacker's score, so a leak
    means the observation taught the attacker something it could not guess.
    """
    if not math.isfinite(estimate.value):
        return Verdict(NOT_APPLICABLE, f"{what}: nothing to measure")
    bar = reference + tolerance
    gap = f"{what} {estimate} vs reference {reference:.3f} (tolerance {tolerance:g})"
    if estimate.low > bar:
        return Verdict(LEAK, f"{gap}: the attacker learns more than it could guess")
    if estimate.high <= bar:
        return Verdict(NO_LEAK, f"{gap}: no better than guessing")
    return Verdict(INCONCLUSIVE, f"{gap}: the interval straddles the reference")


@dataclass
class AttackResult:
    """What one attack measured under one view."""

    attack: str                  # "A1" ... "A6"
    title: str
    view: str
    threat_model: str
    observes: str
    headline: str                # the metric the verdict is about
    estimate: Interval | None
    reference: float | None
    verdict: Verdict
    metrics: dict[str, Any] = field(default_factory=dict)
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    covered_by_claim: bool = False
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["estimate"] = self.estimate.to_dict() if self.estimate else None
        out["verdict"] = self.verdict.to_dict()
        out["curves"] = {k: {"points": int(len(f))} for k, (f, _) in self.curves.items()}
        out["metrics"] = _jsonable(self.metrics)
        return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Interval):
        return value.to_dict()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


__all__ = ["COLORS", "FAIL", "INCONCLUSIVE", "LEAK", "NOT_APPLICABLE", "NO_LEAK", "PASS",
           "AttackResult", "Verdict", "judge"]
