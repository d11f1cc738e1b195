"""`caselink chart model|decision`: the charts as stand-alone HTML files."""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from caselink.output import emit, fail

if TYPE_CHECKING:
    from caselink.linkage.model import LinkageModel

# Each command imports what it drives inside its body, so that `caselink --help` and every other
# command start without loading settings, Kafka clients, pandas or Faust (CLI start-up time,
# docs/benchmarks.md). Imports for type annotations only sit under TYPE_CHECKING.

chart_app = typer.Typer(help="Charts: match-weight distribution of the model, one decision's score.",
                        no_args_is_help=True)


def weight_samples(model: LinkageModel, records: int = 6000, seed: int = 3) -> dict[str, list[float]]:
    """Match weights of true matches and of random non-matching pairs in synthetic multi-agency data."""
    from collections import defaultdict

    from caselink.linkage.record import UnlinkableRecordError, standardise_person
    from caselink.linkage.synthetic import records_for_size

    by_person: dict[str, list] = defaultdict(list)
    linkable = []
    for r in records_for_size(records, seed=seed):
        try:
            rec = standardise_person(f"{r['agency']}:{r['source_record_id']}", r["person"])
        except UnlinkableRecordError:
            continue
        by_person[r["truth"]].append(rec)
        linkable.append((r["truth"], rec))
    matches = [model.score(g[0], other)[0] for g in by_person.values() for other in g[1:]]
    rng = random.Random(seed)
    non: list[float] = []
    while len(non) < 4 * max(1, len(matches)):
        (ta, a), (tb, b) = rng.sample(linkable, 2)
        if ta != tb:
            non.append(model.score(a, b)[0])
    return {"same person": matches, "different people (random pairs)": non}


@chart_app.command("model")
def chart_model(
    out: Annotated[Path, typer.Option(help="an .html file")] = Path("model-weights.html"),
    records: Annotated[int, typer.Option(help="synthetic records to score")] = 6000,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The match-weight distribution of the current model on synthetic data, with its thresholds."""
    from caselink.core.settings import get_settings
    from caselink.linkage.deployment import load_model
    from caselink.streams.charts import histogram_svg, page
    from caselink.streams.review_page import threshold_weight

    try:
        model = load_model(get_settings().linkage)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    series = weight_samples(model, records)
    marks = {"link": threshold_weight(model.link_threshold), "review": threshold_weight(model.review_threshold)}
    out.write_text(page(f"match weights of model {model.version}",
                        histogram_svg(series, marks=marks, width=900, height=360)))
    emit({"path": str(out), **{k: len(v) for k, v in series.items()}}, as_json,
         f"wrote {out} ({', '.join(f'{len(v):,} {k}' for k, v in series.items())})")


@chart_app.command("decision")
def chart_decision(
    record: Annotated[str, typer.Argument(help="record key, e.g. health:HE0000053")],
    out: Annotated[Path, typer.Option(help="an .html file")] = Path("decision.html"),
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The score waterfall of the latest link decision about a record."""
    from caselink.core.kafka import read_to_end
    from caselink.core.settings import get_settings
    from caselink.infra.topics import LINK_DECISIONS_TOPIC
    from caselink.linkage.deployment import load_model
    from caselink.schemas import default_serde
    from caselink.streams.charts import decision_html
    from caselink.streams.review_page import threshold_weight

    serde = default_serde()
    latest = None
    for msg in read_to_end(get_settings(), [LINK_DECISIONS_TOPIC]):
        if msg.key() == record.encode():
            latest = serde.decode(msg.value(), expect="LinkDecision")[1]
    if latest is None:
        fail(f"no link decision about {record}")
    try:
        model = load_model(get_settings().linkage)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    out.write_text(decision_html(latest, threshold_weight(model.link_threshold),
                                 threshold_weight(model.review_threshold)))
    emit({"path": str(out), "outcome": latest["outcome"]}, as_json, f"wrote {out} ({latest['outcome']})")
