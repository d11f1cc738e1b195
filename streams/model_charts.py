"""Charts of the linkage model in use, as Splink draws them: each comparison level's m and u and
the weight they give, and the match weights of real pairs against the thresholds.

Plain SVG strings (no plotting library, no JavaScript), shown by the worker's /charts pages, the
review screen's links and ``caselink chart``. Every chart has its axes labelled with numbers.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from caselink.streams.charts import GREEN, GREY, INK, RED

SERIES_COLOURS = ("#2e7d32", "#ef6c00", "#1565c0", "#8e24aa")


def _svg(width: float, height: float, label: str, body: list[str], css_class: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="{css_class}" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="sans-serif" font-size="12" role="img" '
            f'aria-label="{html.escape(label)}">{"".join(body)}</svg>')


def _nice_step(span: float, ticks: int = 6) -> float:
    raw = span / max(1, ticks)
    power = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def _x_labels(x: Callable[[float], float], lo: float, hi: float, ticks: int, y: float) -> list[str]:
    """The numbers under a horizontal axis from ``lo`` to ``hi``, about ``ticks`` of them at round steps."""
    step = _nice_step(hi - lo, ticks)
    labels = []
    tick = math.ceil(lo / step) * step
    while tick <= hi:
        labels.append(f'<text x="{x(tick):.1f}" y="{y}" text-anchor="middle" fill="{GREY}">{tick:g}</text>')
        tick += step
    return labels


def mu_svg(model: Any, width: int = 900) -> str:
    """One row per comparison level: how often true matches reach it (m), how often unrelated pairs
    do (u), and the weight log2(m/u) as a bar left (against a match) or right (for one)."""
    rows: list[tuple[str, str, float | None, float | None, float | None]] = [
        ("starting point", "before any evidence", None, None, model.prior_weight)]
    for params in model.comparisons:
        weights = params.weights()
        for level, m, u, w in zip(params.levels, params.m, params.u, weights, strict=True):
            if level == "missing":
                continue
            rows.append((params.name, level, m, u, w))
    label_w, text_w, row_h, top = 360, 170, 18, 34
    bar_w = width - label_w - text_w - 60
    finite = [w for *_, w in rows if w is not None and math.isfinite(w)]
    lo, hi = math.floor(min(0.0, *finite)) - 1, math.ceil(max(0.0, *finite)) + 1

    def x(v: float) -> float:
        return label_w + text_w + (v - lo) / (hi - lo) * bar_w

    height = top + row_h * len(rows) + 36
    body = [f'<text x="4" y="14" font-weight="bold">comparison and level</text>'
            f'<text x="{label_w}" y="14" font-weight="bold">m (matches) · u (others)</text>'
            f'<text x="{x(0):.1f}" y="14" font-weight="bold" text-anchor="middle">weight: log2(m / u)</text>',
            f'<line x1="{x(0):.1f}" y1="{top - 6}" x2="{x(0):.1f}" y2="{height - 30}" stroke="{GREY}"/>']
    previous = None
    for i, (name, level, m, u, w) in enumerate(rows):
        y = top + i * row_h
        if name != previous:
            body.append(f'<line x1="0" y1="{y - 2}" x2="{width}" y2="{y - 2}" stroke="#eeeeee"/>')
        label = f"{name if name != previous else ''}"
        previous = name
        body.append(f'<text x="4" y="{y + 12}" fill="{INK}" font-weight="bold">{html.escape(label)}</text>'
                    f'<text x="150" y="{y + 12}" fill="{INK}">{html.escape(level)}</text>')
        if m is not None and u is not None:
            body.append(f'<text x="{label_w}" y="{y + 12}" fill="{INK}">{_pct(m)} · {_pct(u)}</text>')
        if w is not None and math.isfinite(w):
            left, right = sorted((x(0), x(w)))
            colour = GREEN if w > 0 else RED if w < 0 else GREY
            body.append(f'<rect class="bar" data-level="{html.escape(name)}:{html.escape(level)}" x="{left:.1f}" '
                        f'y="{y + 2}" width="{max(1.0, right - left):.1f}" height="{row_h - 5}" fill="{colour}"/>'
                        f'<text x="{(right + 4) if w >= 0 else (left - 4):.1f}" y="{y + 12}" '
                        f'text-anchor="{"start" if w >= 0 else "end"}" fill="{INK}">{w:+.1f}</text>')
    body.extend(_x_labels(x, lo, hi, 8, height - 14))
    body.append(f'<text x="{x((lo + hi) / 2):.1f}" y="{height - 2}" text-anchor="middle" fill="{GREY}">'
                "weight (log2 of m/u: +1 doubles the odds of a match)</text>")
    return _svg(width, height, f"m and u of model {model.version}", body, "mu-chart")


def _pct(p: float) -> str:
    return f"{p * 100:.3g}%"


def weights_histogram_svg(series: Mapping[str, Iterable[float]], marks: dict[str, float] | None = None,
                          width: int = 900, height: int = 340, bins: int = 50) -> str:
    """Histograms of match weights, one colour per series, counts on a y axis with numbers, the
    thresholds as dashed lines named on lines of their own above the plot."""
    data = {k: [v for v in vs if math.isfinite(v)] for k, vs in series.items()}
    values = [v for vs in data.values() for v in vs]
    marks = marks or {}
    if not values:
        return '<p class="no-data">No pairs to draw yet.</p>'
    lo = math.floor(min([*values, *marks.values()])) - 1
    hi = math.ceil(max([*values, *marks.values()])) + 1
    step = (hi - lo) / bins
    counts = {k: [0] * bins for k in data}
    for k, vs in data.items():
        for v in vs:
            counts[k][min(bins - 1, int((v - lo) / step))] += 1
    top_count = max(max(c) for c in counts.values())
    y_step = max(1.0, _nice_step(top_count, 5))  # counts are whole numbers
    y_max = math.ceil(top_count / y_step) * y_step
    left, right, top = 60, 20, 22 + 16 * (len(marks) + len(data))
    plot_w, plot_h = width - left - right, height - top - 46

    def x(v: float) -> float:
        return left + (v - lo) / (hi - lo) * plot_w

    def y(n: float) -> float:
        return top + plot_h - n / y_max * plot_h

    body = []
    tick = 0.0
    while tick <= y_max:
        body.append(f'<line x1="{left}" y1="{y(tick):.1f}" x2="{left + plot_w}" y2="{y(tick):.1f}" stroke="#eeeeee"/>'
                    f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" fill="{GREY}">{tick:,.0f}</text>')
        tick += y_step
    body.append(f'<text x="14" y="{top + plot_h / 2:.0f}" transform="rotate(-90 14 {top + plot_h / 2:.0f})" '
                f'text-anchor="middle" fill="{GREY}">pairs</text>')
    for idx, (k, c) in enumerate(counts.items()):
        colour = SERIES_COLOURS[idx % len(SERIES_COLOURS)]
        for i, n in enumerate(c):
            if n:
                body.append(f'<rect class="bin" x="{x(lo + i * step):.1f}" y="{y(n):.1f}" '
                            f'width="{max(1.0, plot_w / bins - 1):.1f}" height="{y(0) - y(n):.1f}" fill="{colour}" '
                            f'fill-opacity="0.6"><title>{n:,} {html.escape(k)}: {lo + i * step:.1f} to '
                            f'{lo + (i + 1) * step:.1f}</title></rect>')
        body.append(f'<rect x="{left}" y="{8 + idx * 16}" width="10" height="10" fill="{colour}"/>'
                    f'<text x="{left + 15}" y="{17 + idx * 16}">{html.escape(k)} ({len(data[k]):,})</text>')
    for i, (name, value) in enumerate(sorted(marks.items(), key=lambda kv: kv[1])):
        line_y = 8 + 16 * (len(data) + i)
        body.append(f'<line class="threshold" x1="{x(value):.1f}" y1="{line_y + 4}" x2="{x(value):.1f}" '
                    f'y2="{top + plot_h}" stroke="{INK}" stroke-dasharray="4 3"/>'
                    f'<text x="{x(value) + 4:.1f}" y="{line_y + 9}" fill="{INK}">{html.escape(name)} '
                    f'({value:+.1f})</text>')
    body.extend(_x_labels(x, lo, hi, 10, top + plot_h + 16))
    body.append(f'<line x1="{left}" y1="{y(0):.1f}" x2="{left + plot_w}" y2="{y(0):.1f}" stroke="{INK}"/>'
                f'<text x="{left + plot_w / 2:.0f}" y="{height - 8}" text-anchor="middle" fill="{GREY}">'
                "match weight (log2 odds that a pair is one person)</text>")
    return _svg(width, height, "match weights with the thresholds", body, "weights-histogram")


def threshold_marks(model: Any) -> dict[str, float]:
    return {f"asks a person from p {model.review_threshold:g}": model.review_weight,
            f"links from p {model.link_threshold:g}": model.link_weight}


def best_weights(decisions: Sequence[dict[str, Any]]) -> dict[str, list[float]]:
    """From LinkDecisions: each one's strongest candidate's weight, split by whether the record was
    linked (LINKED, MERGED) or not (a new citizen; its candidates stayed apart or wait for review)."""
    linked: list[float] = []
    apart: list[float] = []
    for d in decisions:
        if d["candidates"]:
            best = max(c["match_weight"] for c in d["candidates"])
            (linked if d["outcome"] in ("LINKED", "MERGED") else apart).append(best)
    return {"linked": linked, "not linked": apart}
