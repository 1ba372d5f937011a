"""Rendering an :class:`~attacks.audit.AuditReport`: JSON, Markdown, HTML and plots.

Plots use matplotlib's Agg canvas directly (no global backend change): ROC curves on log-log
axes with the region an (epsilon, delta)-DP claim allows shaded, and A6's lower bound against
the claim.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from attacks.audit import AuditReport
from attacks.base import AttackResult
from attacks.metrics import dp_roc_bound
from ffm_private.storage import atomic_write_bytes

MARK = {"red": "🔴", "green": "🟢", "amber": "🟠", "grey": "⚪"}
HTML_COLOR = {"red": "#c62828", "green": "#2e7d32", "amber": "#ef6c00", "grey": "#757575"}


def _figure(width: float = 6.4, height: float = 4.2):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _thin(fpr: np.ndarray, tpr: np.ndarray, points: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    if fpr.size <= points:
        return fpr, tpr
    idx = np.unique(np.concatenate([
        np.searchsorted(fpr, np.logspace(-6, 0, points)), [0, fpr.size - 1]]).clip(0, fpr.size - 1))
    return fpr[idx], tpr[idx]


def plot_roc(results: list[AttackResult], claim: dict[str, Any], path: Path) -> Path | None:
    """ROC curves per view on log-log axes, with the DP-allowed region where the claim covers."""
    by_view: dict[str, list[AttackResult]] = {}
    for r in results:
        if r.curves:
            by_view.setdefault(r.view, []).append(r)
    if not by_view:
        return None
    fig = _figure(5.2 * len(by_view), 4.4)
    floor = 1e-4
    for k, (view, rs) in enumerate(sorted(by_view.items())):
        ax = fig.add_subplot(1, len(by_view), k + 1)
        grid = np.logspace(math.log10(floor), 0, 200)
        ax.plot(grid, grid, color="grey", lw=0.8, ls=":", label="chance")
        eps, delta = claim.get("epsilon"), claim.get("delta") or 0.0
        if eps and view in claim.get("covers", ()):
            bound = dp_roc_bound(grid, eps, delta)
            ax.fill_between(grid, bound, 1.0, color="#c62828", alpha=0.08,
                            label=f"forbidden by the claim (eps={eps:.2g})")
            ax.plot(grid, bound, color="#c62828", lw=1.0)
        for r in rs:
            for label, (fpr, tpr) in r.curves.items():
                f, t = _thin(np.asarray(fpr), np.asarray(tpr))
                ax.plot(np.clip(f, floor, 1), np.clip(t, floor, 1), lw=1.4,
                        label=f"{label} (AUC {r.estimate.value:.3f})" if r.estimate else label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(floor, 1)
        ax.set_ylim(floor, 1)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title(f"view: {view}", fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def plot_epsilon(results: list[AttackResult], path: Path) -> Path | None:
    """A6: the epsilon lower bound (and Andrew et al.'s estimate) against the claim."""
    a6 = [r for r in results if r.attack == "A6" and "lower_bound" in r.metrics]
    if not a6:
        return None
    r = a6[0]
    m = r.metrics
    labels = ["one-run bound", "Clopper-Pearson", "Gaussian estimate"]
    values = [m["one_run"]["epsilon"], m["clopper_pearson"]["epsilon"],
              m["gaussian_estimate"]["epsilon"]]
    finite = [v for v in values if v is not None and math.isfinite(v)]
    top = max(finite + [m.get("claimed_epsilon_at_audit_delta") or 0.0, 1.0]) * 1.2
    shown = [v if v is not None and math.isfinite(v) else top for v in values]
    fig = _figure(5.6, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    colors = ["#1565c0", "#1565c0", "#90a4ae"]
    ax.barh(labels, shown, color=colors)
    for y, (v, w) in enumerate(zip(values, shown, strict=True)):
        text = f"{v:.3f}" if v is not None and math.isfinite(v) else "unbounded"
        ax.text(w, y, f" {text}", va="center", fontsize=8)
    ax.set_xlim(0, top * 1.25)
    claimed = m.get("claimed_epsilon_at_audit_delta")
    if claimed is not None:
        ax.axvline(claimed, color="#c62828", lw=2, label=f"claim {claimed:.3g}")
        ax.legend(fontsize=8)
    ax.set_xlabel(f"epsilon at delta {m['delta']:.2g}")
    ax.set_title(f"A6: {r.verdict.level}", fontsize=10, color=HTML_COLOR[r.verdict.color])
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def _row(r: AttackResult) -> list[str]:
    est = str(r.estimate) if r.estimate else (
        f"{r.metrics['lower_bound']:.3f}" if "lower_bound" in r.metrics else "-")
    ref = "-" if r.reference is None else f"{r.reference:.3f}"
    tpr1 = r.metrics.get("tpr@1%fpr")
    tpr01 = r.metrics.get("tpr@0.1%fpr")
    tprs = "-" if tpr1 is None else f"{tpr1:.3f} / {tpr01:.3f}"
    return [r.title, r.view, r.headline.replace("_", " ") or "-", est, ref, tprs,
            "yes" if r.covered_by_claim else "no", r.verdict.level]


HEADER = ["attack", "view", "metric", "estimate [95% CI]", "reference", "TPR@1% / 0.1% FPR",
          "claim covers", "verdict"]


def render_markdown(report: AuditReport, images: dict[str, str]) -> str:
    claim = report.claim
    lines = [
        f"# Leakage audit: {report.run_dir}",
        "",
        f"- model: {report.model}; protocol: {report.protocol}; "
        f"observation log rounds {report.observation.get('rounds')} "
        f"({report.observation.get('bytes', 0) / 1e6:.1f} MB)",
        f"- DP claim: {claim.get('text')}",
        f"- users attacked: {report.observation.get('targets')} private "
        f"(shadows: {report.observation.get('shadows')} public); seed {report.options['seed']}; "
        f"{report.seconds:.1f} s",
        f"- overall: {'**FAIL**: an epsilon lower bound exceeds the claim' if report.failed else 'no audit failure'}",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    for r in report.results:
        cells = _row(r)
        cells[-1] = f"{MARK[r.verdict.color]} {cells[-1]}"
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Verdicts", ""]
    for r in report.results:
        lines.append(f"- {MARK[r.verdict.color]} **{r.title}** ({r.view}): {r.verdict.text}")
    for name, rel in images.items():
        lines += ["", f"![{name}]({rel})"]
    lines += ["", "## Threat models", ""]
    seen = set()
    for r in report.results:
        if r.attack in seen or not r.threat_model:
            continue
        seen.add(r.attack)
        lines.append(f"- **{r.attack}** observes {r.observes}.")
    lines += ["", "How to read this report: docs/attacks.md. A *reference* is what an attacker "
              "achieves without the observation (chance, or a popularity guess); *claim covers* "
              "says whether the run's DP guarantee applies to that view and attack."]
    if report.skipped:
        lines += ["", "## Skipped", ""]
        lines += [f"- {s['attack']} ({s['view']}): {s['reason']}" for s in report.skipped]
    return "\n".join(lines) + "\n"


def render_html(report: AuditReport, images: dict[str, str]) -> str:
    esc = html.escape
    rows = []
    for r in report.results:
        cells = [esc(c) for c in _row(r)]
        color = HTML_COLOR[r.verdict.color]
        cells[-1] = f'<b style="color:{color}">{cells[-1]}</b>'
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    verdicts = "".join(
        f'<li><b style="color:{HTML_COLOR[r.verdict.color]}">{esc(r.verdict.level)}</b> '
        f"{esc(r.title)} ({esc(r.view)}): {esc(r.verdict.text)}</li>" for r in report.results)
    imgs = "".join(f'<p><img src="{esc(rel)}" alt="{esc(n)}"></p>' for n, rel in images.items())
    overall = ('<p style="color:#c62828"><b>FAIL: an epsilon lower bound exceeds the claim</b></p>'
               if report.failed else "<p>No audit failure.</p>")
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>Leakage audit: {esc(report.run_dir)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px}}</style>
</head><body><h1>Leakage audit: {esc(report.run_dir)}</h1>
<p>model {esc(report.model)}; protocol {esc(report.protocol)}; DP claim:
{esc(str(report.claim.get('text')))}; {report.seconds:.1f} s</p>{overall}
<table><tr>{''.join(f'<th>{esc(h)}</th>' for h in HEADER)}</tr>{''.join(rows)}</table>
<h2>Verdicts</h2><ul>{verdicts}</ul>{imgs}
<p>How to read this report: docs/attacks.md.</p></body></html>
"""


def write_report(report: AuditReport, out_dir: str | Path,
                 formats: tuple[str, ...] = ("md", "html")) -> dict[str, Path]:
    """Write ``audit.json`` plus the chosen formats and plots into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images: dict[str, str] = {}
    roc = plot_roc(report.results, report.claim, out / "audit-roc.png")
    if roc:
        images["ROC curves"] = roc.name
    eps = plot_epsilon(report.results, out / "audit-epsilon.png")
    if eps:
        images["A6 epsilon"] = eps.name
    paths = {"json": out / "audit.json"}
    atomic_write_bytes(paths["json"], (json.dumps(_finite(report.to_dict()), indent=2,
                                                  allow_nan=False, default=_default)
                                       + "\n").encode())
    if "md" in formats:
        paths["md"] = out / "audit.md"
        atomic_write_bytes(paths["md"], render_markdown(report, images).encode())
    if "html" in formats:
        paths["html"] = out / "audit.html"
        atomic_write_bytes(paths["html"], render_html(report, images).encode())
    for name, rel in images.items():
        paths[name] = out / rel
    return paths


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: write them as null."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float | np.floating) and not math.isfinite(float(value)):
        return None
    return value


def _default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


__all__ = ["plot_epsilon", "plot_roc", "render_html", "render_markdown", "write_report"]
