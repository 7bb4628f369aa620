"""The report's charts: matplotlib (Agg, no pyplot state) rendered to inline PNG data URIs.

Inline PNGs keep report.html a single file that opens offline and prints to PDF. PNG
metadata is stripped and layouts are seeded, so the same run gives the same bytes.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from datetime import datetime

import igraph as ig
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

CAMPAIGN_COLOR = "#b2182b"
BENIGN_COLOR = "#8c96a0"
RELEASE_COLOR = "#444444"
MODEL_COLORS = ("#2166ac", "#d6604d", "#4d9221", "#8073ac", "#e08214", "#35978f")
EDGE_COLORS = {
    "payment": "#d7191c", "ip": "#2c7bb6", "ip24": "#2c7bb6", "ip_prefix": "#2c7bb6",
    "asn": "#74add1", "asn_day": "#74add1", "signup_ip": "#4575b4", "org": "#e66101",
    "email_domain": "#7b3294", "signup_burst": "#fdae61", "template": "#1a9641",
    "family": "#1a9641", "synchrony": "#018571",
}
OTHER_EDGE = "#999999"
# Which kind colours an edge that has several: the most specific link first.
KIND_PRIORITY = ("payment", "family", "template", "signup_ip", "email_domain", "org", "ip",
                 "synchrony", "signup_burst", "ip24", "ip_prefix", "asn", "asn_day")


def dominant_kind(kinds: Sequence[str] | None) -> str:
    """The kind an edge is drawn as: the most specific of its kinds."""
    if not kinds:
        return "other"
    rank = {k: i for i, k in enumerate(KIND_PRIORITY)}
    return min(kinds, key=lambda k: (rank.get(k, len(rank)), k))


def _figure(width: float = 7.5, height: float = 3.0) -> Figure:
    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> str:
    """The figure as a `data:image/png;base64,...` URI (deterministic bytes)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _mark_releases(ax, releases: Sequence[tuple[str, datetime]], lo: datetime,
                   hi: datetime) -> None:
    for model, when in releases:
        if lo <= when <= hi:
            ax.axvline(when, color=RELEASE_COLOR, linestyle="--", linewidth=1)
            ax.annotate(f"{model} released", (when, 1.0), xycoords=("data", "axes fraction"),
                        xytext=(3, -12), textcoords="offset points", fontsize=8,
                        color=RELEASE_COLOR)


def capability_chart(capabilities: dict[str, float]) -> str:
    """Horizontal bars: share of the campaign's exchanges per capability category."""
    items = sorted(capabilities.items(), key=lambda kv: kv[1])
    fig = _figure(6.0, 0.28 * max(len(items), 2) + 0.7)
    ax = fig.add_subplot()
    ax.barh([k for k, _ in items], [v * 100 for _, v in items], color=CAMPAIGN_COLOR)
    for i, (_, v) in enumerate(items):
        ax.text(v * 100 + 1, i, f"{v:.0%}", va="center", fontsize=8)
    ax.set_xlim(0, 110)
    ax.set_xlabel("% of the campaign's exchanges")
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def timeline_chart(hours: np.ndarray, series: dict[str, np.ndarray],
                   releases: Sequence[tuple[str, datetime]], title: str,
                   colors: dict[str, str] | None = None) -> str:
    """Exchanges per hour, one line per series (model, or campaign vs the rest), with
    model releases as dashed verticals."""
    fig = _figure()
    ax = fig.add_subplot()
    for i, (label, values) in enumerate(series.items()):
        color = (colors or {}).get(label, MODEL_COLORS[i % len(MODEL_COLORS)])
        ax.plot(hours, values, label=label, linewidth=1.2, color=color)
    if len(hours):
        _mark_releases(ax, releases, hours.min(), hours.max())
    ax.set_ylabel("exchanges per hour")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    fig.autofmt_xdate()
    return _png(fig)


def volume_chart(benign: np.ndarray, campaign: np.ndarray, limit: float,
                 limit_label: str) -> str:
    """Benign accounts' exchanges per active day (histogram, log scale) under a strip of the
    campaign's accounts: the picture of why a per-account volume limit misses a fleet."""
    fig = _figure(7.5, 3.4)
    strip, ax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1, 4]})
    values = np.concatenate([benign, campaign])
    values = values[values > 0]
    lo, hi = (values.min(), min(values.max(), limit * 10)) if len(values) else (1.0, 10.0)
    hi = max(hi, limit, values.max() if len(values) else hi)
    bins = np.logspace(np.log10(lo * 0.9), np.log10(hi * 1.1), 40)
    ax.hist(benign[benign > 0], bins=bins, color=BENIGN_COLOR,
            label=f"benign accounts (n={len(benign):,})")
    ax.set_xscale("log")
    rng = np.random.default_rng(0)
    strip.scatter(campaign, rng.uniform(-0.3, 0.3, len(campaign)), marker="|", s=120,
                  color=CAMPAIGN_COLOR, linewidths=1.5,
                  label=f"campaign accounts (n={len(campaign):,})")
    strip.set_ylim(-0.6, 0.6)
    strip.set_yticks([])
    for axis in (strip, ax):
        axis.axvline(limit, color=RELEASE_COLOR, linestyle="--", linewidth=1,
                     label=limit_label if axis is ax else None)
        axis.spines[["top", "right"]].set_visible(False)
    strip.spines["left"].set_visible(False)
    ax.set_xlabel("exchanges per active day (log scale)")
    ax.set_ylabel("benign accounts")
    handles = strip.get_legend_handles_labels()[0] + ax.get_legend_handles_labels()[0]
    fig.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(0.98, 0.95),
               frameon=False)
    return _png(fig)


def graph_chart(members: Sequence[str], outside: Sequence[str],
                edges: Sequence[tuple[str, str, float, str]]) -> str:
    """The account-link graph: campaign accounts red, linked outsiders grey, each edge
    coloured by its most specific kind of link (`dominant_kind`), width by weight."""
    names = list(members) + list(outside)
    index = {n: i for i, n in enumerate(names)}
    kept = [(index[s], index[d], w, k) for s, d, w, k in edges if s in index and d in index]
    g = ig.Graph(n=len(names), edges=[(s, d) for s, d, _, _ in kept])
    rng = np.random.default_rng(0)
    seed = rng.uniform(-1, 1, size=(len(names), 2)).tolist()
    # Kamada-Kawai from a seeded start is deterministic (igraph's Fruchterman-Reingold is not).
    coords = np.array(g.layout_kamada_kawai(seed=seed).coords) if names else np.zeros((0, 2))
    fig = _figure(6.5, 5.0)
    ax = fig.add_subplot()
    top_w = max((w for _, _, w, _ in kept), default=1.0) or 1.0
    ax.add_collection(LineCollection(
        [coords[[s, d]] for s, d, _, _ in kept],
        colors=[EDGE_COLORS.get(k, OTHER_EDGE) for *_, k in kept],
        linewidths=[0.5 + 2.0 * w / top_w for _, _, w, _ in kept], alpha=0.7, zorder=1))
    n_in = len(members)
    if n_in:
        ax.scatter(coords[:n_in, 0], coords[:n_in, 1], s=50, color=CAMPAIGN_COLOR, zorder=2,
                   edgecolors="white", linewidths=0.6)
    if len(outside):
        ax.scatter(coords[n_in:, 0], coords[n_in:, 1], s=35, color=BENIGN_COLOR, zorder=2,
                   edgecolors="white", linewidths=0.6)
    used = sorted({k for _, _, _, k in kept})
    handles = [Line2D([], [], color=EDGE_COLORS.get(k, OTHER_EDGE), label=k) for k in used]
    handles += [
        Line2D([], [], marker="o", linestyle="", color=CAMPAIGN_COLOR,
               label=f"campaign account ({n_in})"),
        Line2D([], [], marker="o", linestyle="", color=BENIGN_COLOR,
               label=f"linked account outside ({len(outside)})"),
    ]
    ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5),
              frameon=False)
    ax.set_axis_off()
    return _png(fig)
