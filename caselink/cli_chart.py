"""`caselink chart model|live|decision`: the charts as stand-alone HTML (or SVG) files.

The same charts as the worker's /charts pages, for a machine without the worker's web API or for a
report: the model in use (m and u per comparison level, with the weights they give), the live data
from the topics (the match weights of the linker's decisions against the thresholds, and how
complete each agency's records are), one decision's score.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from caselink.core.settings import get_settings
from caselink.output import emit, fail, reading

chart_app = typer.Typer(help="Charts of the model in use and of the live data, as HTML or SVG files.",
                        no_args_is_help=True)


def _write(out: Path, title: str, body: str, svg: str) -> None:
    """An .svg file gets the chart alone; anything else a page with its explanation."""
    from caselink.streams.charts import page

    if out.suffix not in (".html", ".htm", ".svg"):
        fail(f"write charts to an .html or .svg file, not {out.suffix or 'a file without an extension'}")
    out.write_text(svg if out.suffix == ".svg" else page(title, body))


def _model() -> Any:
    from caselink.linkage.deployment import load_model

    try:
        return load_model(get_settings().linkage)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))


@chart_app.command("model")
def chart_model(
    out: Annotated[Path, typer.Option(help="an .html or .svg file")] = Path("model.html"),
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The model in use: m and u of every comparison level and the weight they give."""
    from caselink.streams.model_charts import mu_svg

    model = _model()
    svg = mu_svg(model)
    _write(out, f"How model {model.version} weighs evidence",
           f"<p>Linked from weight {model.link_weight:+.2f} (probability {model.link_threshold:g}), offered for "
           f"review from {model.review_weight:+.2f} ({model.review_threshold:g}).</p>{svg}", svg)
    levels = sum(len([lv for lv in c.levels if lv != "missing"]) for c in model.comparisons)
    emit({"path": str(out), "model": model.version, "comparisons": len(model.comparisons), "levels": levels},
         as_json, f"wrote {out}: model {model.version}, {len(model.comparisons)} comparisons, {levels} levels")


@chart_app.command("live")
def chart_live(
    out: Annotated[Path, typer.Option(help="an .html file (or .svg: the match weights alone)")] = Path("live.html"),
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The live data from the topics: the strongest candidate's match weight of every link decision,
    linked or not, against the thresholds; how complete each agency's records are, field by field.
    Exit 1 when the linker has decided nothing yet."""
    from caselink.core.kafka import read_to_end
    from caselink.infra.topics import LINK_DECISIONS_TOPIC, LINKED_CASES_TOPIC
    from caselink.schemas import default_serde
    from caselink.streams.data_charts import completeness, completeness_svg
    from caselink.streams.model_charts import best_weights, threshold_marks, weights_histogram_svg

    settings = get_settings()
    serde = default_serde()
    model = _model()
    with reading(f"reading {LINK_DECISIONS_TOPIC}") as progress:
        decisions = [serde.decode(m.value(), expect="LinkDecision")[1]
                     for m in read_to_end(settings, [LINK_DECISIONS_TOPIC], progress=progress) if m.value()]
    if not decisions:
        fail(f"no link decisions on {LINK_DECISIONS_TOPIC} yet: is the worker running, and has anything been loaded?")
    with reading(f"reading {LINKED_CASES_TOPIC}") as progress:
        latest: dict[bytes, bytes | None] = {m.key(): m.value()
                                             for m in read_to_end(settings, [LINKED_CASES_TOPIC], progress=progress)}
    persons = [(m["agency"], m["person"] or {}) for value in latest.values() if value is not None
               for m in serde.decode(value, expect="LinkedCase")[1]["members"]]
    series = best_weights(decisions)
    histogram = weights_histogram_svg(series, threshold_marks(model))
    shares, counts = completeness(persons)
    _write(out, "The live data", "<h2>Match weights of the linker's decisions</h2>"
           f"<p>Each decision's strongest candidate; {len(decisions):,} decisions, model {model.version}.</p>"
           f"{histogram}<h2>How complete each agency's records are</h2>{completeness_svg(shares, counts)}", histogram)
    emit({"path": str(out), "decisions": len(decisions), **{k: len(v) for k, v in series.items()},
          "records": sum(counts.values()), "completeness": shares}, as_json,
         f"wrote {out}: {len(decisions):,} decisions ({', '.join(f'{len(v):,} {k}' for k, v in series.items())}), "
         f"{sum(counts.values()):,} records of {len(counts)} agencies")


@chart_app.command("decision")
def chart_decision(
    record: Annotated[str, typer.Argument(help="record key, e.g. health:HE0000053")],
    out: Annotated[Path, typer.Option(help="an .html file")] = Path("decision.html"),
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The score waterfall of the latest link decision about a record."""
    from caselink.core.kafka import key_partition, partition_count, read_to_end
    from caselink.infra.topics import LINK_DECISIONS_TOPIC
    from caselink.schemas import default_serde
    from caselink.streams.charts import decision_html
    from caselink.streams.review_page import threshold_weight

    settings = get_settings()
    serde = default_serde()
    partitions = partition_count(settings, LINK_DECISIONS_TOPIC)
    only = {LINK_DECISIONS_TOPIC: {key_partition(record.encode(), partitions)}} if partitions else None
    latest = None
    with reading(f"reading {LINK_DECISIONS_TOPIC}") as progress:
        for msg in read_to_end(settings, [LINK_DECISIONS_TOPIC], progress=progress, only=only):
            if msg.key() == record.encode():
                latest = serde.decode(msg.value(), expect="LinkDecision")[1]
    if latest is None:
        fail(f"no link decision about {record}")
    model = _model()
    out.write_text(decision_html(latest, threshold_weight(model.link_threshold),
                                 threshold_weight(model.review_threshold)))
    emit({"path": str(out), "outcome": latest["outcome"]}, as_json, f"wrote {out} ({latest['outcome']})")
