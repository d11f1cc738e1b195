"""The standardised form of one source record, built once and compared many times."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import jellyfish
from caselink.linkage.nicknames import canonical_given_name
from caselink.linkage.rules import DEFAULT_RULES, LinkageRules
from caselink.linkage.schemes import SchemeError
from caselink.linkage.standardise import (
    StdDate,
    StdPostcode,
    clean_email,
    clean_phone,
    clean_text,
    remembered,
    standardise_address,
    standardise_date,
    standardise_family,
    standardise_given,
    standardise_postcode,
    standardise_sex,
)

_SHARED: dict[Any, Any] = {}
_SHARED_LIMIT = 2_000_000


_NO_IDS: dict[str, str] = {}
_NOTHING: frozenset[str] = frozenset()


class UnlinkableRecordError(ValueError):
    """A record without enough to link on; linking it would attach it to anyone or no one."""


class LinkRecord:
    """Comparable values of one record. ``__slots__`` keeps a million of them within memory goals."""

    __slots__ = (
        "address",
        "dob",
        "emails",
        "family",
        "family_parts",
        "family_phon",
        "given",
        "given_canon",
        "given_phon",
        "ids",
        "invalid_ids",
        "key",
        "locality",
        "middle",
        "other_families",
        "phones",
        "postcode",
        "sex",
    )

    key: str
    given: str | None
    given_canon: str | None
    given_phon: str | None
    middle: str | None
    family: str | None
    family_parts: tuple[str, ...]
    family_phon: str | None
    other_families: tuple[str, ...]
    dob: StdDate | None
    sex: str | None
    postcode: StdPostcode | None
    address: str | None
    locality: str | None
    ids: dict[str, str]
    invalid_ids: dict[str, str]
    phones: frozenset[str]
    emails: frozenset[str]

    def __repr__(self) -> str:
        return f"LinkRecord({self.key!r}, {self.given} {self.family}, {self.dob and self.dob.digits})"

    def as_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self.__slots__}
        out["dob"] = self.dob.digits if self.dob else None
        out["postcode"] = self.postcode.code if self.postcode else None
        return out


@remembered
def phonetic(token: str | None) -> str | None:
    return jellyfish.metaphone(token) if token else None


class UnknownSchemeError(SchemeError):
    """A record names an identifier scheme the deployment has not configured."""


def standardise_person(
    key: str,
    person: Mapping[str, Any],
    rules: LinkageRules = DEFAULT_RULES,
) -> LinkRecord:
    """A LinkRecord from the canonical ``Person`` layout of a PersonEvent.

    Names that are fillers (``rules``' placeholders) count as missing. Raises
    UnlinkableRecordError when the record has neither a valid shared identifier nor a name
    together with a date of birth or an address, and UnknownSchemeError for an identifier scheme
    that is neither configured nor named after the record's agency (its own record number).
    """
    r = LinkRecord()
    r.key = key
    r.given, r.middle = standardise_given(person.get("given_names"), rules.given_placeholders())
    r.given_canon = canonical_given_name(r.given) if r.given else None
    r.given_phon = phonetic(r.given)
    family_fillers = rules.family_placeholders()
    r.family, r.family_parts = standardise_family(person.get("family_name"), family_fillers)
    r.family_phon = phonetic(r.family)
    others = []
    for other in person.get("other_names") or ():
        std, _parts = standardise_family(other, family_fillers)
        if std and std != r.family:
            others.append(std)
    r.other_families = tuple(others)
    r.dob = standardise_date(person.get("date_of_birth"))
    r.sex = standardise_sex(person.get("sex"))
    addresses = person.get("addresses") or ()
    current = _current_address(addresses)
    r.postcode = standardise_postcode(current.get("postcode")) if current else None
    r.address = standardise_address(current.get("lines") or ()) if current else None
    r.locality = clean_text(current.get("locality")) if current else None
    ids: dict[str, str] = {}
    invalid: dict[str, str] = {}
    catalogue = rules.schemes.schemes
    for name, raw in (person.get("identifiers") or {}).items():
        scheme = catalogue.get(name)
        if scheme is None:
            if rules.schemes.is_local(name, key.partition(":")[0]):
                continue  # the agency's own record number: carried in the event, never compared
            raise UnknownSchemeError(rules.schemes.describe_unknown(name))
        if not scheme.shared:
            continue
        value = scheme.clean(raw)
        if not value:
            continue
        if scheme.problem(value) is None:
            ids[name] = value
        else:
            invalid[name] = value
    r.ids = ids
    r.invalid_ids = invalid
    r.phones = frozenset(p for p in map(clean_phone, person.get("phones") or ()) if p)
    r.emails = frozenset(e for e in map(clean_email, person.get("emails") or ()) if e)
    share_values(r)
    _check_linkable(r)
    return r


# Values that repeat across records (names, dates, postcodes, places).
_SHARED_SLOTS = ("given", "middle", "given_canon", "given_phon", "family", "family_parts", "family_phon",
                 "other_families", "dob", "sex", "postcode", "locality")


def share_values(r: LinkRecord) -> LinkRecord:
    """Point ``r``'s repeating values at one shared object each, and its empty collections at one
    shared empty value. Names, dates, postcodes and places repeat across a million records, and a
    LinkRecord holding its own copy of each cost ~40% of the index's memory; the values are
    immutable (str, tuple, frozen dataclasses), so sharing them is invisible. The table of shared
    values is emptied if it ever reaches ``_SHARED_LIMIT`` (sharing is then rebuilt).

    ``standardise_person`` does this for every record it builds; records made another way
    (unpickled, say) can be passed through it to get the same memory footprint. Most records have
    no invalid identifier, phone or e-mail: the shared empty values save about 500 bytes a record
    (half a gigabyte in a million-record index). None of them is mutated after this."""
    shared = _SHARED
    for name in _SHARED_SLOTS:
        value = getattr(r, name)
        if value is None:
            continue
        found = shared.get(value)
        if found is None:
            if len(shared) >= _SHARED_LIMIT:
                shared.clear()
            shared[value] = value
        elif found is not value:  # often the same object already (the standardisers remember)
            setattr(r, name, found)
    if not r.ids:
        r.ids = _NO_IDS
    if not r.invalid_ids:
        r.invalid_ids = _NO_IDS
    if not r.phones:
        r.phones = _NOTHING
    if not r.emails:
        r.emails = _NOTHING
    return r


def _current_address(addresses: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The address without an end date (else the latest-starting one)."""
    addresses = list(addresses)
    if not addresses:
        return None
    open_ended = [a for a in addresses if not a.get("valid_to")]
    pool = open_ended or addresses
    return max(pool, key=lambda a: a.get("valid_from") or "")


def _check_linkable(r: LinkRecord) -> None:
    if r.ids:
        return
    has_name = bool(r.family or r.given)
    has_anchor = bool(r.dob or r.postcode or r.address)
    if has_name and has_anchor:
        return
    missing = []
    if not has_name:
        missing.append("a name")
    if not has_anchor:
        missing.append("a date of birth or address")
    invalid = f" (invalid identifiers not used: {', '.join(sorted(r.invalid_ids))})" if r.invalid_ids else ""
    raise UnlinkableRecordError(
        f"record {r.key} has no valid shared identifier and lacks {' and '.join(missing)}{invalid}"
    )
