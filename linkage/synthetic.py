"""Synthetic multi-agency records with ground truth, corrupted the way real systems corrupt them.

No real people: names come from short common-name lists, dates and numbers are random, NHS
numbers are random but carry a valid modulus-11 check digit, postcodes are random but UK-shaped.
Households give the hard cases: families sharing a surname and address, twins sharing a date of
birth and address, adults changing surname, people moving house. Each agency sees a different
subset of people and fills fields differently (police rarely hold NHS numbers, schools hold UPNs),
and every record may carry typos, nicknames, swapped day and month, or missing values.
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

FEMALE = (
    "olivia amelia isla ava mia ivy lily isabella rosie sophia grace freya willow florence emily ella "
    "poppy evie elsie charlotte evelyn sienna sofia daisy phoebe sophie alice harper matilda ruby emilia "
    "maya millie hannah sarah jessica lucy chloe katie megan rebecca laura emma rachel amy lauren "
    "elizabeth margaret susan patricia jennifer linda barbara deborah catherine victoria natalie "
    "abigail samantha josephine eleanor caroline louise joanna stephanie rosemary penelope"
).split()
MALE = (
    "oliver noah george arthur muhammad leo harry oscar archie henry theodore freddie jack charlie theo "
    "jacob alfie finley thomas william james joshua daniel samuel joseph david michael christopher "
    "matthew andrew robert richard edward benjamin alexander nicholas anthony jonathan peter stephen "
    "timothy patrick philip kenneth lawrence leonard frederick gregory ronald zachary nathaniel "
    "liam ethan lucas mason logan adam ryan kyle connor callum"
).split()
SURNAMES = (
    "smith jones williams taylor brown davies evans wilson thomas johnson roberts robinson thompson "
    "wright walker white edwards hughes green hall lewis harris clarke patel jackson wood turner martin "
    "cooper hill ward morris moore clark lee king baker harrison morgan allen james scott phillips watson "
    "davis parker price bennett young griffiths mitchell kelly cook carter richardson bailey collins bell "
    "shaw murphy miller cox richards khan marshall anderson simpson ellis adams singh begum wilkinson "
    "foster chapman powell webb rogers gray mason ali hussain campbell matthews owen palmer holmes mills "
    "barnes knight lloyd butler russell barker fisher stevens jenkins murray dixon harvey graham pearson "
    "ahmed fletcher walsh kaur gibson howard andrews stewart elliott reynolds saunders payne fox ford "
    "pearce day brooks west lawrence cole atkinson bradley spencer gill dawson ball burton obrien watts "
    "rose booth perry ryan grant wells armstrong francis rees hayes hart hudson newman barrett webster "
    "hunt oneill nowak kowalski oconnor mcdonald macleod van-der-berg okafor adeyemi nguyen rahman "
    "hassan mohammed chowdhury zhang wang li sandhu gordon-smith fitzgerald kennedy sullivan byrne"
).split()
STREETS = (
    "mill church station park victoria high green manor kings queens albert chapel school new north "
    "south west east main london york grove oak elm ash beech cedar willow meadow orchard spring "
    "windsor castle bridge river hill springfield richmond stanley cromwell nelson wellington "
    "alexandra beaconsfield blenheim brook cambridge chester clarence coronation devonshire eden "
    "elmfield fairfield farm field forest gladstone grange hawthorn heath highfield holly ivy jubilee "
    "kingsway lancaster laurel lime linden marlborough mayfield moor mount nursery oxford palmerston "
    "poplar priory queensway raglan regent rosebery rowan salisbury sandringham shakespeare sherwood "
    "somerset stafford sycamore thornhill tudor union valley vicarage warwick waterloo well westfield "
    "wharf whitehall windmill woodland"
).split()
STREET_TYPES = ["road", "street", "lane", "avenue", "close", "drive", "way", "crescent", "gardens", "terrace"]
# Postcode areas and their post towns: enough of the country that a million people are spread as
# thinly as in real data (the first version had ten, which made every place-based key huge).
TOWNS = {
    "AB": "aberdeen", "B": "birmingham", "BA": "bath", "BB": "blackburn", "BD": "bradford",
    "BH": "bournemouth", "BL": "bolton", "BN": "brighton", "BR": "bromley", "BS": "bristol", "CA": "carlisle",
    "CB": "cambridge", "CF": "cardiff", "CH": "chester", "CM": "chelmsford", "CO": "colchester",
    "CR": "croydon", "CT": "canterbury", "CV": "coventry", "CW": "crewe", "DA": "dartford", "DE": "derby",
    "DH": "durham", "DL": "darlington", "DN": "doncaster", "DT": "dorchester", "DY": "dudley", "E": "london",
    "EH": "edinburgh", "EX": "exeter", "FY": "blackpool", "G": "glasgow", "GL": "gloucester",
    "GU": "guildford", "HA": "harrow", "HD": "huddersfield", "HG": "harrogate", "HP": "hemel hempstead",
    "HR": "hereford", "HU": "hull", "HX": "halifax", "IP": "ipswich", "KT": "kingston", "L": "liverpool",
    "LA": "lancaster", "LE": "leicester", "LN": "lincoln", "LS": "leeds", "LU": "luton", "M": "manchester",
    "ME": "rochester", "MK": "milton keynes", "N": "london", "NE": "newcastle", "NG": "nottingham",
    "NN": "northampton", "NP": "newport", "NR": "norwich", "NW": "london", "OL": "oldham", "OX": "oxford",
    "PE": "peterborough", "PL": "plymouth", "PO": "portsmouth", "PR": "preston", "RG": "reading",
    "RH": "redhill", "S": "sheffield", "SA": "swansea", "SE": "london", "SK": "stockport",
    "SL": "slough", "SN": "swindon", "SO": "southampton", "SR": "sunderland", "SS": "southend",
    "ST": "stoke", "SW": "london", "SY": "shrewsbury", "TF": "telford", "TN": "tonbridge", "TS": "cleveland",
    "WA": "warrington", "WD": "watford", "WF": "wakefield", "WN": "wigan", "WR": "worcester",
    "WS": "walsall", "WV": "wolverhampton", "YO": "york",
}
POSTCODE_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"
NICKNAMES = {
    "elizabeth": "liz", "margaret": "maggie", "catherine": "kate", "rebecca": "becky", "jennifer": "jenny",
    "victoria": "vicky", "samantha": "sam", "abigail": "abby", "josephine": "josie", "eleanor": "ellie",
    "william": "bill", "james": "jim", "robert": "bob", "richard": "rick", "michael": "mike", "thomas": "tom",
    "daniel": "dan", "joseph": "joe", "christopher": "chris", "matthew": "matt", "andrew": "andy",
    "edward": "ted", "alexander": "alex", "nicholas": "nick", "anthony": "tony", "benjamin": "ben",
    "samuel": "sam", "jonathan": "jon", "timothy": "tim", "stephen": "steve", "peter": "pete",
    "patrick": "paddy", "frederick": "fred", "zachary": "zach", "joshua": "josh", "jacob": "jake",
    "theodore": "theo", "stephanie": "steph", "penelope": "penny", "natalie": "nat",
}
AGENCIES = ("health", "social_care", "police", "education", "housing")


def nhs_number(rng: random.Random) -> str:
    while True:
        digits = [rng.randrange(10) for _ in range(9)]
        total = sum(d * w for d, w in zip(digits, range(10, 1, -1), strict=True))
        check = 11 - total % 11
        check = 0 if check == 11 else check
        if check != 10:
            return "".join(map(str, digits)) + str(check)


def ni_number(rng: random.Random) -> str:
    first = rng.choice("ABCEGHJKLMNPRSTWXYZ")
    second = rng.choice("ABCEGHJKLMNPRSTWXYZ")
    return first + second + "".join(rng.choice(string.digits) for _ in range(6)) + rng.choice("ABCD")


_UPN_CHECK_LETTERS = "ABCDEFGHJKLMNPQRTUVWXYZ"


def upn(rng: random.Random) -> str:
    """A Unique Pupil Number with its check letter (the weighted sum of the 12 digits modulo 23)."""
    digits = "".join(rng.choice(string.digits) for _ in range(12))
    total = sum(int(d) * w for d, w in zip(digits, range(2, 14), strict=True))
    return _UPN_CHECK_LETTERS[total % 23] + digits


def postcode(rng: random.Random) -> tuple[str, str]:
    area = rng.choice(list(TOWNS))
    code = f"{area}{rng.randint(1, 20)} {rng.randint(1, 9)}{rng.choice(POSTCODE_LETTERS)}{rng.choice(POSTCODE_LETTERS)}"
    return code, TOWNS[area]


def _address(rng: random.Random) -> dict[str, Any]:
    code, town = postcode(rng)
    line = f"{rng.randint(1, 180)} {rng.choice(STREETS)} {rng.choice(STREET_TYPES)}"
    return {"lines": [line], "locality": town, "postcode": code}


@dataclass
class TruePerson:
    person_id: str
    given: str
    middle: str | None
    family: str
    birth_family: str | None
    dob: date
    sex: str
    address: dict[str, Any]
    previous_address: dict[str, Any] | None
    nhs: str
    ni: str | None
    upn: str | None
    phone: str | None
    email: str | None


@dataclass
class SyntheticConfig:
    seed: int = 7
    typo_rate: float = 0.06
    nickname_rate: float = 0.08
    swap_dm_rate: float = 0.02
    missing_dob_rate: float = 0.02
    missing_given_rate: float = 0.01
    agency_share: dict[str, float] = field(default_factory=lambda: {
        "health": 0.95, "social_care": 0.08, "police": 0.07, "education": 0.9, "housing": 0.3,
    })
    duplicate_rate: float = 0.03  # a second record for the same person in the same agency


def _typo(rng: random.Random, text: str) -> str:
    if len(text) < 3:
        return text
    i = rng.randrange(1, len(text))
    op = rng.random()
    if op < 0.3:
        return text[:i] + text[i + 1:]
    if op < 0.6 and i < len(text) - 1:
        return text[:i] + text[i + 1] + text[i] + text[i + 2:]
    if op < 0.8:
        return text[:i] + rng.choice(string.ascii_lowercase) + text[i + 1:]
    return text[:i] + rng.choice(string.ascii_lowercase) + text[i:]


def population(n_people: int, seed: int = 7) -> list[TruePerson]:
    """People in households: shared surname and address, some twins, some surname changes and moves."""
    rng = random.Random(seed)
    people: list[TruePerson] = []
    today = date(2026, 11, 1)
    surname_weights = [1.0 / (i + 1) ** 0.7 for i in range(len(SURNAMES))]
    while len(people) < n_people:
        family = rng.choices(SURNAMES, surname_weights)[0]
        address = _address(rng)
        adults = rng.choice((1, 2, 2, 2))
        kids = rng.choice((0, 0, 1, 2, 2, 3, 4))
        for i in range(adults + kids):
            if len(people) >= n_people:
                break
            adult = i < adults
            if adult:
                dob = today - timedelta(days=rng.randint(19 * 365, 85 * 365))
            elif i > adults and rng.random() < 0.04:  # twin of the previous child
                dob = people[-1].dob
            else:
                dob = today - timedelta(days=rng.randint(0, 17 * 365))
            sex = rng.choice("FM")
            given = rng.choice(FEMALE if sex == "F" else MALE)
            birth_family = None
            own_family = family
            if adult and i == 1 and rng.random() < 0.5:
                birth_family = rng.choices(SURNAMES, surname_weights)[0]  # changed surname on marriage
            moved = rng.random() < 0.08
            person = TruePerson(
                person_id=f"P{len(people) + 1:08d}", given=given,
                middle=rng.choice(FEMALE if sex == "F" else MALE) if rng.random() < 0.3 else None,
                family=own_family, birth_family=birth_family if birth_family != own_family else None,
                dob=dob, sex=sex, address=address,
                previous_address=_address(rng) if moved else None,
                nhs=nhs_number(rng), ni=ni_number(rng) if adult else None,
                upn=upn(rng) if not adult and (today - dob).days > 4 * 365 else None,
                phone=f"07{rng.randint(100000000, 999999999)}" if adult and rng.random() < 0.6 else None,
                email=f"{given}.{own_family}{rng.randint(1, 99)}@example.org" if adult and rng.random() < 0.3 else None,
            )
            people.append(person)
    return people


def _agency_record(rng: random.Random, p: TruePerson, agency: str, cfg: SyntheticConfig) -> dict[str, Any]:
    given = p.given
    if given in NICKNAMES and rng.random() < cfg.nickname_rate:
        given = NICKNAMES[given]
    if rng.random() < cfg.typo_rate:
        given = _typo(rng, given)
    family = p.family
    other_names: list[str] = []
    if p.birth_family:
        if rng.random() < 0.25:  # this agency still holds the birth surname
            family = p.birth_family
        elif rng.random() < 0.5:
            other_names = [p.birth_family]
    if rng.random() < cfg.typo_rate:
        family = _typo(rng, family)
    dob: str | None = p.dob.isoformat()
    r = rng.random()
    if r < cfg.swap_dm_rate and p.dob.day <= 12:
        dob = f"{p.dob.year:04d}-{p.dob.day:02d}-{p.dob.month:02d}"
    elif r < cfg.swap_dm_rate + cfg.typo_rate / 2:
        dob = (p.dob + timedelta(days=rng.choice((-1, 1, 10, -10, 365)))).isoformat()
    elif r < cfg.swap_dm_rate + cfg.typo_rate / 2 + cfg.missing_dob_rate:
        dob = None
    address = p.address
    if p.previous_address and rng.random() < 0.5:
        address = p.previous_address  # this agency has not heard about the move
    address = dict(address)
    if rng.random() < cfg.typo_rate:
        address["lines"] = [_typo(rng, address["lines"][0])]
    if rng.random() < 0.05:
        address["postcode"] = None
    identifiers: dict[str, str] = {}
    nhs_share = {"health": 0.97, "social_care": 0.7, "police": 0.15, "education": 0.3, "housing": 0.1}[agency]
    if rng.random() < nhs_share:
        nhs = p.nhs
        if rng.random() < 0.01:
            nhs = nhs[:-1] + str((int(nhs[-1]) + 1) % 10)  # mistyped: fails the check digit
        identifiers["nhs_number"] = nhs
    if p.ni and agency in ("police", "housing") and rng.random() < 0.5:
        identifiers["ni_number"] = p.ni
    if p.upn and agency in ("education", "social_care") and rng.random() < 0.9:
        identifiers["upn"] = p.upn
    return {
        "given_names": None if rng.random() < cfg.missing_given_rate else
        (f"{given} {p.middle}" if p.middle and rng.random() < 0.5 else given).title(),
        "family_name": family.replace("-", "-").title(),
        "other_names": [n.title() for n in other_names],
        "date_of_birth": dob,
        "sex": p.sex if rng.random() > 0.02 else None,
        "identifiers": identifiers,
        "addresses": [{"lines": [line.title() for line in address["lines"]], "locality": address["locality"].title(),
                       "postcode": address["postcode"]}],
        "phones": [p.phone] if p.phone and rng.random() < 0.5 else [],
        "emails": [p.email] if p.email and rng.random() < 0.3 else [],
    }


def _eligible(p: TruePerson, agency: str) -> bool:
    age = (date(2026, 11, 1) - p.dob).days / 365.25
    if agency == "education":
        return 4 <= age <= 18
    if agency == "housing":
        return age >= 18
    if agency == "police":
        return age >= 10
    return True


def agency_records(
    n_people: int, config: SyntheticConfig | None = None
) -> Iterator[dict[str, Any]]:
    """Records as agencies hold them: {agency, source_record_id, person, truth}."""
    cfg = config or SyntheticConfig()
    rng = random.Random(cfg.seed + 1)
    counters = dict.fromkeys(AGENCIES, 0)
    for p in population(n_people, cfg.seed):
        for agency, share in cfg.agency_share.items():
            if not _eligible(p, agency) or rng.random() >= share:
                continue
            copies = 2 if rng.random() < cfg.duplicate_rate else 1
            for _ in range(copies):
                counters[agency] += 1
                prefix = agency[:2].upper()
                yield {
                    "agency": agency,
                    "source_record_id": f"{prefix}{counters[agency]:07d}",
                    "person": _agency_record(rng, p, agency, cfg),
                    "truth": p.person_id,
                }


def records_for_size(n_records: int, seed: int = 7) -> list[dict[str, Any]]:
    """About ``n_records`` agency records (people are drawn until the records reach the size)."""
    # Each person yields about 1.6 records on the default shares; draw more people if short.
    people = max(1, int(n_records / 1.6))
    while True:
        out = list(agency_records(people, SyntheticConfig(seed=seed)))
        if len(out) >= n_records:
            return out[:n_records]
        people = int(people * 1.05) + 1
