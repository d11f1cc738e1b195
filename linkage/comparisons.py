"""Comparison levels, in the style of Splink: each field comparison returns one level index.

Level 0 is the strongest agreement; the last level is "else". ``MISSING`` (-1) means one side has
no value, which contributes no evidence either way. The levels are data-independent; how much each
level weighs is the model's business (``linkage.model``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from caselink.linkage.record import LinkRecord
from caselink.linkage.schemes import DEFAULT_CATALOGUE, IdentifierScheme
from rapidfuzz.distance import OSA, JaroWinkler
from rapidfuzz.fuzz import token_set_ratio

MISSING = -1
_jw = JaroWinkler.normalized_similarity
# "One edit" (an insertion, deletion, substitution or swap of neighbours) is a Damerau-Levenshtein
# distance of at most 1. The optimal string alignment distance is the same at that distance (it
# differs only for strings edited twice in one place) and three times quicker in rapidfuzz
# (100 ns against 327 ns), and these checks run several times for every candidate pair.
_osa = OSA.distance


@dataclass(frozen=True)
class Comparison:
    name: str
    levels: tuple[str, ...]
    compare: Callable[[LinkRecord, LinkRecord], int]
    # level -> the record value whose term frequency replaces u at that level (a shared common
    # surname, or a postal code most records carry, is weak evidence; a rare one strong)
    tf_levels: tuple[tuple[int, str], ...] = ()
    # Levels that are not evidence either way: their weight is held at 0 (m = u) rather than
    # learned, because random pairs cannot show how often non-matches reach them.
    neutral_levels: tuple[int, ...] = ()

    @property
    def n_levels(self) -> int:
        return len(self.levels)

    @property
    def tf_field(self) -> str | None:
        """The value adjusting the exact level, if any."""
        return dict(self.tf_levels).get(0)


def tf_value(record: LinkRecord, field: str) -> str | None:
    """The value a term-frequency table is keyed by (a postal code by its code)."""
    value = getattr(record, field)
    if field == "postcode":
        return value.code if value is not None else None
    return value  # type: ignore[no-any-return]


def _swapped(x: str, y: str, x_other: str | None, y_other: str | None) -> bool:
    """Given and family name in each other's places, allowing a typo in either."""
    if not x_other or not y_other:
        return False
    return (x == y_other or _jw(x, y_other) >= 0.85) and (y == x_other or _jw(y, x_other) >= 0.85)


def _in_other_field(name: str, other: str | None) -> bool:
    """One record's family name given as the other's first name (a typo allowed)."""
    return bool(other) and (name == other or _jw(name, other) >= 0.92)  # type: ignore[arg-type]


def _given(a: LinkRecord, b: LinkRecord) -> int:
    x, y = a.given, b.given
    if not x or not y:
        return MISSING
    if x == y:
        return 0
    sim = _jw(x, y)
    if sim >= 0.92:
        return 1
    if a.given_canon == b.given_canon or _swapped(x, y, a.family, b.family):
        return 2
    if sim >= 0.80:
        return 3
    # Given and middle name swapped, or one record uses the middle name.
    if (a.middle and y in a.middle.split()) or (b.middle and x in b.middle.split()):
        return 3
    if a.given_phon == b.given_phon:
        return 4
    if len(x) == 1 or len(y) == 1:
        return 4 if x[0] == y[0] else 5
    return 5


GIVEN = Comparison("given_name", ("exact", "jw_0.92", "nickname_or_swapped", "jw_0.80", "phonetic_or_initial", "else"),
                   _given, tf_levels=((0, "given"),))


def _family(a: LinkRecord, b: LinkRecord) -> int:
    x, y = a.family, b.family
    if not x or not y:
        return MISSING
    if x == y:
        return 0
    sim = _jw(x, y)
    if sim >= 0.92:
        return 1
    # A shared part of a double-barrelled name, or a previous family name.
    if (set(a.family_parts) & set(b.family_parts) or x in b.other_families or y in a.other_families
            or _in_other_field(x, b.given) or _in_other_field(y, a.given)):  # names swapped between the fields
        return 2
    if sim >= 0.80:
        return 3
    if a.family_phon == b.family_phon:
        return 4
    return 5


FAMILY = Comparison("family_name", ("exact", "jw_0.92", "part_previous_or_swapped", "jw_0.80", "phonetic", "else"),
                    _family, tf_levels=((0, "family"),))


def _dob(a: LinkRecord, b: LinkRecord) -> int:
    x, y = a.dob, b.dob
    if x is None or y is None:
        return MISSING
    if x.digits == y.digits:
        return 0
    if x.year == y.year and x.month == y.day and x.day == y.month:
        return 1
    if _osa(x.digits, y.digits) <= 1:
        return 2
    if x.year == y.year and x.month == y.month:
        return 3
    if x.year == y.year:
        return 4
    if x.year_number >= 0 and y.year_number >= 0 and abs(x.year_number - y.year_number) <= 10:
        return 5
    return 6


# Years far apart are a different generation (a grandfather and his grandson of one name at one
# address), not a mistyped date: a level of their own, apart from dates within a decade.
DOB = Comparison("date_of_birth", ("exact", "day_month_swapped", "one_edit", "same_month", "same_year",
                                   "within_10_years", "else"), _dob)


def _postcode(a: LinkRecord, b: LinkRecord) -> int:
    x, y = a.postcode, b.postcode
    if x is None or y is None:
        return MISSING
    if x.code == y.code:
        return 0
    if x.sector is not None and x.sector == y.sector:
        return 1
    if _osa(x.code, y.code) <= 1:
        return 2
    if x.district is not None and x.district == y.district:
        return 3
    return 4


POSTCODE = Comparison("postcode", ("exact", "sector", "one_edit", "district", "else"), _postcode)


def _address(a: LinkRecord, b: LinkRecord) -> int:
    x, y = a.address, b.address
    if not x or not y:
        return MISSING
    if x == y:
        return 0
    score = token_set_ratio(x, y)
    if score >= 90:
        return 1
    if score >= 70:
        return 2
    return 3


ADDRESS = Comparison("address", ("exact", "tokens_90", "tokens_70", "else"), _address)


def _locality(a: LinkRecord, b: LinkRecord) -> int:
    x, y = a.locality, b.locality
    if not x or not y:
        return MISSING
    if x == y:
        return 0
    return 1 if _jw(x, y) >= 0.88 else 2


LOCALITY = Comparison("locality", ("exact", "jw_0.88", "else"), _locality)


def _sex(a: LinkRecord, b: LinkRecord) -> int:
    if a.sex is None or b.sex is None:
        return MISSING
    return 0 if a.sex == b.sex else 1


SEX = Comparison("sex", ("exact", "else"), _sex)


_GIVEN_ELSE = 5
_DOB_AGREES = 3  # below this level: exact, day and month swapped, or one edit apart


def _other_person(a: LinkRecord, b: LinkRecord) -> bool:
    """The two records name different people: first names that disagree outright, and dates of
    birth that disagree too or are missing on a side. An identifier they share was then more
    likely borrowed (a household member's number on a form) than mistyped twice."""
    if _given(a, b) != _GIVEN_ELSE:
        return False
    dob = _dob(a, b)
    return dob == MISSING or dob >= _DOB_AGREES


def identifier_comparison(scheme: IdentifierScheme) -> Comparison:
    """One scheme's values compared, its weights learned apart from any other scheme's.

    Levels: the same value; the same value on records that name different people (held at
    weight 0: see ``_other_person``); for schemes without a check digit, one edit apart (a
    mistyped digit or two swapped, strong but not exact evidence); else different values.
    """
    name = scheme.name
    typos = bool(scheme.typos)

    def compare(a: LinkRecord, b: LinkRecord) -> int:
        x = a.ids.get(name)
        if x is None:
            return MISSING
        y = b.ids.get(name)
        if y is None:
            return MISSING
        if x == y:
            return 1 if _other_person(a, b) else 0
        if typos:
            return 2 if _osa(x, y) <= 1 else 3
        return 2

    levels = ("exact", "exact_other_person", *(("one_edit",) if typos else ()), "else")
    return Comparison(f"{IDENTIFIER_PREFIX}{name}", levels, compare, neutral_levels=(1,))


IDENTIFIER_PREFIX = "identifier:"


def _contact(a: LinkRecord, b: LinkRecord) -> int:
    if (not a.phones and not a.emails) or (not b.phones and not b.emails):
        return MISSING
    if a.phones & b.phones or a.emails & b.emails:
        return 0
    return 1


CONTACT = Comparison("contact", ("shared_phone_or_email", "else"), _contact)

def _location(a: LinkRecord, b: LinkRecord) -> int:
    """Where they live, as one piece of evidence.

    Postcode, street address and town say the same thing; scored as three independent comparisons
    they triple-count it, and everyone in a household looks like one person. One comparison with
    ordered levels weighs "same home" once.
    """
    pa, pb, xa, xb = a.postcode, b.postcode, a.address, b.address
    la, lb = a.locality, b.locality
    both_pc = pa is not None and pb is not None
    if not both_pc and (not xa or not xb) and (not la or not lb):
        return MISSING
    same_pc = both_pc and pa.code == pb.code  # type: ignore[union-attr]
    near_pc = both_pc and (
        (pa.sector is not None and pa.sector == pb.sector) or _osa(pa.code, pb.code) <= 1)  # type: ignore[union-attr]
    # The address similarity matters only for levels 0 to 4. Different postcodes far apart in
    # different towns rule all three out: the usual case for two different people, and the
    # token comparison is the dearest step of the pair, so it is skipped then.
    if xa and xb and (same_pc or near_pc or not both_pc or la == lb):
        addr = token_set_ratio(xa, xb)
    else:
        addr = -1.0
    if addr >= 90 and same_pc:
        return 0
    if addr >= 90 and (near_pc or not both_pc) and (la is None or lb is None or la == lb):
        return 1
    if same_pc:
        return 2 if addr >= 70 else 3
    if addr >= 70 and (la == lb or near_pc):
        return 4
    if near_pc:
        return 5
    if (both_pc and pa.district is not None and pa.district == pb.district) or (  # type: ignore[union-attr]
            la and lb and _jw(la, lb) >= 0.88):
        return 6
    return 7


LOCATION = Comparison(
    "location",
    ("same_address", "same_address_near_postcode", "similar_address_same_postcode", "same_postcode",
     "similar_address", "postcode_sector", "same_district_or_town", "else"),
    _location,
    # A postal code or town most records carry says little; a whole address shared by a
    # household of five among a million says a lot.
    tf_levels=((0, "address"), (1, "address"), (2, "postcode"), (3, "postcode"), (6, "locality")),
)

# Where someone lives counts once (households share it): the default for agency data.
PERSON_COMPARISONS: tuple[Comparison, ...] = (GIVEN, FAMILY, DOB, SEX, LOCATION, CONTACT)
# For data sets without households, such as FEBRL, address fields can count separately.
SEPARATE_ADDRESS_PERSON_COMPARISONS: tuple[Comparison, ...] = (
    GIVEN, FAMILY, DOB, SEX, POSTCODE, ADDRESS, LOCALITY, CONTACT,
)
BY_NAME = {c.name: c for c in (*SEPARATE_ADDRESS_PERSON_COMPARISONS, LOCATION)}


def default_comparisons(schemes: Iterable[IdentifierScheme] = DEFAULT_CATALOGUE.shared.values(),
                        separate_address: bool = False) -> tuple[Comparison, ...]:
    """One comparison per shared identifier scheme, then the person's details."""
    person = SEPARATE_ADDRESS_PERSON_COMPARISONS if separate_address else PERSON_COMPARISONS
    return (*(identifier_comparison(s) for s in sorted(schemes, key=lambda s: s.name)), *person)


DEFAULT_COMPARISONS = default_comparisons()


def comparison_named(name: str, schemes: Mapping[str, IdentifierScheme]) -> Comparison:
    """The comparison a model file names: a fixed one, or ``identifier:<scheme>``."""
    if name.startswith(IDENTIFIER_PREFIX):
        scheme = schemes.get(name[len(IDENTIFIER_PREFIX):])
        if scheme is None or not scheme.shared:
            raise KeyError(f"{name}: the scheme is not a shared scheme of this model's rules")
        return identifier_comparison(scheme)
    if name not in BY_NAME:
        raise KeyError(f"unknown comparison {name!r}; known: {', '.join(BY_NAME)}, {IDENTIFIER_PREFIX}<scheme>")
    return BY_NAME[name]


def comparison_vector(a: LinkRecord, b: LinkRecord,
                      comparisons: tuple[Comparison, ...] = DEFAULT_COMPARISONS) -> list[int]:
    return [c.compare(a, b) for c in comparisons]
