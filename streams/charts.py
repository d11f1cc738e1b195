"""Charts people would rather look at than read: one pair's score as a waterfall, and the page
the other charts sit on (``model_charts``: the model's m/u and match-weight histograms;
``data_charts``: a citizen's records and links, completeness per agency and field).

Plain inline SVG (no plotting library, no JavaScript), so the same markup serves the review page,
the worker's /charts pages, stand-alone files from ``caselink chart`` and anything that shows HTML.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

GREEN, RED, GREY, INK = "#2e7d32", "#c62828", "#9e9e9e", "#212121"


def waterfall_svg(weights: Sequence[tuple[str, str, float]], width: int = 640, link_at: float | None = None,
                  review_at: float | None = None, link_label: str = "link", review_label: str = "review",
                  total_label: str = "match weight") -> str:
    """Each (field, level, weight) as a bar starting where the previous one ended; the last bar is
    the total. Labels have a column of their own on the left, values one on the right, and the
    threshold names a line each above the bars, so no text lies on a bar or on other text."""
    rows = [*weights, (total_label, "total", sum(w for _, _, w in weights))]
    running, spans = 0.0, []
    for i, (name, level, w) in enumerate(rows):
        if i == len(rows) - 1:
            spans.append((name, level, 0.0, w, w))
        else:
            spans.append((name, level, running, running + w, w))
            running += w
    marks = [(v, n) for v, n in ((link_at, link_label), (review_at, review_label)) if v is not None]
    lo = min([0.0, *(v for v, _ in marks), *(min(a, b) for _, _, a, b, _ in spans)])
    hi = max([0.0, *(v for v, _ in marks), *(max(a, b) for _, _, a, b, _ in spans)])
    lo, hi = math.floor(lo) - 1, math.ceil(hi) + 1
    char_w, row_h, top = 6.6, 22, 8 + 16 * len(marks)
    label_w = min(width // 2, int(max(len(f"{n} {lv}") for n, lv, *_ in spans) * char_w) + 12)
    value_w = 56
    bar_w = max(120, width - label_w - value_w)
    width = label_w + bar_w + value_w
    height = top + row_h * len(spans) + 24

    def x(v: float) -> float:
        return label_w + (v - lo) / (hi - lo) * bar_w

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="waterfall" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12" role="img" '
             f'aria-label="how the score was made">',
             f'<line x1="{x(0):.1f}" y1="{top - 4}" x2="{x(0):.1f}" y2="{height - 20}" stroke="{GREY}"/>']
    for i, (value, name) in enumerate(sorted(marks, reverse=True)):
        anchor = "end" if x(value) > label_w + bar_w / 2 else "start"
        dx = -3 if anchor == "end" else 3
        parts.append(f'<line x1="{x(value):.1f}" y1="{14 + 16 * i}" x2="{x(value):.1f}" y2="{height - 20}" '
                     f'stroke="{INK}" stroke-dasharray="4 3"/><text class="mark" x="{x(value) + dx:.1f}" '
                     f'y="{12 + 16 * i}" text-anchor="{anchor}" fill="{INK}">{html.escape(name)} ({value:+.1f})</text>')
    for i, (name, level, a, b, w) in enumerate(spans):
        y = top + i * row_h
        colour = INK if level == "total" else (GREEN if w > 0 else RED if w < 0 else GREY)
        left, right = sorted((x(a), x(b)))
        parts.append(f'<text x="4" y="{y + 14}" fill="{INK}">{html.escape(name)}'
                     f'<tspan fill="{GREY}"> {html.escape(level)}</tspan></text>')
        parts.append(f'<rect class="bar" data-field="{html.escape(name)}" x="{left:.1f}" y="{y}" '
                     f'width="{max(1.0, right - left):.1f}" height="{row_h - 6}" fill="{colour}"/>')
        parts.append(f'<text x="{width - 4}" y="{y + 14}" text-anchor="end" fill="{INK}">{w:+.2f}</text>')
    for tick in range(int(lo), int(hi) + 1, max(1, (int(hi) - int(lo)) // 6)):
        parts.append(f'<text x="{x(tick):.1f}" y="{height - 6}" text-anchor="middle" fill="{GREY}">{tick}</text>')
    parts.append("</svg>")
    return "".join(parts)


def page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            "<style>body{font-family:system-ui,sans-serif;margin:2em;color:#212121;max-width:1000px}"
            "table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:4px 8px;text-align:left}"
            "svg{display:block;margin:1em 0;max-width:100%;height:auto}</style></head>"
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
