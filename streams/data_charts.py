"""Charts of the live data: one citizen's records and the links that join them (a cluster view),
and how complete each agency's records are, field by field (data profiling).

Plain SVG strings, as ``model_charts``; the data comes from the worker's index
(``streams/chart_data.py``) or, for completeness, from caselink.linked-cases (``caselink chart live``).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from caselink.streams.charts import GREEN, GREY, INK

AGENCY_COLOURS = {"health": "#1565c0", "social_care": "#8e24aa", "police": "#37474f", "education": "#ef6c00",
                  "housing": "#2e7d32"}
AMBER, BLUE = "#f9a825", "#1565c0"
FIELDS = (("given name", lambda p: p.get("given_names")), ("family name", lambda p: p.get("family_name")),
          ("date of birth", lambda p: p.get("date_of_birth")), ("sex", lambda p: p.get("sex")),
          ("NHS number", lambda p: (p.get("identifiers") or {}).get("nhs_number")),
          ("any identifier", lambda p: p.get("identifiers")),
          ("address", lambda p: any(a.get("lines") for a in p.get("addresses") or [])),
          ("postcode", lambda p: any(a.get("postcode") for a in p.get("addresses") or [])),
          ("phone", lambda p: p.get("phones")), ("email", lambda p: p.get("emails")))


def _svg(width: float, height: float, label: str, body: list[str], css_class: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="{css_class}" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="sans-serif" font-size="12" role="img" '
            f'aria-label="{html.escape(label)}">{"".join(body)}</svg>')


def cluster_svg(nodes: list[dict[str, Any]], edges: list[dict[str, Any]], link_weight: float,
                review_weight: float, size: int = 640) -> str:
    """``nodes``: {key, agency, label}; ``edges``: {a, b, weight, kind} with kind "link" (the
    model's), "same" (a reviewer said one person), "different" (a reviewer kept them apart) or
    "review" (waiting for a person). Records on a circle, each link a line with its weight."""
    if not nodes:
        return '<p class="no-data">No records.</p>'
    n = len(nodes)
    margin = 230  # room on each side for the records' names
    width = size + 2 * margin
    cx, cy = width / 2, size / 2
    radius = size / 2 - 60 if n > 1 else 0
    at = {node["key"]: (cx + radius * math.cos(2 * math.pi * i / n - math.pi / 2),
                        cy + radius * math.sin(2 * math.pi * i / n - math.pi / 2)) for i, node in enumerate(nodes)}
    body = []
    for edge in edges:
        if edge["a"] not in at or edge["b"] not in at:
            continue
        (x1, y1), (x2, y2) = at[edge["a"]], at[edge["b"]]
        kind, weight = edge["kind"], edge["weight"]
        colour = {"same": BLUE, "different": "#c62828", "review": AMBER}.get(
            kind, GREEN if weight >= link_weight else AMBER if weight >= review_weight else GREY)
        dash = ' stroke-dasharray="6 4"' if kind in ("same", "different", "review") else ""
        text = {"same": "a person: same", "different": "a person: different"}.get(kind, f"{weight:+.1f}")
        body.append(f'<line class="edge edge-{kind}" x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
                    f'stroke="{colour}" stroke-width="{3 if kind == "link" else 2}"{dash}/>'
                    f'<text x="{(x1 + x2) / 2:.1f}" y="{(y1 + y2) / 2 - 3:.1f}" text-anchor="middle" '
                    f'fill="{INK}" paint-order="stroke" stroke="white" stroke-width="3">{html.escape(text)}</text>')
    for node in nodes:
        x, y = at[node["key"]]
        colour = AGENCY_COLOURS.get(node["agency"], GREY)
        anchor = "start" if x >= cx else "end"
        dx = 14 if x >= cx else -14
        body.append(f'<circle class="record" data-key="{html.escape(node["key"])}" cx="{x:.1f}" cy="{y:.1f}" r="10" '
                    f'fill="{colour}"/><text x="{x + dx:.1f}" y="{y - 2:.1f}" text-anchor="{anchor}" fill="{INK}" '
                    f'font-weight="bold">{html.escape(node["key"])}</text>'
                    f'<text x="{x + dx:.1f}" y="{y + 12:.1f}" text-anchor="{anchor}" fill="{GREY}">'
                    f'{html.escape(node["label"])}</text>')
    legend = [("model's link (weight)", GREEN, ""), ("a person said: same", BLUE, "6 4"),
              ("a person said: different", "#c62828", "6 4"), ("waiting for a person", AMBER, "6 4")]
    for i, (text, colour, dash) in enumerate(legend):
        y = size - 16 * (len(legend) - i)
        body.append(f'<line x1="8" y1="{y - 4}" x2="34" y2="{y - 4}" stroke="{colour}" stroke-width="2" '
                    f'stroke-dasharray="{dash}"/><text x="40" y="{y}" fill="{INK}">{text}</text>')
    return _svg(width, size, "a citizen's records and the links that join them", body, "cluster")


def completeness(persons: Sequence[tuple[str, Mapping[str, Any]]],
                 ) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    """(agency -> field -> share of records that have it, agency -> records) from (agency, person)."""
    counts: dict[str, int] = {}
    present: dict[str, dict[str, int]] = {}
    for agency, person in persons:
        counts[agency] = counts.get(agency, 0) + 1
        row = present.setdefault(agency, {name: 0 for name, _ in FIELDS})
        for name, get in FIELDS:
            if get(person):
                row[name] += 1
    return {a: {f: row[f] / counts[a] for f in row} for a, row in present.items()}, counts


def completeness_svg(shares: dict[str, dict[str, float]], counts: dict[str, int]) -> str:
    """A grid: agencies down, fields across, each cell the share of the agency's records with it."""
    if not shares:
        return '<p class="no-data">No records.</p>'
    fields = [name for name, _ in FIELDS]
    label_w, cell_w, cell_h, top = 190, 74, 26, 40
    width, height = label_w + cell_w * len(fields) + 10, top + cell_h * len(shares) + 30
    body = [f'<text x="{label_w + i * cell_w + cell_w / 2:.0f}" y="{top - 10}" text-anchor="middle" '
            f'fill="{INK}">{html.escape(f)}</text>' for i, f in enumerate(fields)]
    for r, agency in enumerate(sorted(shares)):
        y = top + r * cell_h
        records = f"{counts[agency]:,} record{'s' if counts[agency] != 1 else ''}"
        body.append(f'<text x="4" y="{y + 17}" fill="{INK}">{html.escape(agency)} ({records})</text>')
        for c, field in enumerate(fields):
            share = shares[agency][field]
            shade = int(245 - share * 150)
            colour = f"rgb({shade},{min(255, shade + 40)},{shade})"
            body.append(f'<rect class="cell" data-agency="{html.escape(agency)}" data-field="{html.escape(field)}" '
                        f'x="{label_w + c * cell_w}" y="{y}" width="{cell_w - 2}" height="{cell_h - 2}" '
                        f'fill="{colour}"/><text x="{label_w + c * cell_w + cell_w / 2 - 1:.0f}" y="{y + 17}" '
                        f'text-anchor="middle" fill="{INK if share < 0.75 else "white"}">{share * 100:.0f}%</text>')
    body.append(f'<text x="{label_w}" y="{height - 8}" fill="{GREY}">share of each agency\'s records that have the '
                "field (darker: more complete)</text>")
    return _svg(width, height, "completeness per agency and field", body, "completeness")
