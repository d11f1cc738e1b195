"""`caselink evaluate`: how the deployment's linking is doing, from labels people gave.

Three sources of labels, any together: a file of records and the person each is (every pair is
then judged, as in the benchmarks); a file of labelled pairs (a clerical sample); and the
reviewers' verdicts on the link input, each judged against the match probability the model gave
the pair when it was offered for review.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from caselink.output import emit, fail

if TYPE_CHECKING:
    from caselink.core.settings import Settings

# Each command imports what it drives inside its body, so that `caselink --help` and every other
# command start without loading settings, Kafka clients, pandas or Faust (CLI start-up time,
# docs/benchmarks.md). Imports for type annotations only sit under TYPE_CHECKING.

_TRUE = {"1", "true", "yes", "same", "y", "t"}
_FALSE = {"0", "false", "no", "different", "n", "f"}


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                fail(f"{path}: no column {', '.join(missing)} (has {', '.join(reader.fieldnames or [])})", code=2)
            return list(reader)
    except OSError as exc:
        fail(f"{path}: {exc.strerror}", code=2)


def _assignment(settings: Settings, clusters: Path | None) -> dict[str, str]:
    """record -> citizen: from a `caselink link` clusters.csv, or the live linked cases."""
    if clusters is not None:
        return {r["record_key"]: r["citizen_id"] for r in _read_csv(clusters, ("record_key", "citizen_id"))}
    from caselink.ops import latest_linked_cases

    return {f"{m['agency']}:{m['source_record_id']}": cid
            for cid, case in latest_linked_cases(settings).items() for m in case["members"]}


def _reviewed_pairs(settings: Settings) -> list[Any]:
    """Each reviewed pair's latest verdict, with the probability of the ReviewItem that offered it."""
    from caselink.core.kafka import read_to_end
    from caselink.infra.topics import LINK_INPUT_TOPIC, REVIEW_TOPIC
    from caselink.linkage.labels import LabelledPair
    from caselink.schemas import default_serde

    serde = default_serde()
    offered: dict[tuple[str, str], float] = {}
    for msg in read_to_end(settings, [REVIEW_TOPIC]):
        if msg.value() is not None:
            item = serde.decode(msg.value(), expect="ReviewItem")[1]
            offered[(item["left_record"], item["right_record"])] = item["match_probability"]
    verdicts: dict[tuple[str, str], bool] = {}
    for msg in read_to_end(settings, [LINK_INPUT_TOPIC], timeout=120):
        if msg.value() is None:
            continue
        name, record = serde.decode(msg.value())
        if name == "ReviewDecision":
            a, b = sorted((record["left_record"], record["right_record"]))
            action = record.get("action")
            if action == "undo":  # taken back: no verdict on the pair until the next one
                verdicts.pop((a, b), None)
            elif action is None:  # "not_sure" is a note, not a verdict
                verdicts[(a, b)] = bool(record["same_person"])
    return [LabelledPair(a, b, same, offered.get((a, b))) for (a, b), same in sorted(verdicts.items())]


def evaluate_command(
    truth: Annotated[Path | None, typer.Option(help="CSV of record_key,person_id: who each record really is")]
    = None,
    pairs: Annotated[Path | None, typer.Option(help="CSV of left,right,same: labelled pairs of records")] = None,
    reviews: Annotated[bool, typer.Option("--reviews", help="reviewers' verdicts from the link input")] = False,
    clusters: Annotated[Path | None, typer.Option(help="a `caselink link` clusters.csv to judge (default: the "
                                                  "live citizens on caselink.linked-cases)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Precision and recall of the citizens, from labels: a truth file, labelled pairs, reviewers' verdicts."""
    from caselink.core.settings import get_settings
    from caselink.linkage.evaluate import cluster_scores, pairwise_scores
    from caselink.linkage.labels import LabelledPair, calibration, count_pairs

    if truth is None and pairs is None and not reviews:
        fail("nothing to evaluate: give --truth, --pairs or --reviews", code=2)
    settings = get_settings()
    assignment = _assignment(settings, clusters)
    if not assignment:
        fail("no citizens to evaluate (an empty clusters file, or nothing on caselink.linked-cases yet)")
    report: dict[str, Any] = {"records_linked": len(assignment),
                              "citizens": len(set(assignment.values()))}
    lines = [f"{report['records_linked']:,} records in {report['citizens']:,} citizens"]
    if truth is not None:
        known = {r["record_key"]: r["person_id"] for r in _read_csv(truth, ("record_key", "person_id"))}
        common = set(known) & set(assignment)
        if not common:
            fail(f"{truth}: none of its records is among the linked ones", code=1)
        pairwise = pairwise_scores(assignment, known).as_dict()
        exact = cluster_scores(assignment, known).as_dict()
        report["truth"] = {"records": len(common), "records_not_linked": len(set(known) - set(assignment)),
                           "pairwise": pairwise, "exact_citizens": exact}
        lines.append(f"against {truth} ({len(common):,} records): pairwise precision {pairwise['precision']:.4f}, "
                     f"recall {pairwise['recall']:.4f}, F1 {pairwise['f1']:.4f}; citizens exactly right "
                     f"{exact['precision']:.1%} of those formed, {exact['recall']:.1%} of those true")
    labelled: list[LabelledPair] = []
    if pairs is not None:
        for row in _read_csv(pairs, ("left", "right", "same")):
            value = row["same"].strip().lower()
            if value not in _TRUE | _FALSE:
                fail(f"{pairs}: same must be true or false, got {row['same']!r}", code=2)
            labelled.append(LabelledPair(row["left"], row["right"], value in _TRUE))
        counts = count_pairs(labelled, assignment)
        report["pairs"] = counts.as_dict()
        lines.append(_pair_line(f"{len(labelled):,} labelled pairs", counts.as_dict()))
    if reviews:
        reviewed = _reviewed_pairs(settings)
        if not reviewed:
            lines.append("no reviewer verdicts on the link input yet")
            report["reviews"] = {"pairs": 0}
        else:
            link = _link_threshold(settings)
            linked = [p for p in reviewed if p.probability is not None and p.probability >= link]
            apart = [p for p in reviewed if p.probability is not None and p.probability < link]
            review_counts = {
                "pairs": len(reviewed), "with_probability": len(linked) + len(apart),
                "model_linked_same": sum(p.same for p in linked),
                "model_linked_different": sum(not p.same for p in linked),
                "model_apart_same": sum(p.same for p in apart),
                "model_apart_different": sum(not p.same for p in apart), "link_threshold": link,
                "bands": [{"from": b.low, "to": b.high, "pairs": b.pairs, "same": b.same, "same_share": b.same_share}
                          for b in calibration(reviewed) if b.pairs],
            }
            report["reviews"] = review_counts
            lines.append(f"{len(reviewed):,} reviewed pairs (shown near the threshold, not a random sample): "
                         f"{review_counts['model_apart_same']} the model left apart were one person, "
                         f"{review_counts['model_linked_different']} it would link were not")
            for band in review_counts["bands"]:
                lines.append(f"  probability {band['from']:.2f}-{band['to']:.2f}: {band['pairs']:,} pairs, "
                             f"{band['same_share']:.0%} one person")
    emit(report, as_json, "\n".join(lines))


def _pair_line(what: str, c: dict[str, Any]) -> str:
    p = "n/a" if c["precision"] is None else f"{c['precision']:.4f}"
    r = "n/a" if c["recall"] is None else f"{c['recall']:.4f}"
    return (f"{what}: precision {p}, recall {r} ({c['linked_same']} linked and one person, "
            f"{c['linked_different']} linked but not, {c['apart_same']} apart but one person; "
            f"{c['unknown']} with a record not linked)")


def _link_threshold(settings: Settings) -> float:
    """The deployment model's link threshold, which the reviewed pairs are judged against."""
    from caselink.linkage.deployment import load_model

    try:
        return float(load_model(settings.linkage).link_threshold)
    except (FileNotFoundError, ValueError) as exc:
        fail(f"the reviewed pairs are judged against the deployment's model: {exc}")
