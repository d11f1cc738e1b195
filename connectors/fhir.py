"""FHIR R4 ``Patient`` resources and ``Bundle``s as canonical PersonEvent pieces.

Follows the UK Core conventions where they exist (the NHS number identifier system), and takes
any other identifier system through a configurable map or its last path segment, so nothing
UK-only is hard-wired.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from caselink.connectors.mapping import MappedRow, RowError

NHS_NUMBER_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
DEFAULT_SYSTEMS = {NHS_NUMBER_SYSTEM: "nhs_number"}
GENDER = {"female": "F", "male": "M", "other": "X", "unknown": "U"}


def _scheme(system: str, systems: Mapping[str, str]) -> str:
    if system in systems:
        return systems[system]
    tail = system.rstrip("/").rsplit("/", 1)[-1] or system
    return "".join(ch if ch.isalnum() else "_" for ch in tail).lower()


def _version(resource: Mapping[str, Any]) -> int | None:
    meta = resource.get("meta") or {}
    if str(meta.get("versionId", "")).isdigit():
        return int(meta["versionId"])
    if meta.get("lastUpdated"):
        try:
            moment = datetime.fromisoformat(str(meta["lastUpdated"]).replace("Z", "+00:00"))
        except ValueError:
            raise RowError("meta.lastUpdated", f"{meta['lastUpdated']!r} is not an instant") from None
        return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp() * 1000)
    return None


def patient_to_row(patient: Mapping[str, Any], systems: Mapping[str, str] | None = None,
                   deleted: bool = False) -> MappedRow:
    """One Patient as a MappedRow (record id, version, person); RowError names the bad element."""
    systems = {**DEFAULT_SYSTEMS, **(systems or {})}
    if patient.get("resourceType") != "Patient":
        raise RowError("resourceType", f"expected Patient, got {patient.get('resourceType')!r}")
    record_id = patient.get("id")
    if not record_id:
        raise RowError("id", "a Patient needs its logical id")
    names = patient.get("name") or []
    official = next((n for n in names if n.get("use") == "official"), names[0] if names else {})
    others = [n.get("family") for n in names if n is not official and n.get("use") in ("old", "maiden")
              and n.get("family")]
    identifiers = {}
    for i, ident in enumerate(patient.get("identifier") or []):
        system, value = ident.get("system"), ident.get("value")
        if not system or not value:
            raise RowError(f"identifier[{i}]", "needs both system and value")
        identifiers[_scheme(system, systems)] = str(value)
    gender = patient.get("gender")
    if gender is not None and gender not in GENDER:
        raise RowError("gender", f"{gender!r} is not one of {', '.join(GENDER)}")
    addresses = []
    for address in patient.get("address") or []:
        period = address.get("period") or {}
        addresses.append({
            "lines": list(address.get("line") or []), "locality": address.get("city"),
            "region": address.get("district") or address.get("state"), "postcode": address.get("postalCode"),
            "country": address.get("country"), "valid_from": (period.get("start") or "")[:10] or None,
            "valid_to": (period.get("end") or "")[:10] or None,
        })
    telecom = patient.get("telecom") or []
    person = {
        "given_names": " ".join(official.get("given") or []) or None,
        "family_name": official.get("family"),
        "other_names": others,
        "date_of_birth": patient.get("birthDate"),
        "sex": GENDER.get(gender) if gender else None,
        "identifiers": identifiers,
        "addresses": addresses,
        "phones": [t["value"] for t in telecom if t.get("system") == "phone" and t.get("value")],
        "emails": [t["value"] for t in telecom if t.get("system") == "email" and t.get("value")],
    }
    return MappedRow(str(record_id), _version(patient), deleted, person, [])


def bundle_rows(bundle: Mapping[str, Any], systems: Mapping[str, str] | None = None
                ) -> Iterator[tuple[str, MappedRow | RowError]]:
    """(entry path, row or the error of that entry) for each Patient entry of a Bundle."""
    if bundle.get("resourceType") != "Bundle":
        raise RowError("resourceType", f"expected Bundle, got {bundle.get('resourceType')!r}")
    for i, entry in enumerate(bundle.get("entry") or []):
        where = f"entry[{i}]"
        request = entry.get("request") or {}
        resource = entry.get("resource")
        try:
            if request.get("method") == "DELETE":
                url = str(request.get("url", ""))
                if not url.startswith("Patient/"):
                    raise RowError(f"{where}.request.url", "only Patient deletes are accepted")
                yield where, MappedRow(url.split("/", 1)[1], None, True, {}, [])
            elif resource is None:
                raise RowError(f"{where}.resource", "missing")
            else:
                yield where, patient_to_row(resource, systems)
        except RowError as exc:
            yield where, RowError(f"{where}.{exc.field}", exc.reason)


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
    from caselink.streams.consent.events import consent_event

    systems = {**DEFAULT_SYSTEMS, **(systems or {})}
    if resource.get("resourceType") != "Consent":
        raise RowError("resourceType", f"expected Consent, got {resource.get('resourceType')!r}")
    if not resource.get("id"):
        raise RowError("id", "a Consent needs its logical id")
    status = resource.get("status")
    if status not in CONSENT_STATUS:
        raise RowError("status", f"{status!r} is not in force; expected one of {', '.join(CONSENT_STATUS)}")
    patient = resource.get("patient") or {}
    reference = str(patient.get("reference") or "")
    identifier = patient.get("identifier") or {}
    if reference.startswith("Patient/"):
        subject = {"kind": "RECORD", "citizen_id": None, "agency": agency,
                   "source_record_id": reference.split("/", 1)[1], "scheme": None, "value": None}
    elif identifier.get("system") and identifier.get("value"):
        subject = {"kind": "IDENTIFIER", "citizen_id": None, "agency": None, "source_record_id": None,
                   "scheme": _scheme(identifier["system"], systems), "value": str(identifier["value"])}
    else:
        raise RowError("patient", "needs a Patient/<id> reference or an identifier with system and value")
    provision = resource.get("provision") or {}
    kind = provision.get("type")
    if kind not in ("permit", "deny"):
        raise RowError("provision.type", f"expected permit or deny, got {kind!r}")
    purposes = [c.get("code") for c in provision.get("purpose") or [] if c.get("code")]
    period = provision.get("period") or {}
    opt_out = any(c.get("code") == NATIONAL_OPT_OUT_CODE for cat in resource.get("category") or []
                  for c in cat.get("coding") or [])
    return consent_event(
        subject, purposes[0] if purposes else "*", kind == "permit", recorded_by=agency,
        consent_id=f"{agency}:{resource['id']}", national_opt_out=opt_out, withdrawn=CONSENT_STATUS[status],
        basis=(resource.get("policyRule") or {}).get("text"),
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
