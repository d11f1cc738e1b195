"""The Faust application: normalise agency events, serve the web API; the linker runs beside it.

* the normaliser (stateless, scales across the partitions of every agency topic) decodes and
  validates PersonEvents and forwards them, unchanged, to the single-partition link input;
  anything undecodable or unlinkable goes to ``caselink.dead-letters`` with its origin
  (``streams.normaliser_core``).
* the linker (``streams.linker_loop.LinkerLoop``, a thread of the worker process) is the single
  writer of the citizen index; see its module for why it is not a Faust agent.
* where it runs: by default ``caselink worker`` starts it in processes of its own
  (``worker.normaliser_processes``, ``streams.normaliser_processes``), each a confluent-kafka consumer-group
  loop (``streams.normaliser_loop``: a quarter of the Faust agent's CPU per event); with 0 it is
  the ``normalise`` Faust agent below, inside the worker process.
* the web API: ``/health``, ``/metrics``, ``/citizens/{id}``, ``/records/{agency}/{id}``, ``/review``.
"""

from __future__ import annotations

import asyncio
import html
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import faust
from caselink.infra.topics import LINK_INPUT_TOPIC, cluster_defaults, person_events_topic
from caselink.linkage.deployment import load_model
from caselink.schemas import default_serde
from caselink.streams import metrics
from caselink.streams.chart_data import citizen_graph, live_weights, sample_persons
from caselink.streams.charts import page
from caselink.streams.consent.gate_loop import GateLoop
from caselink.streams.data_charts import cluster_svg, completeness, completeness_svg
from caselink.streams.linker_loop import LinkerLoop
from caselink.streams.model_charts import mu_svg, threshold_marks, weights_histogram_svg
from caselink.streams.normaliser_core import Normaliser
from caselink.streams.normaliser_processes import MergedRegistry, NormaliserProcesses
from caselink.streams.review_page import render_login_page, render_review_page, threshold_weight
from caselink.streams.review_view import open_pairs, pairs_between
from caselink.streams.sink import BatchSink, broker_wait
from caselink.streams.web_auth import COOKIE, Authenticator, Principal, Refusal, refused
from faust.web import View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from caselink.core.kafka import admin_client, bootstrap_servers, idempotent_producer
from caselink.core.settings import Settings

log = logging.getLogger(__name__)
# Sharded mode: no answer from the shards for this long while changes wait for one: /health says
# linking is paused, and which key partitions hold it back.
SHARDS_WAIT_DEGRADED_S = 30.0
BROKER_WAIT_DEGRADED_S = 5.0  # outputs unacknowledged this long: /health says the pipeline is paused, and why


def _credentials(settings: Settings) -> Any:
    k = settings.kafka
    if k.sasl_mechanism:
        return faust.SASLCredentials(
            username=k.sasl_username or "",
            password=k.sasl_password.get_secret_value() if k.sasl_password else "",
            mechanism=k.sasl_mechanism,
        )
    return None


def _replication_factor(settings: Settings) -> int:
    """For Faust's own topics: the configured factor, else the cluster's default (Faust needs a
    number; -1 is not understood by the request version it sends)."""
    if settings.kafka.replication_factor is not None:
        return settings.kafka.replication_factor
    admin = admin_client(settings)
    try:
        return cluster_defaults(admin, timeout=10)["default.replication.factor"]
    except Exception as exc:  # noqa: BLE001 - not allowed, or no broker yet: as the link input, else 1
        try:
            partitions = admin.list_topics(LINK_INPUT_TOPIC, timeout=10).topics[LINK_INPUT_TOPIC].partitions
            return max(1, len(partitions[0].replicas))
        except Exception:  # noqa: BLE001 - the worker fails later, clearly, if the broker stays away
            log.warning("could not read the cluster's default replication factor (%s); Faust's topics get 1", exc)
            return 1


def create_app(settings: Settings, linker: LinkerLoop | None, gate: GateLoop | None = None,
               normalise: bool = True, normalisers: NormaliserProcesses | None = None,
               on_listening: Callable[[], None] | None = None) -> faust.App:
    """The worker's Faust app: the web API over ``linker``'s index (when given) and, with
    ``normalise``, the normaliser agent. A normaliser process (``streams.normaliser_processes``) is the
    same app id with the agent and no web server; the worker process then has the web API only.
    ``on_listening`` is called once the web server is listening (before Faust's consumers start)."""
    w = settings.worker
    # A worker whose normaliser runs in processes of its own (the default) serves only the web API
    # from this app: it gets a consumer group of its own, so that a normaliser process joining
    # the app's group does not wait for this app's consumer to rejoin (which delayed the first
    # event; docs/benchmarks.md).
    app = faust.App(
        w.app_id if normalise else f"{w.app_id}-web",
        broker=[f"kafka://{hp}" for hp in bootstrap_servers(settings).split(",")],
        broker_credentials=_credentials(settings),
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        datadir=str(w.data_dir),
        web_enabled=linker is not None,
        web_host=w.web_host,
        web_port=w.web_port,
        web_bind=w.web_host,
        web_ssl_context=settings.web.ssl_context(),  # HTTPS only, when a certificate is configured
        producer_acks=-1,
        topic_replication_factor=_replication_factor(settings),
        consumer_auto_offset_reset="earliest",
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        stream_buffer_maxsize=16384,
        producer_linger_ms=5,
        # A worker that died (kill -9) holds its partitions until its session expires: keep that short.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
    )
    if normalise:
        _normaliser(app, settings)
    if linker is not None:
        _web(app, settings, linker, gate, normalisers)
    if on_listening is not None:
        web = app.web
        serve = web.start_server  # type: ignore[attr-defined]  # faust's Web declares no start_server; its server has one

        async def start_server() -> None:
            await serve()  # raises (e.g. the port is taken) before anything else is started
            on_listening()

        web.start_server = start_server  # type: ignore[attr-defined]
    return app


def _same_origin(request: Any) -> bool:
    """Whether a browser says the request comes from a page of this site (a request without the
    Origin and Sec-Fetch-Site headers is not a browser's cross-site one)."""
    origin = request.headers.get("Origin")
    if origin is not None:
        return origin in (f"http://{request.host}", f"https://{request.host}")
    return request.headers.get("Sec-Fetch-Site", "same-origin") in ("same-origin", "none")


def _normaliser(app: faust.App, settings: Settings) -> None:
    """The Faust agent, for ``worker.normaliser_processes: 0``: the same ``streams.normaliser_core`` work as
    the normaliser processes' loop, in micro-batches through one producer flushed before Faust
    acknowledges the batch's input, so nothing is committed whose outputs are not on the broker."""
    w = settings.worker
    normaliser = Normaliser(load_model(settings.linkage).rules)
    sink = BatchSink(settings)
    sources = app.topic(*[person_events_topic(a) for a in settings.agencies], value_serializer="raw",
                        key_serializer="raw")
    events_in = metrics.Children(metrics.EVENTS_IN)

    @app.agent(sources, name="normalise")
    async def normalise(stream: faust.StreamT) -> None:
        async for events in stream.take_events(w.batch_size, within=w.batch_within_s):  # type: ignore[attr-defined]
            consumed: dict[str, int] = {}  # counted once a batch: every inc takes a lock
            for event in events:
                msg = event.message
                consumed[msg.topic] = consumed.get(msg.topic, 0) + 1
                sink.send(*normaliser.route(event.value, msg.topic, msg.partition, msg.offset, msg.key))
            for topic, n in consumed.items():
                events_in(topic).inc(n)
            await sink.flush()


def _web(app: faust.App, settings: Settings, linker: LinkerLoop, gate: GateLoop | None,
         normalisers: NormaliserProcesses | None) -> None:
    """The web API: status pages open to all, the rest behind a bearer token or a signed-in session."""
    _status_pages(app, linker, gate, normalisers)
    auth = Authenticator(settings.web.tokens, settings.web.session_ttl_s)
    _sign_in_pages(app, auth, secure_cookie="; Secure" if settings.web.tls_certfile else "")

    def allowed(view: Any, request: Any, role: str, write: bool = False) -> Principal | Any:
        """The principal, or the refusal response (logged)."""
        result = auth.check(request.headers.get("Authorization"), request.cookies.get(COOKIE), role,
                            cookie_write=write, same_origin=_same_origin(request))
        if isinstance(result, Principal):
            return result
        refused(request.method, request.path, request.remote, result)
        headers = {"WWW-Authenticate": 'Bearer realm="caselink"'} if result.status == 401 else None
        return view.json({"error": result.reason}, status=result.status, headers=headers)

    _index_pages(app, linker, allowed)
    _review_pages(app, linker, allowed)


# ---------------------------------------------------------------------- the pure steps
def jsonable(value: Any) -> Any:
    """``value`` with datetimes as ISO strings in UTC, for a JSON response."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def shards_paused(shards: dict[str, Any]) -> str | None:
    """Why linking is paused in sharded mode (``LinkerLoop.sharded_status``): changes have waited
    ``SHARDS_WAIT_DEGRADED_S`` with no answer from the shards; None while they answer."""
    if shards.get("waiting_s", 0.0) < SHARDS_WAIT_DEGRADED_S:
        return None
    behind = ", ".join(map(str, shards.get("partitions_behind", [])[:10])) or "none"
    return (f"paused: {shards['held_changes']:,} change(s) waiting {shards['waiting_s']:.0f} s for the record shards' "
            f"answers (key partitions behind: {behind}); is every `caselink shard blocks` and `caselink shard "
            "records` process running and caught up?")


def health_report(linker: LinkerLoop, gate: GateLoop | None, normalisers: NormaliserProcesses | None,
                  waiting: dict[str, Any] | None) -> dict[str, Any]:
    """What /health says: the index, the linker's role and position, the broker's backlog
    (``waiting``: outputs not yet acknowledged), the normaliser processes and the gate; ``status``
    is ok, starting, degraded (paused, or the policy invalid), refused (the model) or failed."""
    with linker.lock:
        core = linker.core
        status = ("starting" if linker.ident is None and linker.error is None  # not started yet: see cli_worker
                  else "ok" if linker.error is None and linker.is_alive() else "failed")
        body: dict[str, Any] = {
            "status": status,
            "records": len(core.index.records), "citizens": len(core.index.citizens),
            "review_open": len(core.index.review), "applied": core.applied,
            "link_input_position": linker.position, "recovering": linker.recovering,
            "role": "linker" if linker.publish_from is not None else "standby",
            "standby_position": linker.standby_position, "last_takeover": linker.last_takeover,
            "capped_blocking_keys": len(core.index.blocking.capped),
            "snapshot": {**linker.snapshots.status(), "loaded": linker.snapshot_loaded},
            "model_version": core.model.version, "model_findings": linker.model_findings,
            "size_guard_refusals": core.index.size_refusals}
        if linker.sharded:
            body["mode"] = "sharded resolver"
            body["shards"] = shards = linker.sharded_status()
    if linker.error is not None:
        body["error"] = str(linker.error)
    elif linker.refused is not None:
        body["status"] = "refused"
        body["error"] = linker.refused
    paused = shards_paused(shards) if linker.sharded else None
    if paused is not None and body["status"] == "ok":
        body["status"] = "degraded"
        body["reason"] = paused
    if waiting is not None:  # outputs not yet acknowledged: the broker is down, or cannot write (disk full?)
        body["broker"] = waiting
        if waiting["waiting_s"] >= BROKER_WAIT_DEGRADED_S and body["status"] == "ok":
            body["status"] = "degraded"
            body["reason"] = (f"paused: {waiting['unacknowledged']} output(s) waiting {waiting['waiting_s']:.0f} s "
                              f"for the broker ({waiting['last_error'] or 'no answer'}); nothing is committed "
                              "until they are acknowledged")
    if normalisers is not None:
        body["normalisers"] = normalisers.status()
    if gate is not None:
        body["gate"] = gate.status()
        if gate.error is not None or not gate.is_alive():
            body["status"] = "failed"
        elif (gate.policy_error or gate.warnings) and body["status"] == "ok":
            body["status"] = "degraded"  # linking goes on; nothing (or not all) is released until fixed
            body["reason"] = (f"the consent policy is invalid: {gate.policy_error}" if gate.policy_error
                              else "; ".join(gate.warnings))
    return body


@dataclass(frozen=True)
class ReviewRequest:
    """A reviewer's request: a verdict on a pair (``decide``), an undo of the pair's verdict, or
    ``not_sure`` (a note on the pair, which stays open)."""

    left: str
    right: str
    action: str
    same_person: bool | None
    reason: str | None


def review_request(body: Any) -> ReviewRequest:
    """A reviewer's request body checked; ValueError (or KeyError, TypeError) says what is wrong."""
    left, right = sorted((str(body["left"]), str(body["right"])))
    action = body.get("action") or "decide"
    if action not in ("decide", "undo", "not_sure"):
        raise ValueError("action must be decide, undo or not_sure")
    same = body.get("same_person")
    if action == "decide" and not isinstance(same, bool):
        raise ValueError("same_person must be true or false")
    reason = body.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > 2000):
        raise ValueError("reason must be text of at most 2,000 characters")
    if action == "not_sure" and not (reason or "").strip():
        raise ValueError("say in a note what would settle it")
    return ReviewRequest(left, right, action, same if isinstance(same, bool) else None, reason or None)


def review_decisions(review: ReviewRequest, pairs: list[tuple[str, str]], by: str,
                     now: datetime) -> list[dict[str, Any]]:
    """The ReviewDecisions for a request, one per pair it settles. ``by`` is who signed in, never a
    name typed in the request."""
    return [{"decision_id": str(uuid.uuid4()), "left_record": a, "right_record": b,
             "same_person": bool(review.same_person), "decided_by": by, "reason": review.reason,
             "decided_at": now, "action": None if review.action == "decide" else review.action}
            for a, b in pairs]


# ---------------------------------------------------------------------- the pages
Allowed = Callable[..., Any]  # (view, request, role, write=False) -> Principal, or the refusal response


def _status_pages(app: faust.App, linker: LinkerLoop, gate: GateLoop | None,
                  normalisers: NormaliserProcesses | None) -> None:
    registry = MergedRegistry(normalisers)

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        body = health_report(linker, gate, normalisers, broker_wait())
        return web.json(body, status=200 if body["status"] == "ok" else 503)

    @app.page("/metrics")
    async def prometheus(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(registry),
                         content_type=CONTENT_TYPE_LATEST.split(";")[0])


def _sign_in_pages(app: faust.App, auth: Authenticator, secure_cookie: str) -> None:
    @app.page("/login")
    class Login(View):
        """Sign in with a token, for the review page in a browser: a session cookie."""

        async def get(self, request: Any) -> Any:
            return self.html(render_login_page(request.query.get("next", "/review/ui")))

        async def post(self, request: Any) -> Any:
            form = await request.post()
            target = str(form.get("next") or "/review/ui")
            target = target if target.startswith("/") and not target.startswith("//") else "/review/ui"
            session = auth.login(str(form.get("token") or "").strip())
            if session is None:
                refused("POST", "/login", request.remote, Refusal(401, "sign-in with an unknown token"))
                return self.html(render_login_page(target, "That token is not known."), status=401)
            return self.html("", status=303, headers={
                "Location": target,
                "Set-Cookie": f"{COOKIE}={session[0]}; HttpOnly; SameSite=Strict; Path=/{secure_cookie}"})

    @app.page("/logout")
    class Logout(View):
        async def post(self, request: Any) -> Any:
            auth.logout(request.cookies.get(COOKIE))
            return self.html("", status=303, headers={
                "Location": "/login", "Set-Cookie": f"{COOKIE}=; Max-Age=0; HttpOnly; SameSite=Strict; Path=/"})


def _index_pages(app: faust.App, linker: LinkerLoop, allowed: Allowed) -> None:
    @app.page("/citizens/{citizen_id}")
    async def citizen(web: Any, request: Any, citizen_id: str) -> Any:
        who = allowed(web, request, "reader")
        if not isinstance(who, Principal):
            return who
        with linker.lock:
            live = linker.core.index.resolve(citizen_id)
            body = jsonable(linker.core.linked_case(live)) if live is not None else None
        if body is None:
            return web.json({"error": f"no citizen {citizen_id}"}, status=404)
        if live != citizen_id:
            body["retired_id"] = citizen_id
        return web.json(body)

    @app.page("/records/{agency}/{record_id}")
    async def record(web: Any, request: Any, agency: str, record_id: str) -> Any:
        who = allowed(web, request, "reader")
        if not isinstance(who, Principal):
            return who
        with linker.lock:
            cid = linker.core.index.citizen_of(f"{agency}:{record_id}")
        if cid is None:
            return web.json({"error": f"no record {agency}:{record_id}"}, status=404)
        return web.json({"record": f"{agency}:{record_id}", "citizen_id": cid})


def _review_pages(app: faust.App, linker: LinkerLoop, allowed: Allowed) -> None:
    serde = default_serde()
    decisions_out = idempotent_producer(linker.settings)

    def signed_in(web: Any, request: Any, role: str = "reader") -> Principal | Any:
        """The principal, or for a browser that has not signed in the sign-in page, then back here."""
        who = allowed(web, request, role)
        if not isinstance(who, Principal) and who.status == 401 and not request.headers.get("Authorization"):
            return web.html("", status=303, headers={"Location": f"/login?next={request.path}"})
        return who

    @app.page("/review/ui")
    async def review_ui(web: Any, request: Any) -> Any:
        who = signed_in(web, request)
        if not isinstance(who, Principal):
            return who
        with linker.lock:
            items, total = open_pairs(linker.core)
            model = linker.core.model
        return web.html(render_review_page(items, total, threshold_weight(model.link_threshold),
                                           threshold_weight(model.review_threshold), who.name, who.may("reviewer"),
                                           model.link_threshold, model.review_threshold))

    @app.page("/review/decide")
    class Decide(View):
        async def post(self, request: Any) -> Any:
            who = allowed(self, request, "reviewer", write=True)
            if not isinstance(who, Principal):
                return who
            try:
                if request.content_type != "application/json":
                    raise ValueError("the body must be application/json")
                review = review_request(await request.json())
            except (KeyError, ValueError, TypeError) as exc:
                return self.json({"error": f"bad request: {exc}"}, status=400)
            left, right, action = review.left, review.right, review.action
            pair = (left, right)
            if action == "undo":
                # The decision being undone may still be on its way through the link input (a
                # reviewer who presses undo at once): give the linker a moment to apply it.
                for _ in range(50):
                    with linker.lock:
                        index = linker.core.index
                        if pair in index.must_link or pair in index.cannot_link:
                            break
                    await asyncio.sleep(0.1)
                else:
                    return self.json({"error": f"no decision about {left} / {right} to undo"}, status=409)
            with linker.lock:
                index = linker.core.index
                if action == "not_sure" and pair not in index.review:
                    return self.json({"error": f"no open pair {left} / {right}"}, status=404)
                if action == "decide" and pair not in index.review and not all(k in index.records for k in pair):
                    return self.json({"error": f"no open pair {left} / {right}"}, status=404)
                pairs = pairs_between(linker.core, left, right, action, review.same_person)
            decisions = review_decisions(review, pairs, who.name, datetime.now(UTC))
            for decision in decisions:
                decisions_out.produce(LINK_INPUT_TOPIC, serde.encode("ReviewDecision", decision, check=True),
                                      key=decision["left_record"].encode())
            remaining = await asyncio.get_running_loop().run_in_executor(None, decisions_out.flush, 30.0)
            if remaining:
                return self.json({"error": "Kafka did not acknowledge the decision; try again"}, status=503)
            return self.json({"decision_id": decisions[0]["decision_id"], "status": "published",
                              "decided_by": who.name, "action": action, "pairs": [list(p) for p in pairs]},
                             status=202)

    @app.page("/review")
    async def review(web: Any, request: Any) -> Any:
        who = allowed(web, request, "reader")
        if not isinstance(who, Principal):
            return who
        with linker.lock:
            items, total = open_pairs(linker.core)
        return web.json({"open": total, "items": jsonable(items)})

    @app.page("/charts/model")
    async def chart_model(web: Any, request: Any) -> Any:
        who = signed_in(web, request)
        if not isinstance(who, Principal):
            return who
        model = linker.core.model
        return web.html(page(f"How the computer weighs evidence (model {model.version})", (
            "<p>For each comparison of two records, how often records of one person reach each level (m) and how "
            "often two unrelated records do (u). Their ratio is the evidence: the weight, in doublings of the odds. "
            f"A pair is linked from a total weight of {model.link_weight:+.2f} (probability {model.link_threshold:g}) "
            f"and offered to a person from {model.review_weight:+.2f} ({model.review_threshold:g}).</p>"
            + mu_svg(model) + '<p><a href="/charts/live">Charts of the live data</a> · '
            '<a href="/review/ui">Possible matches to check</a></p>')))

    @app.page("/charts/live")
    async def chart_live(web: Any, request: Any) -> Any:
        who = signed_in(web, request)
        if not isinstance(who, Principal):
            return who
        with linker.lock:
            weights = live_weights(linker.core)
            persons = sample_persons(linker.core)
            model = linker.core.model
            records = len(linker.core.index.records)
        shares, counts = completeness(persons)
        sampled = f" (the first {len(persons):,} of {records:,})" if records > len(persons) else ""
        return web.html(page("The live data", (
            "<h2>Match weights of the links and of the pairs waiting for a person</h2>"
            + weights_histogram_svg(weights, threshold_marks(model))
            + f"<h2>How complete each agency's records are{sampled}</h2>" + completeness_svg(shares, counts)
            + '<p><a href="/charts/model">How the computer weighs evidence</a> · '
            '<a href="/review/ui">Possible matches to check</a></p>')))

    @app.page("/charts/citizen/{citizen_id}")
    async def chart_citizen(web: Any, request: Any, citizen_id: str) -> Any:
        who = signed_in(web, request)
        if not isinstance(who, Principal):
            return who
        with linker.lock:
            live, nodes, edges = citizen_graph(linker.core, citizen_id)
            model = linker.core.model
        if live is None:
            return web.html(page("No such person", f"<p>No live citizen {html.escape(citizen_id)}.</p>"), status=404)
        note = f" (now {html.escape(live)})" if live != citizen_id else ""
        return web.html(page(f"One person's records: {live}", (
            f"<p>{html.escape(citizen_id)}{note}: {sum(1 for n in nodes if 'another person' not in n['label'])} "
            "record(s) and the links that join them.</p>"
            + cluster_svg(nodes, edges, model.link_weight, model.review_weight)
            + '<p><a href="/review/ui">Possible matches to check</a></p>')))
