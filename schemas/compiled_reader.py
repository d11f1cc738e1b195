"""Avro binary readers compiled from a schema into straight-line Python, the counterpart of
``schemas/compiled_writer.py``.

Every event is read twice on its way to the index (by the normaliser, then by the linker), and
fastavro's ``schemaless_reader`` interprets the schema each time. The reader generated here reads
a message written with exactly the schema it was compiled from in about a third of fastavro's
time (docs/benchmarks.md).
Messages written with an older version of a schema need schema resolution, and stay with
fastavro; so does anything this reader cannot read (corrupt or truncated bytes raise here, and
``AvroSerde.decode`` then lets fastavro read it or say why not). tests/unit/test_compiled_reader.py
checks that the two give the same record for every message the compiled reader accepts.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from caselink.schemas.codegen import PRIMITIVE, SchemaCompiler, Unsupported

# From the bytes and the position where the record starts: the record, the position after it, and
# where each of its fields starts followed by that end position (so field i is bytes
# spans[i]:spans[i + 1]: a field's encoding can be copied into another message as it is).
Reader = Callable[[bytes, int], tuple[dict[str, Any], int, tuple[int, ...]]]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# What a compiled reader raises on bytes it cannot read.
READ_ERRORS = (IndexError, ValueError, KeyError, TypeError, OverflowError, struct.error)


def read_long(data: bytes, pos: int) -> tuple[int, int]:
    """Avro's zig-zag varint at ``pos``: (value, position after it)."""
    b = data[pos]
    z = b & 0x7F
    shift = 7
    while b & 0x80:
        pos += 1
        b = data[pos]
        z |= (b & 0x7F) << shift
        shift += 7
        if shift >= 70 and b & 0x80:
            raise ValueError("a varint of more than ten bytes")
    if z >> 64:
        raise ValueError("a varint longer than a long")  # fastavro would wrap it round
    return (z >> 1) ^ -(z & 1), pos + 1


def timestamp_millis(ms: int) -> datetime:
    """As fastavro reads it (no ``fromtimestamp``: that rounds differently for some values)."""
    return _EPOCH + timedelta(microseconds=ms * 1000)


class _Compiler(SchemaCompiler):
    def record_function(self, schema: dict[str, Any], namespace: str | None, top: bool = False) -> str:
        """A function reading one record; the ``top`` one also returns where each field starts."""
        full = self.full_name(schema, namespace)
        fn = ("_top_" if top else "_r_") + full.replace(".", "_")
        if fn in self.functions:
            return fn
        if not top:
            self.named[full] = schema
        self.functions[fn] = []
        space = full.rsplit(".", 1)[0] if "." in full else None
        body = [f"def {fn}(data, pos):"]
        names, starts = [], []
        for spec in schema["fields"]:
            value = self.fresh("v")
            names.append((spec["name"], value))
            if top:
                starts.append(self.fresh("s"))
                body.append(f"    {starts[-1]} = pos")
            body.extend(self.emit(spec["type"], value, space, "    "))
        record = "{" + ", ".join(f"{name!r}: {value}" for name, value in names) + "}"
        body.append(f"    return {record}, pos, ({''.join(s + ', ' for s in starts)}pos)" if top
                    else f"    return {record}, pos")
        self.functions[fn] = body
        return fn

    def emit(self, schema: Any, value: str, namespace: str | None, pad: str) -> list[str]:
        """Lines reading one value of ``schema`` at ``pos`` into ``value``, moving ``pos`` on."""
        schema = self.resolve(schema, namespace)
        if isinstance(schema, list):
            return self.emit_union(schema, value, namespace, pad)
        if isinstance(schema, dict):
            kind = schema["type"]
            logical = schema.get("logicalType")
            if logical is not None:
                if logical == "timestamp-millis" and kind == "long":
                    return [*self.emit("long", value, namespace, pad), f"{pad}{value} = _ts_millis({value})"]
                raise Unsupported(f"logical type {logical}")
            if kind == "record":
                return [f"{pad}{value}, pos = {self.record_function(schema, namespace)}(data, pos)"]
            if kind == "enum":
                self.named[self.full_name(schema, namespace)] = schema
                symbols = self.constant(tuple(schema["symbols"]))
                index = self.fresh("n")
                return [*self.emit("long", index, namespace, pad),
                        f"{pad}if {index} < 0:",
                        f"{pad}    raise ValueError('negative enum index')",
                        f"{pad}{value} = {symbols}[{index}]"]
            if kind in ("array", "map"):
                if kind == "array" and self._may_be_empty(schema["items"], namespace):
                    raise Unsupported("arrays of items that take no bytes")
                count, item, key = self.fresh("n"), self.fresh("i"), self.fresh("k")
                lines = [f"{pad}{value} = {{}}" if kind == "map" else f"{pad}{value} = []",
                         *self.emit("long", count, namespace, pad),
                         f"{pad}while {count}:",
                         f"{pad}    if {count} < 0:",
                         f"{pad}        {count} = -{count}",
                         f"{pad}        _, pos = _read_long(data, pos)  # the block's size in bytes",
                         # Every item of caselink's arrays and maps takes at least a byte: a
                         # count beyond the bytes left is damage, not a reason to loop for ever.
                         f"{pad}    if {count} > len(data) - pos:",
                         f"{pad}        raise ValueError('more items than bytes left')",
                         f"{pad}    for _ in range({count}):"]
                inner = pad + "        "
                if kind == "map":
                    lines += [*self.emit("string", key, namespace, inner),
                              *self.emit(schema["values"], item, namespace, inner),
                              f"{inner}{value}[{key}] = {item}"]
                else:
                    lines += [*self.emit(schema["items"], item, namespace, inner), f"{inner}{value}.append({item})"]
                return [*lines, *self.emit("long", count, namespace, pad + "    ")]
            if kind in PRIMITIVE:
                return self.emit(kind, value, namespace, pad)
            raise Unsupported(f"type {kind}")
        if schema in ("long", "int"):
            byte = self.fresh("b")
            return [f"{pad}{byte} = data[pos]",
                    f"{pad}if {byte} < 0x80:",
                    f"{pad}    {value} = ({byte} >> 1) ^ -({byte} & 1)",
                    f"{pad}    pos += 1",
                    f"{pad}else:",
                    f"{pad}    {value}, pos = _read_long(data, pos)"]
        if schema in ("string", "bytes"):
            size, end = self.fresh("n"), self.fresh("e")
            decode = ".decode()" if schema == "string" else ""
            # No bounds check per value: a value cut short leaves ``pos`` past the end, every
            # later read fails, and the caller's check that the message ends exactly at ``pos``
            # catches the last one.
            return [f"{pad}{size} = data[pos]",
                    f"{pad}if {size} < 0x80 and not {size} & 1:  # a length under 64: one byte",
                    f"{pad}    {end} = pos + 1 + ({size} >> 1)",
                    f"{pad}    {value} = data[pos + 1:{end}]{decode}",
                    f"{pad}    pos = {end}",
                    f"{pad}else:",
                    f"{pad}    {size}, pos = _read_long(data, pos)",
                    f"{pad}    if {size} < 0:",
                    f"{pad}        raise ValueError('negative length')",
                    f"{pad}    {value} = data[pos:pos + {size}]{decode}",
                    f"{pad}    pos += {size}"]
        if schema == "boolean":
            return [f"{pad}{value} = _BOOLEAN[data[pos]]", f"{pad}pos += 1"]
        if schema == "double":
            return [f"{pad}({value},) = _unpack_double(data, pos)", f"{pad}pos += 8"]
        if schema == "float":
            return [f"{pad}({value},) = _unpack_float(data, pos)", f"{pad}pos += 4"]
        if schema == "null":
            return [f"{pad}{value} = None"]
        raise Unsupported(f"type {schema!r}")

    def _may_be_empty(self, schema: Any, namespace: str | None) -> bool:
        schema = self.resolve(schema, namespace)
        if schema == "null":
            return True
        if isinstance(schema, dict) and schema.get("type") == "record":
            return all(self._may_be_empty(f["type"], namespace) for f in schema["fields"])
        return False

    def emit_union(self, branches: list[Any], value: str, namespace: str | None, pad: str) -> list[str]:
        if len(branches) != 2 or "null" not in branches:
            raise Unsupported("unions other than [null, X]")
        null_tag, other_tag = (0, 2) if branches.index("null") == 0 else (2, 0)
        other = branches[1] if branches[0] == "null" else branches[0]
        tag = self.fresh("t")
        return [f"{pad}{tag} = data[pos]",
                f"{pad}pos += 1",
                f"{pad}if {tag} == {null_tag}:",
                f"{pad}    {value} = None",
                f"{pad}elif {tag} == {other_tag}:",
                *self.emit(other, value, namespace, pad + "    "),
                f"{pad}else:",
                f"{pad}    raise ValueError('no such union branch')"]


def compile_reader(schema: dict[str, Any]) -> Reader | None:
    """A reader of records written with ``schema`` (as written, in JSON); None if not supported."""
    compiler = _Compiler()
    try:
        top = compiler.record_function(schema, schema.get("namespace"), top=True)
    except Unsupported:
        return None
    scope = compiler.build(f"<avro reader {schema.get('name')}>", {
        "_read_long": read_long, "_ts_millis": timestamp_millis, "_BOOLEAN": {0: False, 1: True},
        "_unpack_double": struct.Struct("<d").unpack_from, "_unpack_float": struct.Struct("<f").unpack_from,
    })
    return scope[top]  # type: ignore[no-any-return]


__all__ = ["READ_ERRORS", "Reader", "compile_reader", "read_long", "timestamp_millis"]
