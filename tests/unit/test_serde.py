import json
import shutil
from pathlib import Path

import pytest
from caselink.schemas import SCHEMA_NAMES, AvroSerde, SchemaValidationError, UndecodableEventError, default_serde
from caselink.schemas.compat import check_all, check_pair
from caselink.schemas.serde import HISTORY_DIR, SCHEMA_DIR

from tests.samples import sample


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_every_schema_round_trips(name: str) -> None:
    serde = default_serde()
    record = sample(name)
    data = serde.encode(name, record)
    assert data[0] == 0 and data[:5] == serde.header(name)  # the registry framing: 0, then the schema id
    assert serde.registry.schema_text(int.from_bytes(data[1:5], "big")) == json.dumps(serde.schema(name).raw)
    decoded_name, decoded = serde.decode(data)
    assert decoded_name == name
    assert decoded == record


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_messages_written_before_the_registry_are_still_read(name: str) -> None:
    """Avro single-object encoding (C3 01, the fingerprint, the body): what the link input and
    every other topic hold from before the registry framing. Read, never written."""
    import io

    import fastavro
    from caselink.schemas.serde import MAGIC

    serde = default_serde()
    version = serde.schema(name)
    record = sample(name)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, version.parsed, record)
    legacy = MAGIC + version.fingerprint + buf.getvalue()
    assert serde.decode(legacy) == (name, record)
    framed = serde.encode(name, record)
    assert framed[5:] == legacy[10:]  # the same body: only the framing changed


def test_a_schema_id_the_serde_has_not_seen_is_fetched_from_the_registry() -> None:
    from tests.memory_registry import MemoryRegistry

    registry = MemoryRegistry()
    writer, reader = AvroSerde(registry=registry), AvroSerde(registry=registry)
    data = writer.encode("PersonEvent", sample("PersonEvent"))
    assert reader.by_id == {}
    assert reader.decode(data) == ("PersonEvent", sample("PersonEvent"))
    assert int.from_bytes(data[1:5], "big") in reader.by_id


def test_subjects_are_backward_compatible_and_refuse_a_breaking_change() -> None:
    from caselink.schemas.registry import RegistryError, register_lineage

    from tests.memory_registry import MemoryRegistry

    registry = MemoryRegistry()
    first = register_lineage(registry, "agency.health.person-events-value", "PersonEvent")
    assert registry.compatibility["agency.health.person-events-value"] == "BACKWARD"
    released = {json.dumps(json.loads(p.read_text())) for p in (HISTORY_DIR / "PersonEvent").glob("*.avsc")}
    versions = registry.subjects["agency.health.person-events-value"]
    assert len(versions) == len(released | {json.dumps(default_serde().schema("PersonEvent").raw)})
    assert versions[-1] == first  # the current version is the latest
    assert register_lineage(registry, "caselink.PersonEvent", "PersonEvent") == first  # one id per content
    breaking = json.loads(json.dumps(default_serde().schema("PersonEvent").raw))
    breaking["fields"].append({"name": "must_have", "type": "string"})
    with pytest.raises(RegistryError, match="incompatible"):
        registry.register("agency.health.person-events-value", json.dumps(breaking))


def test_fingerprint_is_avro_crc64_little_endian() -> None:
    # Avro spec test vector: the CRC-64-AVRO fingerprint of "null" is 0x63dd24e7cc258f8a.
    from fastavro.schema import fingerprint

    assert bytes.fromhex(fingerprint('"null"', "CRC-64-AVRO")) == (0x63DD24E7CC258F8A).to_bytes(8, "little")


def test_invalid_record_names_the_field_path() -> None:
    record = sample("PersonEvent")
    record["person"] = {**record["person"], "date_of_birth": 20140307}
    with pytest.raises(SchemaValidationError) as err:
        default_serde().encode("PersonEvent", record)
    assert "date_of_birth" in str(err.value)


def test_missing_required_field_is_named() -> None:
    record = sample("PersonEvent")
    del record["agency"]
    with pytest.raises(SchemaValidationError) as err:
        default_serde().encode("PersonEvent", record)
    assert "agency" in str(err.value)


@pytest.mark.parametrize(
    "payload, reason",
    [
        (None, "tombstone"),
        (b"\xc3\x01abc", "shorter"),
        (b"{\"json\": true, \"x\": 1}", "neither the registry framing"),
        (b"\x00\x7f\xff\xff\xffabcdef", "not in the registry"),
        (b"\xc3\x01" + b"\x00" * 8 + b"x", "unknown writer schema"),
    ],
)
def test_undecodable_bytes_name_their_origin(payload: bytes | None, reason: str) -> None:
    with pytest.raises(UndecodableEventError) as err:
        default_serde().decode(payload, topic="agency.health.person-events", partition=2, offset=41)
    assert err.value.topic == "agency.health.person-events"
    assert (err.value.partition, err.value.offset) == (2, 41)
    assert "agency.health.person-events[2]@41" in str(err.value)
    assert reason in str(err.value)


def test_truncated_body_is_undecodable() -> None:
    data = default_serde().encode("PersonEvent", sample("PersonEvent"))
    with pytest.raises(UndecodableEventError, match="corrupt PersonEvent"):
        default_serde().decode(data[:-20], topic="t", partition=0, offset=1)


def test_decode_checks_expected_type() -> None:
    data = default_serde().encode("Disclosure", sample("Disclosure"))
    with pytest.raises(UndecodableEventError, match="expected PersonEvent"):
        default_serde().decode(data, expect="PersonEvent")


def test_released_schemas_are_all_compatible() -> None:
    assert check_all() == []


def _copy_schemas(tmp_path: Path) -> tuple[Path, Path]:
    schema_dir, history_dir = tmp_path / "avro", tmp_path / "history"
    shutil.copytree(SCHEMA_DIR, schema_dir)
    shutil.copytree(HISTORY_DIR, history_dir)
    return schema_dir, history_dir


def test_compat_check_catches_a_new_required_field(tmp_path: Path) -> None:
    schema_dir, history_dir = _copy_schemas(tmp_path)
    path = schema_dir / "PersonEvent.avsc"
    schema = json.loads(path.read_text())
    schema["fields"].append({"name": "priority", "type": "int"})  # no default: old data lacks it
    path.write_text(json.dumps(schema))
    problems = check_all(schema_dir, history_dir)
    assert {p.schema for p in problems} == {"PersonEvent"}  # against every released version
    assert all("priority" in str(p) for p in problems)


def test_compat_check_catches_a_narrowed_enum(tmp_path: Path) -> None:
    schema_dir, history_dir = _copy_schemas(tmp_path)
    path = schema_dir / "Disclosure.avsc"
    schema = json.loads(path.read_text())
    action = next(f for f in schema["fields"] if f["name"] == "action")
    action["type"]["symbols"] = ["RELEASE"]
    path.write_text(json.dumps(schema))
    assert {p.schema for p in check_all(schema_dir, history_dir)} == {"Disclosure"}


def test_adding_an_optional_field_is_compatible_and_old_data_still_decodes(tmp_path: Path) -> None:
    schema_dir, history_dir = _copy_schemas(tmp_path)
    old_data = default_serde().encode("PersonEvent", sample("PersonEvent"))
    path = schema_dir / "PersonEvent.avsc"
    schema = json.loads(path.read_text())
    schema["fields"].append({"name": "priority", "type": ["null", "int"], "default": None})
    path.write_text(json.dumps(schema))
    assert check_all(schema_dir, history_dir) == []
    evolved = AvroSerde(schema_dir, history_dir)
    name, record = evolved.decode(old_data)
    assert name == "PersonEvent" and record["priority"] is None


def test_check_pair_reports_type_change() -> None:
    writer = json.dumps({"type": "record", "name": "R", "fields": [{"name": "a", "type": "string"}]})
    reader = json.dumps({"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}]})
    assert check_pair(reader, writer)
    assert check_pair(writer, writer) == []


def test_a_disclosure_written_before_overrides_existed_reads_with_none() -> None:
    import io

    import fastavro
    from caselink.schemas.serde import MAGIC

    old = json.loads((HISTORY_DIR / "Disclosure" / "v2.avsc").read_text())
    parsed = fastavro.parse_schema(old, named_schemas={})
    fingerprint = bytes.fromhex(fastavro.schema.fingerprint(fastavro.schema.to_parsing_canonical_form(parsed),
                                                            "CRC-64-AVRO"))
    record = {k: v for k, v in sample("Disclosure").items() if k != "overrides"}
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, record)
    _name, decoded = default_serde().decode(MAGIC + fingerprint + buf.getvalue(), expect="Disclosure")
    assert decoded == {**record, "overrides": []}
