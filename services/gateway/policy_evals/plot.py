"""The paper's figure as a PNG: each policy's Elo under one judge against another's
(helpfulness on x, harmlessness on y by default), with the bootstrap intervals as
error bars, relative to the anchor policy at (0, 0)."""

from __future__ import annotations

import io
from typing import Any


def png(report: dict[str, Any]) -> bytes | None:
    """The plot of a report (``report.build``), or None when it has no plot axes or
    one of its judges has no ratings yet."""
    if report["plot"] is None:
        return None
    x_judge, y_judge = report["plot"]
    by_x = {r["policy"]: r for r in report["judges"][x_judge]["ratings"]}
    by_y = {r["policy"]: r for r in report["judges"][y_judge]["ratings"]}
    policies = [p for p in by_x if p in by_y]
    if not policies:
        return None
    # Imported here: matplotlib costs the gateway start-up time and memory for one route.
    # A Figure renders alone (Agg): no pyplot, no display.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.8), dpi=100)
    axes = figure.subplots()
    for policy in policies:
        x, y = by_x[policy], by_y[policy]
        axes.errorbar(
            x["elo"],
            y["elo"],
            xerr=[[x["elo"] - x["low"]], [x["high"] - x["elo"]]],
            yerr=[[y["elo"] - y["low"]], [y["high"] - y["elo"]]],
            fmt="o",
            capsize=3,
            label=policy,
        )
        axes.annotate(policy, (x["elo"], y["elo"]), textcoords="offset points", xytext=(6, 6))
    axes.axhline(0, color="0.8", linewidth=0.8, zorder=0)
    axes.axvline(0, color="0.8", linewidth=0.8, zorder=0)
    level = round(report["level"] * 100)
    axes.set_xlabel(f"{x_judge} Elo (anchor {report['anchor']} = 0)")
    axes.set_ylabel(f"{y_judge} Elo")
    title = report["name"] or report["id"][:12]
    state = "" if report["complete"] else " (partial)"
    axes.set_title(f"{title}{state}: {level}% bootstrap intervals over prompts", fontsize=10)
    axes.legend(fontsize=8, loc="best")
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()
