"""caselink's event contracts: Avro schemas, their self-describing serde and the compatibility rule."""

from caselink.schemas.serde import (
    SCHEMA_NAMES,
    AvroSerde,
    SchemaValidationError,
    UndecodableEventError,
    default_serde,
)

__all__ = [
    "SCHEMA_NAMES",
    "AvroSerde",
    "SchemaValidationError",
    "UndecodableEventError",
    "default_serde",
]
