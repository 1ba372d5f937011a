"""``ffm-private audit``: run the leakage audits on a training run and write the report.

Registered by :func:`add_audit_command` (the CLI calls it when building its parser); the
attacks themselves are imported only when the command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

AUDIT_EPILOG = """\
examples:
  ffm-private audit --run runs/quickstart                    # every attack, both views
  ffm-private audit --run runs/ml100k --attacks a1 a3 a6 --views server
  ffm-private audit --run runs/dp --attacks a6 --canaries 2000 --beta 1e-4
  ffm-private audit --run runs/dp --attacks a6 --mechanism noise-off   # must FAIL (self-test)

exit status: 0 when no audit fails, 1 when an epsilon lower bound exceeds the run's claimed
epsilon (the report marks it FAIL in red), 2 for a usage or data error.
"""


def add_audit_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``audit`` on an argparse sub-parser collection (``ffm-private audit``)."""
    from attacks.audit import ATTACK_NAMES, ATTACKS
    from attacks.context import VIEWS

    names = "; ".join(f"{a}: {n}" for a, n in ATTACK_NAMES.items())
    p = subparsers.add_parser(
        "audit", help="measure what leaks: run the attacks on a run's observation log",
        description="Run leakage attacks (" + names + ") on what each party observed during "
        "a training run (its observations/ log and released artefacts), and write audit.json, "
        "audit.md, audit.html and plots. See docs/attacks.md.",
        epilog=AUDIT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="run directory (written by ffm-private train)")
    p.add_argument("--out", help="where to write the report (default: <run>/audit)")
    p.add_argument("--attacks", nargs="+", choices=ATTACKS, default=list(ATTACKS),
                   metavar="A", help=f"attacks to run, from {' '.join(ATTACKS)} (default: all)")
    p.add_argument("--views", nargs="+", choices=VIEWS, default=list(VIEWS),
                   help="threat models: server (what the server saw of each update) and "
                   "public (the released models); default: both")
    p.add_argument("--seed", type=int, default=0, help="the attacks' seed (default 0)")
    p.add_argument("--bootstrap", type=int, default=200,
                   help="bootstrap resamples for the intervals (default 200)")
    p.add_argument("--a2-users", type=int, default=40,
                   help="A2: target users (default 40)")
    p.add_argument("--a2-pool", type=int, default=30,
                   help="A2: candidate items per target user (default 30)")
    p.add_argument("--shadows", type=int, default=8,
                   help="A2: shadow (public) clients per candidate item for LiRA (default 8)")
    p.add_argument("--canaries", type=int, default=1000, help="A6: canaries (default 1000)")
    p.add_argument("--beta", type=float, default=1e-3,
                   help="A6: failure probability of the lower bound (default 1e-3)")
    p.add_argument("--a6-rounds", type=int, default=50,
                   help="A6: audit the first N rounds of the mechanism, against the claim "
                   "after N rounds (default 50)")
    p.add_argument("--mechanism", choices=["noise-off", "noise-over-n", "no-clipping"],
                   help="A6 self-test: audit a deliberately broken variant of the run's "
                   "mechanism against the run's claim (the audit must FAIL)")
    p.add_argument("--format", nargs="+", choices=["md", "html"], default=["md", "html"],
                   help="report formats besides audit.json (default: md html)")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress; print only one verdict line per attack and the report path")
    p.add_argument("--json", action="store_true",
                   help="print only audit.json's content on stdout")
    p.set_defaults(func=cmd_audit)
    return p


def cmd_audit(args: argparse.Namespace) -> int:
    from attacks.audit import AuditOptions, run_audit
    from attacks.context import AuditError
    from attacks.report import write_report
    from ffm_private.observation import ObservationLogError

    try:
        options = AuditOptions(
            attacks=tuple(args.attacks), views=tuple(args.views), seed=args.seed,
            bootstrap=args.bootstrap, a2_users=args.a2_users, a2_pool=args.a2_pool,
            a2_shadows=args.shadows, canaries=args.canaries, beta=args.beta,
            a6_max_rounds=args.a6_rounds, mechanism=args.mechanism, progress=not args.quiet)
        report = run_audit(args.run, options)
    except (AuditError, ObservationLogError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(args.run) / "audit"
    paths = write_report(report, out, tuple(args.format))
    if args.json:
        print(paths["json"].read_text(), end="")
    else:
        if args.quiet:
            for r in report.results:
                print(f"- {r.attack} ({r.view}): {r.verdict.level}: {r.verdict.text}")
        elif "md" in paths:
            print(paths["md"].read_text())
        print("report: " + ", ".join(str(p) for p in paths.values()))
    if report.failed:
        print("\033[31mAUDIT FAILED: an epsilon lower bound exceeds the claimed epsilon\033[0m",
              file=sys.stderr)
        return 1
    return 0


__all__ = ["add_audit_command", "cmd_audit"]
