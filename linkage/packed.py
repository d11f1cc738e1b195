"""A standardised record and its blocking keys as bytes, so they are worked out once, not twice.

The normaliser standardises every record to check that it can be linked, and the linker, the one
single-threaded writer of the index, used to do it all again: standardising and making the
blocking keys was 28 µs of the linker's ~170 µs per event. The normaliser (which has CPU to
spare, in processes of its own) now sends both along with the event, and the linker unpacks them
in a few microseconds. The header is read only from the link input, which only the worker
principal may write (``infra/acls.py``), and what it unpacks to is type-checked.

Unpacking never changes a result: the bytes carry a fingerprint of the code that made them (the
standardisation, nickname and blocking modules and the phonetic library's version) and of the
rules they were made under (``linkage.rules``), and a record packed by different code or rules,
or damaged, unpacks to None, so the caller standardises the event as
it always did. ``marshal`` is used because every value is a str, bool, tuple, frozenset or dict
of str: it is the fastest exact round trip for those, and it refuses anything else.
"""

from __future__ import annotations

import hashlib
import marshal
from importlib.metadata import version
from pathlib import Path
from typing import Any

from caselink.linkage.record import LinkRecord, share_values
from caselink.linkage.rules import DEFAULT_RULES, LinkageRules
from caselink.linkage.standardise import StdDate, StdPostcode

_HERE = Path(__file__).parent
_SOURCES = ("standardise.py", "nicknames.py", "record.py", "blocking.py", "packed.py", "schemes.py", "rules.py")


def _fingerprint() -> bytes:
    digest = hashlib.sha256(f"jellyfish {version('jellyfish')}".encode())
    for name in _SOURCES:
        digest.update((_HERE / name).read_bytes())
    return digest.digest()[:8]


FINGERPRINT = _fingerprint()
_SLOTS = tuple(s for s in LinkRecord.__slots__ if s not in ("dob", "postcode"))
_CACHE_LIMIT = 100_000
_dates: dict[tuple[str, bool], StdDate] = {}
_postcodes: dict[tuple[Any, ...], StdPostcode] = {}


_stamps: dict[str, bytes] = {}


def stamp(rules: LinkageRules) -> bytes:
    """8 bytes naming the code and the rules (identifier schemes, fillers) a record was made under."""
    found = _stamps.get(rules.fingerprint)
    if found is None:
        found = _stamps[rules.fingerprint] = hashlib.sha256(FINGERPRINT + rules.fingerprint.encode()).digest()[:8]
    return found


def pack(record: LinkRecord, keys: list[str], rules: LinkageRules = DEFAULT_RULES) -> bytes:
    dob = (record.dob.digits, record.dob.valid) if record.dob is not None else None
    pc = record.postcode
    postcode = (pc.code, pc.sector, pc.district, pc.area) if pc is not None else None
    return stamp(rules) + marshal.dumps((tuple(getattr(record, s) for s in _SLOTS), dob, postcode, keys))


def unpack(data: bytes | None, key: str, rules: LinkageRules = DEFAULT_RULES) -> tuple[LinkRecord, list[str]] | None:
    """(record, blocking keys) from ``pack``'s bytes for the record ``key``; None unless they were
    packed by this very code, under these rules, for that record."""
    fields = _fields(data, rules)
    if fields is None:
        return None
    values, dob, postcode, keys = fields
    if not _well_typed(values, dob, postcode, keys):
        return None
    try:
        r = LinkRecord()
        for name, value in zip(_SLOTS, values, strict=True):
            setattr(r, name, value)
        r.dob = _shared(_dates, dob, StdDate) if dob is not None else None
        r.postcode = _shared(_postcodes, postcode, StdPostcode) if postcode is not None else None
    except (ValueError, TypeError):
        return None
    if r.key != key:
        return None
    r.key = key  # the caller's string, which the index keys its maps by: one copy a record, not two
    return share_values(r), keys


def unpack_ids_and_keys(data: bytes | None, key: str,
                        rules: LinkageRules = DEFAULT_RULES) -> tuple[dict[str, str], list[str]] | None:
    """Only the identifiers and blocking keys of ``pack``'s bytes for the record ``key`` (what a block
    shard and the resolver of the sharded index need), without making the record; None as
    ``unpack`` would be."""
    fields = _fields(data, rules)
    if fields is None:
        return None
    values, _dob, _postcode, keys = fields
    if type(values) is not tuple or len(values) != len(_SLOTS) or type(keys) is not list or not _strings(keys):
        return None
    ids = values[_IDS_AT]
    if values[_KEY_AT] != key or type(ids) is not dict or not _strings(ids) or not _strings(ids.values()):
        return None
    return ids, keys


def _fields(data: bytes | None, rules: LinkageRules) -> tuple[Any, Any, Any, Any] | None:
    """The four fields ``pack`` wrote, if this very code wrote them under these rules."""
    if not data or data[:8] != stamp(rules):
        return None
    try:
        fields = marshal.loads(data[8:])
    except (ValueError, EOFError, TypeError):
        return None
    return fields if type(fields) is tuple and len(fields) == 4 else None


# What each slot holds: a string (or None), a tuple of strings, a dict of strings, a frozenset of strings.
_KINDS = {"address": "str", "emails": "set", "family": "str", "family_parts": "tuple", "family_phon": "str",
          "given": "str", "given_canon": "str", "given_phon": "str", "ids": "dict", "invalid_ids": "dict",
          "key": "str", "locality": "str", "middle": "str", "other_families": "tuple", "phones": "set", "sex": "str"}
_SLOT_KINDS = tuple(_KINDS[s] for s in _SLOTS)
_KIND_TYPES = {"tuple": tuple, "set": frozenset, "dict": dict}
_KEY_AT = _SLOTS.index("key")
_IDS_AT = _SLOTS.index("ids")


def _strings(values: Any) -> bool:
    try:
        "".join(values)  # raises TypeError for anything but strings, and quicker than checking each
    except TypeError:
        return False
    return True


_STR_OR_NONE = frozenset({str, type(None)})


def _well_typed(values: Any, dob: Any, postcode: Any, keys: Any) -> bool:
    """Every value of the kind ``standardise_person`` makes, so a record that unpacks can be
    compared and indexed like one standardised here (the linker stops on a TypeError)."""
    if type(values) is not tuple or len(values) != len(_SLOTS) or type(keys) is not list or not _strings(keys):
        return False
    for kind, v in zip(_SLOT_KINDS, values, strict=True):
        t = type(v)
        if kind == "str":
            if t not in _STR_OR_NONE:
                return False
        elif t is not _KIND_TYPES[kind] or not _strings(v) or (t is dict and not _strings(v.values())):
            return False
    if values[_KEY_AT] is None:
        return False
    if dob is not None and (type(dob) is not tuple or len(dob) != 2 or type(dob[0]) is not str
                            or type(dob[1]) is not bool):
        return False
    return postcode is None or (type(postcode) is tuple and len(postcode) == 4 and type(postcode[0]) is str
                                and all(type(p) in _STR_OR_NONE for p in postcode[1:]))


def _shared(cache: dict[Any, Any], fields: Any, kind: Any) -> Any:
    """One object per distinct date or postcode (built once: StdDate slices its digits on creation)."""
    found = cache.get(fields)
    if found is None:
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        found = cache[fields] = kind(*fields)
    return found
