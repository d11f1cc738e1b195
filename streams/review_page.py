"""The clerical review page: possible matches side by side, the score as a waterfall, a verdict.

Rendered as one HTML document by a pure function (testable without a browser); served by the
worker at ``/review/ui`` to a signed-in reader or above (``streams/web_auth.py``; ``/login`` signs
in). The buttons POST ``/review/decide`` (reviewers), which publishes a ReviewDecision, recorded
under the signed-in name, onto the link input, so the linker applies it in order with the record
changes it concerns.
"""

from __future__ import annotations

import html
import math
from typing import Any

from caselink.streams.charts import waterfall_svg

SHOWN = (("name", lambda p: " ".join(x for x in (p.get("given_names"), p.get("family_name")) if x)),
         ("other names", lambda p: ", ".join(p.get("other_names") or [])),
         ("date of birth", lambda p: p.get("date_of_birth")),
         ("sex", lambda p: p.get("sex")),
         ("identifiers", lambda p: ", ".join(f"{k}: {v}" for k, v in sorted((p.get("identifiers") or {}).items()))),
         ("address", lambda p: "; ".join(", ".join(x for x in [*a.get("lines", []), a.get("locality"),
                                                                  a.get("postcode")] if x)
                                         for a in p.get("addresses") or [])),
         ("phones", lambda p: ", ".join(p.get("phones") or [])),
         ("emails", lambda p: ", ".join(p.get("emails") or [])))

SCRIPT = """
async function decide(button, same) {
  const card = button.closest('.pair');
  card.querySelectorAll('button').forEach(b => b.disabled = true);
  const response = await fetch('/review/decide', {method: 'POST', credentials: 'same-origin',
    headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({left: card.dataset.left, right: card.dataset.right, same_person: same})});
  const body = await response.json();
  card.querySelector('.status').textContent = response.ok ? (same ? 'accepted: linking' : 'rejected: kept apart')
                                                          : 'error: ' + body.error;
  card.classList.add(response.ok ? 'decided' : 'failed');
  if (!response.ok) card.querySelectorAll('button').forEach(b => b.disabled = false);
}
"""

STYLE = """
body{font-family:sans-serif;margin:1.5em;color:#212121}
.pair{border:1px solid #ccc;border-radius:6px;padding:1em;margin:1em 0} .pair.decided{opacity:.6}
table{border-collapse:collapse} th{background:#f5f5f5} .differ{background:#fff3e0}
td,th{border:1px solid #e0e0e0;padding:3px 8px;text-align:left;vertical-align:top}
button{font-size:1em;padding:.4em 1em;margin-right:.5em} .status{font-weight:bold}
.accept{background:#2e7d32;color:white;border:0} .reject{background:#c62828;color:white;border:0}
.who{float:right} .error{color:#c62828;font-weight:bold}
"""


def render_review_page(items: list[dict[str, Any]], total: int, link_at: float, review_at: float,
                       reviewer: str | None = None, may_decide: bool = True) -> str:
    """``items``: {left, right, match_weight, match_probability, explanation: [{field, level, weight}],
    left_person, right_person} for each open pair, strongest first. ``reviewer`` is who is signed
    in: decisions are recorded under that name (from the credential), so there is no name to type."""
    cards = [_card(i, item, link_at, review_at, may_decide) for i, item in enumerate(items)]
    empty = "<p id=empty>Nothing to review.</p>" if not items else ""
    signed_in = (f'<form method=post action=/logout class=who>Signed in as <b id=reviewer>{html.escape(reviewer)}</b> '
                 "<button type=submit>Sign out</button></form>" if reviewer else "")
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>caselink review ({total} open)</title>"
            f"<style>{STYLE}</style><script>{SCRIPT}</script></head><body>{signed_in}"
            f"<h1>Possible matches <small>({total} open, strongest first)</small></h1>"
            f"{empty}{''.join(cards)}</body></html>")


def render_login_page(next_path: str = "/review/ui", error: str | None = None) -> str:
    """Sign in with a caselink web token (a session cookie follows; the token is not kept in the page)."""
    problem = f"<p class=error id=error>{html.escape(error)}</p>" if error else ""
    return ("<!doctype html><html lang=en><head><meta charset=utf-8><title>caselink: sign in</title>"
            f"<style>{STYLE}</style></head><body><h1>Sign in</h1>{problem}"
            "<form method=post action=/login>"
            f'<input type=hidden name=next value="{html.escape(next_path)}">'
            "<label>Token <input id=token name=token type=password autocomplete=current-password required></label> "
            "<button id=sign-in type=submit>Sign in</button></form></body></html>")


def _card(index: int, item: dict[str, Any], link_at: float, review_at: float, may_decide: bool = True) -> str:
    left, right = item["left_person"] or {}, item["right_person"] or {}
    rows = []
    for label, get in SHOWN:
        a, b = get(left) or "", get(right) or ""
        if not a and not b:
            continue
        differ = ' class="differ"' if a != b else ""
        rows.append(f"<tr{differ}><th>{label}</th><td>{html.escape(str(a))}</td><td>{html.escape(str(b))}</td></tr>")
    weights = [(f["field"], f["level"], f["weight"]) for f in item["explanation"]]
    weight = item["match_weight"]
    svg = waterfall_svg(weights, link_at=link_at, review_at=review_at)
    probability = item["match_probability"]
    return (f'<div class="pair" id="pair-{index}" data-left="{html.escape(item["left"])}" '
            f'data-right="{html.escape(item["right"])}">'
            f"<h2>{html.escape(item['left'])} ↔ {html.escape(item['right'])}</h2>"
            f"<p>match weight <b>{weight:.2f}</b> (probability {probability:.4f})</p>"
            f"<table><tr><th></th><th>{html.escape(item['left'])}</th><th>{html.escape(item['right'])}</th></tr>"
            f"{''.join(rows)}</table>{svg}<p>"
            + ('<button class="accept" onclick="decide(this, true)">Same person</button>'
               '<button class="reject" onclick="decide(this, false)">Different people</button>'
               if may_decide else "<i>a reviewer decides</i>")
            + '<span class="status"></span></p></div>')


def threshold_weight(probability: float) -> float:
    return math.log2(probability / (1 - probability))
