"""FHIR R4 ``Patient`` resources and ``Bundle``s as canonical PersonEvent pieces.

Follows the UK Core conventions where they exist (the NHS number identifier system), and takes
any other identifier system through a configurable map or its last path segment, so nothing
UK-only is hard-wired.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from caselink.connectors.consent_events import consent_event
from caselink.connectors.mapping import MappedRow, RowError

NHS_NUMBER_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
DEFAULT_SYSTEMS = {NHS_NUMBER_SYSTEM: "nhs_number"}
GENDER = {"female": "F", "male": "M", "other": "X", "unknown": "U"}


def _scheme(system: str, systems: Mapping[str, str]) -> str:
    if system in systems:
        return systems[system]
    tail = system.rstrip("/").rsplit("/", 1)[-1] or system
    return "".join(ch if ch.isalnum() else "_" for ch in tail).lower()


# JSON gives any shape anywhere; these say which element has the wrong one (a RowError, so a 422
# naming it) instead of letting `.get` on a string fail deep inside as a 500.
def _obj(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RowError(where, f"must be an object, not {_kind(value)}")
    return value


def _objs(value: Any, where: str) -> list[Mapping[str, Any]]:
    return [_obj(item, f"{where}[{i}]") for i, item in enumerate(_list(value, where))]


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise RowError(where, f"must be an array, not {_kind(value)}")
    return value


def _str(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise RowError(where, f"must be a string, not {_kind(value)}")
    return value


def _strs(value: Any, where: str) -> list[str]:
    return [s for i, item in enumerate(_list(value, where)) if (s := _str(item, f"{where}[{i}]")) is not None]


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
            float: "a number"}.get(type(value), type(value).__name__)


def _version(resource: Mapping[str, Any]) -> int | None:
    meta = _obj(resource.get("meta"), "meta")
    version_id = meta.get("versionId")
    if isinstance(version_id, str | int) and not isinstance(version_id, bool) and str(version_id).isdigit():
        return int(version_id)
    last_updated = _str(meta.get("lastUpdated"), "meta.lastUpdated")
    if last_updated:
        try:
            moment = datetime.fromisoformat(last_updated.replace("Z", "+00:00"))
        except ValueError:
            raise RowError("meta.lastUpdated", f"{last_updated!r} is not an instant") from None
        return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp() * 1000)
    return None


def patient_to_row(patient: Mapping[str, Any], systems: Mapping[str, str] | None = None,
                   deleted: bool = False) -> MappedRow:
    """One Patient as a MappedRow (record id, version, person); RowError names the bad element."""
    systems = {**DEFAULT_SYSTEMS, **(systems or {})}
    patient = _obj(patient, "resource")
    if patient.get("resourceType") != "Patient":
        raise RowError("resourceType", f"expected Patient, got {patient.get('resourceType')!r}")
    record_id = _str(patient.get("id"), "id")
    if not record_id:
        raise RowError("id", "a Patient needs its logical id")
    names = _objs(patient.get("name"), "name")
    official = next((n for n in names if n.get("use") == "official"), names[0] if names else {})
    others = [_str(n.get("family"), "name.family") for n in names
              if n is not official and n.get("use") in ("old", "maiden") and n.get("family")]
    identifiers = {}
    for i, ident in enumerate(_objs(patient.get("identifier"), "identifier")):
        system = _str(ident.get("system"), f"identifier[{i}].system")
        value = ident.get("value")
        if not system or value is None or value == "":
            raise RowError(f"identifier[{i}]", "needs both system and value")
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise RowError(f"identifier[{i}].value", f"must be a string, not {_kind(value)}")
        identifiers[_scheme(system, systems)] = str(value)
    gender = patient.get("gender")
    if gender is not None and (not isinstance(gender, str) or gender not in GENDER):
        raise RowError("gender", f"{gender!r} is not one of {', '.join(GENDER)}")
    addresses = []
    for i, address in enumerate(_objs(patient.get("address"), "address")):
        where = f"address[{i}]"
        period = _obj(address.get("period"), f"{where}.period")
        addresses.append({
            "lines": _strs(address.get("line"), f"{where}.line"),
            "locality": _str(address.get("city"), f"{where}.city"),
            "region": _str(address.get("district"), f"{where}.district") or _str(address.get("state"),
                                                                                f"{where}.state"),
            "postcode": _str(address.get("postalCode"), f"{where}.postalCode"),
            "country": _str(address.get("country"), f"{where}.country"),
            "valid_from": (_str(period.get("start"), f"{where}.period.start") or "")[:10] or None,
            "valid_to": (_str(period.get("end"), f"{where}.period.end") or "")[:10] or None,
        })
    telecom = _objs(patient.get("telecom"), "telecom")
    contacts = {kind: [v for i, t in enumerate(telecom) if t.get("system") == kind
                       and (v := _str(t.get("value"), f"telecom[{i}].value"))] for kind in ("phone", "email")}
    person = {
        "given_names": " ".join(_strs(official.get("given"), "name.given")) or None,
        "family_name": _str(official.get("family"), "name.family"),
        "other_names": others,
        "date_of_birth": _str(patient.get("birthDate"), "birthDate"),
        "sex": GENDER.get(gender) if isinstance(gender, str) else None,
        "identifiers": identifiers,
        "addresses": addresses,
        "phones": contacts["phone"],
        "emails": contacts["email"],
    }
    return MappedRow(record_id, _version(patient), deleted, person, [])


def bundle_rows(bundle: Mapping[str, Any], systems: Mapping[str, str] | None = None
                ) -> Iterator[tuple[str, MappedRow | RowError]]:
    """(entry path, row or the error of that entry) for each Patient entry of a Bundle."""
    bundle = _obj(bundle, "resource")
    if bundle.get("resourceType") != "Bundle":
        raise RowError("resourceType", f"expected Bundle, got {bundle.get('resourceType')!r}")
    for i, entry in enumerate(_list(bundle.get("entry"), "entry")):
        where = f"entry[{i}]"
        try:
            entry = _obj(entry, "")
            request = _obj(entry.get("request"), "request")
            resource = entry.get("resource")
            if request.get("method") == "DELETE":
                url = _str(request.get("url"), "request.url") or ""
                if not url.startswith("Patient/") or not url.split("/", 1)[1]:
                    raise RowError("request.url", "only Patient/<id> deletes are accepted")
                yield where, MappedRow(url.split("/", 1)[1], None, True, {}, [])
            elif resource is None:
                raise RowError("resource", "missing")
            else:
                yield where, patient_to_row(_obj(resource, "resource"), systems)
        except RowError as exc:
            yield where, RowError(f"{where}.{exc.field}" if exc.field else where, exc.reason)


CONSENT_STATUS = {"active": False, "inactive": True, "rejected": True, "entered-in-error": True}
NATIONAL_OPT_OUT_CODE = "national-opt-out"


def consent_to_event(resource: Mapping[str, Any], agency: str,
                     systems: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A FHIR R4 Consent (one top-level provision) as a ConsentEvent; RowError names the bad element.

    ``patient`` is a reference to the agency's own Patient (a RECORD subject) or an identifier
    (an IDENTIFIER subject, e.g. an NHS number); ``provision.type`` permit/deny; the first
    ``provision.purpose`` code is the caselink purpose (none: every purpose); ``provision.period``
    bounds it; a ``category`` coded ``national-opt-out`` marks a national opt-out. Status ``active``
    records it, ``inactive``/``rejected``/``entered-in-error`` withdraw it.
    """
    systems = {**DEFAULT_SYSTEMS, **(systems or {})}
    resource = _obj(resource, "resource")
    if resource.get("resourceType") != "Consent":
        raise RowError("resourceType", f"expected Consent, got {resource.get('resourceType')!r}")
    consent_id = _str(resource.get("id"), "id")
    if not consent_id:
        raise RowError("id", "a Consent needs its logical id")
    status = resource.get("status")
    if not isinstance(status, str) or status not in CONSENT_STATUS:
        raise RowError("status", f"{status!r} is not in force; expected one of {', '.join(CONSENT_STATUS)}")
    patient = _obj(resource.get("patient"), "patient")
    reference = _str(patient.get("reference"), "patient.reference") or ""
    identifier = _obj(patient.get("identifier"), "patient.identifier")
    system = _str(identifier.get("system"), "patient.identifier.system")
    value = _str(identifier.get("value"), "patient.identifier.value")
    if reference.startswith("Patient/"):
        subject = {"kind": "RECORD", "citizen_id": None, "agency": agency,
                   "source_record_id": reference.split("/", 1)[1], "scheme": None, "value": None}
    elif system and value:
        subject = {"kind": "IDENTIFIER", "citizen_id": None, "agency": None, "source_record_id": None,
                   "scheme": _scheme(system, systems), "value": value}
    else:
        raise RowError("patient", "needs a Patient/<id> reference or an identifier with system and value")
    provision = _obj(resource.get("provision"), "provision")
    kind = provision.get("type")
    if kind not in ("permit", "deny"):
        raise RowError("provision.type", f"expected permit or deny, got {kind!r}")
    purposes = [code for i, c in enumerate(_objs(provision.get("purpose"), "provision.purpose"))
                if (code := _str(c.get("code"), f"provision.purpose[{i}].code"))]
    period = _obj(provision.get("period"), "provision.period")
    opt_out = any(c.get("code") == NATIONAL_OPT_OUT_CODE
                  for i, cat in enumerate(_objs(resource.get("category"), "category"))
                  for c in _objs(cat.get("coding"), f"category[{i}].coding"))
    return consent_event(
        subject, purposes[0] if purposes else "*", kind == "permit", recorded_by=agency,
        consent_id=f"{agency}:{consent_id}", national_opt_out=opt_out, withdrawn=CONSENT_STATUS[status],
        basis=_str(_obj(resource.get("policyRule"), "policyRule").get("text"), "policyRule.text"),
        valid_from=_instant(period.get("start"), "provision.period.start"),
        valid_to=_instant(period.get("end"), "provision.period.end"),
        recorded_at=_instant(resource.get("dateTime"), "dateTime"),
    )


def _instant(value: Any, where: str) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise RowError(where, f"{value!r} is not a date or instant") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
