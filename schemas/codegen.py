"""What the compiled Avro writer and reader (``compiled_writer.py``, ``compiled_reader.py``)
share: names for the generated code's variables and constants, resolving named types, and turning
the generated source into functions."""

from __future__ import annotations

from typing import Any

PRIMITIVE = {"string", "bytes", "boolean", "int", "long", "float", "double", "null"}


class Unsupported(ValueError):
    """The schema uses something the compiler does not (fastavro keeps it)."""


class SchemaCompiler:
    """Generates Python source from an Avro schema, a function per record type."""

    def __init__(self) -> None:
        self.named: dict[str, dict[str, Any]] = {}
        self.functions: dict[str, list[str]] = {}
        self.constants: dict[str, Any] = {}
        self.counter = 0

    def fresh(self, stem: str) -> str:
        self.counter += 1
        return f"{stem}{self.counter}"

    def constant(self, value: Any) -> str:
        name = self.fresh("_c")
        self.constants[name] = value
        return name

    @staticmethod
    def full_name(schema: dict[str, Any], namespace: str | None) -> str:
        name: str = schema["name"]
        if "." in name:
            return name
        space = schema.get("namespace", namespace)
        return f"{space}.{name}" if space else name

    def resolve(self, schema: Any, namespace: str | None) -> Any:
        if isinstance(schema, str) and schema not in PRIMITIVE:
            full = schema if "." in schema or not namespace else f"{namespace}.{schema}"
            for candidate in (full, schema):
                if candidate in self.named:
                    return self.named[candidate]
            raise Unsupported(f"unknown named type {schema!r}")
        return schema

    def build(self, label: str, scope: dict[str, Any], extra: tuple[str, ...] = ()) -> dict[str, Any]:
        """Every generated function (and ``extra`` lines), defined in ``scope`` plus the constants."""
        lines = [line for body in self.functions.values() for line in body] + list(extra)
        scope = {**scope, **self.constants}
        exec(compile("\n".join(lines), label, "exec"), scope)
        return scope
