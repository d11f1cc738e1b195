"""HTTP ingest: agencies push PersonEvents (canonical JSON or FHIR R4) over HTTPS-terminated HTTP.

* Each agency has its own bearer token and may write only its own topic (401 without a valid
  token, 403 for another agency's path).
* A request is one event or a batch; it is validated whole (422 with the path of every bad field,
  nothing produced) and answered 202 only once Kafka has acknowledged every event (503 if not).
* Bodies over ``ingest.max_body_bytes`` get 413, counted as they arrive (chunked ones too). The
  OpenAPI document is at ``/openapi.json``.
* Consents (``/v1/{agency}/consent-events``, or a FHIR ``Consent`` on ``/v1/{agency}/fhir``) are
  checked against the consent policy (422 with the reasons) and published to the agency's
  consent topic for the gate.
"""


import asyncio
import hmac
import math
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from caselink.connectors.base import event_id
from caselink.connectors.body_limit import BodyLimit
from caselink.connectors.consent_events import consent_event
from caselink.connectors.fhir import bundle_rows, consent_to_event, patient_to_row
from caselink.connectors.mapping import MappedRow, RowError
from caselink.infra.topics import consent_events_topic, person_events_topic
from caselink.schemas import SchemaValidationError, default_serde
from confluent_kafka import Producer
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from pydantic import BaseModel, Field, field_validator

from caselink.core.kafka import idempotent_producer
from caselink.core.settings import Settings

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class AddressIn(BaseModel):
    lines: list[str] = []
    locality: str | None = None
    region: str | None = None
    postcode: str | None = None
    country: str | None = None
    valid_from: str | None = None
    valid_to: str | None = None


class PersonIn(BaseModel):
    given_names: str | None = None
    family_name: str | None = None
    other_names: list[str] = []
    date_of_birth: str | None = Field(default=None, description="ISO 8601 date, YYYY-MM-DD")
    sex: Literal["F", "M", "X", "U"] | None = None
    identifiers: dict[str, str] = {}
    addresses: list[AddressIn] = []
    phones: list[str] = []
    emails: list[str] = []

    @field_validator("date_of_birth")
    @classmethod
    def _iso_date(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not _DATE.match(value):
            raise ValueError("must be an ISO date YYYY-MM-DD")
        date.fromisoformat(value)  # raises on 2015-02-31
        return value


class CaseIn(BaseModel):
    case_id: str = Field(min_length=1)
    case_type: str | None = None
    status: str | None = None
    opened_at: str | None = None
    closed_at: str | None = None
    sensitivity: Literal["normal", "restricted", "sealed"] = "normal"


class EventIn(BaseModel):
    source_record_id: str = Field(min_length=1, max_length=200)
    source_version: int | None = Field(default=None, ge=0, description="monotonic per record; default: now in ms")
    op: Literal["UPSERT", "DELETE"] = "UPSERT"
    occurred_at: datetime | None = None
    person: PersonIn | None = None
    cases: list[CaseIn] = []


class SubjectIn(BaseModel):
    citizen_id: str | None = None
    source_record_id: str | None = Field(default=None, description="a record of the posting agency")
    scheme: str | None = None
    value: str | None = None


class ConsentIn(BaseModel):
    """A consent, objection or opt-out (after FHIR R4 Consent provisions); see docs/policy-language.md."""

    consent_id: str | None = Field(default=None, description="the agency's id; repeat it to replace or withdraw")
    status: Literal["ACTIVE", "WITHDRAWN"] = "ACTIVE"
    subject: SubjectIn
    purpose: str = Field(description="a purpose of the policy, or * for all")
    decision: Literal["PERMIT", "DENY"]
    national_opt_out: bool = False
    basis: str | None = None
    agencies: list[str] = []
    fields: list[str] = []
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    recorded_by: str = Field(min_length=1)
    recorded_at: datetime | None = None


def _json_safe(value: Any) -> Any:
    """``value`` with floats JSON cannot hold (NaN, +-Infinity) as their names."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


INGEST_REQUESTS = Counter("caselink_ingest_requests_total", "HTTP ingest requests", ["route", "agency", "status"])
INGEST_SECONDS = Histogram("caselink_ingest_request_seconds", "HTTP ingest request latency, body read to answer",
                           ["route"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))


class Accepted(BaseModel):
    accepted: int
    event_ids: list[str]


class ConsentCheckUnavailable(RuntimeError):
    """Consents cannot be checked now (the policy is invalid): the request gets 503 and is retried."""


ConsentCheck = Callable[[list[dict[str, Any]]], list[list[str]]]
"""What is wrong with each ConsentEvent of a request (an empty list: it may be recorded). The
consent policy belongs to the gate (``caselink.streams.consent``), a layer above this one, so the
caller that builds the app passes the check in (``caselink.ingest.ingest_app``)."""


def create_ingest_app(settings: Settings, check_consents: ConsentCheck) -> FastAPI:
    app = FastAPI(title="caselink ingest", version="1",
                  description="Push person changes from an agency's system into caselink.")
    app.add_middleware(BodyLimit, limit=settings.ingest.max_body_bytes)
    app.exception_handler(RequestValidationError)(_invalid)
    authorise = _authoriser(settings)
    out = _Publisher(idempotent_producer(settings, **{"linger.ms": 2}))
    produce_people = _person_routes(app, settings, authorise, out)
    _consent_routes(app, settings, authorise, out, check_consents, produce_people)

    @app.middleware("http")
    async def measure(request: Request, call_next: Any) -> Any:
        """Requests and their latency by route and status (the route's template, so that one
        agency's thousand record ids are one series)."""
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            template = getattr(route, "path", "unmatched")
            if template not in ("/metrics", "/health"):
                agency = request.path_params.get("agency", "") if route is not None else ""
                agency = agency if agency in settings.agencies or not agency else "unknown"  # bounded labels
                INGEST_REQUESTS.labels(template, agency, str(status)).inc()
                INGEST_SECONDS.labels(template).observe(time.perf_counter() - started)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Any:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


# ---------------------------------------------------------------------- the pure steps
def person_event_of(agency: str, row: MappedRow, cases: list[dict[str, Any]], occurred: datetime | None,
                    now: datetime) -> dict[str, Any]:
    """The PersonEvent for a row pushed over HTTP (no version given: ``now`` in milliseconds)."""
    version = row.version if row.version is not None else int(now.timestamp() * 1000)
    op = "DELETE" if row.deleted else "UPSERT"
    return {"event_id": event_id(agency, row.record_id, version, op), "agency": agency,
            "source_record_id": row.record_id, "source_version": version, "op": op,
            "occurred_at": occurred or now, "emitted_at": now,
            "person": None if row.deleted else row.person, "cases": [] if row.deleted else cases,
            "source": {"connector": "http"}}


def consent_event_of(agency: str, consent: ConsentIn) -> dict[str, Any]:
    """The ConsentEvent for a consent pushed by ``agency``; ValueError when its subject is not exactly
    one of a citizen id, one of the agency's records, or an identifier."""
    s = consent.subject
    kinds = [k for k, v in (("CITIZEN", s.citizen_id), ("RECORD", s.source_record_id),
                            ("IDENTIFIER", s.scheme or s.value)) if v]
    if len(kinds) != 1:
        raise ValueError("give exactly one of citizen_id, source_record_id, scheme+value")
    subject = {"kind": kinds[0], "citizen_id": s.citizen_id, "agency": agency if s.source_record_id else None,
               "source_record_id": s.source_record_id, "scheme": s.scheme, "value": s.value}
    return consent_event(
        subject, consent.purpose, consent.decision == "PERMIT", consent.recorded_by, consent_id=consent.consent_id,
        national_opt_out=consent.national_opt_out, basis=consent.basis, agencies=consent.agencies,
        fields=consent.fields, valid_from=consent.valid_from, valid_to=consent.valid_to,
        withdrawn=consent.status == "WITHDRAWN", recorded_at=consent.recorded_at)


def namespaced(agency: str, event: dict[str, Any]) -> dict[str, Any]:
    """Consent ids under the agency's name, so agencies cannot overwrite each other's consents."""
    consent_id = event["consent_id"]
    return {**event, "consent_id": consent_id if consent_id.startswith(f"{agency}:") else f"{agency}:{consent_id}"}


# ---------------------------------------------------------------------- the service
async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with the path of every bad field, as FastAPI does, but never a 500: the bad input is
    echoed back, and JSON's NaN/Infinity (which Python's parser accepts) cannot be written out
    again (found by the fuzz pass: {"":"","":Infinity} gave a 500)."""
    return JSONResponse({"detail": _json_safe(jsonable_encoder(exc.errors()))}, status_code=422)


Authorise = Callable[..., str]  # a FastAPI dependency: the agency of the path, once its token is checked


def _authoriser(settings: Settings) -> Authorise:
    bearer = HTTPBearer(auto_error=False)
    tokens = {agency: token.get_secret_value() for agency, token in settings.ingest.tokens.items()}

    def authorise(agency: str, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
        if agency not in settings.agencies:
            raise HTTPException(404, f"unknown agency {agency!r}")
        if credentials is None:
            raise HTTPException(401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"})
        owner = next((a for a, t in tokens.items() if hmac.compare_digest(t, credentials.credentials)), None)
        if owner is None:
            raise HTTPException(401, "unknown token", headers={"WWW-Authenticate": "Bearer"})
        if owner != agency:
            raise HTTPException(403, f"this token may write only to {owner}")
        return agency

    return authorise


class _Publisher:
    """Sends a request's events and answers only once Kafka has acknowledged all of them."""

    def __init__(self, producer: Producer) -> None:
        self.producer = producer

    async def publish(self, topic: str, messages: list[tuple[bytes, bytes]], what: str) -> None:
        errors: list[str] = []
        for key, value in messages:
            self.producer.produce(topic, value, key=key,
                                  on_delivery=lambda err, _m: errors.append(str(err)) if err else None)
        remaining = await asyncio.get_running_loop().run_in_executor(None, self.producer.flush, 30.0)
        if remaining or errors:
            raise HTTPException(503, f"Kafka did not acknowledge {remaining or len(errors)} {what}; retry")


ProducePeople = Callable[[str, list[tuple[MappedRow, list[dict[str, Any]], datetime | None]]], Awaitable[Accepted]]


def _person_routes(app: FastAPI, settings: Settings, authorise: Authorise, out: _Publisher) -> ProducePeople:
    """The canonical PersonEvent route; returns how it publishes rows, for the FHIR route."""
    serde = default_serde()

    async def produce(agency: str, rows: list[tuple[MappedRow, list[dict[str, Any]], datetime | None]]) -> Accepted:
        now = datetime.now(UTC)
        encoded: list[tuple[bytes, bytes, str]] = []
        for row, cases, occurred in rows:
            event = person_event_of(agency, row, cases, occurred, now)
            try:
                encoded.append((f"{agency}:{row.record_id}".encode(), serde.encode("PersonEvent", event, check=True),
                                event["event_id"]))
            except SchemaValidationError as exc:
                raise HTTPException(422, [{"loc": [row.record_id], "msg": e} for e in exc.errors]) from None
        await out.publish(person_events_topic(agency), [(k, v) for k, v, _ in encoded], "event(s)")
        return Accepted(accepted=len(encoded), event_ids=[e for _, _, e in encoded])

    @app.post("/v1/{agency}/person-events", status_code=202, response_model=Accepted)
    async def person_events(agency: Annotated[str, Depends(authorise)], body: EventIn | list[EventIn]) -> Accepted:
        """One event or a batch, in the canonical PersonEvent layout."""
        events = body if isinstance(body, list) else [body]
        if len(events) > settings.ingest.max_events_per_request:
            raise HTTPException(413, f"at most {settings.ingest.max_events_per_request} events per request")
        rows = []
        for i, e in enumerate(events):
            if e.op == "UPSERT" and e.person is None:
                raise HTTPException(422, [{"loc": ["body", i, "person"], "msg": "required for UPSERT"}])
            person = e.person.model_dump() if e.person else {}
            rows.append((MappedRow(e.source_record_id, e.source_version, e.op == "DELETE", person, []),
                         [c.model_dump() for c in e.cases], e.occurred_at))
        return await produce(agency, rows)

    return produce


def _consent_routes(app: FastAPI, settings: Settings, authorise: Authorise, out: _Publisher,
                    check_consents: ConsentCheck, produce_people: ProducePeople) -> None:
    """Consents, and FHIR resources (a Consent, or Patients sent as PersonEvents)."""
    serde = default_serde()

    async def produce_consents(agency: str, events: list[dict[str, Any]]) -> Accepted:
        try:
            checked = check_consents(events)
        except ConsentCheckUnavailable as exc:
            raise HTTPException(503, str(exc)) from None
        problems = [{"loc": ["body", i], "msg": p} for i, found in enumerate(checked) for p in found]
        if problems:
            raise HTTPException(422, problems)
        events = [namespaced(agency, e) for e in events]
        await out.publish(consent_events_topic(agency),
                          [(e["consent_id"].encode(), serde.encode("ConsentEvent", e, check=True)) for e in events],
                          "consent(s)")
        return Accepted(accepted=len(events), event_ids=[e["event_id"] for e in events])

    @app.post("/v1/{agency}/fhir", status_code=202, response_model=Accepted)
    async def fhir(agency: Annotated[str, Depends(authorise)], resource: dict[str, Any]) -> Accepted:
        """A FHIR R4 Patient, a Bundle of Patients (DELETE entries retract records), or a Consent."""
        if resource.get("resourceType") == "Consent":
            try:
                return await produce_consents(agency, [consent_to_event(resource, agency)])
            except RowError as exc:
                raise HTTPException(422, [{"loc": [exc.field], "msg": exc.reason}]) from None
        try:
            if resource.get("resourceType") == "Bundle":
                results = list(bundle_rows(resource))
            else:
                results = [("", patient_to_row(resource))]
        except RowError as exc:
            raise HTTPException(422, [{"loc": [exc.field], "msg": exc.reason}]) from None
        bad = [r for _, r in results if isinstance(r, RowError)]
        if bad:
            raise HTTPException(422, [{"loc": [e.field], "msg": e.reason} for e in bad])
        return await produce_people(agency, [(r, [], None) for _, r in results])  # type: ignore[misc]

    @app.post("/v1/{agency}/consent-events", status_code=202, response_model=Accepted)
    async def consent_events(agency: Annotated[str, Depends(authorise)], body: ConsentIn | list[ConsentIn]) -> Accepted:
        """One consent or a batch. Record subjects are the posting agency's records; consent ids are
        namespaced by agency so agencies cannot overwrite each other's consents."""
        items = body if isinstance(body, list) else [body]
        if len(items) > settings.ingest.max_events_per_request:
            raise HTTPException(413, f"at most {settings.ingest.max_events_per_request} consents per request")
        events = []
        for i, c in enumerate(items):
            try:
                events.append(consent_event_of(agency, c))
            except ValueError as exc:
                raise HTTPException(422, [{"loc": ["body", i, "subject"], "msg": str(exc)}]) from None
        return await produce_consents(agency, events)
