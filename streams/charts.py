"""Charts people would rather look at than read: score waterfalls and match-weight distributions.

Plain inline SVG (no plotting library, no JavaScript), so the same markup serves the review page,
stand-alone HTML files from ``caselink chart`` and anything else that can show HTML.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

GREEN, RED, GREY, INK = "#2e7d32", "#c62828", "#9e9e9e", "#212121"


def waterfall_svg(weights: Sequence[tuple[str, str, float]], width: int = 560, link_at: float | None = None,
                  review_at: float | None = None) -> str:
    """Each (field, level, weight) as a bar starting where the previous one ended; the last bar is the total."""
    rows = [*weights, ("match weight", "total", sum(w for _, _, w in weights))]
    running, spans = 0.0, []
    for i, (name, level, w) in enumerate(rows):
        if i == len(rows) - 1:
            spans.append((name, level, 0.0, w, w))
        else:
            spans.append((name, level, running, running + w, w))
            running += w
    marks = [v for v in (link_at, review_at) if v is not None]
    lo = min([0.0, *marks, *(min(a, b) for _, _, a, b, _ in spans)])
    hi = max([0.0, *marks, *(max(a, b) for _, _, a, b, _ in spans)])
    lo, hi = math.floor(lo) - 1, math.ceil(hi) + 1
    label_w, bar_w, row_h = 230, width - 230 - 60, 22
    height = row_h * len(spans) + 30

    def x(v: float) -> float:
        return label_w + (v - lo) / (hi - lo) * bar_w

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="waterfall" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="12" role="img" aria-label="score waterfall">',
             f'<line x1="{x(0):.1f}" y1="0" x2="{x(0):.1f}" y2="{height - 20}" stroke="{GREY}"/>']
    for value, name, anchor, dx in ((link_at, "link", "start", 3), (review_at, "review", "end", -3)):
        if value is not None:
            parts.append(f'<line x1="{x(value):.1f}" y1="0" x2="{x(value):.1f}" y2="{height - 20}" '
                         f'stroke="{INK}" stroke-dasharray="4 3"/><text x="{x(value) + dx:.1f}" y="{height - 6}" '
                         f'text-anchor="{anchor}" fill="{INK}">{name} {value:.1f}</text>')
    for i, (name, level, a, b, w) in enumerate(spans):
        y = i * row_h + 4
        colour = INK if level == "total" else (GREEN if w > 0 else RED if w < 0 else GREY)
        left, right = sorted((x(a), x(b)))
        parts.append(f'<text x="4" y="{y + 14}" fill="{INK}">{html.escape(name)}'
                     f'<tspan fill="{GREY}"> {html.escape(level)}</tspan></text>')
        parts.append(f'<rect class="bar" data-field="{html.escape(name)}" x="{left:.1f}" y="{y}" '
                     f'width="{max(1.0, right - left):.1f}" height="{row_h - 6}" fill="{colour}"/>')
        parts.append(f'<text x="{right + 4:.1f}" y="{y + 14}" fill="{INK}">{w:+.2f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def histogram_svg(series: Mapping[str, Iterable[float]], width: int = 640, height: int = 260, bins: int = 40,
                  marks: dict[str, float] | None = None) -> str:
    """Overlaid histograms (log-scaled counts) of match weights, e.g. true matches vs non-matches."""
    data = {k: [v for v in vs if math.isfinite(v)] for k, vs in series.items()}
    values = [v for vs in data.values() for v in vs]
    if not values:
        return "<p>no data</p>"
    lo, hi = math.floor(min(values)), math.ceil(max(values))
    step = max((hi - lo) / bins, 1e-9)
    counts = {k: [0] * bins for k in data}
    for k, vs in data.items():
        for v in vs:
            counts[k][min(bins - 1, int((v - lo) / step))] += 1
    top = math.log10(max(max(c) for c in counts.values()) + 1)
    pad, plot_w, plot_h = 40, width - 60, height - 90
    colours = [GREEN, RED, "#1565c0", "#ef6c00"]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             f'font-size="12" role="img" aria-label="match weight distribution">']
    for idx, (k, c) in enumerate(counts.items()):
        colour = colours[idx % len(colours)]
        for i, n in enumerate(c):
            if n:
                h = math.log10(n + 1) / top * plot_h
                parts.append(f'<rect x="{pad + i * plot_w / bins:.1f}" y="{pad + plot_h - h:.1f}" '
                             f'width="{plot_w / bins - 1:.1f}" height="{h:.1f}" fill="{colour}" fill-opacity="0.55"/>')
        parts.append(f'<rect x="{pad + 10}" y="{10 + idx * 16}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{pad + 25}" y="{19 + idx * 16}">{html.escape(k)} ({len(data[k]):,})</text>')
    for i, (name, value) in enumerate(sorted((marks or {}).items(), key=lambda kv: kv[1])):
        xv = pad + (value - lo) / (hi - lo) * plot_w
        parts.append(f'<line x1="{xv:.1f}" y1="{pad}" x2="{xv:.1f}" y2="{pad + plot_h}" stroke="{INK}" '
                     f'stroke-dasharray="4 3"/><text x="{xv + 3:.1f}" y="{pad + 12 + 14 * i}">'
                     f'{html.escape(name)} {value:.1f}</text>')
    for i in range(0, 6):
        v = lo + (hi - lo) * i / 5
        parts.append(f'<text x="{pad + plot_w * i / 5:.1f}" y="{pad + plot_h + 16}" text-anchor="middle">'
                     f'{v:.0f}</text>')
    parts.append(f'<text x="{width / 2:.0f}" y="{pad + plot_h + 36}" text-anchor="middle" fill="{GREY}">'
                 "match weight (log2 odds; counts on a log scale)</text></svg>")
    return "".join(parts)


def page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif;margin:2em;color:#212121}table{border-collapse:collapse}"
            "td,th{border:1px solid #ddd;padding:4px 8px;text-align:left}</style></head>"
            f"<body><h1>{html.escape(title)}</h1>{body}</body></html>")


def decision_html(decision: dict[str, Any], link_at: float | None = None, review_at: float | None = None) -> str:
    """The explanation of one LinkDecision's strongest candidate."""
    if not decision["candidates"]:
        return page(f"{decision['record_key']}: {decision['outcome']}", "<p>no candidates were compared</p>")
    best = max(decision["candidates"], key=lambda c: c["match_weight"])
    svg = waterfall_svg([(f["field"], f["level"], f["weight"]) for f in best["field_weights"]],
                        link_at=link_at, review_at=review_at)
    return page(f"{decision['record_key']} vs {best['record_key']}: {decision['outcome']}",
                f"<p>match weight {best['match_weight']:.2f}, probability {best['match_probability']:.6f}, "
                f"model {html.escape(decision['model_version'])}</p>{svg}")
