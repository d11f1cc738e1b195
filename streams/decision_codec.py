"""LinkDecision messages assembled from cached encodings of their field weights.

The linker publishes a decision for every event, and each candidate in it carries the per-field
weights that add up to its match weight. Building those as objects and dicts and encoding them was
a large share of the linker's time (docs/benchmarks.md). A field weight depends only on the
comparison, its level and, for a term-frequency adjusted level, the value compared
(``LinkageModel.field_weight_key``): there are few of them, so each is encoded once and copied
into every decision that has it. Avro writes a record as its fields one after another and an
array as a count, its items and a zero, so the copies make exactly the bytes
``AvroSerde.encode("LinkDecision", ...)`` writes (``tests/unit/test_decision_codec.py`` holds
the two to each other).
"""

from __future__ import annotations

from typing import Any

from caselink.linkage.index import Candidate
from caselink.linkage.model import FieldWeight, LinkageModel
from caselink.linkage.record import LinkRecord
from caselink.schemas.compiled_writer import write_long
from caselink.schemas.records import LinkDecision
from caselink.schemas.serde import AvroSerde
from caselink.streams.case_codec import SchemaPart

# Cached field weights are dropped when there are this many (term-frequency values are unbounded).
CACHE_LIMIT = 200_000


def _layout_matches(raw: dict[str, Any]) -> bool:
    """Whether the LinkDecision schema has the layout this codec writes: ``candidates``, an array of
    records ending in ``field_weights``, an array of field/level/weight records."""
    fields = {f["name"]: f["type"] for f in raw["fields"]}
    candidates = fields.get("candidates")
    if not isinstance(candidates, dict) or candidates.get("type") != "array":
        return False
    item = candidates["items"]
    if not isinstance(item, dict) or item.get("type") != "record":
        return False
    names = [f["name"] for f in item["fields"]]
    if names != ["record_key", "citizen_id", "match_weight", "match_probability", "field_weights"]:
        return False
    weights = item["fields"][-1]["type"]
    return (isinstance(weights, dict) and weights.get("type") == "array" and isinstance(weights["items"], dict)
            and [f["name"] for f in weights["items"]["fields"]] == ["field", "level", "weight"])


class DecisionCodec:
    """Encodes one LinkDecision; falls back to the serde for a schema of another layout."""

    def __init__(self, serde: AvroSerde, model: LinkageModel) -> None:
        self.serde = serde
        self.model = model
        version = serde.schema("LinkDecision")
        raw = version.raw
        self.fast = _layout_matches(raw)
        if not self.fast:
            return
        self.header = serde.header("LinkDecision")  # the registry framing
        namespace = raw.get("namespace", "")
        fields = raw["fields"]
        at = [f["name"] for f in fields].index("candidates")
        item = fields[at]["type"]["items"]
        weight = item["fields"][-1]["type"]["items"]

        def part(name: str, part_fields: list[dict[str, Any]]) -> SchemaPart:
            return SchemaPart({"type": "record", "name": name, "namespace": namespace, "fields": part_fields})

        self._head = part("DecisionHead", fields[:at])
        self._tail = part("DecisionTail", fields[at + 1:])
        self._candidate = part("CandidateHead", item["fields"][:-1])
        self._weight = SchemaPart({**weight, "namespace": weight.get("namespace", namespace)})
        self._prior = self._field_weight(model.prior_field_weight())
        self._prior_weight = model.prior_field_weight().weight
        self._count = write_long(1 + len(model.comparisons))
        self._count_with_cut = write_long(2 + len(model.comparisons))  # and the household rule's cut
        self._cache: dict[tuple[int, int, Any], tuple[bytes, float]] = {}

    def _field_weight(self, fw: FieldWeight) -> bytes:
        return self._weight.write({"field": fw.field, "level": fw.level, "weight": fw.weight})

    def field_weights(self, levels: list[int], record: LinkRecord) -> bytes:
        """The encoded ``field_weights`` array of a candidate compared at ``levels`` with ``record``."""
        model, cache = self.model, self._cache
        out = [self._count, self._prior]
        total = self._prior_weight
        for i, level in enumerate(levels):
            key = model.field_weight_key(i, level, record)
            found = cache.get(key)
            if found is None:
                if len(cache) >= CACHE_LIMIT:
                    cache.clear()
                weight = model.field_weight(i, level, record)
                found = cache[key] = (self._field_weight(weight), weight.weight)
            out.append(found[0])
            total += found[1]
        cut = model.household_cut(levels, total)
        if cut is not None:
            out[0] = self._count_with_cut
            out.append(self._field_weight(cut))
        out.append(b"\x00")
        return b"".join(out)

    def encode(self, decision: LinkDecision, candidates: list[Candidate], record: LinkRecord | None,
               finite: Any) -> bytes:
        """``decision``: every LinkDecision field but ``candidates`` (left empty), which are written from
        ``candidates`` (none when ``record`` is None), their weights passed through ``finite``."""
        if not self.fast:
            return self.serde.encode("LinkDecision", {**decision, "candidates": [
                {"record_key": c.record_key, "citizen_id": c.citizen_id, "match_weight": finite(c.weight),
                 "match_probability": c.probability,
                 "field_weights": [{"field": f.field, "level": f.level, "weight": f.weight}
                                   for f in self.model.explain_levels(c.levels, record)]}
                for c in candidates if record is not None]})
        out = [self.header, self._head.write(decision)]
        if record is not None and candidates:
            out.append(write_long(len(candidates)))
            write_candidate = self._candidate.write
            for c in candidates:
                out.append(write_candidate({"record_key": c.record_key, "citizen_id": c.citizen_id,
                                            "match_weight": finite(c.weight), "match_probability": c.probability}))
                out.append(self.field_weights(c.levels, record))
        out.append(b"\x00")
        out.append(self._tail.write(decision))
        return b"".join(out)

