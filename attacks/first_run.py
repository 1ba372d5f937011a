"""The short audit that ends ``ffm-private train``: what leaked from the run just trained.

A subset of ``ffm-private audit`` (A1 item-set, A3 attribute, A4 linkage inference and the A6
canary check), sized to take seconds, on the run's own observation log; the report goes where
``ffm-private audit --run <run>`` writes it (``<run>/audit``), so a full audit later replaces it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attacks.audit import ATTACK_NAMES, AuditOptions, AuditReport, run_audit

#: Attacks of the first-run audit.
FIRST_RUN_ATTACKS = ("a1", "a3", "a4", "a6")
#: Bootstrap resamples and canaries: small, so the audit takes seconds; the intervals are wider
#: than a full audit's (``ffm-private audit`` defaults to 200 resamples and 1000 canaries).
#: Under distributed noise A6 releases sums of the participating canaries only, so enough
#: canaries must take part for the sum to carry the planned ``min_survivors`` noise shares
#: (about half of them do: 400 gives about 200, above the first run's 150).
FIRST_RUN_BOOTSTRAP = 50
FIRST_RUN_CANARIES = 400


def first_run_options(progress: bool = True) -> AuditOptions:
    """The options of the first-run audit (every other one as ``ffm-private audit``)."""
    return AuditOptions(attacks=FIRST_RUN_ATTACKS, bootstrap=FIRST_RUN_BOOTSTRAP,
                        canaries=FIRST_RUN_CANARIES, progress=progress)


@dataclass
class FirstRunAudit:
    """The report and where it was written."""

    report: AuditReport
    paths: dict[str, Path]

    def lines(self) -> list[str]:
        """One line per attack and view: its verdict and the sentence behind it."""
        return [f"{r.title or ATTACK_NAMES.get(r.attack.lower(), r.attack)} ({r.view}): "
                f"{r.verdict.level}: {r.verdict.text}" for r in self.report.results]

    def to_dict(self) -> dict[str, Any]:
        return {"failed": self.report.failed, "seconds": round(self.report.seconds, 2),
                "report": {k: str(v) for k, v in self.paths.items()},
                "verdicts": [{"attack": r.attack, "view": r.view, "verdict": r.verdict.level,
                              "text": r.verdict.text,
                              "covered_by_claim": r.covered_by_claim}
                             for r in self.report.results]}


def run_first_audit(run_dir: str | Path, *, progress: bool = True) -> FirstRunAudit:
    """Audit ``run_dir`` with :func:`first_run_options`; write the report to ``<run>/audit``."""
    from attacks.report import write_report

    report = run_audit(run_dir, first_run_options(progress))
    paths = write_report(report, Path(run_dir) / "audit", ("md", "html"))
    return FirstRunAudit(report, paths)


__all__ = ["FIRST_RUN_ATTACKS", "FirstRunAudit", "first_run_options", "run_first_audit"]
