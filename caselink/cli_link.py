"""`caselink train` and `caselink link`: the deployment's model, and batch linking with it.

One model file serves batch and stream: ``caselink train`` writes it where the settings say
(``linkage.model_path``), and ``caselink link``, the worker and ``caselink rebuild`` read it from
there. Before linking, the model is checked against the data (``linkage.checks``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from caselink.output import console, emit, err_console, fail

if TYPE_CHECKING:
    from caselink.core.settings import Settings

# Each command imports what it drives inside its body, so that `caselink --help` and every other
# command start without loading settings, Kafka clients, pandas or Faust (CLI start-up time,
# docs/benchmarks.md). Imports for type annotations only sit under TYPE_CHECKING.


def mapped_rows(mapping_path: Path, source: Path | None = None) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """(key, person) for every mappable row of one extract, and the errors of the others."""
    from caselink.connectors.files import iter_source, resolve_source_path
    from caselink.connectors.mapping import RowError, load_mapping

    mapping = load_mapping(mapping_path)
    path = resolve_source_path(mapping, source)
    items, errors = [], []
    for row in iter_source(path, mapping):
        if row.data is None:
            errors.append(f"{path.name}:row {row.number}: {row.error}")
            continue
        try:
            mapped = mapping.apply(row.data)
        except RowError as exc:
            errors.append(f"{path.name}:row {row.number}: {exc}")
            continue
        if not mapped.deleted:
            items.append((f"{mapping.agency}:{mapped.record_id}", mapped.person))
    return items, errors


def _extracts(mappings: list[Path]) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    items: list[tuple[str, dict[str, Any]]] = []
    errors: list[str] = []
    for mapping in mappings:
        got, errs = mapped_rows(mapping)
        items += got
        errors += errs
    return items, errors


def _from_topics(settings: Settings) -> Iterator[tuple[str, dict[str, Any]]]:
    """The latest version of every live record on the agencies' person-event topics."""
    from caselink.core.kafka import read_to_end
    from caselink.infra.topics import person_events_topic
    from caselink.schemas import default_serde

    serde = default_serde()
    latest: dict[str, tuple[int, dict[str, Any] | None]] = {}
    for msg in read_to_end(settings, [person_events_topic(a) for a in settings.agencies]):
        if msg.value() is None:
            continue
        try:
            _, event = serde.decode(msg.value(), expect="PersonEvent")
        except ValueError:
            continue  # the normaliser dead-letters these; they are not training data
        key = f"{event['agency']}:{event['source_record_id']}"
        version = int(event["source_version"])
        if key not in latest or latest[key][0] < version:
            latest[key] = (version, event["person"] if event["op"] == "UPSERT" else None)
    for key, (_, person) in latest.items():
        if person is not None:
            yield key, person


def _progress(as_json: bool) -> bool:
    """Progress bars for a person at a terminal; nothing when piped or for --json."""
    return not as_json and sys.stderr.isatty()


def _weights_table(model: Any) -> str:
    lines = [f"{'comparison':<24} levels (weight)"]
    for params in model.comparisons:
        levels = ", ".join(f"{level} {w:+.1f}" for level, w in zip(params.levels, params.weights(), strict=True))
        lines.append(f"{params.name:<24} {levels}")
    return "\n".join(lines)


def train_command(
    mappings: Annotated[list[Path] | None, typer.Argument(help="mapping files of the extracts to train on")] = None,
    from_topics: Annotated[bool, typer.Option("--from-topics", help="train on the agencies' person-event topics "
                                              "(the latest version of every record) instead of extracts")] = False,
    out: Annotated[Path | None, typer.Option(help="where to write the model (default: linkage.model_path)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Train the deployment's linkage model on its own records: m and u by EM, term frequencies,
    filler names learned from the data. `caselink link`, the worker and `caselink rebuild` use it."""
    from caselink.core.settings import get_settings
    from caselink.linkage.batch import train_on_people
    from caselink.linkage.deployment import rules
    from caselink.linkage.runtime import tune_gc_for_large_index
    from caselink.linkage.schemes import SchemeError

    settings = get_settings()
    if bool(mappings) == from_topics:
        fail("give mapping files of the extracts to train on, or --from-topics (not both)", code=2)
    tune_gc_for_large_index()
    try:
        if from_topics:
            items, errors = list(_from_topics(settings)), list[str]()
        else:
            items, errors = _extracts(mappings or [])
        if not items:
            fail("no records to train on" + (f" ({len(errors)} rows could not be mapped)" if errors else ""))
        model = train_on_people(items, rules(settings.linkage), progress=_progress(as_json))
    except (ValueError, FileNotFoundError, SchemeError) as exc:
        fail(str(exc))
    target = out or settings.linkage.model_path
    model.save(target)
    learned = model.rules.learned_given | model.rules.learned_family
    summary = {"model": str(target), "version": model.version, "records": model.metadata["records"],
               "unmappable_rows": len(errors), "comparisons": [p.name for p in model.comparisons],
               "learned_placeholders": {"given_name": sorted(model.rules.learned_given),
                                        "family_name": sorted(model.rules.learned_family)},
               "prior": model.prior}
    emit(summary, as_json, f"model {model.version} trained on {summary['records']:,} records"
         f"{f' ({len(errors)} rows could not be mapped)' if errors else ''}; written to {target}\n"
         f"names taken as fillers in this data: {', '.join(sorted(learned)) or 'none'}\n" + _weights_table(model))


def link_command(
    mappings: Annotated[list[Path], typer.Argument(help="one mapping file per agency extract")],
    out: Annotated[Path, typer.Option(help="folder for clusters.csv, pairs.csv, rejected.csv")] = Path("linked"),
    model: Annotated[Path | None, typer.Option(help="a model file (default: the deployment's, linkage.model_path)")]
    = None,
    train: Annotated[bool, typer.Option("--train", help="first train the deployment's model on these extracts "
                                        "and save it (as `caselink train` does)")] = False,
    use_default_model: Annotated[bool, typer.Option(help="the bundled demo model (UK-shaped synthetic data): for "
                                                    "the samples only")] = False,
    threshold: Annotated[float | None, typer.Option(help="match probability to link at (default: the model's, "
                                                    "or linkage.link_threshold)")] = None,
    review_threshold: Annotated[float | None, typer.Option(help="match probability from which a pair is "
                                                           "offered for review")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Link several agencies' extracts in one go: record -> citizen id, and the scored pairs."""
    from caselink.connectors.mapping import MappingError
    from caselink.core.settings import get_settings
    from caselink.linkage.batch import link_records, standardise_all, train_on_people
    from caselink.linkage.checks import check_model
    from caselink.linkage.deployment import load_model, rules
    from caselink.linkage.model import LinkageModel, ModelError
    from caselink.linkage.models import default_model
    from caselink.linkage.runtime import tune_gc_for_large_index
    from caselink.linkage.schemes import SchemeError

    settings = get_settings()
    tune_gc_for_large_index()
    if sum((model is not None, train, use_default_model)) > 1:
        fail("give at most one of --model, --train and --use-default-model", code=2)
    try:
        items, row_errors = _extracts(mappings)
        if train:
            chosen = train_on_people(items, rules(settings.linkage), progress=_progress(as_json))
            chosen.save(settings.linkage.model_path)
            err_console.print(f"trained model {chosen.version} on these extracts; saved to "
                              f"{settings.linkage.model_path}", highlight=False)
        elif model is not None:
            chosen = LinkageModel.load(model)
        elif use_default_model:
            chosen = default_model()
        else:
            chosen = load_model(settings.linkage)
        chosen = chosen.with_thresholds(threshold if threshold is not None else settings.linkage.link_threshold,
                                        review_threshold if review_threshold is not None
                                        else settings.linkage.review_threshold)
    except (MappingError, ModelError, SchemeError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    if settings.linkage.model_check != "off":
        records, _ = standardise_all(items, rules=chosen.rules)
        findings = check_model(chosen, records)
        for finding in findings:
            err_console.print(f"[yellow]warning:[/] {finding.message}", highlight=False)
        if findings and settings.linkage.model_check == "refuse":
            fail(f"model {chosen.version} does not fit these extracts (linkage.model_check: refuse)")
    try:
        result = link_records(items, chosen, total=len(items), progress=_progress(as_json),
                              max_citizen_records=settings.linkage.max_citizen_records)
    except ValueError as exc:
        fail(str(exc))
    out.mkdir(parents=True, exist_ok=True)
    result.clusters.to_csv(out / "clusters.csv", index=False)
    result.pairs.to_csv(out / "pairs.csv", index=False)
    rejected = result.rejected
    if row_errors:
        import pandas as pd

        rejected = pd.concat([rejected, pd.DataFrame({"record_key": [e.split(": ", 1)[0] for e in row_errors],
                                                      "reason": [e.split(": ", 1)[1] for e in row_errors]})])
    rejected.to_csv(out / "rejected.csv", index=False)
    citizens = result.clusters.citizen_id.nunique()
    summary = {"records": len(result.clusters), "citizens": int(citizens), "pairs": len(result.pairs),
               "linked_pairs": int(result.pairs.linked.sum()) if len(result.pairs) else 0,
               "rejected": len(rejected), "held_for_review_by_size_guard": result.index.size_refusals,
               "largest_citizen": int(result.clusters.citizen_id.value_counts().max()) if len(result.clusters)
               else 0, "model_version": result.model.version, "link_threshold": result.model.link_threshold,
               "out": str(out)}
    emit(summary, as_json, f"{summary['records']} records -> {citizens} citizens "
         f"({summary['linked_pairs']} linked pairs, {summary['rejected']} rejected); model {result.model.version} "
         f"at {result.model.link_threshold}; written to {out}/clusters.csv, pairs.csv, rejected.csv")
    if not as_json and result.index.size_refusals:
        console.print(f"{result.index.size_refusals} links held for review: they would have made a citizen larger "
                      f"than {settings.linkage.max_citizen_records} records (linkage.max_citizen_records)")
