"""`caselink link`: batch-link agency extracts described by their mapping files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from caselink.output import console, emit, fail


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


def link_command(
    mappings: Annotated[list[Path], typer.Argument(help="one mapping file per agency extract")],
    out: Annotated[Path, typer.Option(help="folder for clusters.csv, pairs.csv, rejected.csv")] = Path("linked"),
    model: Annotated[Path | None, typer.Option(help="a model JSON; default: train on these extracts")] = None,
    use_default_model: Annotated[bool, typer.Option(help="use the bundled model instead of training")] = False,
    save_model: Annotated[Path | None, typer.Option(help="write the trained model here")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Link several agencies' extracts in one go: record -> citizen id, and the scored pairs."""
    from caselink.connectors.mapping import MappingError
    from caselink.linkage.batch import link_records
    from caselink.linkage.model import LinkageModel, ModelError
    from caselink.linkage.models import default_model
    from caselink.linkage.runtime import tune_gc_for_large_index

    tune_gc_for_large_index()
    items: list[tuple[str, dict[str, Any]]] = []
    row_errors: list[str] = []
    try:
        for mapping in mappings:
            got, errors = mapped_rows(mapping)
            items += got
            row_errors += errors
        chosen = LinkageModel.load(model) if model else (default_model() if use_default_model else None)
    except (MappingError, ModelError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
        return
    try:
        result = link_records(items, chosen, total=len(items), progress=not as_json)
    except ValueError as exc:  # e.g. too little data to train a model on
        fail(f"{exc}; pass --model or --use-default-model")
        return
    out.mkdir(parents=True, exist_ok=True)
    result.clusters.to_csv(out / "clusters.csv", index=False)
    result.pairs.to_csv(out / "pairs.csv", index=False)
    rejected = result.rejected
    if row_errors:
        import pandas as pd

        rejected = pd.concat([rejected, pd.DataFrame({"record_key": [e.split(": ", 1)[0] for e in row_errors],
                                                      "reason": [e.split(": ", 1)[1] for e in row_errors]})])
    rejected.to_csv(out / "rejected.csv", index=False)
    if save_model:
        result.model.save(save_model)
    citizens = result.clusters.citizen_id.nunique()
    summary = {"records": len(result.clusters), "citizens": int(citizens), "pairs": len(result.pairs),
               "linked_pairs": int(result.pairs.linked.sum()) if len(result.pairs) else 0,
               "rejected": len(rejected), "model_version": result.model.version, "out": str(out)}
    emit(summary, as_json, f"{summary['records']} records -> {citizens} citizens "
         f"({summary['linked_pairs']} linked pairs, {summary['rejected']} rejected); model {result.model.version}; "
         f"written to {out}/clusters.csv, pairs.csv, rejected.csv")
    if not as_json and save_model:
        console.print(f"model saved to {save_model}")
