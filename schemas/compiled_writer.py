"""Avro binary writers compiled from a schema into straight-line Python, for the hot paths.

fastavro's ``schemaless_writer`` interprets the schema on every call: it dispatches on each
field's type and, for every ``["null", X]`` union, validates the value against the branches to
pick one: half of the file connector's time per row (docs/benchmarks.md). The writer generated
here takes every decision that depends only on the schema once, when the schema is loaded (the
way Avro's own code generators for Java and C++ do).

It covers what caselink's schemas use: records, enums, arrays, maps, ``["null", X]`` unions,
string, bytes, boolean, int, long, float, double and ``timestamp-millis``. A schema with anything
else compiles to ``None`` and stays with fastavro. The writer is strict where fastavro is lenient
(it takes an ``int`` for a long but not a float, an aware ``datetime`` but not a naive one): any
value it does not take raises, and ``AvroSerde.encode`` then writes the record with fastavro,
which either encodes it the way it always did or explains what is wrong. So for every record the
bytes are fastavro's bytes; tests/unit/test_compiled_writer.py checks that on generated records
of every caselink schema.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from caselink.schemas.codegen import PRIMITIVE, SchemaCompiler, Unsupported

Writer = Callable[[Any], bytes]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# What a compiled writer raises on a value it does not take.
WRITE_ERRORS = (TypeError, ValueError, KeyError, AttributeError, IndexError, OverflowError, struct.error)


def _unsigned_varint(z: int) -> bytes:
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _zigzag_varint(n: int) -> bytes:
    return _unsigned_varint((n << 1) ^ (n >> 63))


# Every length up to 64 KiB and every small long, encoded once. A longer string or bytes value
# misses the table (IndexError), and the serde falls back to fastavro for that record.
_LENGTHS: list[bytes] = [_zigzag_varint(n) for n in range(1 << 16)]


# The lowest two 7-bit groups of a longer varint, each with its continuation bit.
_LOW_GROUPS: list[bytes] = [bytes(((z & 0x7F) | 0x80, ((z >> 7) & 0x7F) | 0x80)) for z in range(1 << 14)]
_HIGH_GROUPS: dict[int, bytes] = {}


def write_long(n: int) -> bytes:
    if 0 <= n < 65_536:
        return _LENGTHS[n]
    if not -(1 << 63) <= n < (1 << 63):
        raise OverflowError(f"{n} does not fit an Avro long")
    z = (n << 1) ^ (n >> 63)
    if z < (1 << 14):
        return _unsigned_varint(z)
    # Timestamps in milliseconds: the bits above the lowest two 7-bit groups change about once
    # every 8 seconds, so their encoding is remembered.
    high = _HIGH_GROUPS.get(z >> 14)
    if high is None:
        if len(_HIGH_GROUPS) >= 4096:
            _HIGH_GROUPS.clear()
        high = _HIGH_GROUPS[z >> 14] = _unsigned_varint(z >> 14)
    return _LOW_GROUPS[z & 0x3FFF] + high


def write_int(n: int) -> bytes:
    if 0 <= n < 65_536:
        return _LENGTHS[n]
    if not -(1 << 31) <= n < (1 << 31):
        raise OverflowError(f"{n} does not fit an Avro int")
    return _zigzag_varint(n)


def timestamp_millis(value: Any) -> bytes:
    """fastavro's conversion of an aware datetime (milliseconds since the epoch, truncated)."""
    if value.__class__ is int:
        return write_long(value)
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise TypeError("timestamp-millis takes an int or an aware datetime here")
    delta = value - _EPOCH
    return write_long((delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000)


class _Compiler(SchemaCompiler):
    def record_function(self, schema: dict[str, Any], namespace: str | None) -> str:
        full = self.full_name(schema, namespace)
        fn = "_w_" + full.replace(".", "_")
        if fn in self.functions:
            return fn
        self.named[full] = schema
        self.functions[fn] = []  # reserved first, so a recursive reference finds it
        space = full.rsplit(".", 1)[0] if "." in full else None
        body = [f"def {fn}(d, out):"]
        for spec in schema["fields"]:
            value = self.fresh("v")
            if "default" in spec:
                body.append(f"    {value} = d.get({spec['name']!r}, {self.constant(spec['default'])})")
            else:
                body.append(f"    {value} = d.get({spec['name']!r})")
            field_type = self.resolve(spec["type"], space)
            if field_type in ("float", "double"):
                body.append(f"    {value} = float({value})")  # as fastavro does for a record field
            body.extend(self.emit(spec["type"], value, space, "    "))
        if len(body) == 1:
            body.append("    pass")
        self.functions[fn] = body
        return fn

    def emit(self, schema: Any, value: str, namespace: str | None, pad: str) -> list[str]:
        """Lines appending the encoding of the Python value named ``value`` to ``out``."""
        schema = self.resolve(schema, namespace)
        if isinstance(schema, list):
            return self.emit_union(schema, value, namespace, pad)
        if isinstance(schema, dict):
            kind = schema["type"]
            logical = schema.get("logicalType")
            if logical is not None:
                if logical == "timestamp-millis" and kind == "long":
                    return [f"{pad}out += _ts_millis({value})"]
                raise Unsupported(f"logical type {logical}")
            if kind == "record":
                return [f"{pad}{self.record_function(schema, namespace)}({value}, out)"]
            if kind == "enum":
                full = self.full_name(schema, namespace)
                self.named[full] = schema
                table = self.constant({s: _zigzag_varint(i) for i, s in enumerate(schema["symbols"])})
                return [f"{pad}out += {table}[{value}]"]
            if kind == "array":
                item = self.fresh("i")
                return [f"{pad}if {value}.__class__ is not list and {value}.__class__ is not tuple:",
                        f"{pad}    raise TypeError('list expected')",
                        f"{pad}if {value}:",
                        f"{pad}    out += _long(len({value}))",
                        f"{pad}    for {item} in {value}:",
                        *self.emit(schema["items"], item, namespace, pad + "        "),
                        f"{pad}out += b'\\x00'"]
            if kind == "map":
                key, item = self.fresh("k"), self.fresh("i")
                return [f"{pad}if {value}.__class__ is not dict:",
                        f"{pad}    raise TypeError('dict expected')",
                        f"{pad}if {value}:",
                        f"{pad}    out += _long(len({value}))",
                        f"{pad}    for {key}, {item} in {value}.items():",
                        *self.emit("string", key, namespace, pad + "        "),
                        *self.emit(schema["values"], item, namespace, pad + "        "),
                        f"{pad}out += b'\\x00'"]
            if kind in PRIMITIVE:
                return self.emit(kind, value, namespace, pad)
            raise Unsupported(f"type {kind}")
        if schema == "string":
            raw = self.fresh("b")
            return [f"{pad}{raw} = {value}.encode()", f"{pad}out += _LENGTHS[len({raw})]", f"{pad}out += {raw}"]
        if schema == "bytes":
            return [f"{pad}if {value}.__class__ is not bytes: raise TypeError('bytes expected')",
                    f"{pad}out += _LENGTHS[len({value})]", f"{pad}out += {value}"]
        if schema == "long":
            return [f"{pad}out += _long({value})"]
        if schema == "int":
            return [f"{pad}out += _int({value})"]
        if schema == "boolean":
            return [f"{pad}if {value} is True:", f"{pad}    out += b'\\x01'",
                    f"{pad}elif {value} is False:", f"{pad}    out += b'\\x00'",
                    f"{pad}else:", f"{pad}    raise TypeError('boolean expected')"]
        if schema == "double":
            return [f"{pad}out += _pack_double({value})"]
        if schema == "float":
            return [f"{pad}out += _pack_float({value})"]
        if schema == "null":
            return [f"{pad}if {value} is not None: raise TypeError('null expected')"]
        raise Unsupported(f"type {schema!r}")

    def emit_union(self, branches: list[Any], value: str, namespace: str | None, pad: str) -> list[str]:
        if len(branches) != 2 or "null" not in branches:
            raise Unsupported("unions other than [null, X]")
        null_index = branches.index("null")
        other = branches[1 - null_index]
        resolved = self.resolve(other, namespace)
        kind = resolved if isinstance(resolved, str) else resolved.get("type")
        if isinstance(resolved, dict) and resolved.get("logicalType") == "timestamp-millis":
            kind = "timestamp-millis"
        check = {"string": f"{value}.__class__ is str", "record": f"{value}.__class__ is dict",
                 "timestamp-millis": f"({value}.__class__ is int or {value}.__class__ is _datetime)",
                 "long": f"{value}.__class__ is int", "int": f"{value}.__class__ is int",
                 "boolean": f"{value}.__class__ is bool", "double": f"{value}.__class__ is float",
                 "bytes": f"{value}.__class__ is bytes"}.get(kind)
        if check is None:
            raise Unsupported(f"union [null, {kind}]")
        null_tag, other_tag = ("b'\\x00'", "b'\\x02'") if null_index == 0 else ("b'\\x02'", "b'\\x00'")
        # The branch is chosen by type as strictly as fastavro's validation would; a value of any
        # other type makes this writer refuse the record, and fastavro decides.
        return [f"{pad}if {value} is None:",
                f"{pad}    out += {null_tag}",
                f"{pad}elif {check}:",
                f"{pad}    out += {other_tag}",
                *self.emit(other, value, namespace, pad + "    "),
                f"{pad}else:",
                f"{pad}    raise TypeError('no union branch for ' + type({value}).__name__)"]


def compile_writer(schema: dict[str, Any], prefix: bytes = b"") -> Writer | None:
    """``prefix`` + the Avro binary encoding of a record of ``schema``; None if not supported.

    ``schema`` is the schema as written (JSON), not fastavro's parsed form.
    """
    compiler = _Compiler()
    try:
        top = compiler.record_function(schema, schema.get("namespace"))
    except Unsupported:
        return None
    scope = compiler.build(f"<avro writer {schema.get('name')}>", {
        "_LENGTHS": _LENGTHS, "_long": write_long, "_int": write_int, "_ts_millis": timestamp_millis,
        "_PREFIX": prefix, "_datetime": datetime,
        "_pack_double": struct.Struct("<d").pack, "_pack_float": struct.Struct("<f").pack,
    }, ("def write(d):", "    out = bytearray(_PREFIX)", f"    {top}(d, out)", "    return bytes(out)"))
    return scope["write"]  # type: ignore[no-any-return]


__all__ = ["WRITE_ERRORS", "Writer", "compile_writer", "timestamp_millis", "write_int", "write_long"]
