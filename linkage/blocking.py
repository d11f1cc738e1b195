"""Blocking: which existing records a new one is compared with.

Several keys are OR-ed, so a record is found if it agrees with its match on any one of them;
each key tolerates different corruptions (typos in the surname, a swapped day and month, a house
move, a missing identifier). A key shared by too many records (a common name in a big city) stops
producing candidates once it reaches ``max_block_size`` and is reported, instead of silently
turning one insert into thousands of comparisons.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from caselink.linkage.nicknames import canonical_given_name
from caselink.linkage.record import LinkRecord, phonetic
from caselink.linkage.rules import DEFAULT_RULES

DEFAULT_TYPO_SCHEMES = DEFAULT_RULES.typo_schemes


def _dob_canonical(r: LinkRecord) -> str | None:
    """Year plus day and month in sorted order: the same for a date and its day/month swap."""
    if r.dob is None:
        return None
    d = r.dob
    lo, hi = sorted((d.month, d.day))
    return d.year + lo + hi


def _identifier_keys(r: LinkRecord, typo_schemes: frozenset[str]) -> list[str]:
    """The identifier itself, and for a scheme without a check digit (where one mistyped digit
    leaves a valid-looking number) its halves and its sorted characters: one substitution keeps a
    half, a swap of neighbours keeps a half or the sorted form."""
    keys = []
    for scheme, value in r.ids.items():
        keys.append(f"id:{scheme}:{value}")
        if scheme in typo_schemes and len(value) >= 6:
            half = len(value) // 2
            keys.append(f"ih:{scheme}:{value[:half]}")
            keys.append(f"it:{scheme}:{value[half:]}")
            keys.append(f"is:{scheme}:{''.join(sorted(value))}")
    return keys


def _has_place(r: LinkRecord) -> bool:
    return r.postcode is not None or bool(r.locality) or bool(r.address)


def lookup_keys(keys: list[str]) -> list[str]:
    """The keys a record looks its candidates up by, given its own (``blocking_keys``): its own,
    but a record with a place looks for namesakes without one ("nx") instead of with one ("nn"),
    and a record without a place for both. Of two namesakes, one without a place, either finds
    the other, whichever arrives first."""
    for i, key in enumerate(keys):
        if key[:3] == "nn:":  # a record with a place
            return [*keys[:i], "nx:" + key[3:], *keys[i + 1:]]
        if key[:3] == "nx:":  # a record without one
            return [*keys, "nn:" + key[3:]]
    return keys


def blocking_keys(r: LinkRecord, typo_schemes: frozenset[str] = DEFAULT_TYPO_SCHEMES) -> list[str]:
    """The keys of one record; ``typo_schemes``: the identifier schemes whose values may be
    mistyped without failing a check (``LinkageRules.typo_schemes``)."""
    keys = _identifier_keys(r, typo_schemes) if r.ids else []
    dob = _dob_canonical(r)
    # Postcode characters in sorted order: the same for a code and its transposition typos.
    pc = "".join(sorted(r.postcode.code)) if r.postcode else None
    # Coarse geography (postcode area) keeps name-based keys from growing with the population.
    area = (r.postcode.area or r.postcode.code[0]) if r.postcode else (r.locality or "")
    g0 = r.given[0] if r.given else None
    given_canon_phon = phonetic(r.given_canon)
    f0 = r.family[0] if r.family else None
    if r.family_phon and r.dob and g0:
        keys.append(f"fy:{r.family_phon}:{r.dob.year}:{g0}:{area}")
    # Date-of-birth keys pair the date with the sound of one name, so either name may be wrong or
    # changed (marriage, a nickname, a middle name used) as long as the other is heard the same.
    # They were an initial + date, which at a million records gave six of the nine candidates a
    # record was scored against; the sound cut that to about three (5.3 candidates in all) and
    # missed 4 more of 46,150 true pairs at 100,000 records. The given name's sound is taken from
    # its canonical form, so "Bill" meets "William". Split by sex they halve again; a record
    # without a sex joins both halves, so missing sex never loses a candidate.
    sexes = (r.sex,) if r.sex else ("F", "M")
    if given_canon_phon and dob:
        keys.extend(f"gd:{given_canon_phon}:{dob}:{sex}" for sex in sexes)
        # A middle name used as the first name ("Sofia" for Nuria Sofia) meets the records
        # that give it first.
        middle = r.middle.split(" ", 1)[0] if r.middle else None
        middle_phon = phonetic(canonical_given_name(middle)) if middle and len(middle) > 1 else None
        if middle_phon and middle_phon != given_canon_phon:
            keys.extend(f"gd:{middle_phon}:{dob}:{sex}" for sex in sexes)
    if r.family_phon and dob:
        keys.extend(f"fd:{r.family_phon}:{dob}:{sex}" for sex in sexes)
        # Each part of a compound family name alone: one of two family names is often dropped
        # ("Aguilar" for Aguilar Suarez).
        if len(r.family_parts) > 1:
            for part in r.family_parts:
                part_phon = phonetic(part)
                if part_phon and len(part) > 2:
                    keys.extend(f"fd:{part_phon}:{dob}:{sex}" for sex in sexes)
    if pc and g0:
        keys.append(f"pg:{pc}:{g0}")
    for name_phon in {r.family_phon, r.given_phon} - {None}:
        # Either name in the same postcode: survives swaps and a typo in the other name.
        if pc:
            keys.append(f"pn:{pc}:{name_phon}")
    if r.family_phon and g0:
        # The same name near the same place: survives typos in the postcode and the date.
        if r.locality:
            keys.append(f"lf:{r.locality}:{r.family_phon}:{given_canon_phon}")
        if r.postcode:
            keys.append(f"pf:{r.postcode.district or r.postcode.code[:-1]}:{r.family_phon}:{g0}")
    if r.given_canon and r.family_phon:
        # Sorted, so a record with given and family names swapped shares the key.
        names = ":".join(sorted((given_canon_phon or "", r.family_phon)))
        keys.append(f"nm:{names}:{area}")
        # The same without a place, so that a record with no address (a benefit claim, a tax
        # dependant) meets the person's other records: stored under "nx" by records without a
        # place and "nn" by those with one, and looked up as ``lookup_keys`` says. Records
        # that both have a place meet through the keys above, and do not pay for the whole
        # country's namesakes here.
        keys.append(f"{'nn' if _has_place(r) else 'nx'}:{names}")
    for other in r.other_families:
        other_phon = phonetic(other)
        if dob and other_phon:  # a previous family name meets records made under it
            keys.extend(f"fd:{other_phon}:{dob}:{sex}" for sex in sexes)
        if r.given_canon:
            keys.append("nm:" + ":".join(sorted((given_canon_phon or "", other_phon or ""))) + ":" + area)
    if r.given_canon and r.dob and f0:
        keys.append(f"gy:{given_canon_phon}:{r.dob.year}:{f0}:{area}")
    initials = "".join(sorted(n[0] for n in (r.given, r.family) if n))
    if len(initials) == 2:
        # Initials in sorted order survive a given/family swap and typos after the first letter.
        if pc:
            keys.append(f"pi:{pc}:{initials}")
        if dob:
            keys.append(f"di:{dob}:{initials}")
    if r.address:
        tokens = r.address.split(" ")
        if len(tokens) >= 2:
            # House number and street: the same household, whatever happened to the names.
            place = (r.postcode.district if r.postcode else None) or r.locality or (
                r.postcode.code if r.postcode else "")
            keys.append(f"ad:{place}:{tokens[0]}:{tokens[1]}")
    if dob and r.locality:
        keys.extend(f"dl:{dob}:{r.locality}:{sex}" for sex in sexes)
    if dob and r.postcode:
        # The date in the same postcode area: both names may be misspelt or changed, and the
        # postcode and town mistyped (FEBRL3 has such pairs), as long as the area survives.
        keys.append(f"da:{dob}:{area}")
    return keys


@dataclass
class BlockingIndex:
    """key -> record keys, with a cap per key.

    Memory is most of the index at scale (about fifteen keys a record), so keys are stored as
    their in-process hash and a block of one record holds the record key itself rather than a
    list. A hash collision can only add candidates, never lose one; the index lives in one process
    and is rebuilt on restart, so per-process string hashing is fine.
    """

    max_block_size: int = 200
    blocks: dict[int, str | tuple[str, ...] | list[str]] = field(default_factory=dict)
    capped: set[int] = field(default_factory=set)
    capped_names: dict[int, str] = field(default_factory=dict)

    def candidates(self, keys: Iterable[str], exclude: str | None = None) -> set[str]:
        found: set[str] = set()
        blocks, capped = self.blocks, self.capped
        for key in keys:
            h = hash(key)
            members = blocks.get(h)
            if members is None or h in capped:
                continue
            if type(members) is str:
                found.add(members)
            else:
                found.update(members)
        found.discard(exclude)
        return found

    def add(self, record_key: str, keys: Iterable[str]) -> None:
        """A block holds one member as the key itself, up to ``max_block_size`` as a tuple, and
        beyond that (capped: no longer used for candidates) as a list. Tuples are exact-size where
        lists over-allocate, which was a fifth of a million-record index's memory; copying one
        on growth is bounded by the cap."""
        blocks = self.blocks
        for key in keys:
            h = hash(key)
            members = blocks.get(h)
            if members is None:
                blocks[h] = record_key
            elif type(members) is str:
                blocks[h] = (members, record_key)
            elif type(members) is tuple:
                if len(members) < self.max_block_size:
                    blocks[h] = (*members, record_key)
                else:
                    blocks[h] = [*members, record_key]
                    if h not in self.capped:
                        self.capped.add(h)
                        self.capped_names[h] = key
            else:  # a list (``type() is`` over isinstance on this path for speed; mypy narrows only the latter)
                members.append(record_key)  # type: ignore[union-attr]

    def remove(self, record_key: str, keys: Iterable[str]) -> None:
        self.remove_hashed(record_key, map(hash, keys))

    def remove_hashed(self, record_key: str, hashes: Iterable[int]) -> None:
        """``remove`` given the keys' hashes (all a block is filed under)."""
        blocks = self.blocks
        for h in hashes:
            members = blocks.get(h)
            if members is None:
                continue
            if type(members) is str:
                if members == record_key:
                    del blocks[h]
                continue
            try:
                i = members.index(record_key)
            except ValueError:
                continue
            if type(members) is tuple:
                members = members[:i] + members[i + 1:]
                blocks[h] = members
            else:  # a list, as above
                del members[i]  # type: ignore[union-attr]
            if len(members) == 1:
                blocks[h] = members[0]

    def size(self, key: str) -> int:
        members = self.blocks.get(hash(key))
        return 0 if members is None else 1 if type(members) is str else len(members)

    def report(self, top: int = 20) -> list[tuple[str, int]]:
        """The capped keys with their sizes, largest first (for operators)."""
        return sorted(((name, self.size(name)) for name in self.capped_names.values()), key=lambda kv: -kv[1])[:top]
