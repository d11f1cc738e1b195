"""The review screen: possible matches for a caseworker to settle, in plain language.

Rendered as one HTML document by pure functions (tested without a browser; the browser test drives
it in headless Chromium); served by the worker at ``/review/ui`` to a signed-in reader or above
(``streams/web_auth.py``; ``/login`` signs in). For each pair, from ``review_view.open_pairs``:
the computer's estimate as a chance in 100, why a person is asked, what conflicts (an age gap,
two different identifiers) before what agrees, both records with their cases and the citizens
they already belong to, the notes so far; the score's parts behind "How the computer scored it".

A reviewer decides ("Same person", "Different people"), says "Not sure" with a note (the pair
stays open), or undoes a decision, each by button or key; each POSTs ``/review/decide``, which
publishes a ReviewDecision, recorded under the signed-in name, onto the link input, so the linker
applies it in order with the record changes it concerns. Filters by agency and by strength, and
the next pair by keyboard (j/k), work in the page without reloading it.
"""

from __future__ import annotations

import html
import math
from typing import Any

from caselink.streams.charts import waterfall_svg
from caselink.streams.review_view import plain_field, plain_level

PERSON_ROWS = (("Name", lambda p: " ".join(x for x in (p.get("given_names"), p.get("family_name")) if x)),
               ("Other names", lambda p: ", ".join(p.get("other_names") or [])),
               ("Date of birth", lambda p: p.get("date_of_birth")),
               ("Sex", lambda p: p.get("sex")),
               ("Identifiers", lambda p: "; ".join(f"{_scheme(k)}: {v}"
                                                   for k, v in sorted((p.get("identifiers") or {}).items()))),
               ("Address", lambda p: "; ".join(", ".join(x for x in [*a.get("lines", []), a.get("locality"),
                                                                      a.get("postcode")] if x)
                                               for a in p.get("addresses") or [])),
               ("Phone", lambda p: ", ".join(p.get("phones") or [])),
               ("Email", lambda p: ", ".join(p.get("emails") or [])))
AGENCY_NAMES = {"health": "Health", "social_care": "Social care", "police": "Police", "education": "Education",
                "housing": "Housing"}
STATUS_MARKS = {"conflict": ("⚠", "Watch out"), "differ": ("≠", "Differs"), "similar": ("≈", "Nearly the same"),
                "agree": ("✓", "Agrees"), "one_sided": ("–", "Only on one record")}
KEYS = (("j / ↓", "next pair"), ("k / ↑", "previous pair"), ("s", "same person"), ("d", "different people"),
        ("n", "not sure"), ("u", "undo"), ("/", "write a note"))

SCRIPT = """
const cards = () => [...document.querySelectorAll('.pair')].filter(c => !c.hidden);
let current = null;
function focusCard(card) {
  if (current) current.classList.remove('current');
  current = card || null;
  if (current) { current.classList.add('current'); current.scrollIntoView({block: 'nearest'}); }
}
function move(step) {
  const list = cards(); if (!list.length) return;
  const i = list.indexOf(current);
  focusCard(list[Math.min(list.length - 1, Math.max(0, i < 0 ? 0 : i + step))]);
}
function nextOpen(from) {
  const list = cards(); const i = list.indexOf(from);
  const after = list.slice(i + 1).concat(list.slice(0, i + 1));
  focusCard(after.find(c => c.dataset.state === 'open') || from);
}
function count(delta) {
  const el = document.getElementById('open-count');
  el.textContent = String(Number(el.textContent) + delta);
  document.title = 'caselink: ' + el.textContent + ' possible matches to check';
}
async function send(card, action, same) {
  const note = card.querySelector('.note').value.trim();
  const status = card.querySelector('.status');
  if (action === 'not_sure' && !note) { status.textContent = 'Write a note first: what would settle it?';
    card.querySelector('.note').focus(); return; }
  card.querySelectorAll('button').forEach(b => b.disabled = true);
  const body = {left: card.dataset.left, right: card.dataset.right, action: action, reason: note || null};
  if (same !== null) body.same_person = same;
  let response, answer;
  try {
    response = await fetch('/review/decide', {method: 'POST', credentials: 'same-origin',
      headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)});
    answer = await response.json();
  } catch (e) { response = {ok: false}; answer = {error: 'no answer from the server'}; }
  card.querySelectorAll('button').forEach(b => b.disabled = false);
  if (!response.ok) { status.textContent = 'Not saved: ' + answer.error; card.classList.add('failed'); return; }
  card.classList.remove('failed');
  const who = answer.decided_by;
  const noted = note ? ' Note: “' + note + '”' : '';
  card.querySelector('.note').value = '';
  if (action === 'decide') {
    card.dataset.state = 'decided'; card.classList.add('decided'); count(-1);
    status.textContent = (same ? 'Decided: the same person' : 'Decided: different people') + ' (' + who + ').' + noted;
    nextOpen(card);
  } else if (action === 'undo') {
    card.dataset.state = 'open'; card.classList.remove('decided'); count(1);
    status.textContent = 'Undone (' + who + '): the pair is open again.' + noted;
  } else {
    card.dataset.state = 'open'; card.classList.add('unsure');
    const li = document.createElement('li');
    li.textContent = who + ': not sure. “' + note + '”';
    card.querySelector('.notes').appendChild(li); card.querySelector('.notes-box').hidden = false;
    status.textContent = 'Marked not sure (' + who + '); it stays open for someone else.';
    nextOpen(card);
  }
}
function decide(card, same) { if (card.dataset.state === 'open') send(card, 'decide', same); }
function undo(card) { if (card.dataset.state === 'decided') send(card, 'undo', null); }
function unsure(card) { if (card.dataset.state === 'open') send(card, 'not_sure', null); }
function applyFilters() {
  const agency = document.getElementById('filter-agency').value;
  const strength = document.getElementById('filter-strength').value;
  let shown = 0;
  document.querySelectorAll('.pair').forEach(c => {
    const ok = (!agency || c.dataset.agencies.split(' ').includes(agency))
      && (!strength || c.dataset.strength === strength);
    c.hidden = !ok; if (ok) shown++;
  });
  document.getElementById('shown-count').textContent = String(shown);
  if (!current || current.hidden) focusCard(cards()[0]);
}
document.addEventListener('keydown', e => {
  if (e.target.matches('input, textarea, select')) {
    if (e.key === 'Escape') e.target.blur();
    return;
  }
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const card = current;
  const act = {j: () => move(1), ArrowDown: () => move(1), k: () => move(-1), ArrowUp: () => move(-1),
    s: () => card && decide(card, true), d: () => card && decide(card, false), n: () => card && unsure(card),
    u: () => card && undo(card), '/': () => card && card.querySelector('.note').focus()}[e.key];
  if (act) { e.preventDefault(); act(); }
});
document.addEventListener('click', e => {
  const card = e.target.closest('.pair'); if (!card) return;
  if (card !== current) focusCard(card);
  const b = e.target.closest('button'); if (!b) return;
  if (b.classList.contains('same')) decide(card, true);
  else if (b.classList.contains('different')) decide(card, false);
  else if (b.classList.contains('unsure-button')) unsure(card);
  else if (b.classList.contains('undo')) undo(card);
});
window.addEventListener('DOMContentLoaded', () => {
  document.getElementById('filter-agency').addEventListener('change', applyFilters);
  document.getElementById('filter-strength').addEventListener('change', applyFilters);
  applyFilters(); focusCard(cards()[0]);
});
"""

STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#1b1b1b;background:#f6f6f4;font-size:16px;line-height:1.4}
header{background:#1d3557;color:white;padding:.6em 1.5em;display:flex;justify-content:space-between;align-items:center}
header h1{font-size:1.3em;margin:0} header a{color:#cfe3ff} main{padding:0 1.5em 3em}
.toolbar{display:flex;flex-wrap:wrap;gap:1em;align-items:center;margin:1em 0}
.keys{font-size:.85em;color:#555} kbd{border:1px solid #aaa;border-radius:3px;padding:0 .3em;background:white}
.pair{background:white;border:2px solid #ddd;border-radius:8px;padding:1em 1.2em;margin:1em 0}
.pair.current{border-color:#1d3557;box-shadow:0 0 0 3px #c7d7ee} .pair.decided{opacity:.65}
.pair.unsure{border-style:dashed}
.estimate{font-size:1.1em} .badge{border-radius:1em;padding:.1em .7em;font-size:.85em;margin-left:.5em}
.badge.strong{background:#dcefdc} .badge.medium{background:#fff1c2} .badge.weak{background:#f6dede}
.why{color:#444} .conflicts{background:#fdecea;border-left:5px solid #c62828;padding:.5em 1em;margin:.6em 0}
.conflicts li{font-weight:600}
.records{display:grid;grid-template-columns:1fr 1fr;gap:1em;margin:.8em 0}
.record{border:1px solid #e0e0e0;border-radius:6px;padding:.6em .8em}
.record h3{margin:.1em 0 .4em;font-size:1em} .record table{border-collapse:collapse;width:100%}
.record th{text-align:left;color:#555;font-weight:normal;width:8em;vertical-align:top;padding:1px 0}
.record td{padding:1px 0} .citizen{font-size:.9em;color:#333;margin-top:.5em}
.findings{list-style:none;padding:0;margin:.5em 0} .findings li{padding:.15em 0}
.mark{display:inline-block;width:1.4em;font-weight:bold}
.f-conflict .mark{color:#c62828} .f-differ .mark{color:#b26a00} .f-similar .mark{color:#1565c0}
.f-agree .mark{color:#2e7d32} .f-one_sided .mark{color:#777}
.actions{display:flex;flex-wrap:wrap;gap:.5em;align-items:center;margin-top:.8em}
.actions input.note{flex:1;min-width:16em;padding:.4em;font-size:1em}
button{font-size:1em;padding:.45em 1em;border-radius:5px;border:1px solid #888;background:white;cursor:pointer}
button.same{background:#2e7d32;color:white;border-color:#2e7d32}
button.different{background:#c62828;color:white;border-color:#c62828}
.pair[data-state=decided] .same,.pair[data-state=decided] .different{display:none}
.pair[data-state=decided] .unsure-button{display:none}
.pair[data-state=open] .undo{display:none}
.status{font-weight:600;margin-top:.4em} .failed .status{color:#c62828}
details{margin-top:.6em} summary{cursor:pointer;color:#1d3557}
.weights{border-collapse:collapse;margin:.5em 0} .weights td,.weights th{border:1px solid #e0e0e0;padding:2px 8px}
.error{color:#c62828;font-weight:bold} .empty{font-size:1.2em;margin:2em 0}
"""


def render_review_page(items: list[dict[str, Any]], total: int, link_at: float, review_at: float,
                       reviewer: str | None = None, may_decide: bool = True,
                       link_probability: float = 0.9, review_probability: float = 0.5) -> str:
    """``items`` from ``review_view.open_pairs``; ``reviewer``: who is signed in (decisions are
    recorded under that name, from the credential, so there is no name to type)."""
    agencies = sorted({a for item in items for a in item["agencies"]})
    options = "".join(f'<option value="{html.escape(a)}">{html.escape(_agency(a))}</option>' for a in agencies)
    keys = " ".join(f"<kbd>{html.escape(k)}</kbd> {html.escape(what)}" for k, what in KEYS)
    signed_in = (f'<form method=post action=/logout>Signed in as <b id=reviewer>{html.escape(reviewer)}</b> '
                 "<button type=submit>Sign out</button></form>" if reviewer else "")
    cards = "".join(_card(i, item, len(items), link_at, review_at, link_probability, review_probability, may_decide)
                    for i, item in enumerate(items))
    empty = '<p id=empty class=empty>Nothing to review.</p>' if not items else ""
    more = (f"<p>Showing the {len(items)} strongest of {total}; the rest follow as these are settled.</p>"
            if total > len(items) else "")
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<title>caselink: {total} possible matches to check</title><style>{STYLE}</style>"
            f"<script>{SCRIPT}</script></head><body>"
            f"<header><h1>Possible matches to check</h1>{signed_in}</header><main>"
            f'<div class=toolbar><span><b id=open-count>{total}</b> to check, <b id=shown-count>{len(items)}</b> '
            f"shown</span>"
            f'<label>Agency <select id=filter-agency><option value="">all</option>{options}</select></label>'
            f'<label>Strength <select id=filter-strength><option value="">all</option>'
            f'<option value=strong>strong (80 in 100 or more)</option><option value=medium>medium (60 to 79)</option>'
            f"<option value=weak>weak (under 60)</option></select></label>"
            f'<a href="/charts/model" id=charts-model>How the computer weighs evidence</a>'
            f'<a href="/charts/live" id=charts-live>Charts of the live data</a></div>'
            f'<p class=keys>Keys: {keys}</p>{more}{empty}{cards}</main></body></html>')


def _card(index: int, item: dict[str, Any], shown: int, link_at: float, review_at: float,
          link_probability: float, review_probability: float, may_decide: bool) -> str:
    left, right = item["records"]
    conflicts = [f for f in item["findings"] if f["status"] == "conflict"]
    watch = ("<div class=conflicts><b>Watch out:</b><ul>"
             + "".join(f"<li>{html.escape(f['text'])}</li>" for f in conflicts) + "</ul></div>") if conflicts else ""
    findings = "".join(
        f'<li class="f-{f["status"]}"><span class=mark title="{STATUS_MARKS[f["status"]][1]}">'
        f'{STATUS_MARKS[f["status"]][0]}</span>{html.escape(f["text"])}</li>'
        for f in item["findings"] if f["status"] != "conflict")
    notes = "".join(f"<li>{html.escape(_note(n))}</li>" for n in item["notes"])
    actions = ('<input class=note type=text placeholder="Note (what you checked, or what would settle it)" '
               'aria-label="note">'
               '<button class=same title="s">Same person</button>'
               '<button class=different title="d">Different people</button>'
               '<button class=unsure-button title="n">Not sure</button>'
               '<button class=undo title="u">Undo</button>') if may_decide else "<i>Only a reviewer can decide.</i>"
    return (f'<section class="pair" id="pair-{index}" data-state=open data-left="{html.escape(item["left"])}" '
            f'data-right="{html.escape(item["right"])}" data-strength="{item["strength"]}" '
            f'data-agencies="{html.escape(" ".join(item["agencies"]))}">'
            f'<h2>Pair {index + 1} of {shown}: {html.escape(_agency(left["agency"]))} and '
            f'{html.escape(_agency(right["agency"]))}</h2>'
            f'<p class=estimate>The computer\'s estimate: <b class=chance>{item["chance"]}</b> that these two records '
            f'are the same person. <span class="badge {item["strength"]}">{item["strength"]}</span></p>'
            f'<p class=why>Why you are asked: {html.escape(" ".join(item["why"]))}</p>'
            f"{watch}<div class=records>{_record('First record', left)}{_record('Second record', right)}</div>"
            f"{_also(item.get('also') or [])}"
            f"<h3>What agrees and what differs</h3><ul class=findings>{findings}</ul>"
            f'<div class=notes-box {"" if notes else "hidden"}><h3>Notes so far</h3><ul class=notes>{notes}</ul></div>'
            f"<details><summary>How the computer scored it (the numbers)</summary>"
            f"{_numbers(item, link_at, review_at, link_probability, review_probability)}</details>"
            f"<div class=actions>{actions}</div><p class=status role=status></p></section>")


def _case(case: dict[str, Any]) -> str:
    """``school place (open since 2026-09-01)``."""
    when = [f"since {case['opened_at']}" if case.get("opened_at") else "",
            f"closed {case['closed_at']}" if case.get("closed_at") else ""]
    detail = " ".join(x for x in [case.get("status") or "", *when] if x)
    return f"{case.get('case_type') or 'case'}" + (f" ({detail})" if detail else "")


def _also(pairs: list[dict[str, Any]]) -> str:
    """Other record pairs between the same two people: one decision settles them all."""
    if not pairs:
        return ""
    listed = ", ".join(f"{html.escape(_key(p['left']))} and {html.escape(_key(p['right']))} ({p['chance']})"
                       for p in pairs)
    return (f"<p class=also>Also between these two people: {listed}. “Different people” keeps them all apart; "
            "“Same person” joins the two people, which settles them.</p>")


def _record(title: str, record: dict[str, Any]) -> str:
    person = record["person"]
    rows = "".join(f"<tr><th>{label}</th><td>{html.escape(str(value))}</td></tr>"
                   for label, get in PERSON_ROWS if (value := get(person)))
    cases = record["cases"]
    case_text = "; ".join(html.escape(_case(c)) for c in cases) or "none recorded"
    others = record["citizen_records"]
    if others:
        listed = "".join(f"<li>{html.escape(_agency(o['agency']))} {html.escape(o['key'].partition(':')[2])}: "
                         f"{html.escape(o['name'] or '(no name)')}, born {html.escape(str(o['date_of_birth'] or '?'))}"
                         + (f" ({html.escape(', '.join(o['case_types']))})" if o["case_types"] else "") + "</li>"
                         for o in others)
        more = f"<li>and {record['citizen_more']} more</li>" if record["citizen_more"] else ""
        citizen = (f"<div class=citizen>Already joined to {len(others) + record['citizen_more']} other record(s) as "
                   f"one person ({html.escape(str(record['citizen_id']))}):<ul>{listed}{more}</ul></div>")
    else:
        citizen = "<div class=citizen>Not joined to any other record yet.</div>"
    if record["citizen_id"]:
        citizen += (f'<a class=cluster-link href="/charts/citizen/{html.escape(str(record["citizen_id"]))}">'
                    "See this person's records and the links between them</a>")
    return (f'<div class=record data-key="{html.escape(record["key"])}"><h3>{title}: '
            f'{html.escape(_agency(record["agency"]))} record {html.escape(record["record_id"])}</h3>'
            f"<table>{rows}<tr><th>Cases</th><td>{case_text}</td></tr></table>{citizen}</div>")


def _numbers(item: dict[str, Any], link_at: float, review_at: float, link_probability: float,
             review_probability: float) -> str:
    parts = [(plain_field(f["field"]), plain_level(f["level"]), f["weight"]) for f in item["explanation"]]
    rows = "".join(f"<tr><td>{html.escape(field)}</td><td>{html.escape(level)}</td><td>{weight:+.2f}</td></tr>"
                   for field, level, weight in parts)
    svg = waterfall_svg(parts, link_at=link_at, review_at=review_at, link_label="joins on its own",
                        review_label="asks a person", total_label="total")
    return (f"<p>Each piece of evidence adds to or takes from a score (in doublings of the odds: +1 doubles them). "
            f"Total {item['match_weight']:+.2f}, a probability of {item['match_probability']:.3f}. "
            f"The computer asks a person from {review_at:+.2f} (probability {review_probability:g}) and joins the "
            f"records on its own from {link_at:+.2f} (probability {link_probability:g}).</p>{svg}"
            f"<table class=weights><tr><th>evidence</th><th>what was found</th><th>counts</th></tr>{rows}"
            f"<tr><th colspan=2>total</th><th>{item['match_weight']:+.2f}</th></tr></table>")


def _note(note: dict[str, Any]) -> str:
    what = {"not_sure": "not sure", "undo": "undid the decision",
            "decide": "same person" if note.get("same_person") else "different people"}.get(note["action"],
                                                                                             note["action"])
    text = f"{note['by']} ({str(note['at'])[:16].replace('T', ' ')}): {what}"
    return text + (f". “{note['note']}”" if note.get("note") else "")


def _key(record_key: str) -> str:
    agency, _, record_id = record_key.partition(":")
    return f"{_agency(agency)} {record_id}"


def _agency(agency: str) -> str:
    return AGENCY_NAMES.get(agency, agency.replace("_", " ").capitalize())


def _scheme(scheme: str) -> str:
    from caselink.streams.review_compare import scheme_name

    return scheme_name(scheme)


def render_login_page(next_path: str = "/review/ui", error: str | None = None) -> str:
    """Sign in with a caselink web token (a session cookie follows; the token is not kept in the page)."""
    problem = f"<p class=error id=error>{html.escape(error)}</p>" if error else ""
    return ("<!doctype html><html lang=en><head><meta charset=utf-8><title>caselink: sign in</title>"
            f"<style>{STYLE}</style></head><body><header><h1>caselink: sign in</h1></header><main>{problem}"
            "<form method=post action=/login>"
            f'<input type=hidden name=next value="{html.escape(next_path)}">'
            "<p><label>Your token <input id=token name=token type=password autocomplete=current-password required>"
            "</label> <button id=sign-in type=submit>Sign in</button></p></form></main></body></html>")


def threshold_weight(probability: float) -> float:
    return math.log2(probability / (1 - probability))
