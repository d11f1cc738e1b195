"""Synthetic records of a fictional non-UK country from four agencies, with ground truth.

Why this exists: ``linkage/synthetic.py`` builds a UK-shaped world (NHS numbers whose check digit
catches most typos, English names, UK postcodes, ISO dates). A linker tuned on it can look better
than it is. This generator builds the Republic of Meridia, an invented country with Iberian,
Latin-American, Italian, Portuguese, Dutch and French names (accents, particles such as "de", "van",
"da", two-part surnames), and four agency extracts that break the easy assumptions: the national id
(``ssn``, 9 digits) has NO check digit, so a mistyped or borrowed number looks exactly as valid as
the right one; one agency writes dates month first; postal codes are useless in two agencies;
households are full of people who look like each other (twins, namesakes across generations).
It was written from a specification of real administrative data, not from the linker's code, so
that it can be used to judge the linker. Pure standard library plus pandas; deterministic per seed.

Population: ``people`` persons in households (single adults, couples, families, lone parents,
three-generation households, house shares). Reference dates: the register is a census on
2020-04-01, tax forms are for 2021 (filed by 2022-04-30), the benefit extract is 2023-03-31, the
social-insurance extract 2023-12-31. People born after a date or gone before it are not in that
extract; departed people (died or emigrated) stay in the social register with their status.

Agencies (one DataFrame each, in the agency's own columns, every value a string, "" when empty):
  register  census-like: person_ref, household_id, line_no, relationship, first_name,
            middle_initial, last_name, sex (Male/Female), dob (%m/%d/%Y), street_number,
            street_name, unit, city, postal_code. No national id.
  social    social insurance: record_no, ssn, surname, given_names, birth_date (%Y%m%d),
            sex_code (1/2), status (A/D/E), status_date, registered_on. No address at all.
  tax       one row per filer and per dependant: row_id, form_no, tax_year, line_type (P/S/D),
            ssn, given_name, surname, dob (%d/%m/%Y), address, city, postal_code.
  benefit   mothers and young children: participant_id, family_id, category (C/M/G), first, last,
            birth_date (%Y-%m-%d), gender (F/M), ssn, street, apt, city, zip.

Corruption classes and their default rates (``IntlRates``; each rate is the chance per
opportunity named after it; ``python linkage/synthetic_intl.py`` prints how often each was applied):
  names (each name field of each record unless said)
    ``typo`` 0.02               insert, delete, substitute or transpose a character; every text
                                field (names, street, unit, city)
    ``ocr`` 0.008               OCR confusions 0/o, 1/l/|, 5/s, 8/B, rn/m; every field, dates, ssn,
                                street numbers and postal codes included
    ``phonetic`` 0.02           respelling by sound (v/b, ll/y, z/s, j/g, h dropped, ñ/n, ij/y...)
    ``nickname`` 0.08           per first name with a known short form (Francisco -> Paco)
    ``name_swap`` 0.008         per record: first and last name exchanged
    ``middle_as_first`` 0.05    per record of someone with a middle name: it is used as the first
    ``marriage_surname`` 0.2    per record of someone whose surname changed on marriage: the other
                                (birth) surname; ``marriage_surname_social`` 0.5 in the social
                                register, where most people registered before they married
    ``compound_part`` 0.15      per record with a two-part surname: one part only, or the hyphen lost
    ``particle`` 0.2            per record with a particle surname: "de la Cruz" -> "Delacruz",
                                "Cruz", "De La Cruz"
    ``accent_lost`` 0.3         per accented name field where the agency keeps accents (the social
                                register is upper-case ASCII by design, not counted)
    ``placeholder_name`` 0.006  per record: "UNKNOWN", "X", "NFN"/"FNU"/"LNU", a single letter,
                                "BABY GIRL"/"BABY BOY" for small children, or the agency's filler
                                (register "SIN DATO", social "XXXXX", tax "NONE", benefit "NN")
    ``newborn_placeholder`` 0.3 benefit, per child under one: "BABY GIRL", "BEBE", "RN"...
    ``child_guardian_surname`` 0.15  benefit, per child whose guardian's surname differs: the
                                child is recorded under the guardian's surname
    ``sex_missing`` 0.005       per record with a sex column
  identifier (``ssn``, tax and benefit; the social register issues the numbers)
    ``ssn_missing`` 0.03        tax filers; ``ssn_missing_dependant`` 0.1 tax dependants;
    ``ssn_missing_benefit`` 0.3 benefit participants over one; ``ssn_missing_infant`` 0.8 under one
    ``ssn_borrowed`` 0.03       per record with a number: another household member's number
    ``ssn_digit`` 0.015         one digit mistyped
    ``ssn_transpose`` 0.008     two adjacent digits transposed
  dates (each date of birth)
    ``date_missing`` 0.01; ``dob_missing_dependant`` 0.15 for tax dependants
    ``date_unparseable`` 0.004  "31/02/1990", "00/06/1968", "19/13/1968", "??/06/1968", a bare year
    ``date_year_typo`` 0.01     a year digit wrong or the last two swapped (1968 -> 1986)
    ``date_swap_dm`` 0.015      per date with day <= 12 and day != month: day and month swapped
    ``date_wrong_format`` 0.02  another agency's format ("19/06/1968" where %m/%d/%Y is expected)
  addresses
    ``address_missing`` 0.02    register and tax; ``address_missing_benefit`` 0.1 benefit
    ``stale_address`` 0.25      per tax form or benefit family that moved after the census: the
                                agency still holds the census address
    ``unit_dropped`` 0.3        per address with a flat/unit: the unit left out
    ``street_abbrev`` 0.3       per address: Avenida -> Av., Calle -> C/, Doctor -> Dr. ...
    ``postal_constant_register`` 0.8  register: the registry office's own code (10001)
    ``postal_blank_benefit`` 0.55 and ``postal_placeholder_benefit`` 0.25  benefit: blank or "00000"
  duplicates
    ``duplicate`` 0.02          per record: the same person registered again in the same agency,
                                with fresh variations (a second census line, an amended tax form,
                                a re-enrolment, a second social registration)
    ``duplicate_new_ssn`` 0.5   per social duplicate: the second registration got a new number

Population features (rates too, in the same dataclass): ``twin`` 0.02 per birth (about 4% of
children are twins: same date of birth, address and surname, different first names);
``namesake_grandchild`` 0.35 per three-generation household with a grandson on the paternal line
(grandfather and grandson share a first name); ``namesake_child`` 0.1 per family with a son (a
"junior"); ``move`` 0.12 per household (a new address after the census); ``move_individual`` 0.04
per grown-up child (moved out on their own); ``departed`` 0.06 per adult (died or emigrated before
2023-12); ``no_ssn`` 0.02 per adult (never issued a number). Coverage of each agency is a rate as
well (``register_households`` 0.75, ``register_person_missed`` 0.02, ``social_coverage`` 0.93,
``tax_filing`` 0.55 per tax unit, ``benefit_uptake`` 0.7 per eligible family). With the defaults,
17,000 people give about 37,800 records: register 11,800, social 15,800, tax 8,800, benefit 1,300.

Run: ``python linkage/synthetic_intl.py --people 17000 --seed 7 --out DIR``. See docs/synthetic-intl.md.
"""

from __future__ import annotations

import argparse
import bisect
import datetime as dt
import functools
import itertools
import re
import string
import sys
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import date, timedelta
from pathlib import Path
from random import Random
from typing import Any

import pandas as pd

AGENCIES = ("register", "social", "tax", "benefit")

REF_CENSUS = date(2020, 4, 1)
REF_TAX_YEAR_END = date(2021, 12, 31)
REF_TAX = date(2022, 4, 30)
REF_BENEFIT = date(2023, 3, 31)
REF_SOCIAL = date(2023, 12, 31)

DATE_FORMATS = {"register": "%m/%d/%Y", "social": "%Y%m%d", "tax": "%d/%m/%Y", "benefit": "%Y-%m-%d"}
# The formats an agency's clerks fall into when they get it wrong (other agencies' habits).
WRONG_FORMATS = {
    "register": ("%d/%m/%Y", "%Y-%m-%d"),
    "social": ("%Y-%m-%d", "%d%m%Y"),
    "tax": ("%m/%d/%Y", "%Y-%m-%d", "%d-%m-%Y"),
    "benefit": ("%d/%m/%Y", "%m/%d/%Y"),
}
AGENCY_FILLER = {"register": "SIN DATO", "social": "XXXXX", "tax": "NONE", "benefit": "NN"}
REGISTRY_OFFICE_CODE = "10001"
PLACEHOLDER_POSTCODE = "00000"

FEMALE = (
    "María Ana Lucía Sofía Isabel Carmen Laura Marta Elena Paula Julia Sara Clara Inés Beatriz Teresa Rosa "
    "Pilar Dolores Mercedes Concepción Rosario Guadalupe Margarita Cristina Patricia Verónica Mónica Raquel "
    "Silvia Natalia Andrea Valentina Camila Daniela Gabriela Mariana Fernanda Ximena Renata Victoria "
    "Alejandra Carolina Adriana Lorena Susana Esther Noemí Irene Alicia Eva Nuria Montserrat Begoña Ainhoa "
    "Leire Iria Francisca Joana Leonor Matilde Madalena Catarina Rita Filipa Giulia Chiara Francesca "
    "Federica Alessia Martina Giorgia Elisa Anneke Femke Sanne Lotte Marieke Wilhelmina Johanna Elisabeth "
    "Hélène Chloé Noémie Zoë Amélie Léa Agnès Renée Ángela Antonia Josefa Manuela Rocío Milagros Belén "
    "Lourdes Soledad Araceli Yolanda Emilia Olivia Aurora Conceição Graça"
).split()
MALE = (
    "José Juan Antonio Manuel Francisco Luis Javier Carlos Miguel Jesús Alejandro Rafael Pedro Ángel "
    "Fernando Pablo Sergio Jorge Alberto Diego Andrés Ramón Enrique Vicente Joaquín Tomás Agustín "
    "Sebastián Martín Mateo Santiago Nicolás Gonzalo Raúl Rubén Óscar Héctor Iván Adrián Álvaro Hugo "
    "Ignacio Eduardo Roberto Guillermo Emilio Felipe Gabriel Ricardo Julián Marcos Víctor Lucas Leonardo "
    "Emiliano Matías Benjamín João Gonçalo Rodrigo Tiago Afonso Duarte Vasco Rui Nuno Giuseppe Giovanni "
    "Marco Luca Alessandro Lorenzo Matteo Francesco Stefano Pieter Jan Hendrik Cornelis Johannes Willem "
    "Jacobus Dirk Joost Bram Thijs Jean Pierre Étienne René François Loïc Jérôme Iñaki Xavier Jordi "
    "Íñigo Esteban Cristóbal Salvador Domingo"
).split()
NICKNAMES = {
    "José": ["Pepe", "Chepe"], "Francisco": ["Paco", "Pancho", "Curro", "Fran"], "Manuel": ["Manolo", "Manu"],
    "Antonio": ["Toño", "Toni"], "Jesús": ["Chuy", "Chus"], "Ignacio": ["Nacho"], "Eduardo": ["Lalo", "Edu"],
    "Enrique": ["Quique", "Kike"], "Guillermo": ["Memo", "Guille"], "Roberto": ["Beto", "Rober"],
    "Alejandro": ["Álex", "Alejo"], "Alberto": ["Beto", "Tito"], "Rafael": ["Rafa"], "Fernando": ["Nando", "Fer"],
    "Santiago": ["Santi", "Chago"], "Sebastián": ["Sebas"], "Gonzalo": ["Chalo"], "Luis": ["Lucho"],
    "Joaquín": ["Quino", "Juaco"], "Ramón": ["Moncho"], "Vicente": ["Chente"], "Salvador": ["Chava", "Salva"],
    "Domingo": ["Mingo"], "Jorge": ["Coque"], "Tomás": ["Tomi"], "Nicolás": ["Nico"], "Benjamín": ["Benja"],
    "Giuseppe": ["Beppe", "Peppe"], "Giovanni": ["Gianni"], "Alessandro": ["Sandro"], "Francesco": ["Franco"],
    "Lorenzo": ["Enzo"], "Pieter": ["Piet"], "Johannes": ["Hans", "Jan"], "Cornelis": ["Kees"],
    "Hendrik": ["Henk"], "Jacobus": ["Koos"], "Willem": ["Wim"], "Dolores": ["Lola"],
    "Concepción": ["Concha", "Conchita"], "Rosario": ["Charo"], "Guadalupe": ["Lupe", "Lupita"],
    "Mercedes": ["Meche", "Merche"], "Margarita": ["Rita", "Marga"], "Pilar": ["Pili"], "Isabel": ["Isa", "Chabela"],
    "Teresa": ["Tere"], "Cristina": ["Cris", "Tina"], "Patricia": ["Patri", "Pati"], "Valentina": ["Vale"],
    "Alejandra": ["Ale"], "Gabriela": ["Gabi"], "Fernanda": ["Fer"], "Francisca": ["Paca", "Paquita"],
    "Josefa": ["Pepa", "Pepita"], "Montserrat": ["Montse"], "Elisabeth": ["Els", "Lisa"],
    "Wilhelmina": ["Mien", "Willy"], "Johanna": ["Hanna"], "Catarina": ["Cati"], "Madalena": ["Lena"],
    "Antonia": ["Toñi"], "Manuela": ["Manoli"], "Natalia": ["Nati"], "Beatriz": ["Bea"], "Victoria": ["Vicky"],
    "Soledad": ["Sole"], "Daniela": ["Dani"], "Conceição": ["São"], "Graça": ["Gracinha"],
}
SURNAMES = (
    "García Fernández Rodríguez González López Martínez Sánchez Pérez Gómez Díaz Álvarez Ruiz Hernández "
    "Jiménez Moreno Muñoz Romero Navarro Domínguez Vázquez Ramos Gil Serrano Blanco Suárez Molina Morales "
    "Ortega Delgado Castro Ortiz Rubio Marín Sanz Núñez Iglesias Medina Garrido Cortés Castillo Santos "
    "Lozano Guerrero Cano Prieto Méndez Cruz Calvo Gallego Vidal León Márquez Herrera Peña Flores Cabrera "
    "Campos Vega Fuentes Carrasco Diez Caballero Reyes Nieto Aguilar Pascual Santana Herrero Lorenzo "
    "Montero Hidalgo Giménez Ibáñez Ferrer Durán Silva Pereira Oliveira Costa Rodrigues Martins Sousa "
    "Ferreira Gonçalves Carvalho Almeida Lopes Ribeiro Pinto Teixeira Moreira Correia Mendes Nunes Vieira "
    "Monteiro Cardoso Rocha Rossi Russo Ferrari Esposito Bianchi Romano Colombo Ricci Marino Greco Bruno "
    "Gallo Conti Mancini Giordano Rizzo Lombardi Moretti Jansen Bakker Visser Smit Meijer Mulder Bos Vos "
    "Peters Hendriks Dekker Brouwer Dijkstra Dubois Lefèvre Moreau Girard Mercier Lefebvre Faure Rousseau "
    "Müller Schmidt Schneider Fischer Weber Wagner Becker Hoffmann Villalobos Echeverría Zúñiga Quiroga "
    "Benavides Valenzuela Sepúlveda Bustamante Arancibia Figueroa Olivares Contreras Espinoza Salazar "
    "Cárdenas Aguirre Ibarra Quintero Beltrán Montoya Escobar Valdés Orozco Barrientos Goicoechea Urquiza "
    "Etxeberria Arrieta Zabala Oyarzún Llorente Vallejo Yáñez Villanueva Bermúdez Galindo Solís Treviño"
).split()
PARTICLE_SURNAMES = [
    "de la Cruz", "del Río", "de la Fuente", "de los Santos", "de León", "del Valle", "de la Torre",
    "da Silva", "dos Santos", "da Costa", "das Neves", "do Nascimento", "de Souza", "de Oliveira",
    "van den Berg", "van Dijk", "van der Meer", "van Leeuwen", "de Vries", "de Jong", "de Groot",
    "de Boer", "de Wit", "di Marco", "de Luca", "d'Angelo", "d'Amico", "di Stefano", "van der Linden",
]
PARTICLES = frozenset({"de", "del", "la", "las", "los", "da", "das", "do", "dos", "van", "der", "den", "di"})
STREET_TYPES = {
    "Calle": "C/", "Avenida": "Av.", "Paseo": "Pº", "Plaza": "Pl.", "Camino": "Cno.", "Travesía": "Trv.",
    "Carretera": "Ctra.", "Ronda": "Rda.", "Rua": "R.", "Callejón": "Cjón.",
}
STREET_TYPE_WEIGHTS = [40, 20, 6, 4, 5, 3, 2, 3, 12, 2]
TITLE_ABBREVIATIONS = {"Doctor": "Dr.", "San": "S.", "Santa": "Sta.", "General": "Gral.", "Almirante": "Alte.",
                       "Mariscal": "Mcal."}
STREET_NAMES = [
    "Mayor", "Real", "San Martín", "de la Libertad", "Bolívar", "del Sol", "de las Flores", "del Mar",
    "Santa Lucía", "de la Independencia", "Colón", "Doctor Fleming", "General Paz", "Nueva", "del Carmen",
    "de los Rosales", "de los Álamos", "Primavera", "Cervantes", "Miramar", "San José", "de la Constitución",
    "Dos de Mayo", "Mariscal Sucre", "de los Olivos", "de los Tulipanes", "Castelar", "Garibaldi",
    "Vasco da Gama", "Camões", "Rembrandt", "Erasmo", "Victor Hugo", "de la Paz", "del Puerto",
    "de la Estación", "Juan XXIII", "Santa Teresa", "San Francisco", "Los Pinos", "Las Acacias", "Río Verde",
    "del Parque", "de la Iglesia", "del Molino", "de la Fuente", "Alameda", "Almirante Brown",
    "Doctor Esquerdo", "Sor Juana", "Ramón y Cajal", "Gran Vía", "del Príncipe", "de la Reina", "Aurora",
    "Libertadores", "Simón Bolívar", "de las Américas", "Santa Rosa", "San Roque", "de los Mártires",
    "Doctor Zamenhof", "General Urquiza", "de la Marina", "Pescadores", "Hortelanos", "Naranjos", "Limoneros",
]
CITIES = [  # name, two-digit postal prefix, relative population
    ("San Aurelio", "10", 30), ("Puerto Almira", "21", 14), ("Valdemora", "33", 10), ("Monteclaro", "37", 8),
    ("Santa Inés del Valle", "40", 6), ("Castelnovo", "44", 6), ("Río Dorado", "46", 5),
    ("Porto Celeste", "50", 5), ("Alcarena", "52", 4), ("Ribeira Alta", "55", 4), ("Sierra Azul", "58", 3),
    ("Los Naranjos", "60", 3), ("Mirafuentes", "62", 3), ("Torrevella", "65", 3), ("Campoverde", "67", 2),
    ("Bellavista del Norte", "70", 2), ("Villanueva del Prado", "72", 2), ("Ciudad Rosales", "75", 2),
    ("Nieuwhaven", "78", 2), ("Lagoa Serena", "80", 2), ("Ponte Alba", "83", 1), ("Monterrubio", "85", 1),
    ("São Teodoro", "88", 1), ("Almenara", "91", 1),
]
NEWBORN_TOKENS = {"F": ("BABY GIRL", "BEBE", "RN", "NB", "NIÑA"), "M": ("BABY BOY", "BEBE", "RN", "NB", "NIÑO")}
OCR_CONFUSIONS = {
    "0": "oO", "o": "0", "O": "0", "1": "l|I", "l": "1|", "I": "1l", "|": "1", "5": "sS", "s": "5", "S": "5",
    "8": "B", "B": "8",
}
KEYBOARD = {
    "q": "wa", "w": "qes", "e": "wrd", "r": "etf", "t": "ryg", "y": "tuh", "u": "yij", "i": "uok", "o": "ipl",
    "p": "ol", "a": "qsz", "s": "awdz", "d": "sefx", "f": "drgc", "g": "fthv", "h": "gyjb", "j": "hukn",
    "k": "jilm", "l": "kop", "z": "asx", "x": "zdc", "c": "xfv", "v": "cgb", "b": "vhn", "n": "bjm", "m": "nk",
}
# Respellings by sound, on lower-case text: (pattern, replacement).
PHONETIC_RULES = [
    (r"v", "b"), (r"b", "v"), (r"ll", "y"), (r"(?<=[aeiouáéíóú])y(?=[aeiouáéíóú])", "ll"), (r"z", "s"),
    (r"c(?=[eiéí])", "s"), (r"s(?=[eiéí])", "c"), (r"qu(?=[eiéí])", "k"), (r"\bh(?=[aeiouáéíóú])", ""),
    (r"j(?=[eiéí])", "g"), (r"g(?=[eiéí])", "j"), (r"x", "j"), (r"ph", "f"), (r"th", "t"), (r"ss", "s"),
    (r"rr", "r"), (r"tt", "t"), (r"nn", "n"), (r"ñ", "n"), (r"ñ", "ni"), (r"ç", "c"), (r"ç", "ss"),
    (r"y\b", "i"), (r"(?<=[aeou])i\b", "y"), (r"ij", "y"), (r"w", "v"), (r"oe", "u"), (r"gue", "ge"),
    (r"gui", "gi"), (r"ão", "ao"), (r"ei", "ey"), (r"ch(?=[aeiou])", "sh"), (r"k", "c"), (r"ck", "k"),
    (r"dt\b", "d"), (r"(?<=[aeiou])s(?=[aeiou])", "z"),
]
_PHONETIC = [(re.compile(p), r) for p, r in PHONETIC_RULES]
_OCR_PAIRS = re.compile("rn|m")


def _c(default: float) -> Any:
    return field(default=default, metadata={"group": "corruption"})


def _p(default: float) -> Any:
    return field(default=default, metadata={"group": "population"})


def _cov(default: float) -> Any:
    return field(default=default, metadata={"group": "coverage"})


@dataclass
class IntlRates:
    """Every rate the generator uses. ``IntlRates.clean()`` keeps the population and coverage but
    switches every corruption off."""

    # names
    typo: float = _c(0.02)
    ocr: float = _c(0.008)
    phonetic: float = _c(0.02)
    nickname: float = _c(0.08)
    name_swap: float = _c(0.008)
    middle_as_first: float = _c(0.05)
    marriage_surname: float = _c(0.2)
    marriage_surname_social: float = _c(0.5)
    compound_part: float = _c(0.15)
    particle: float = _c(0.2)
    accent_lost: float = _c(0.3)
    placeholder_name: float = _c(0.006)
    newborn_placeholder: float = _c(0.3)
    child_guardian_surname: float = _c(0.15)
    sex_missing: float = _c(0.005)
    # identifier
    ssn_missing: float = _c(0.03)
    ssn_missing_dependant: float = _c(0.1)
    ssn_missing_benefit: float = _c(0.3)
    ssn_missing_infant: float = _c(0.8)
    ssn_borrowed: float = _c(0.03)
    ssn_digit: float = _c(0.015)
    ssn_transpose: float = _c(0.008)
    # dates
    date_missing: float = _c(0.01)
    dob_missing_dependant: float = _c(0.15)
    date_unparseable: float = _c(0.004)
    date_year_typo: float = _c(0.01)
    date_swap_dm: float = _c(0.015)
    date_wrong_format: float = _c(0.02)
    # addresses
    address_missing: float = _c(0.02)
    address_missing_benefit: float = _c(0.1)
    stale_address: float = _c(0.25)
    unit_dropped: float = _c(0.3)
    street_abbrev: float = _c(0.3)
    postal_constant_register: float = _c(0.8)
    postal_blank_benefit: float = _c(0.55)
    postal_placeholder_benefit: float = _c(0.25)
    # duplicates
    duplicate: float = _c(0.02)
    duplicate_new_ssn: float = _c(0.5)
    # population
    twin: float = _p(0.02)
    namesake_grandchild: float = _p(0.35)
    namesake_child: float = _p(0.1)
    move: float = _p(0.12)
    move_individual: float = _p(0.04)
    departed: float = _p(0.06)
    no_ssn: float = _p(0.02)
    # coverage
    register_households: float = _cov(0.75)
    register_person_missed: float = _cov(0.02)
    social_coverage: float = _cov(0.93)
    tax_filing: float = _cov(0.55)
    benefit_uptake: float = _cov(0.7)

    @classmethod
    def clean(cls, **overrides: float) -> IntlRates:
        """No corruption at all (population and coverage as default), then ``overrides``."""
        zero = {f.name: 0.0 for f in fields(cls) if f.metadata.get("group") == "corruption"}
        return cls(**{**zero, **overrides})

    @classmethod
    def groups(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("group", "") for f in fields(cls)}


@dataclass(frozen=True)
class Address:
    number: str
    street_type: str
    street_name: str
    unit: str
    city: str
    postal: str

    @property
    def street(self) -> str:
        return f"{self.street_type} {self.street_name}"


@dataclass
class IntlPerson:
    person_id: str
    household_id: str
    relationship: str  # to the household head, as a census would record it
    first: str
    middle: str
    surname: str
    birth_surname: str  # "" unless the surname changed on marriage
    sex: str  # "M" or "F"
    dob: date
    address: Address  # at the census
    later: Address  # at the later extracts: the census address unless they moved
    ssn: str = ""  # "" when no number was issued
    parents: tuple[str, ...] = ()
    spouse: str = ""
    departed: str = ""  # "D" died, "E" emigrated
    departed_on: date | None = None
    twin_of: str = ""
    namesake_of: str = ""
    registered_on: date | None = None

    def present(self, when: date) -> bool:
        return self.dob <= when and (self.departed_on is None or self.departed_on > when)


@dataclass
class Household:
    household_id: str
    kind: str
    members: list[IntlPerson] = field(default_factory=list)
    couples: list[tuple[IntlPerson, IntlPerson]] = field(default_factory=list)


@dataclass
class IntlDataset:
    """Four agency extracts of one population, with the truth."""

    register: pd.DataFrame
    social: pd.DataFrame
    tax: pd.DataFrame
    benefit: pd.DataFrame
    truth: dict[str, str]  # "<agency>:<record id>" -> person id
    people: pd.DataFrame  # the true population (not written by ``write``)
    corruptions: dict[str, tuple[str, ...]]  # record key -> corruption classes applied to it
    applied: dict[str, int]  # corruption class -> times applied
    chances: dict[str, int]  # corruption class -> times it could have been applied
    formats_used: dict[str, list[str]]  # agency -> date formats that occur in its date of birth column
    rates: IntlRates
    seed: int

    @property
    def agencies(self) -> dict[str, pd.DataFrame]:
        return {"register": self.register, "social": self.social, "tax": self.tax, "benefit": self.benefit}

    def true_pairs(self) -> dict[str, int]:
        """Pairs of records of the same person: all, within one agency, across agencies."""
        per_person: dict[str, Counter[str]] = {}
        for key, pid in self.truth.items():
            per_person.setdefault(pid, Counter())[key.split(":", 1)[0]] += 1
        total = within = 0
        for counts in per_person.values():
            n = sum(counts.values())
            total += n * (n - 1) // 2
            within += sum(k * (k - 1) // 2 for k in counts.values())
        return {"all": total, "within_agency": within, "cross_agency": total - within}


RECORD_ID_COLUMN = {"register": "person_ref", "social": "record_no", "tax": "row_id", "benefit": "participant_id"}
COLUMNS = {
    "register": ["person_ref", "household_id", "line_no", "relationship", "first_name", "middle_initial",
                 "last_name", "sex", "dob", "street_number", "street_name", "unit", "city", "postal_code"],
    "social": ["record_no", "ssn", "surname", "given_names", "birth_date", "sex_code", "status", "status_date",
               "registered_on"],
    "tax": ["row_id", "form_no", "tax_year", "line_type", "ssn", "given_name", "surname", "dob", "address",
            "city", "postal_code"],
    "benefit": ["participant_id", "family_id", "category", "first", "last", "birth_date", "gender", "ssn",
                "street", "apt", "city", "zip"],
}


# ---------------------------------------------------------------------------------------------
# Small text helpers


@functools.lru_cache(maxsize=65536)
def strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def _age(dob: date, when: date) -> int:
    return when.year - dob.year - ((when.month, when.day) < (dob.month, dob.day))


def _years_before(when: date, years: float) -> date:
    return when - timedelta(days=round(years * 365.25))


def surname_parts(surname: str) -> list[str]:
    """'García López' -> two parts; 'de la Cruz' -> one; 'da Silva Moreno' -> 'da Silva', 'Moreno'."""
    if "-" in surname:
        return surname.split("-")
    parts: list[str] = []
    pending: list[str] = []
    for token in surname.split():
        pending.append(token)
        if token.lower() not in PARTICLES:
            parts.append(" ".join(pending))
            pending = []
    if pending:
        parts.append(" ".join(pending))
    return parts


def _has_particle(surname: str) -> bool:
    return any(t.lower() in PARTICLES or t.lower().startswith("d'") for t in surname.split())


def _particle_variants(surname: str) -> list[str]:
    tokens = surname.split()
    out: list[str] = []
    dropped = [t.split("'", 1)[1] if t.lower().startswith("d'") else t for t in tokens if t.lower() not in PARTICLES]
    out.append(" ".join(dropped))
    out.append(" ".join(t[:1].upper() + t[1:] for t in tokens))
    joined: list[str] = []
    run = ""
    for t in tokens:
        if t.lower() in PARTICLES:
            run += t
        else:
            joined.append((run + t.replace("'", "")).capitalize() if run or "'" in t else t)
            run = ""
    if run:
        joined.append(run)
    out.append(" ".join(joined))
    return [v for v in dict.fromkeys(out) if v and v != surname]


@functools.lru_cache(maxsize=65536)
def _phonetic_matches(low: str) -> tuple[tuple[int, int, str], ...]:
    return tuple((m.start(), m.end(), rep) for rx, rep in _PHONETIC for m in rx.finditer(low))


def _recase_like(original: str, new_low: str) -> str:
    old_words = re.split(r"([ \-'])", original)
    new_words = re.split(r"([ \-'])", new_low)
    if len(old_words) != len(new_words):
        return new_low.title()
    out = []
    for old, new in zip(old_words, new_words, strict=True):
        if old.isupper() and len(old) > 1:
            out.append(new.upper())
        elif old[:1].isupper():
            out.append(new[:1].upper() + new[1:])
        else:
            out.append(new)
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# Corruption, with counting


class _Corruptor:
    """Draws corruptions and counts each chance and each application, per class and per record."""

    def __init__(self, rng: Random, rates: IntlRates) -> None:
        self.rng = rng
        self.rates = rates
        self.applied: Counter[str] = Counter()
        self.chances: Counter[str] = Counter()
        self.current: list[str] = []

    def roll(self, name: str) -> bool:
        self.chances[name] += 1
        if self.rng.random() < getattr(self.rates, name):
            self.applied[name] += 1
            self.current.append(name)
            return True
        return False

    def note(self, name: str, applied: bool) -> None:
        self.chances[name] += 1
        if applied:
            self.applied[name] += 1
            self.current.append(name)

    # -- text

    def typo(self, text: str) -> str:
        if len(text) < 2 or not self.roll("typo"):
            return text
        rng = self.rng
        for _ in range(10):
            i = rng.randrange(len(text)) if rng.random() < 0.2 else rng.randrange(1, len(text))
            ch = text[i]
            low = strip_accents(ch.lower())
            near = KEYBOARD.get(low, string.ascii_lowercase)
            new = rng.choice(near)
            new = new.upper() if ch.isupper() else new
            op = rng.randrange(4)
            if op == 0:
                out = text[:i] + new + text[i:]
            elif op == 1:
                out = text[:i] + text[i + 1:]
            elif op == 2:
                out = text[:i] + new + text[i + 1:]
            else:
                j = min(i, len(text) - 2)
                out = text[:j] + text[j + 1] + text[j] + text[j + 2:]
            if out != text and out.strip():
                return out
        return text + ("E" if text.isupper() else "e")

    def ocr(self, text: str) -> str:
        positions = [i for i, c in enumerate(text) if c in OCR_CONFUSIONS]
        multi = [m.start() for m in _OCR_PAIRS.finditer(text)]
        if not positions and not multi:
            return text
        if not self.roll("ocr"):
            return text
        rng = self.rng
        if multi and (not positions or rng.random() < 0.15):
            i = rng.choice(multi)
            return text[:i] + ("m" if text[i] == "r" else "rn") + text[i + (2 if text[i] == "r" else 1):]
        out = list(text)
        for i in rng.sample(positions, min(len(positions), 2 if rng.random() < 0.35 else 1)):
            out[i] = rng.choice(OCR_CONFUSIONS[out[i]])
        return "".join(out)

    def phonetic(self, text: str) -> str:
        if not text:
            return text
        low = text.lower()
        matches = _phonetic_matches(low)
        if not matches or not self.roll("phonetic"):
            return text
        start, end, rep = self.rng.choice(matches)
        new_low = low[:start] + rep + low[end:]
        return _recase_like(text, new_low) if new_low.strip() else text

    def spell(self, text: str) -> str:
        return self.typo(self.phonetic(text))

    # -- identifiers

    def ssn_errors(self, ssn: str) -> str:
        rng = self.rng
        if self.roll("ssn_digit"):
            i = rng.randrange(9)
            d = int(ssn[i])
            new = (d + rng.choice((-1, 1))) % 10 if rng.random() < 0.6 else rng.choice([x for x in range(10) if x != d])
            ssn = ssn[:i] + str(new) + ssn[i + 1:]
        pairs = [i for i in range(8) if ssn[i] != ssn[i + 1]]
        if pairs and self.roll("ssn_transpose"):
            i = rng.choice(pairs)
            ssn = ssn[:i] + ssn[i + 1] + ssn[i] + ssn[i + 2:]
        return self.ocr(ssn)

    # -- dates

    def date(self, dob: date | None, agency: str, formats_used: set[str], *, missing: str = "") -> str:
        if dob is None:
            return ""
        if missing and self.roll(missing):
            return ""
        if self.roll("date_missing"):
            return ""
        fmt = DATE_FORMATS[agency]
        rng = self.rng
        if self.roll("date_unparseable"):
            return self._bad_date(dob, fmt)
        if self.roll("date_year_typo"):
            dob = self._year_typo(dob)
        if dob.day <= 12 and dob.day != dob.month and self.roll("date_swap_dm"):
            dob = dob.replace(month=dob.day, day=dob.month)
        if self.roll("date_wrong_format"):
            fmt = rng.choice(WRONG_FORMATS[agency])
        formats_used.add(fmt)
        return self.ocr(dob.strftime(fmt))

    def _year_typo(self, dob: dt.date) -> dt.date:  # dt.date: a method of this class is named date
        rng = self.rng
        y = dob.year
        options = {y + 1, y - 1, y + 10, y - 10, y - y % 10 + rng.randrange(10)}
        if (y // 10) % 10 != y % 10:
            options.add(y - y % 100 + (y % 10) * 10 + (y // 10) % 10)
        options = {o for o in options if 1905 <= o <= REF_SOCIAL.year and o != y}
        year = rng.choice(sorted(options))
        return dob.replace(year=year, day=min(dob.day, 28) if dob.month == 2 else dob.day)

    def _bad_date(self, dob: dt.date, fmt: str) -> str:
        rng = self.rng
        y, m, d = f"{dob.year:04d}", f"{dob.month:02d}", f"{dob.day:02d}"
        kind = rng.randrange(6)
        if kind == 0:  # a day the month does not have
            m, d = rng.choice((("02", "30"), ("02", "31"), ("04", "31"), ("06", "31"), ("09", "31"), ("11", "31")))
        elif kind == 1:
            d = "00"
        elif kind == 2:  # the day in the month's place
            m = d if dob.day > 12 else "13"
        elif kind == 3:
            d = "??"
        elif kind == 4:
            return y
        else:
            m = "00"
        return fmt.replace("%Y", y).replace("%m", m).replace("%d", d)


# ---------------------------------------------------------------------------------------------
# The population


class _PopulationBuilder:
    def __init__(self, rng: Random, rates: IntlRates) -> None:
        self.rng = rng
        self.rates = rates
        self.people: list[IntlPerson] = []
        self.households: list[Household] = []
        self.ssns: set[str] = set()
        self.surname_cum = list(itertools.accumulate(1.0 / (i + 1) ** 0.6 for i in range(len(SURNAMES))))
        self.female_cum = list(itertools.accumulate(1.0 / (i + 1) ** 0.5 for i in range(len(FEMALE))))
        self.male_cum = list(itertools.accumulate(1.0 / (i + 1) ** 0.5 for i in range(len(MALE))))
        self.city_cum = list(itertools.accumulate(w for _, _, w in CITIES))
        self.street_type_cum = list(itertools.accumulate(STREET_TYPE_WEIGHTS))
        self.postcodes = {
            name: [prefix + f"{s:03d}" for s in sorted(rng.sample(range(1, 1000), 2 + w * 2))]
            for name, prefix, w in CITIES
        }
        self.postcodes["San Aurelio"][0] = REGISTRY_OFFICE_CODE
        self.streets = {name: rng.sample(STREET_NAMES, min(len(STREET_NAMES), 12 + w * 2)) for name, _, w in CITIES}

    # -- draws

    def _pick(self, items: list[Any], cum: Sequence[float]) -> Any:
        return items[bisect.bisect_right(cum, self.rng.random() * cum[-1])]

    def first_name(self, sex: str, avoid: set[str] | frozenset[str] = frozenset(), initial: str = "") -> str:
        pool, cum = (FEMALE, self.female_cum) if sex == "F" else (MALE, self.male_cum)
        for _ in range(60):
            name: str = self._pick(pool, cum)
            if name not in avoid and (not initial or name[0] == initial):
                return name
        return next(n for n in pool if n not in avoid)

    def middle_name(self, sex: str, first: str) -> str:
        if self.rng.random() >= 0.4:
            return ""
        return self.first_name(sex, {first})

    def one_surname(self) -> str:
        if self.rng.random() < 0.1:
            return self.rng.choice(PARTICLE_SURNAMES)
        picked: str = self._pick(SURNAMES, self.surname_cum)
        return picked

    def surname(self, style: str) -> str:
        first = self.one_surname()
        if style == "double":
            return f"{first} {self.one_surname()}"
        if self.rng.random() < 0.05:
            return f"{first}-{self._pick(SURNAMES, self.surname_cum)}"
        return first

    def address(self) -> Address:
        rng = self.rng
        city, _, _ = self._pick(CITIES, self.city_cum)
        street_type = self._pick(list(STREET_TYPES), self.street_type_cum)
        unit = ""
        if rng.random() < 0.35:
            unit = rng.choice((f"{rng.randint(1, 9)}{rng.choice('ABCD')}", f"{rng.randint(1, 8)}º {rng.randint(1, 4)}ª",
                               f"Piso {rng.randint(1, 12)}", "Bajo", f"Dpto {rng.randint(1, 40)}"))
        return Address(str(rng.randint(1, 250)), street_type, rng.choice(self.streets[city]), unit, city,
                       rng.choice(self.postcodes[city]))

    def dob_aged(self, lo: float, hi: float) -> date:
        return REF_SOCIAL - timedelta(days=self.rng.randint(round(lo * 365.25), round(hi * 365.25)))

    # -- people

    def add(self, hh: Household, addr: Address, relationship: str, sex: str, dob: date, surname: str, *,
            first: str = "", birth_surname: str = "", parents: tuple[str, ...] = ()) -> IntlPerson:
        avoid = {m.first for m in hh.members}
        first = first or self.first_name(sex, avoid)
        p = IntlPerson(
            person_id=f"M{len(self.people) + 1:07d}", household_id=hh.household_id, relationship=relationship,
            first=first, middle=self.middle_name(sex, first), surname=surname, birth_surname=birth_surname,
            sex=sex, dob=dob, address=addr, later=addr, parents=parents,
        )
        hh.members.append(p)
        self.people.append(p)
        return p

    def couple(self, hh: Household, addr: Address, rel_man: str, rel_woman: str, man_dob: date, style: str,
               man_surname: str = "") -> tuple[IntlPerson, IntlPerson]:
        rng = self.rng
        man_surname = man_surname or self.surname(style)
        man = self.add(hh, addr, rel_man, "M", man_dob, man_surname)
        woman_dob = min(man_dob + timedelta(days=rng.randint(-3 * 365, 8 * 365)), _years_before(REF_SOCIAL, 18.2))
        own = self.surname(style)
        married = rng.random() < 0.75
        if rel_woman == "Spouse" and not married:
            rel_woman = "Partner"
        if style == "single" and married and rng.random() < 0.6:
            woman = self.add(hh, addr, rel_woman, "F", woman_dob, man_surname, birth_surname=own)
        else:
            woman = self.add(hh, addr, rel_woman, "F", woman_dob, own)
        man.spouse, woman.spouse = woman.person_id, man.person_id
        hh.couples.append((man, woman))
        return man, woman

    @staticmethod
    def child_surname(father_surname: str, mother_surname: str, style: str) -> str:
        if style == "double":
            return f"{surname_parts(father_surname)[0]} {surname_parts(mother_surname)[0]}"
        return father_surname

    def children(self, hh: Household, addr: Address, mother_dob: date, surname: str, parents: tuple[str, ...],
                 count: int, rel: tuple[str, str], max_age: int = 28) -> list[IntlPerson]:
        rng = self.rng
        dobs = []
        for _ in range(count):
            dob = mother_dob + timedelta(days=rng.randint(18 * 365, 44 * 365))
            if dob <= REF_SOCIAL and _age(dob, REF_SOCIAL) <= max_age:
                dobs.append(dob)
        kids: list[IntlPerson] = []
        for dob in sorted(dobs):
            sex = rng.choice("FM")
            kid = self.add(hh, addr, rel[0] if sex == "M" else rel[1], sex, dob, surname, parents=parents)
            kids.append(kid)
            if rng.random() < self.rates.twin:
                sex2 = sex if rng.random() < 0.45 else rng.choice("FM")
                avoid = {m.first for m in hh.members}
                initial = kid.first[0] if rng.random() < 0.3 else ""
                first2 = self.first_name(sex2, avoid, initial) if initial else ""
                twin = self.add(hh, addr, rel[0] if sex2 == "M" else rel[1], sex2, dob, surname,
                                first=first2 if first2 and first2 not in avoid else "", parents=parents)
                kid.twin_of, twin.twin_of = twin.person_id, kid.person_id
                kids.append(twin)
        return kids

    def namesake(self, elder: IntlPerson, kids: list[IntlPerson]) -> bool:
        sons = [k for k in kids if k.sex == elder.sex and not k.twin_of]
        if not sons:
            return False
        son = sons[0]
        if any(m.first == elder.first for m in kids):
            return False
        son.first = elder.first
        son.middle = "" if son.middle == elder.first else son.middle
        son.namesake_of = elder.person_id
        return True

    def household(self) -> Household:
        rng = self.rng
        hh = Household(f"H{len(self.households) + 1:06d}", "")
        self.households.append(hh)
        kind = rng.choices(("single", "couple", "family", "lone_parent", "multigen", "shared"),
                           (0.24, 0.18, 0.33, 0.10, 0.10, 0.05))[0]
        hh.kind = kind
        style = "double" if rng.random() < 0.3 else "single"
        addr = self.address()
        n_kids = rng.choices((1, 2, 3, 4), (0.35, 0.38, 0.18, 0.09))[0]
        if kind == "single":
            sex = rng.choice("FM")
            self.add(hh, addr, "Head", sex, self.dob_aged(19, 92), self.surname(style))
        elif kind == "shared":
            for i in range(rng.choice((2, 2, 3, 4))):
                self.add(hh, addr, "Head" if i == 0 else "Housemate", rng.choice("FM"), self.dob_aged(19, 45),
                         self.surname(style))
        elif kind == "couple":
            self.couple(hh, addr, "Head", "Spouse", self.dob_aged(22, 90), style)
        elif kind == "family":
            man, woman = self.couple(hh, addr, "Head", "Spouse", self.dob_aged(22, 58), style)
            surname = self.child_surname(man.surname, woman.birth_surname or woman.surname, style)
            kids = self.children(hh, addr, woman.dob, surname, (man.person_id, woman.person_id), n_kids,
                                 ("Son", "Daughter"))
            if rng.random() < self.rates.namesake_child:
                self.namesake(man, kids)
            elif rng.random() < self.rates.namesake_child / 2:
                self.namesake(woman, kids)
        elif kind == "lone_parent":
            sex = "F" if rng.random() < 0.85 else "M"
            parent = self.add(hh, addr, "Head", sex, self.dob_aged(20, 55), self.surname(style))
            if sex == "F":
                absent_father = self.surname(style)
                surname = (self.child_surname(absent_father, parent.surname, style) if style == "double"
                           else rng.choice((parent.surname, absent_father)))
                mother_dob = parent.dob
            else:
                surname = self.child_surname(parent.surname, self.surname(style), style)
                mother_dob = parent.dob + timedelta(days=rng.randint(-3 * 365, 6 * 365))
            self.children(hh, addr, mother_dob, surname, (parent.person_id,), n_kids, ("Son", "Daughter"))
        else:
            self.multigen(hh, addr, style, n_kids)
        return hh

    def multigen(self, hh: Household, addr: Address, style: str, n_kids: int) -> None:
        rng = self.rng
        elders_head = rng.random() < 0.5
        rel: dict[str, Any] = {  # relationships to the head, by role, for the two ways of choosing the head
            "gf": "Head" if elders_head else "Father", "gm": "Spouse" if elders_head else "Mother",
            "son": "Son" if elders_head else "Head", "daughter": "Daughter" if elders_head else "Head",
            "in_law_f": "Daughter-in-law" if elders_head else "Spouse",
            "in_law_m": "Son-in-law" if elders_head else "Spouse",
            "kids": ("Grandson", "Granddaughter") if elders_head else ("Son", "Daughter"),
        }
        widowed = rng.random()
        gf_dob = self.dob_aged(58, 90)
        gf: IntlPerson | None = None
        gm: IntlPerson | None = None
        if widowed < 0.65:
            gf, gm = self.couple(hh, addr, rel["gf"], rel["gm"], gf_dob, style)
        elif widowed < 0.8:
            gf = self.add(hh, addr, rel["gf"], "M", gf_dob, self.surname(style))
        else:
            gm = self.add(hh, addr, "Head" if elders_head else "Mother", "F",
                          gf_dob + timedelta(days=rng.randint(0, 5 * 365)),
                          self.surname(style))
        anchor = gm or gf
        assert anchor is not None
        child_dob = min(anchor.dob + timedelta(days=rng.randint(20 * 365, 38 * 365)), _years_before(REF_SOCIAL, 20))
        sex = "M" if gf is not None and rng.random() < 0.6 else rng.choice("FM")
        if gf is not None and gm is not None:
            child_surname = self.child_surname(gf.surname, gm.birth_surname or gm.surname, style)
        else:
            child_surname = anchor.surname if anchor is gf or style == "single" else self.child_surname(
                self.surname(style), anchor.surname, style)
        parents = tuple(p.person_id for p in (gf, gm) if p is not None)
        if sex == "M":
            if rng.random() < 0.75:
                man, woman = self.couple(hh, addr, rel["son"], rel["in_law_f"], child_dob, style,
                                         man_surname=child_surname)
                man.parents = parents
                kid_surname = self.child_surname(man.surname, woman.birth_surname or woman.surname, style)
                kids = self.children(hh, addr, woman.dob, kid_surname, (man.person_id, woman.person_id), n_kids,
                                     rel["kids"])
            else:
                man = self.add(hh, addr, rel["son"], "M", child_dob, child_surname, parents=parents)
                kids = self.children(hh, addr, man.dob + timedelta(days=rng.randint(-2 * 365, 5 * 365)),
                                     self.child_surname(man.surname, self.surname(style), style),
                                     (man.person_id,), n_kids, rel["kids"])
            if gf is not None and rng.random() < self.rates.namesake_grandchild:
                self.namesake(gf, kids)
        else:
            mother = self.add(hh, addr, rel["daughter"], "F", child_dob, child_surname, parents=parents)
            kid_parents: tuple[str, ...] = (mother.person_id,)
            if rng.random() < 0.6:
                partner = self.add(hh, addr, rel["in_law_m"], "M",
                                   child_dob + timedelta(days=rng.randint(-6 * 365, 3 * 365)), self.surname(style))
                partner.spouse, mother.spouse = mother.person_id, partner.person_id
                hh.couples.append((partner, mother))
                kid_parents = (partner.person_id, mother.person_id)
                kid_surname = self.child_surname(partner.surname, mother.surname, style)
            else:
                kid_surname = self.child_surname(self.surname(style), mother.surname, style) if style == "double" \
                    else mother.surname
            self.children(hh, addr, mother.dob, kid_surname, kid_parents, n_kids, rel["kids"])

    # -- after everyone exists

    def finish(self, n: int) -> None:
        rng = self.rng
        rates = self.rates
        # Trim to exactly n people (the last household may lose members).
        extra = self.people[n:]
        del self.people[n:]
        if extra:
            gone = {p.person_id for p in extra}
            for hh in self.households:
                hh.members = [m for m in hh.members if m.person_id not in gone]
                hh.couples = [(a, b) for a, b in hh.couples if a.person_id not in gone and b.person_id not in gone]
            self.households = [hh for hh in self.households if hh.members]
            for p in self.people:
                if p.twin_of in gone:
                    p.twin_of = ""
                if p.namesake_of in gone:
                    p.namesake_of = ""
                if p.spouse in gone:
                    p.spouse = ""
        by_id = {p.person_id: p for p in self.people}
        youngest_child: dict[str, date] = {}
        for p in self.people:
            for parent in p.parents:
                if parent in by_id:
                    youngest_child[parent] = max(youngest_child.get(parent, p.dob), p.dob)
        for hh in self.households:
            if rng.random() < rates.move:
                new = self.address()
                for m in hh.members:
                    m.later = new
            for m in hh.members:
                grown_child = m.relationship in ("Son", "Daughter", "Housemate") and _age(m.dob, REF_CENSUS) >= 18
                if grown_child and rng.random() < rates.move_individual:
                    m.later = self.address()
        for p in self.people:
            age = _age(p.dob, REF_SOCIAL)
            if age >= 18 and rng.random() < rates.departed:
                died = rng.random() < (0.85 if age >= 60 else 0.3)
                earliest = max(date(2005, 1, 1), _years_before(p.dob, -18), youngest_child.get(p.person_id, p.dob)
                               + timedelta(days=30))
                latest = date(2023, 11, 30)
                if earliest < latest:
                    p.departed = "D" if died else "E"
                    p.departed_on = earliest + timedelta(days=rng.randrange((latest - earliest).days))
            newborn = p.dob > date(2023, 9, 1)
            if (age >= 18 and rng.random() < rates.no_ssn) or (newborn and rng.random() < 0.5):
                continue
            while True:
                ssn = f"{rng.randint(1, 8)}{rng.randrange(10 ** 8):08d}"
                if ssn not in self.ssns:
                    break
            self.ssns.add(ssn)
            p.ssn = ssn
            if p.dob.year >= 1985:  # numbers issued at birth registration
                issued = p.dob + timedelta(days=rng.randint(10, 400))
            else:  # at the first job
                issued = _years_before(p.dob, -rng.uniform(15, 24))
            p.registered_on = min(issued, REF_SOCIAL - timedelta(days=rng.randint(1, 60)))

    def new_ssn(self) -> str:
        while True:
            ssn = f"{self.rng.randint(1, 8)}{self.rng.randrange(10 ** 8):08d}"
            if ssn not in self.ssns:
                self.ssns.add(ssn)
                return ssn


# ---------------------------------------------------------------------------------------------
# Agency extracts


class _Extracts:
    def __init__(self, pop: _PopulationBuilder, rng: Random, rates: IntlRates) -> None:
        self.pop = pop
        self.rng = rng
        self.rates = rates
        self.c = _Corruptor(rng, rates)
        self.rows: dict[str, list[dict[str, str]]] = {a: [] for a in AGENCIES}
        self.truth: dict[str, str] = {}
        self.corruptions: dict[str, tuple[str, ...]] = {}
        self.formats_used: dict[str, set[str]] = {a: set() for a in AGENCIES}
        self.by_id = {p.person_id: p for p in pop.people}

    def emit(self, agency: str, row: dict[str, str], person: IntlPerson, shared: tuple[str, ...] = ()) -> None:
        """Keep a row; ``shared`` names corruptions of a part shared with other rows (a form's address)."""
        key = f"{agency}:{row[RECORD_ID_COLUMN[agency]]}"
        self.rows[agency].append(row)
        self.truth[key] = person.person_id
        self.corruptions[key] = (*shared, *self.c.current)
        self.c.current = []

    def shared_address(self, person: IntlPerson, agency: str) -> tuple[dict[str, str], tuple[str, ...]]:
        """The address written once on a household's census form, a tax form or a benefit family's file:
        the census address, or the later one (the agency may not have heard of a move)."""
        self.c.current = []
        addr = person.address
        if agency != "register" and not (person.later != person.address and self.c.roll("stale_address")):
            addr = person.later
        parts = self.address(addr, agency)
        shared = tuple(self.c.current)
        self.c.current = []
        return parts, shared

    # -- shared pieces

    def names(self, p: IntlPerson, agency: str, when: date, *, surname: str = "",
              first_token: str = "") -> tuple[str, str, str]:
        """(first, middle, surname) as this agency holds them, cased its way, corrupted."""
        c, rng = self.c, self.rng
        last = surname or p.surname
        if p.birth_surname and not surname:
            if c.roll("marriage_surname_social" if agency == "social" else "marriage_surname"):
                last = p.birth_surname
        parts = surname_parts(last)
        if len(parts) > 1 and c.roll("compound_part"):
            if "-" in last and rng.random() < 0.3:
                last = last.replace("-", " ")
            else:
                last = parts[0] if rng.random() < 0.75 else parts[-1]
        if _has_particle(last):
            variants = _particle_variants(last)
            if variants and c.roll("particle"):
                last = rng.choice(variants)
        first, middle = p.first, p.middle
        if not first_token:
            if middle and c.roll("middle_as_first"):
                first, middle = middle, (first if rng.random() < 0.5 else "")
            if first in NICKNAMES and c.roll("nickname"):
                first = rng.choice(NICKNAMES[first])
            first = c.spell(first)
        middle = c.spell(middle)
        last = c.spell(last)
        # The agency's own way of writing names.
        names = [first_token or first, middle, last]
        if agency == "social":
            names = [strip_accents(n).upper() for n in names]
        else:
            upper = agency == "tax" or (agency == "benefit" and rng.random() < 0.3)
            for i, n in enumerate(names):
                if n and n != strip_accents(n) and not (i == 0 and first_token) and c.roll("accent_lost"):
                    n = strip_accents(n)
                names[i] = n.upper() if upper else n
        names = [c.ocr(n) if n and not (i == 0 and first_token) else n for i, n in enumerate(names)]
        if c.roll("placeholder_name"):
            young = _age(p.dob, when) < 2
            if rng.random() < 0.75 or young:
                tokens = ["UNKNOWN", "X", "NFN", "FNU", (names[0] or "X")[0], AGENCY_FILLER[agency]]
                if young:
                    tokens += ["BABY GIRL" if p.sex == "F" else "BABY BOY"] * 4
                names[0] = rng.choice(tokens)
            else:
                names[2] = rng.choice(["UNKNOWN", "X", "LNU", (names[2] or "X")[0], AGENCY_FILLER[agency]])
        if c.roll("name_swap"):
            names[0], names[2] = names[2], names[0]
        return names[0], names[1], names[2]

    def sex(self, p: IntlPerson, codes: dict[str, str]) -> str:
        return "" if self.c.roll("sex_missing") else codes[p.sex]

    def dob(self, p: IntlPerson, agency: str, missing: str = "") -> str:
        return self.c.date(p.dob, agency, self.formats_used[agency], missing=missing)

    def address(self, addr: Address, agency: str) -> dict[str, str]:
        c, rng = self.c, self.rng
        if c.roll("address_missing_benefit" if agency == "benefit" else "address_missing"):
            return {"number": "", "street": "", "unit": "", "city": "", "postal": ""}
        street = addr.street
        if c.roll("street_abbrev"):
            words = street.split(" ")
            words[0] = STREET_TYPES.get(words[0], words[0])
            if rng.random() < 0.5:
                words = [TITLE_ABBREVIATIONS.get(w, w) for w in words]
            street = " ".join(words)
        street = c.ocr(c.typo(street))
        unit = addr.unit
        if unit and c.roll("unit_dropped"):
            unit = ""
        unit = c.typo(unit)
        city = c.typo(addr.city)
        postal = addr.postal
        if agency == "register" and c.roll("postal_constant_register"):
            postal = REGISTRY_OFFICE_CODE
        if agency == "benefit":
            r = rng.random()
            blank = r < self.rates.postal_blank_benefit
            placeholder = not blank and r < self.rates.postal_blank_benefit + self.rates.postal_placeholder_benefit
            c.note("postal_blank_benefit", blank)
            c.note("postal_placeholder_benefit", placeholder)
            postal = "" if blank else PLACEHOLDER_POSTCODE if placeholder else postal
        if postal and postal != PLACEHOLDER_POSTCODE:
            postal = c.ocr(postal)
        return {"number": c.ocr(addr.number), "street": street, "unit": unit, "city": city, "postal": postal}

    def ssn(self, p: IntlPerson, missing: str, donors: list[IntlPerson]) -> str:
        c, rng = self.c, self.rng
        if not p.ssn or c.roll(missing):
            return ""
        ssn = p.ssn
        donors = [d for d in donors if d.ssn and d.person_id != p.person_id and d.household_id == p.household_id]
        if donors and c.roll("ssn_borrowed"):
            ssn = donors[0].ssn if rng.random() < 0.7 else rng.choice(donors).ssn
        return c.ssn_errors(ssn)

    def duplicates(self, build: Callable[[], dict[str, str]], agency: str, person: IntlPerson,
                   compare: tuple[str, ...]) -> None:
        """The record just emitted, registered again with fresh variations."""
        first = self.rows[agency][-1]
        if not self.c.roll("duplicate"):
            return
        row = build()
        if all(row[k] == first[k] for k in compare):  # make it differ, as a second registration does
            row[compare[0]] = _force_typo(self.rng, row[compare[0]])
        self.emit(agency, row, person)

    # -- register (census, 2020-04-01)

    def register(self) -> None:
        rng = self.rng
        n_households = 0
        for hh in self.pop.households:
            if rng.random() >= self.rates.register_households:
                continue
            present = [m for m in hh.members if m.present(REF_CENSUS)]
            present = [m for m in present if rng.random() >= self.rates.register_person_missed]
            if not present:
                continue
            n_households += 1
            hh_no = f"{n_households:06d}"
            extra_line = len(present)
            addr, shared = self.shared_address(present[0], "register")
            for line, p in enumerate(present, 1):

                def build(p: IntlPerson = p, line: int = line, hh_no: str = hh_no,
                          addr: dict[str, str] = addr) -> dict[str, str]:
                    first, middle, last = self.names(p, "register", REF_CENSUS)
                    return {
                        "person_ref": f"{hh_no}-{line:02d}", "household_id": hh_no, "line_no": str(line),
                        "relationship": p.relationship, "first_name": first, "middle_initial": middle[:1].upper(),
                        "last_name": last, "sex": self.sex(p, {"M": "Male", "F": "Female"}),
                        "dob": self.dob(p, "register"), "street_number": addr["number"],
                        "street_name": addr["street"], "unit": addr["unit"], "city": addr["city"],
                        "postal_code": addr["postal"],
                    }

                self.emit("register", build(), p, shared)
                if self.c.roll("duplicate"):  # counted twice: a second line for the same person
                    extra_line += 1
                    row = build(p, extra_line)
                    prev = self.rows["register"][-1]
                    if all(row[k] == prev[k] for k in ("first_name", "last_name", "dob")):
                        row["first_name"] = _force_typo(rng, row["first_name"])
                    self.emit("register", row, p, shared)

    # -- social insurance (2023-12-31)

    def social(self) -> None:
        rng = self.rng
        rows: list[tuple[date, str, dict[str, str], IntlPerson, tuple[str, ...]]] = []
        status_name = {"": "A", "D": "D", "E": "E"}

        def build(p: IntlPerson, ssn: str) -> dict[str, str]:
            first, middle, last = self.names(p, "social", REF_SOCIAL)
            return {
                "record_no": "", "ssn": ssn, "surname": last, "given_names": f"{first} {middle}".strip(),
                "birth_date": self.dob(p, "social"), "sex_code": self.sex(p, {"M": "1", "F": "2"}),
                "status": status_name[p.departed],
                "status_date": p.departed_on.strftime("%Y%m%d") if p.departed_on else "",
                "registered_on": "",
            }

        for p in self.pop.people:
            if not p.ssn or p.registered_on is None or rng.random() >= self.rates.social_coverage:
                continue
            row = build(p, p.ssn)
            row["registered_on"] = p.registered_on.strftime("%Y%m%d")
            rows.append((p.registered_on, p.person_id, row, p, tuple(self.c.current)))
            self.c.current = []
            if self.c.roll("duplicate"):
                new_number = self.c.roll("duplicate_new_ssn")
                dup = build(p, self.pop.new_ssn() if new_number else p.ssn)
                if dup["surname"] == row["surname"] and dup["given_names"] == row["given_names"] \
                        and dup["birth_date"] == row["birth_date"]:
                    dup["given_names"] = _force_typo(rng, dup["given_names"])
                when = min(p.registered_on + timedelta(days=rng.randint(200, 9000)), REF_SOCIAL)
                dup["registered_on"] = when.strftime("%Y%m%d")
                rows.append((when, p.person_id + "~", dup, p, tuple(self.c.current)))
                self.c.current = []
        rows.sort(key=lambda r: (r[0], r[1]))
        for n, (_, _, row, p, corr) in enumerate(rows, 1):
            row["record_no"] = f"{n:08d}"
            self.c.current = list(corr)
            self.emit("social", row, p)

    # -- tax forms for 2021

    def tax(self) -> None:
        rng, rates = self.rng, self.rates
        forms = 0
        for hh in self.pop.households:
            present = [m for m in hh.members if m.present(REF_TAX_YEAR_END) and m.present(REF_TAX)]
            if not present:
                continue
            here = {m.person_id for m in present}
            adults = [m for m in present if _age(m.dob, REF_TAX_YEAR_END) >= 18]
            if not adults:
                continue
            units: list[list[IntlPerson]] = []
            in_couple: set[str] = set()
            for a, b in hh.couples:
                if a.person_id in here and b.person_id in here:
                    in_couple |= {a.person_id, b.person_id}
                    units.extend([[a, b]] if rng.random() < 0.75 else [[a], [b]])
            dependants: dict[int, list[IntlPerson]] = {}
            filer_units: dict[str, int] = {}
            for i, unit in enumerate(units):
                for m in unit:
                    filer_units[m.person_id] = i
            pending: list[IntlPerson] = []
            for m in adults:
                if m.person_id in in_couple:
                    continue
                age = _age(m.dob, REF_TAX_YEAR_END)
                young_child = age <= 24 and any(par in filer_units for par in m.parents) and rng.random() < 0.5
                elder_parent = age >= 70 and units and rng.random() < 0.3
                if young_child or elder_parent:
                    pending.append(m)
                else:
                    filer_units[m.person_id] = len(units)
                    units.append([m])
            for m in present:
                if m.person_id not in filer_units and m not in pending and _age(m.dob, REF_TAX_YEAR_END) < 18:
                    pending.append(m)
            for m in pending:
                homes = [filer_units[par] for par in m.parents if par in filer_units]
                if not homes:
                    homes = [filer_units.get(adults[0].person_id, 0)]
                dependants.setdefault(rng.choice(homes), []).append(m)
            for i, unit in enumerate(units):
                if rng.random() >= rates.tax_filing:
                    continue
                forms += 1
                form_no = f"2021-{forms:06d}"
                form_address, shared = self.shared_address(unit[0], "tax")
                lines = [(m, "P" if k == 0 else "S") for k, m in enumerate(unit)]
                lines += [(m, "D") for m in dependants.get(i, [])]
                everyone = [m for m, _ in lines]
                for line_no, (m, kind) in enumerate(lines, 1):
                    donors = ([m2 for m2 in everyone if m2 is not m] + [m2 for m2 in present if m2 not in everyone])

                    def build(m: IntlPerson = m, kind: str = kind, form_no: str = form_no, line_no: int = line_no,
                              parts: dict[str, str] = form_address, donors: list[IntlPerson] = donors
                              ) -> dict[str, str]:
                        first, middle, last = self.names(m, "tax", REF_TAX)
                        given = f"{first} {middle[:1]}".strip() if middle and rng.random() < 0.6 else first
                        line = ""
                        if parts["street"]:
                            line = f"{parts['street']} {parts['number']}".strip()
                            line += f", {parts['unit']}" if parts["unit"] else ""
                        dependant = kind == "D"
                        return {
                            "row_id": f"{form_no}-{line_no:02d}", "form_no": form_no, "tax_year": "2021",
                            "line_type": kind,
                            "ssn": self.ssn(m, "ssn_missing_dependant" if dependant else "ssn_missing", donors),
                            "given_name": given, "surname": last,
                            "dob": self.dob(m, "tax", "dob_missing_dependant" if dependant else ""),
                            "address": line, "city": parts["city"], "postal_code": parts["postal"],
                        }

                    self.emit("tax", build(), m, shared)

                    def amended(build: Callable[..., dict[str, str]] = build, form_no: str = form_no,
                                line_no: int = line_no, filer: IntlPerson = unit[0]) -> dict[str, str]:
                        return build(form_no=f"{form_no}A", line_no=line_no, parts=self.address(filer.later, "tax"))

                    self.duplicates(amended, "tax", m, ("given_name", "surname", "dob", "ssn"))

    # -- nutrition benefit for mothers and young children (2023-03-31)

    def benefit(self) -> None:
        rng, rates = self.rng, self.rates
        participants = 0
        families = 0
        young_from = REF_BENEFIT.replace(year=REF_BENEFIT.year - 5)
        for hh in self.pop.households:
            present = [m for m in hh.members if m.present(REF_BENEFIT)]
            here = {m.person_id for m in present}
            kids = [m for m in present if m.dob > young_from]
            # Mothers expecting a child at the extract date enrol too.
            expecting = [self.by_id[par] for m in hh.members if REF_BENEFIT < m.dob <= REF_BENEFIT + timedelta(270)
                         for par in m.parents if par in here and self.by_id[par].sex == "F"]
            if not kids and not expecting:
                continue
            groups: dict[str, list[IntlPerson]] = {}
            adults = [m for m in present if _age(m.dob, REF_BENEFIT) >= 16 and m not in kids]
            for kid in kids:
                carers = [self.by_id[par] for par in kid.parents if par in here]
                carers.sort(key=lambda m: m.sex != "F")
                guardian = carers[0] if carers else (adults[0] if adults else None)
                if guardian is not None:
                    groups.setdefault(guardian.person_id, []).append(kid)
            for mother in expecting:
                groups.setdefault(mother.person_id, [])
            for gid, children in groups.items():
                if rng.random() >= rates.benefit_uptake:
                    continue
                families += 1
                family_id = f"F{families:05d}"
                guardian = self.by_id[gid]
                family_address, shared = self.shared_address(guardian, "benefit")
                is_mother = guardian.sex == "F" and (not children or gid in children[0].parents)
                members = [(guardian, "M" if is_mother else "G")] + [(k, "C") for k in children]
                everyone = [m for m, _ in members]
                for m, category in members:
                    participants += 1
                    pid = f"B{participants:06d}"

                    def build(m: IntlPerson = m, category: str = category, pid: str = pid,
                              parts: dict[str, str] = family_address, everyone: list[IntlPerson] = everyone,
                              guardian: IntlPerson = guardian, family_id: str = family_id) -> dict[str, str]:
                        c = self.c
                        infant = _age(m.dob, REF_BENEFIT) < 1
                        token = ""
                        if category == "C" and infant and c.roll("newborn_placeholder"):
                            token = rng.choice(NEWBORN_TOKENS[m.sex])
                        surname = ""
                        if category == "C" and guardian.surname != m.surname and c.roll("child_guardian_surname"):
                            surname = guardian.surname
                        first, middle, last = self.names(m, "benefit", REF_BENEFIT, surname=surname,
                                                         first_token=token)
                        if middle and not token and rng.random() < 0.3:
                            first = f"{first} {middle}"
                        street = f"{parts['street']} {parts['number']}".strip() if parts["street"] else ""
                        donors = [guardian] + [k for k in everyone if k is not guardian]
                        return {
                            "participant_id": pid, "family_id": family_id, "category": category, "first": first,
                            "last": last, "birth_date": self.dob(m, "benefit"),
                            "gender": self.sex(m, {"M": "M", "F": "F"}),
                            "ssn": self.ssn(m, "ssn_missing_infant" if infant else "ssn_missing_benefit", donors),
                            "street": street, "apt": parts["unit"], "city": parts["city"], "zip": parts["postal"],
                        }

                    self.emit("benefit", build(), m, shared)
                    if self.c.roll("duplicate"):  # re-enrolled: a new file, its address written again
                        participants += 1
                        row = build(pid=f"B{participants:06d}", parts=self.address(guardian.later, "benefit"))
                        prev = self.rows["benefit"][-1]
                        if all(row[k] == prev[k] for k in ("first", "last", "birth_date")):
                            row["first"] = _force_typo(rng, row["first"])
                        self.emit("benefit", row, m)


def _force_typo(rng: Random, text: str) -> str:
    """A variation for a duplicate registration that would otherwise be identical."""
    if len(text) < 2:
        return text + ("A" if text.isupper() or not text else "a")
    i = rng.randrange(1, len(text))
    if text[i - 1] != text[i]:
        return text[:i - 1] + text[i] + text[i - 1] + text[i + 1:]
    return text[:i] + text[i + 1:]


# ---------------------------------------------------------------------------------------------
# API


def generate(people: int = 17_000, seed: int = 7, rates: IntlRates | None = None) -> IntlDataset:
    """A population of ``people`` and its four agency extracts, the same for the same seed and rates."""
    rates = rates or IntlRates()
    rng = Random(seed)
    pop = _PopulationBuilder(rng, rates)
    while len(pop.people) < people:
        pop.household()
    pop.finish(people)
    ex = _Extracts(pop, Random(seed + 1), rates)
    ex.register()
    ex.social()
    ex.tax()
    ex.benefit()
    frames = {a: pd.DataFrame(ex.rows[a], columns=COLUMNS[a], dtype=str).fillna("") for a in AGENCIES}
    return IntlDataset(
        register=frames["register"], social=frames["social"], tax=frames["tax"], benefit=frames["benefit"],
        truth=ex.truth, people=_people_frame(pop.people), corruptions=ex.corruptions,
        applied=dict(ex.c.applied), chances=dict(ex.c.chances),
        formats_used={a: [f for f in (DATE_FORMATS[a], *WRONG_FORMATS[a]) if f in ex.formats_used[a]]
                      for a in AGENCIES},
        rates=rates, seed=seed,
    )


def _people_frame(people: list[IntlPerson]) -> pd.DataFrame:
    rows = []
    for p in people:
        row = {
            "person_id": p.person_id, "household_id": p.household_id, "relationship": p.relationship,
            "first": p.first, "middle": p.middle, "surname": p.surname, "birth_surname": p.birth_surname,
            "sex": p.sex, "dob": p.dob.isoformat(), "ssn": p.ssn, "status": p.departed or "A",
            "departed_on": p.departed_on.isoformat() if p.departed_on else "", "twin_of": p.twin_of,
            "namesake_of": p.namesake_of,
        }
        for prefix, addr in (("census", p.address), ("later", p.later)):
            row.update({f"{prefix}_number": addr.number, f"{prefix}_street": addr.street,
                        f"{prefix}_unit": addr.unit, f"{prefix}_city": addr.city, f"{prefix}_postal": addr.postal})
        rows.append(row)
    return pd.DataFrame(rows, dtype=str)


_MAPPING_HEADER = {
    "register": ("Census-like population register of Meridia (synthetic): one row per person per household.\n"
                 "# No national id. Names title case with accents; sex Male/Female; dates month first."),
    "social": ("Social-insurance register of Meridia (synthetic): the issuer of ssn numbers (9 digits, no\n"
               "# check digit). Upper-case ASCII names; no address. Status D (died) and E (emigrated) rows\n"
               "# are real people and are kept (no op:/delete_when)."),
    "tax": ("Tax forms for 2021 (synthetic): one row per filer (P primary, S spouse) and per dependant (D);\n"
            "# dependants carry the filer's address. Upper-case names; dates day first."),
    "benefit": ("Nutrition programme for mothers and young children (synthetic): children (C), mothers (M)\n"
                "# and other guardians (G). Babies often have no ssn and a placeholder first name."),
}
_MAPPING_FIELDS = {
    "register": """record_id: person_ref
fields:
  given_names: {from: [first_name, middle_initial]}
  family_name: last_name
{dob_comment}  date_of_birth: {from: dob, format: "%m/%d/%Y"}
  sex: {from: sex, map: {Male: M, Female: F, "*": U}}
  addresses:
    - lines: {from: [street_number, street_name, unit]}
      locality: city
      postcode: postal_code
""",
    "social": """record_id: record_no
fields:
  given_names: given_names
  family_name: surname
{dob_comment}  date_of_birth: {from: birth_date, format: "%Y%m%d"}
  sex: {from: sex_code, map: {"1": M, "2": F, "*": U}}
  identifiers:
    ssn: ssn
""",
    "tax": """record_id: row_id
fields:
  given_names: given_name
  family_name: surname
{dob_comment}  date_of_birth: {from: dob, format: "%d/%m/%Y"}
  identifiers:
    ssn: ssn
  addresses:
    - lines: address
      locality: city
      postcode: postal_code
""",
    "benefit": """record_id: participant_id
fields:
  given_names: first
  family_name: last
{dob_comment}  date_of_birth: {from: birth_date, format: "%Y-%m-%d"}
  sex: {from: gender, map: {F: F, M: M, "*": U}}
  identifiers:
    ssn: ssn
  addresses:
    - lines: {from: [street, apt]}
      locality: city
      postcode: zip
""",
}


def mapping_yaml(agency: str, formats_used: list[str]) -> str:
    """The agency's mapping file in the project's mapping language (docs/mapping-language.md)."""
    main = DATE_FORMATS[agency]
    others = [f for f in formats_used if f != main]
    dob_comment = ""
    body = _MAPPING_FIELDS[agency]
    if others:
        listed = ", ".join(f'"{f}"' for f in [main, *others])
        dob_comment = f"  # This agency writes most dates as {main} but some rows as {', '.join(others)}.\n"
        body = body.replace(f'format: "{main}"', f"format: [{listed}]")
    body = body.replace("{dob_comment}", dob_comment)
    return (f"# {_MAPPING_HEADER[agency]}\n"
            f"# Written by linkage/synthetic_intl.py.\n"
            f"agency: {agency}\n"
            f"description: Meridia {agency} extract (synthetic benchmark)\n"
            f"source: {{kind: csv, path: ../{agency}.csv, delimiter: \",\", encoding: utf-8}}\n"
            f"{body}")


def write(dataset: IntlDataset, directory: Path) -> list[Path]:
    """``<agency>.csv`` for each agency, ``truth.csv`` and ``mappings/<agency>.yaml``."""
    directory = Path(directory)
    (directory / "mappings").mkdir(parents=True, exist_ok=True)
    written = []
    for agency, frame in dataset.agencies.items():
        path = directory / f"{agency}.csv"
        frame.to_csv(path, index=False, encoding="utf-8")
        written.append(path)
    truth = directory / "truth.csv"
    pd.DataFrame(sorted(dataset.truth.items()), columns=["record_key", "person_id"]).to_csv(truth, index=False)
    written.append(truth)
    for agency in AGENCIES:
        path = directory / "mappings" / f"{agency}.yaml"
        path.write_text(mapping_yaml(agency, dataset.formats_used[agency]), encoding="utf-8")
        written.append(path)
    return written


def summary(dataset: IntlDataset) -> str:
    lines = [f"people: {len(dataset.people)}  households: {dataset.people['household_id'].nunique()}  "
             f"seed: {dataset.seed}"]
    total = 0
    for agency, frame in dataset.agencies.items():
        lines.append(f"  {agency:<9} {len(frame):>7} records")
        total += len(frame)
    lines.append(f"  {'total':<9} {total:>7} records")
    people_linked = len(set(dataset.truth.values()))
    pairs = dataset.true_pairs()
    lines.append(f"people with at least one record: {people_linked}")
    lines.append(f"true match pairs: {pairs['all']} ({pairs['cross_agency']} across agencies, "
                 f"{pairs['within_agency']} within one agency)")
    twins = (dataset.people["twin_of"] != "").sum()
    namesakes = (dataset.people["namesake_of"] != "").sum()
    moved = (dataset.people["census_street"] + dataset.people["census_number"]
             != dataset.people["later_street"] + dataset.people["later_number"]).sum()
    departed = (dataset.people["status"] != "A").sum()
    no_ssn = (dataset.people["ssn"] == "").sum()
    lines.append(f"population: {twins} twins, {namesakes} namesakes of a parent or grandparent, {moved} movers, "
                 f"{departed} departed, {no_ssn} without ssn")
    lines.append(f"{'corruption':<28}{'applied':>9}{'chances':>10}{'rate':>9}{'set':>8}")
    for name, group in IntlRates.groups().items():
        if group != "corruption":
            continue
        applied = dataset.applied.get(name, 0)
        chances = dataset.chances.get(name, 0)
        rate = applied / chances if chances else 0.0
        lines.append(f"  {name:<26}{applied:>9}{chances:>10}{rate:>9.4f}{getattr(dataset.rates, name):>8.3f}")
    for agency in AGENCIES:
        lines.append(f"date formats in {agency}: {', '.join(dataset.formats_used[agency])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--people", type=int, default=17_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    dataset = generate(args.people, args.seed)
    written = write(dataset, args.out)
    print(summary(dataset))
    print(f"wrote {len(written)} files to {args.out} in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())


