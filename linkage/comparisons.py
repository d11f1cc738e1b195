"""Comparison levels, in the style of Splink: each field comparison returns one level index.

Level 0 is the strongest agreement; the last level is "else". ``MISSING`` (-1) means one side has
no value, which contributes no evidence either way. The levels are data-independent; how much each
level weighs is the model's business (``linkage.model``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from caselink.linkage.record import LinkRecord
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
    tf_field: str | None = None  # record attribute whose term frequency adjusts the exact level

    @property
    def n_levels(self) -> int:
        return len(self.levels)


def _given(a: LinkRecord, b: LinkRecord) -> int:
    x, y = a.given, b.given
    if not x or not y:
        return MISSING
    if x == y:
        return 0
    sim = _jw(x, y)
    if sim >= 0.92:
        return 1
    if a.given_canon == b.given_canon or (x == b.family and y == a.family):
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
                   _given, tf_field="given")


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
            or x == b.given or y == a.given):  # names swapped between the fields
        return 2
    if sim >= 0.80:
        return 3
    if a.family_phon == b.family_phon:
        return 4
    return 5


FAMILY = Comparison("family_name", ("exact", "jw_0.92", "part_previous_or_swapped", "jw_0.80", "phonetic", "else"),
                    _family, tf_field="family")


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
    return 5


DOB = Comparison("date_of_birth", ("exact", "day_month_swapped", "one_edit", "same_month", "same_year", "else"),
                 _dob)


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


def _identifier(a: LinkRecord, b: LinkRecord) -> int:
    if not a.ids or not b.ids:
        return MISSING
    best = MISSING
    for scheme, value in a.ids.items():
        other = b.ids.get(scheme)
        if other is None:
            continue
        if other == value:
            return 0
        level = 1 if _osa(other, value) <= 1 else 2
        best = level if best == MISSING else min(best, level)
    return best


IDENTIFIER = Comparison("identifier", ("exact", "one_edit", "else"), _identifier)


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
    # The address similarity matters only for levels 0, 1 and 3. Different postcodes far apart in
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
        return 2
    if addr >= 70 and (la == lb or near_pc):
        return 3
    if near_pc:
        return 4
    if (both_pc and pa.district is not None and pa.district == pb.district) or (  # type: ignore[union-attr]
            la and lb and _jw(la, lb) >= 0.88):
        return 5
    return 6


LOCATION = Comparison(
    "location",
    ("same_address", "same_address_near_postcode", "same_postcode", "similar_address", "postcode_sector",
     "same_district_or_town", "else"),
    _location,
)

# Default for agency data: where someone lives counts once (households share it).
DEFAULT_COMPARISONS: tuple[Comparison, ...] = (IDENTIFIER, GIVEN, FAMILY, DOB, SEX, LOCATION, CONTACT)
# For data sets without households, such as FEBRL, address fields can count separately.
SEPARATE_ADDRESS_COMPARISONS: tuple[Comparison, ...] = (
    IDENTIFIER, GIVEN, FAMILY, DOB, SEX, POSTCODE, ADDRESS, LOCALITY, CONTACT,
)
BY_NAME = {c.name: c for c in (*SEPARATE_ADDRESS_COMPARISONS, LOCATION)}


def comparison_vector(a: LinkRecord, b: LinkRecord,
                      comparisons: tuple[Comparison, ...] = DEFAULT_COMPARISONS) -> list[int]:
    return [c.compare(a, b) for c in comparisons]
