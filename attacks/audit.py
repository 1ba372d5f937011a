"""The audit runner: every chosen attack under every chosen view, then one report.

    from attacks.audit import AuditOptions, run_audit
    report = run_audit("runs/quickstart", AuditOptions(attacks=("a1", "a6")))
    report.failed  # True when A6's lower bound exceeds the claimed epsilon
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from attacks.base import FAIL, NOT_APPLICABLE, AttackResult, Verdict
from attacks.context import VIEWS, AuditContext, AuditError
from attacks.features import torch_threads
from attacks.registry import attack, attack_names

#: The registered attacks (``attacks.registry``), sorted, and their titles.
ATTACKS = attack_names()
ATTACK_NAMES = {name: attack(name).title for name in ATTACKS}


@dataclass(frozen=True)
class AuditOptions:
    """What to run, how big, with which seed (every default documented in ``--help``)."""

    attacks: tuple[str, ...] = ATTACKS
    views: tuple[str, ...] = VIEWS
    seed: int = 0
    bootstrap: int = 200
    a2_users: int = 40
    a2_pool: int = 30
    a2_shadows: int = 8
    canaries: int = 1000
    beta: float = 1e-3
    a6_max_rounds: int = 50
    mechanism: str | None = None  # a6: "noise-off", "noise-over-n", "no-clipping" (self-test)
    threads: int | None = 1
    progress: bool = True

    def __post_init__(self) -> None:
        known = attack_names()
        unknown = sorted(set(self.attacks) - set(known))
        if unknown:
            raise ValueError(f"unknown attack(s) {unknown}; choose from {list(known)}")
        bad = sorted(set(self.views) - set(VIEWS))
        if bad:
            raise ValueError(f"unknown view(s) {bad}; choose from {list(VIEWS)}")
        if not 0 < self.beta <= 0.05:
            raise ValueError(f"beta = {self.beta} must be in (0, 0.05]")


@dataclass
class AuditReport:
    """Everything the audit found; :mod:`attacks.report` renders it."""

    run_dir: str
    claim: dict[str, Any]
    protocol: str
    model: str
    options: dict[str, Any]
    results: list[AttackResult] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    observation: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        """A verdict of FAIL (an epsilon lower bound above the claim)."""
        return any(r.verdict.level == FAIL for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {"run_dir": self.run_dir, "claim": self.claim, "protocol": self.protocol,
                "model": self.model, "options": self.options, "failed": self.failed,
                "seconds": self.seconds, "observation": self.observation,
                "results": [r.to_dict() for r in self.results], "skipped": self.skipped}


def run_audit(run: str | Path | AuditContext, options: AuditOptions = AuditOptions()  # noqa: B008
              ) -> AuditReport:
    """Run the chosen attacks on a run directory (or a prepared context)."""
    from ffm_private import console

    start = time.perf_counter()
    bars = console.bars_on(options.progress)  # every attack's bars: only on a terminal
    with torch_threads(options.threads):
        ctx = run if isinstance(run, AuditContext) else AuditContext.from_run(
            run, seed=options.seed, progress=bars)
        ctx.progress = bars
        report = AuditReport(
            run_dir=str(ctx.run_dir or ""), claim=ctx.claim.to_dict(), protocol=ctx.log.protocol,
            model=ctx.cfg.model.kind, options=asdict(options),
            observation={"rounds": ctx.log.rounds, "bytes": ctx.log.bytes_on_disk(),
                         "reveals_individual": ctx.log.manifest.get("reveals_individual"),
                         "targets": len(ctx.targets()), "shadows": len(ctx.shadows())})
        per_view = [a for a in options.attacks if attack(a).per_view]
        jobs = [(a, v) for a in per_view for v in options.views]
        jobs += [(a, "mechanism") for a in options.attacks if not attack(a).per_view]
        bar = console.bar(jobs, enabled=options.progress, desc="audit", unit="attack")
        for name, view in bar:
            bar.set_postfix_str(f"{name} {view}")
            try:
                report.results.extend(attack(name).run(ctx, view, options))
            except AuditError as err:
                report.skipped.append({"attack": name, "view": view, "reason": str(err)})
                report.results.append(AttackResult(
                    attack=name.upper(), title=f"{name.upper()} {attack(name).title}",
                    view=view, threat_model="", observes="", headline="", estimate=None,
                    reference=None, verdict=Verdict(NOT_APPLICABLE, str(err))))
    report.seconds = time.perf_counter() - start
    return report


__all__ = ["ATTACKS", "ATTACK_NAMES", "AuditOptions", "AuditReport", "run_audit"]
