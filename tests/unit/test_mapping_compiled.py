"""The compiled mapping (what the connectors run) against the reference semantics, and the
bookkeeping of parallel loads."""

from __future__ import annotations

import math
from typing import Any

from caselink.connectors.files import resume_point, shard_of
from caselink.connectors.mapping import (
    ADDRESS_KEYS,
    CASE_KEYS,
    PERSON_LISTS,
    PERSON_SCALARS,
    AddressSpec,
    AgencyMapping,
    FieldProblem,
    FieldSpec,
    RowError,
    reference_apply,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.depth import examples

COLUMNS = ["a", "b", "n.x"]
cell = st.one_of(
    st.none(), st.just(""), st.just("  "), st.just(math.nan), st.integers(-5, 5),
    st.sampled_from(["F", "m", " x ", "Ann ", "2020-02-30", "2020-01-31", "31/01/2020", "3l/0l/2O20", "a;b", " ; ",
                     " D "]),
    st.lists(st.sampled_from(["", " Ann", "Lee ", "F"]), max_size=3),
)
rows = st.fixed_dictionaries({}, optional={"a": cell, "b": cell, "n": st.fixed_dictionaries({}, optional={"x": cell})})
specs = st.builds(
    FieldSpec,
    sources=st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=2).map(tuple),
    split=st.sampled_from([None, None, ";"]),
    date_formats=st.sampled_from([(), (), ("%Y-%m-%d",), ("%d/%m/%Y",), ("%d/%m/%Y", "%Y-%m-%d")]),
    join=st.sampled_from([" ", ", "]),
    joined=st.booleans(),
    value_map=st.sampled_from([None, None, {"F": "F", "M": "M"}, {"f": "F", "*": "U"}]),
    default=st.sampled_from([None, None, "Z", " Z "]),
    required=st.booleans(),
    case=st.sampled_from([None, "lower", "upper"]),
)


def _outcome(fn: Any, *args: Any) -> Any:
    try:
        return ("ok", fn(*args))
    except RowError as exc:
        return ("row error", str(exc))
    except FieldProblem as exc:
        return ("field problem", exc.value, exc.reason, exc.raw)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@settings(max_examples=examples(600), deadline=None)
@given(spec=specs, row=rows)
def test_compiled_scalar_agrees_with_the_reference(spec: FieldSpec, row: dict[str, Any]) -> None:
    assert _same(_outcome(spec.compile_scalar("f"), row), _outcome(spec.scalar, row, "f"))


@settings(max_examples=examples(600), deadline=None)
@given(spec=specs, row=rows)
def test_compiled_many_agrees_with_the_reference(spec: FieldSpec, row: dict[str, Any]) -> None:
    assert _same(_outcome(spec.compile_many("f"), row), _outcome(spec.many, row, "f"))


# Plain columns (the commonest field, which the generated code inlines) as often as anything else.
plain = st.sampled_from(COLUMNS).map(lambda column: FieldSpec(sources=(column,)))
any_spec = st.one_of(plain, specs, st.builds(FieldSpec, value=st.sampled_from(["K", " k ", 7])))


def _specs_for(keys: tuple[str, ...]) -> st.SearchStrategy[dict[str, FieldSpec]]:
    return st.dictionaries(st.sampled_from(keys), any_spec, max_size=len(keys))


mappings = st.builds(
    lambda rid, ver, delete, scalars, lists, ids, addresses, cases: AgencyMapping(
        agency="health", record_id=rid, version=ver, delete_when=delete, delete_values=frozenset({"d", "5"}),
        scalars=scalars, lists=lists, identifiers=ids, addresses=[AddressSpec(a) for a in addresses],
        cases=[{"case_id": cid, **rest} for cid, rest in cases]),
    # Mostly a record id that is always there, so that most rows get past it to the rest.
    st.one_of(st.just(FieldSpec(value="R1")), st.just(FieldSpec(value="R1")), any_spec),
    st.none() | any_spec, st.none() | any_spec, _specs_for(PERSON_SCALARS), _specs_for(PERSON_LISTS),
    _specs_for(("nhs_number", "local")), st.lists(_specs_for(ADDRESS_KEYS), max_size=2),
    st.lists(st.tuples(any_spec, _specs_for(CASE_KEYS[1:])), max_size=2),
)


@settings(max_examples=examples(800), deadline=None)
@given(mapping=mappings, row=rows)
def test_generated_apply_agrees_with_the_reference(mapping: AgencyMapping, row: dict[str, Any]) -> None:
    """The generated code of a whole mapping: same MappedRow, or the same RowError first."""
    assert _outcome(mapping.apply, row) == _outcome(reference_apply, mapping, row)


def test_a_compiled_mapping_survives_pickling_for_worker_processes() -> None:
    import pickle

    from caselink.connectors.mapping import parse_mapping

    mapping = parse_mapping({"agency": "health", "record_id": "id",
                             "fields": {"family_name": {"from": "last", "upper": True}}})
    copy = pickle.loads(pickle.dumps(mapping))
    assert copy.apply({"id": "1", "last": "lee"}).person["family_name"] == "LEE"


IDENTITY = {"file": "/x.csv", "size": 10, "mtime_ns": 5}


def _cp(rows: int, identity: dict[str, Any] = IDENTITY) -> dict[str, Any]:
    return {"files": {identity["file"]: {**identity, "rows": rows}}}


def test_resume_point_prefers_the_connectors_own_checkpoint() -> None:
    cps = {"file:h": _cp(100), "file:h#0/2": _cp(700), "file:h#1/2": _cp(400)}
    assert resume_point(cps, "file:h#0/2", IDENTITY) == 700
    assert resume_point(cps, "file:h", IDENTITY) == 100


def test_resume_point_without_its_own_takes_the_smallest_related_position() -> None:
    cps = {"file:h#0/2": _cp(700), "file:h#1/2": _cp(400), "file:other": _cp(10)}
    assert resume_point(cps, "file:h", IDENTITY) == 400  # after a parallel run, single-process
    assert resume_point(cps, "file:h#2/3", IDENTITY) == 400  # a different number of workers
    assert resume_point({"file:h": _cp(300)}, "file:h#1/2", IDENTITY) == 300


def test_resume_point_never_trusts_an_incomplete_set_of_shards() -> None:
    # Shard 1 of 2 died before its first checkpoint: shard 0's position says nothing about its rows.
    cps = {"file:h#0/2": _cp(25_000)}
    assert resume_point(cps, "file:h#1/2", IDENTITY) == 0
    assert resume_point(cps, "file:h", IDENTITY) == 0
    # A complete set, or the base, vouches for every row; the furthest of them is used.
    cps.update({"file:h#1/2": _cp(20_000), "file:h": _cp(5_000)})
    assert resume_point(cps, "file:h#1/3", IDENTITY) == 20_000


def test_resume_point_ignores_a_changed_file() -> None:
    changed = {**IDENTITY, "size": 11}
    assert resume_point({"file:h": _cp(300)}, "file:h", changed) == 0
    assert resume_point({}, "file:h", IDENTITY) == 0


def test_shard_of_is_stable_and_spreads() -> None:
    owners = [shard_of(f"R{i}", 2) for i in range(1000)]
    assert owners == [shard_of(f"R{i}", 2) for i in range(1000)]
    assert 400 < owners.count(0) < 600


@settings(max_examples=examples(300), deadline=None)
@given(name=st.text(max_size=40))
def test_uuid5_text_is_uuid5(name: str) -> None:
    import uuid

    from caselink.core.ids import uuid5_text

    namespace = uuid.UUID("6f1c3a52-7d1e-4c55-9a38-1d2f6a9e4b10")
    assert uuid5_text(namespace, name) == str(uuid.uuid5(namespace, name))


class _RecordingSink:
    """Stands in for ConnectorSink: records sends and checkpoints in the order they happen."""

    producer = None

    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []

    def send_event(self, event: dict[str, Any]) -> None:
        self.log.append(("event", int(event["source"]["row"])))

    def send_dead_letter(self, letter: dict[str, Any], headers: Any = None) -> None:
        self.log.append(("dead letter", letter["origin"]))

    def commit_checkpoint(self, position: dict[str, Any]) -> None:
        (state,) = position["files"].values()
        self.log.append(("checkpoint", state["rows"]))


def test_a_checkpoint_never_names_a_row_before_it_is_sent(tmp_path: Any, monkeypatch: Any) -> None:
    """A checkpoint at row N promises rows up to N are sent; a kill right after it must lose nothing."""
    import caselink.connectors.files as files
    from caselink.connectors.mapping import parse_mapping

    from caselink.core.settings import ConnectorSettings, Settings

    every = 5_000
    settings = Settings(connector=ConnectorSettings(checkpoint_every_rows=every, checkpoint_interval_s=0))
    rows = 3 * every + 7
    data = tmp_path / "rows.csv"
    data.write_text("id,last\n" + "".join(f"R{i},Lee\n" for i in range(rows)))
    monkeypatch.setattr(files, "read_checkpoints", lambda settings, agency, **kw: {})
    monkeypatch.setattr(files, "ConnectorSink", lambda settings, name, agency: _RecordingSink())
    mapping = parse_mapping({"agency": "health", "record_id": "id", "fields": {"family_name": "last"}})
    for shard in (None, (0, 2), (1, 2)):
        connector = files.FileConnector(settings, mapping, name="t", shard=shard)
        connector.load(data, resume=False)
        sent: set[int] = set()
        mine = {n for n in range(1, rows + 1)
                if shard is None or files.shard_of(f"R{n - 1}", shard[1]) == shard[0]}
        checkpoints = 0
        for kind, what in connector.sink.log:  # type: ignore[attr-defined]
            if kind == "event":
                sent.add(what)
            elif kind == "checkpoint":
                checkpoints += 1
                assert {n for n in mine if n <= what} <= sent, f"checkpoint at row {what} before its rows were sent"
        assert sent == mine and checkpoints == 4
