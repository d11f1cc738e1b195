"""The mapping language: from any agency's own layout to the canonical PersonEvent, in YAML.

One file per agency source drives both the streaming connectors and ``caselink link`` (batch).
Errors in a mapping file name the file and line. Errors applying a mapping to one row raise
``RowError`` naming the field, which the connectors turn into a dead letter for that row only.
See docs/mapping-language.md for the language with examples.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from caselink.connectors.dates import DateFormatError, check_format, read_date
from caselink.linkage.deployment import catalogue
from caselink.linkage.schemes import SchemeCatalogue
from caselink.linkage.standardise import is_missing

from caselink.core.settings import get_settings
from caselink.core.yaml_lines import line_of as _line
from caselink.core.yaml_lines import load_yaml_with_lines

FIELD_KEYS = {"from", "value", "join", "split", "format", "map", "default", "required", "lower", "upper"}
PERSON_SCALARS = ("given_names", "family_name", "date_of_birth", "sex")
PERSON_LISTS = ("other_names", "phones", "emails")
ADDRESS_KEYS = ("lines", "locality", "region", "postcode", "country", "valid_from", "valid_to")
CASE_KEYS = ("case_id", "case_type", "status", "opened_at", "closed_at", "sensitivity")
TOP_KEYS = {"agency", "description", "source", "record_id", "version", "op", "fields", "cases"}


class MappingError(ValueError):
    """The mapping file itself is wrong."""


class RowError(ValueError):
    """One row cannot be mapped; ``field`` says which part."""

    def __init__(self, field_path: str, reason: str) -> None:
        self.field = field_path
        self.reason = reason
        super().__init__(f"{field_path}: {reason}")


class FieldProblem(ValueError):
    """One field of a row could not be read as asked: ``value`` is what is kept of it (the digits
    of a date that is not on the calendar, or None), ``reason`` says why. The row goes on without
    it and records the problem in the person's ``quality``; one bad field never loses a record."""

    def __init__(self, value: Any, reason: str, raw: Any) -> None:
        self.value = value
        self.reason = reason
        self.raw = raw
        super().__init__(reason)


def _quality(quality: list[dict[str, Any]], path: str, problem: FieldProblem) -> Any:
    """Record ``problem`` for the field at ``path`` and give the value kept of it."""
    raw = problem.raw if problem.raw is None or isinstance(problem.raw, str) else str(problem.raw)
    quality.append({"field": path, "problem": problem.reason, "raw": raw})
    return problem.value


# --------------------------------------------------------------------------- field specs
@dataclass(frozen=True)
class FieldSpec:
    sources: tuple[str, ...] = ()
    value: Any = None
    join: str = " "
    split: str | None = None
    date_formats: tuple[str, ...] = ()
    joined: bool = False  # ``join`` given: several columns make one value even where a list is built
    value_map: Mapping[str, Any] | None = None
    default: Any = None
    required: bool = False
    case: str | None = None
    line: int = field(default=0, compare=False)  # where the mapping file gives it, for error messages

    def raw(self, row: Mapping[str, Any], path: str) -> list[Any]:
        if self.value is not None:
            return [self.value]
        values = []
        for source in self.sources:
            v = _lookup(row, source)
            if not is_missing(v):
                values.append(v)
        if not values and self.default is not None:
            values = [self.default]
        if not values and self.required:
            raise RowError(path, self._missing_reason)
        return values

    @property
    def _missing_reason(self) -> str:
        return f"required but {', '.join(self.sources)} is empty or missing"

    def scalar(self, row: Mapping[str, Any], path: str) -> Any:
        values = self.raw(row, path)
        if not values:
            return None
        value: Any = self.join.join(str(v).strip() for v in values) if len(values) > 1 else values[0]
        return self._post(value, path)

    def many(self, row: Mapping[str, Any], path: str) -> list[Any]:
        out: list[Any] = []
        values = self.raw(row, path)
        if self.joined and len(values) > 1:
            values = [self.join.join(str(v).strip() for v in values)]
        for value in values:
            parts = str(value).split(self.split) if self.split else ([*value] if isinstance(value, list) else [value])
            out.extend(self._post(p, path) for p in parts if not is_missing(p))
        return [o for o in out if o is not None]

    def _post(self, value: Any, path: str) -> Any:
        if isinstance(value, str):
            value = value.strip()
            if self.case == "lower":
                value = value.lower()
            elif self.case == "upper":
                value = value.upper()
        if self.value_map is not None:
            value = self._post_map(value, path)
        if self.date_formats and value is not None and value != "":
            iso, problem = read_date(str(value), self.date_formats)
            if problem is not None:
                raise FieldProblem(iso, problem, value)
            value = iso
        return value


    # ------------------------------------------------------------------ compiled forms
    # ``scalar`` and ``many`` above are the reference semantics. The compiled forms below do the
    # same with every decision that depends only on the spec taken once, at load time: mapping a
    # row was most of the file connector's time per row. tests/unit/test_mapping_compiled.py checks
    # the two agree on generated specs and rows.
    def compile_scalar(self, path: str) -> Callable[[Mapping[str, Any]], Any]:
        if self.value is not None or len(self.sources) != 1:
            return lambda row: self.scalar(row, path)
        post = self._compile_post(path)
        get = _getter(self.sources[0])
        fallback = self._compile_fallback(path, post)

        def one(row: Mapping[str, Any]) -> Any:
            value = get(row)
            if isinstance(value, str):
                text = value.strip()
                return post(text) if text else fallback()
            if value is None or (isinstance(value, float) and value != value):
                return fallback()
            return post(value)

        return one

    def compile_many(self, path: str) -> Callable[[Mapping[str, Any]], list[Any]]:
        if self.value is not None or len(self.sources) != 1 or self.split is not None or self.joined:
            return lambda row: self.many(row, path)
        post = self._compile_post(path)
        get = _getter(self.sources[0])
        default, required, reason = self.default, self.required, self._missing_reason

        def many(row: Mapping[str, Any]) -> list[Any]:
            value = get(row)
            if is_missing(value):
                if default is not None:
                    value = default
                elif required:
                    raise RowError(path, reason)
                else:
                    return []
            out = []
            for part in value if isinstance(value, list) else (value,):
                if is_missing(part):
                    continue
                done = post(part.strip() if isinstance(part, str) else part)
                if done is not None:
                    out.append(done)
            return out

        return many

    def _compile_fallback(self, path: str, post: Callable[[Any], Any]) -> Callable[[], Any]:
        if self.default is not None:
            default = self.default
            return lambda: post(default.strip() if isinstance(default, str) else default)
        if self.required:
            reason = self._missing_reason

            def missing() -> Any:
                raise RowError(path, reason)

            return missing
        return lambda: None

    def _compile_post(self, path: str) -> Callable[[Any], Any]:
        """``_post`` for a value already stripped (when it is a string)."""
        steps: list[Callable[[Any], Any]] = []
        if self.case == "lower":
            steps.append(lambda v: v.lower() if v.__class__ is str else v)
        elif self.case == "upper":
            steps.append(lambda v: v.upper() if v.__class__ is str else v)
        if self.value_map is not None:
            steps.append(lambda v: self._post_map(v, path))
        if self.date_formats:
            formats = self.date_formats

            def to_date(v: Any) -> Any:
                if v is None or v == "":
                    return v
                iso, problem = read_date(str(v), formats)
                if problem is not None:
                    raise FieldProblem(iso, problem, v)
                return iso

            steps.append(to_date)
        if not steps:
            return lambda v: v
        if len(steps) == 1:
            return steps[0]

        def chain(v: Any) -> Any:
            for step in steps:
                v = step(v)
            return v

        return chain

    def _post_map(self, value: Any, path: str) -> Any:
        assert self.value_map is not None
        key = str(value)
        if key in self.value_map:
            return self.value_map[key]
        if key.lower() in self.value_map:
            return self.value_map[key.lower()]
        if "*" in self.value_map:
            return self.value_map["*"]
        raise FieldProblem(None, f"value {key!r} is not in the map ({', '.join(map(str, self.value_map))}); left out",
                           value)


def _getter(source: str) -> Callable[[Mapping[str, Any]], Any]:
    if "." not in source:
        return lambda row: row.get(source)
    return lambda row: _lookup(row, source)


def _lookup(row: Mapping[str, Any], source: str) -> Any:
    """A column, or a dotted path into nested JSON."""
    if source in row:
        return row[source]
    current: Any = row
    for part in source.split("."):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return None
    return current


def _field(spec: Any, where: str, file: str, node: Any = None) -> FieldSpec:
    line = _line(node, where.rsplit(".", 1)[-1]) if node is not None else 0
    if isinstance(spec, str):
        return FieldSpec(sources=(spec,), line=line)
    if not isinstance(spec, dict):
        raise MappingError(f"{file}:{_line(node)}: {where} must be a column name or a mapping")
    unknown = set(spec) - FIELD_KEYS
    if unknown:
        raise MappingError(f"{file}:{_line(spec, sorted(unknown)[0])}: {where}: unknown key(s) "
                           f"{', '.join(sorted(unknown))}; allowed: {', '.join(sorted(FIELD_KEYS))}")
    if ("from" in spec) == ("value" in spec):
        raise MappingError(f"{file}:{_line(spec)}: {where}: give exactly one of 'from' (columns) or 'value' (constant)")
    sources = spec.get("from")
    if sources is not None:
        sources = (sources,) if isinstance(sources, str) else tuple(sources)
        if not all(isinstance(s, str) for s in sources):
            raise MappingError(f"{file}:{_line(spec, 'from')}: {where}.from must be a column name or a list of them")
    fmt = spec.get("format")
    formats: tuple[str, ...] = ()
    if fmt is not None:
        formats = (fmt,) if isinstance(fmt, str) else tuple(fmt) if isinstance(fmt, list) else ()
        if not formats or not all(isinstance(f, str) for f in formats):
            raise MappingError(f"{file}:{_line(spec, 'format')}: {where}.format must be a date format or a list "
                               f"of them, tried in order")
        for one in formats:
            try:
                check_format(one)
            except DateFormatError as exc:
                raise MappingError(f"{file}:{_line(spec, 'format')}: {where}.format {exc}") from None
    value_map = spec.get("map")
    if value_map is not None and not isinstance(value_map, dict):
        raise MappingError(f"{file}:{_line(spec, 'map')}: {where}.map must be a mapping of source value -> value")
    return FieldSpec(
        sources=sources or (),
        value=spec.get("value"),
        join=str(spec.get("join", " ")),
        split=spec.get("split"),
        date_formats=formats,
        joined="join" in spec,
        value_map={str(k): v for k, v in value_map.items()} if value_map else None,
        default=spec.get("default"),
        required=bool(spec.get("required", False)),
        case="lower" if spec.get("lower") else ("upper" if spec.get("upper") else None),
        line=line,
    )


# --------------------------------------------------------------------------- the mapping
@dataclass
class AddressSpec:
    fields: dict[str, FieldSpec]


@dataclass
class AgencyMapping:
    agency: str
    record_id: FieldSpec
    version: FieldSpec | None
    delete_when: FieldSpec | None
    delete_values: frozenset[str]
    scalars: dict[str, FieldSpec]
    lists: dict[str, FieldSpec]
    identifiers: dict[str, FieldSpec]
    addresses: list[AddressSpec]
    cases: list[dict[str, FieldSpec]]
    source: dict[str, Any] = field(default_factory=dict)
    path: str = "<mapping>"

    def __post_init__(self) -> None:
        self._apply = _compile_apply(self)

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (for worker processes): the compiled form is rebuilt on the other side."""
        return {k: v for k, v in self.__dict__.items() if k != "_apply"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._apply = _compile_apply(self)

    def apply(self, row: Mapping[str, Any]) -> MappedRow:
        """The canonical pieces of one source row, or RowError."""
        return self._apply(row)

    def specs(self) -> list[tuple[str, FieldSpec, bool]]:
        """Every field spec as (path, spec, is_key): the key parts (record id, version, op) decide
        whether a row can be an event at all."""
        out: list[tuple[str, FieldSpec, bool]] = [("record_id", self.record_id, True)]
        out += [("version", self.version, True)] if self.version is not None else []
        out += [("op", self.delete_when, True)] if self.delete_when is not None else []
        out += [(f"fields.{k}", v, False) for k, v in {**self.scalars, **self.lists}.items()]
        out += [(f"fields.identifiers.{k}", v, False) for k, v in self.identifiers.items()]
        out += [(f"fields.addresses[{i}].{k}", v, False) for i, a in enumerate(self.addresses)
                for k, v in a.fields.items()]
        out += [(f"cases[{i}].{k}", v, False) for i, c in enumerate(self.cases) for k, v in c.items()]
        return out

    def missing_columns(self, columns: set[str], partial: bool = False) -> tuple[list[str], list[str]]:
        """Check a source's columns (a CSV header; for JSON, the keys seen on its first rows)
        against the mapping before anything is sent. Returns (errors, warnings):

        * error: a key part (record id, version, op) or any field none of whose columns is there:
          every row would be a dead letter, or the field would never be filled;
        * warning: a field some of whose alternative columns are missing.

        ``partial``: ``columns`` are only what some rows showed (JSON), so only key parts count."""
        errors, warnings = [], []
        for path, spec, key in self.specs():
            if not spec.sources or (partial and not key):
                continue
            absent = [c for c in spec.sources if c not in columns and c.split(".", 1)[0] not in columns]
            if not absent:
                continue
            where = f"{self.path}:{spec.line}" if spec.line else self.path
            quoted = ", ".join(repr(c) for c in absent)
            if len(absent) == len(spec.sources):
                errors.append(f"{where}: {path} reads column(s) {quoted}, which the source does not have")
            else:
                warnings.append(f"{where}: {path}: column(s) {quoted} not in the source (the others are used)")
        return errors, warnings


def _missing_id(spec: FieldSpec) -> str:
    """What a row without a record id is told: which column(s) were empty."""
    if not spec.sources:
        return "missing record id"
    return f"missing record id: column {', '.join(repr(c) for c in spec.sources)} is empty on this row"


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def reference_apply(m: AgencyMapping, row: Mapping[str, Any]) -> MappedRow:
    """What ``AgencyMapping.apply`` does, written plainly with the reference field semantics
    (``FieldSpec.scalar`` and ``many``); ``apply`` runs the generated equivalent, and
    tests/unit/test_mapping_compiled.py checks the two agree on generated mappings and rows."""
    quality: list[dict[str, Any]] = []

    def scalar(spec: FieldSpec, path: str) -> Any:
        try:
            return spec.scalar(row, path)
        except FieldProblem as problem:
            return _quality(quality, path, problem)

    def many(spec: FieldSpec, path: str) -> list[Any]:
        try:
            return spec.many(row, path)
        except FieldProblem as problem:
            _quality(quality, path, problem)
            return []

    def key_part(spec: FieldSpec, path: str) -> Any:
        try:
            return spec.scalar(row, path)
        except FieldProblem as problem:
            raise RowError(path, problem.reason) from None

    rid = key_part(m.record_id, "record_id")
    if rid is None or str(rid).strip() == "":
        raise RowError("record_id", _missing_id(m.record_id))
    ver = _version_number(key_part(m.version, "version")) if m.version is not None else None
    deleted = False
    if m.delete_when is not None:
        flag = key_part(m.delete_when, "op")
        deleted = flag is not None and str(flag).strip().lower() in m.delete_values
    person: dict[str, Any] = {name: _text(scalar(spec, name)) for name, spec in m.scalars.items()}
    for name in PERSON_SCALARS:
        person.setdefault(name, None)
    for name in PERSON_LISTS:
        person[name] = [str(v) for v in many(m.lists[name], name)] if name in m.lists else []
    ids: dict[str, str] = {}
    for scheme, spec in m.identifiers.items():
        value = scalar(spec, f"identifiers.{scheme}")
        if value is not None and str(value).strip():
            ids[scheme] = str(value).strip()
    person["identifiers"] = ids
    person["addresses"] = []
    for i, address in enumerate(m.addresses):
        lines = address.fields.get("lines")
        built: dict[str, Any] = {"lines": [str(v) for v in many(lines, f"addresses[{i}].lines")] if lines else []}
        for key in ADDRESS_KEYS[1:]:
            key_spec = address.fields.get(key)
            built[key] = _text(scalar(key_spec, f"addresses[{i}].{key}")) if key_spec else None
        if built["lines"] or built["postcode"] or built["locality"]:
            person["addresses"].append(built)
    cases = []
    for i, case in enumerate(m.cases):
        built_case = {key: _text(scalar(case[key], f"cases[{i}].{key}")) if key in case else None
                      for key in CASE_KEYS}
        if built_case["case_id"]:
            built_case["sensitivity"] = built_case["sensitivity"] or "normal"
            cases.append(built_case)
    person["quality"] = quality
    return MappedRow(str(rid).strip(), ver, deleted, person, cases)


class _ApplyWriter:
    """Writes the source of one mapping's ``apply``: straight-line code, a field at a time.

    Generated code that inlines the common field (one column, stripped, with its default) maps a
    row in well under half the time of a closure per field (docs/benchmarks.md). Fields with
    anything more (several columns, a constant, a split) call their compiled closure.
    """

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.scope: dict[str, Any] = {"RowError": RowError, "MappedRow": MappedRow, "_lookup": _lookup,
                                      "_version_number": _version_number, "FieldProblem": FieldProblem,
                                      "_quality": _quality}
        self.count = 0

    def guarded(self, path: str, target: str, body: Callable[[], None], mode: str = "value") -> None:
        """The code ``body`` emits, inside ``try``: a FieldProblem keeps what it can of the value
        and notes it in ``quality`` (``mode`` "value", or "list" for an empty list), or, for the
        parts that key and order the record (``mode`` "key"), fails the row."""
        start = len(self.lines)
        body()
        inner = self.lines[start:]
        del self.lines[start:]
        self.emit("try:")
        self.lines.extend("    " + line for line in inner)
        self.emit("except FieldProblem as problem:")
        if mode == "key":
            self.emit(f"raise RowError({path!r}, problem.reason) from None", 2)
        elif mode == "list":
            self.emit(f"_quality(quality, {path!r}, problem)", 2)
            self.emit(f"{target} = []", 2)
        else:
            self.emit(f"{target} = _quality(quality, {path!r}, problem)", 2)

    def name(self, value: Any, stem: str = "_k") -> str:
        self.count += 1
        key = f"{stem}{self.count}"
        self.scope[key] = value
        return key

    def emit(self, line: str, depth: int = 1) -> None:
        self.lines.append("    " * depth + line)

    def scalar(self, spec: FieldSpec, path: str, target: str, as_text: bool = False) -> None:
        """``target = <spec.scalar(row, path)>``; with ``as_text``, ``_text`` of that."""
        if spec.value is not None or len(spec.sources) != 1:
            self.emit(f"{target} = {self.name(spec.compile_scalar(path), '_scalar')}(row)")
            if as_text:
                self._to_text(target)
            return
        source = spec.sources[0]
        get = f"row.get({source!r})" if "." not in source else f"_lookup(row, {source!r})"
        post = spec._compile_post(path)
        has_post = bool(spec.case or spec.value_map is not None or spec.date_formats)
        if spec.default is not None or spec.required:
            fallback = f"{self.name(spec._compile_fallback(path, post), '_fallback')}()"
        else:
            fallback = "None"
        apply_post = f"{target} = {self.name(post, '_post')}({target})" if has_post else None
        self.emit(f"{target} = {get}")
        self.emit(f"if isinstance({target}, str):")
        self.emit(f"{target} = {target}.strip()", 2)
        if apply_post:
            self.emit(f"if {target}:", 2)
            self.emit(apply_post, 3)
            self.emit("else:", 2)
            self.emit(f"{target} = {fallback}", 3)
        else:
            self.emit(f"if not {target}:", 2)
            self.emit(f"{target} = {fallback}", 3)
        self.emit(f"elif {target} is None or (isinstance({target}, float) and {target} != {target}):")
        self.emit(f"{target} = {fallback}", 2)
        if apply_post:
            self.emit("else:")
            self.emit(apply_post, 2)
        if as_text and (apply_post or fallback != "None"):
            self._to_text(target)
        elif as_text:  # only the branch of other types can hold something other than str or None
            self.emit("else:")
            self.emit(f"{target} = str({target})", 2)

    def _to_text(self, target: str) -> None:
        self.emit(f"if {target} is not None and {target}.__class__ is not str:")
        self.emit(f"{target} = str({target})", 2)

    def text(self, spec: FieldSpec | None, path: str, target: str) -> None:
        """``target = _text(<spec.scalar(row, path)>)``, or None without a spec."""
        if spec is None:
            self.emit(f"{target} = None")
            return
        self.scalar(spec, path, target, as_text=True)

    def many(self, spec: FieldSpec | None, path: str, target: str) -> None:
        if spec is None:
            self.emit(f"{target} = []")
        else:
            self.emit(f"{target} = [str(x) for x in {self.name(spec.compile_many(path), '_many')}(row)]")


def _compile_apply(m: AgencyMapping) -> Callable[[Mapping[str, Any]], MappedRow]:
    """One generated function per mapping that builds a MappedRow (see ``reference_apply``)."""
    w = _ApplyWriter()
    w.lines.append("def apply(row):")
    w.emit("quality = []")
    w.guarded("record_id", "rid", lambda: w.scalar(m.record_id, "record_id", "rid"), "key")
    w.emit("if rid is None or str(rid).strip() == '':")
    w.emit(f"raise RowError('record_id', {_missing_id(m.record_id)!r})", 2)
    if m.version is not None:
        version = m.version
        w.guarded("version", "ver", lambda: w.scalar(version, "version", "ver"), "key")
        w.emit("ver = _version_number(ver)")
    else:
        w.emit("ver = None")
    w.emit("deleted = False")
    if m.delete_when is not None:
        delete_when = m.delete_when
        w.guarded("op", "flag", lambda: w.scalar(delete_when, "op", "flag"), "key")
        w.emit(f"deleted = flag is not None and str(flag).strip().lower() in {w.name(m.delete_values)}")

    def text(spec: FieldSpec | None, path: str, target: str) -> None:
        if spec is None:
            w.emit(f"{target} = None")
        else:
            w.guarded(path, target, lambda: w.text(spec, path, target))

    def many(spec: FieldSpec | None, path: str, target: str) -> None:
        if spec is None:
            w.emit(f"{target} = []")
        else:
            w.guarded(path, target, lambda: w.many(spec, path, target), "list")

    for name, spec in m.scalars.items():  # parse_mapping admits only PERSON_SCALARS here
        text(spec, name, f"p_{name}")
    for name in PERSON_SCALARS:
        if name not in m.scalars:
            w.emit(f"p_{name} = None")
    for name in PERSON_LISTS:
        many(m.lists.get(name), name, f"p_{name}")
    w.emit("ids = {}")
    for scheme, spec in m.identifiers.items():
        path = f"identifiers.{scheme}"
        w.guarded(path, "v", lambda spec=spec, path=path: w.scalar(spec, path, "v"))  # type: ignore[misc]
        w.emit("if v is not None:")
        w.emit("v = str(v).strip()", 2)
        w.emit("if v:", 2)
        w.emit(f"ids[{scheme!r}] = v", 3)
    w.emit("addresses = []")
    for i, address in enumerate(m.addresses):
        many(address.fields.get("lines"), f"addresses[{i}].lines", "a_lines")
        for key in ADDRESS_KEYS[1:]:
            text(address.fields.get(key), f"addresses[{i}].{key}", f"a_{key}")
        w.emit("if a_lines or a_postcode or a_locality:")
        w.emit("addresses.append({" + ", ".join(f"{k!r}: a_{k}" for k in ADDRESS_KEYS) + "})", 2)
    w.emit("cases = []")
    for i, case in enumerate(m.cases):
        for key in CASE_KEYS:
            text(case.get(key), f"cases[{i}].{key}", f"c_{key}")
        w.emit("if c_case_id:")
        w.emit("cases.append({" + ", ".join(f"{k!r}: c_{k}" for k in CASE_KEYS[:-1])
               + ", 'sensitivity': c_sensitivity or 'normal'})", 2)
    fields = [*PERSON_SCALARS, *PERSON_LISTS]
    w.emit("person = {" + ", ".join(f"{k!r}: p_{k}" for k in fields)
           + ", 'identifiers': ids, 'addresses': addresses, 'quality': quality}")
    w.emit("return MappedRow(str(rid).strip(), ver, deleted, person, cases)")
    exec(compile("\n".join(w.lines), f"<mapping {m.path}>", "exec"), w.scope)
    return w.scope["apply"]  # type: ignore[no-any-return]


@dataclass
class MappedRow:
    record_id: str
    version: int | None
    deleted: bool
    person: dict[str, Any]
    cases: list[dict[str, Any]]


def _version_number(value: Any) -> int | None:
    """An integer version as is; a timestamp as epoch milliseconds (monotonic as the source's clock)."""
    if value is None or value == "":
        return None
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise RowError("version", f"{text!r} is neither an integer nor an ISO timestamp") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def load_mapping(path: str | Path, schemes: SchemeCatalogue | None = None) -> AgencyMapping:
    """A mapping file, checked against the deployment's identifier schemes (``schemes``, or
    those of the settings)."""
    path = Path(path)
    data = load_yaml_with_lines(path.read_text(encoding="utf-8"), path, MappingError)
    return parse_mapping(data, str(path), schemes)


def configured_schemes() -> SchemeCatalogue:
    return catalogue(get_settings().linkage)


def _reject_unknown(node: dict[str, Any], allowed: Any, what: str, file: str) -> None:
    unknown = set(node) - set(allowed)
    if unknown:
        key = sorted(unknown)[0]
        raise MappingError(f"{file}:{_line(node, key)}: unknown {what} {key!r}; allowed: {', '.join(sorted(allowed))}")


def parse_mapping(data: Any, file: str = "<mapping>", schemes: SchemeCatalogue | None = None) -> AgencyMapping:
    if not isinstance(data, dict):
        raise MappingError(f"{file}:1: a mapping file must be a YAML mapping")
    _reject_unknown(data, TOP_KEYS, "top-level key", file)
    for required in ("agency", "record_id", "fields"):
        if required not in data:
            raise MappingError(f"{file}:1: missing required key {required!r}")
    agency = data["agency"]
    if not isinstance(agency, str) or not agency.replace("_", "").isalnum() or not agency.islower():
        raise MappingError(f"{file}:{_line(data, 'agency')}: agency must be lower-case letters, digits and _")
    fields = data["fields"]
    if not isinstance(fields, dict):
        raise MappingError(f"{file}:{_line(data, 'fields')}: fields must be a mapping")
    _reject_unknown(fields, {*PERSON_SCALARS, *PERSON_LISTS, "identifiers", "addresses"}, "person field", file)
    scalars = {k: _field(fields[k], f"fields.{k}", file, fields) for k in PERSON_SCALARS if k in fields}
    lists = {k: _field(fields[k], f"fields.{k}", file, fields) for k in PERSON_LISTS if k in fields}
    identifiers_raw = fields.get("identifiers") or {}
    if not isinstance(identifiers_raw, dict):
        raise MappingError(f"{file}:{_line(fields, 'identifiers')}: identifiers must map scheme -> field")
    identifiers = {scheme: _field(spec, f"fields.identifiers.{scheme}", file, identifiers_raw)
                   for scheme, spec in identifiers_raw.items()}
    catalogue = schemes if schemes is not None else configured_schemes()
    unknown = catalogue.unknown(identifiers_raw, agency)
    if unknown:
        raise MappingError(f"{file}:{_line(identifiers_raw, unknown[0])}: fields.identifiers.{unknown[0]}: "
                           f"{catalogue.describe_unknown(unknown[0])}")
    addresses_raw = fields.get("addresses") or []
    if isinstance(addresses_raw, dict):
        addresses_raw = [addresses_raw]
    addresses = []
    for i, address in enumerate(addresses_raw):
        if not isinstance(address, dict):
            raise MappingError(f"{file}:{_line(fields, 'addresses')}: fields.addresses[{i}] must be a mapping")
        _reject_unknown(address, ADDRESS_KEYS, "address field", file)
        addresses.append(AddressSpec({k: _field(v, f"fields.addresses[{i}].{k}", file, address)
                                      for k, v in address.items()}))
    cases_raw = data.get("cases") or []
    if isinstance(cases_raw, dict):
        cases_raw = [cases_raw]
    cases = []
    for i, case in enumerate(cases_raw):
        if not isinstance(case, dict) or "case_id" not in case:
            raise MappingError(f"{file}:{_line(data, 'cases')}: cases[{i}] must be a mapping with a case_id")
        _reject_unknown(case, CASE_KEYS, "case field", file)
        cases.append({k: _field(v, f"cases[{i}].{k}", file, case) for k, v in case.items()})
    op = data.get("op")
    delete_when: FieldSpec | None = None
    delete_values: frozenset[str] = frozenset()
    if op is not None:
        if not isinstance(op, dict) or "from" not in op or "delete_when" not in op:
            raise MappingError(f"{file}:{_line(data, 'op')}: op needs 'from' (a column) and 'delete_when' (values)")
        delete_when = _field({"from": op["from"]}, "op", file, op)
        values = op["delete_when"]
        delete_values = frozenset(str(v).lower() for v in (values if isinstance(values, list) else [values]))
    source = data.get("source") or {}
    if not isinstance(source, dict):
        raise MappingError(f"{file}:{_line(data, 'source')}: source must be a mapping")
    return AgencyMapping(
        agency=agency,
        record_id=_field(data["record_id"], "record_id", file, data),
        version=_field(data["version"], "version", file, data) if "version" in data else None,
        delete_when=delete_when,
        delete_values=delete_values,
        scalars=scalars,
        lists=lists,
        identifiers=identifiers,
        addresses=addresses,
        cases=cases,
        source=dict(source),
        path=file,
    )
