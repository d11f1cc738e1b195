"""File connector throughput against a bare producer loop on the same rows (the ceiling).

    python benchmarks/connector_throughput.py [--rows 100000] [--workers 1 2]

Writes a CSV of --rows synthetic rows, loads it through the file connector (mapping, Avro
encoding, idempotent acks=all producer, checkpoints every second) once per --workers count
(``caselink connector run --workers N``; the time is the whole load: reading the checkpoints,
starting the worker processes, the final flush and checkpoint), then sends the same rows' raw
bytes with a bare confluent-kafka producer loop. A first, unreported load of the same file warms
the broker's JIT up, as a running broker would be. Starts and stops its own broker.
Results: benchmarks/results/connector_throughput.json.
"""

from __future__ import annotations

import argparse
import csv
import time

from caselink.connectors.files import FileConnector
from caselink.connectors.mapping import parse_mapping
from caselink.linkage.synthetic import records_for_size
from common import local_broker, save
from confluent_kafka import Producer

MAPPING = {
    "agency": "health", "record_id": "id", "version": "updated",
    "fields": {"given_names": "first", "family_name": "last", "date_of_birth": {"from": "dob", "format": "%Y-%m-%d"},
               "sex": {"from": "sex", "map": {"F": "F", "M": "M", "": "U"}},
               "identifiers": {"nhs_number": "nhs"},
               "addresses": [{"lines": "street", "locality": "town", "postcode": "postcode"}]},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    with local_broker(["health"]) as (settings, directory):
        path = directory / "rows.csv"
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "first", "last", "dob", "sex", "nhs", "street", "town", "postcode", "updated"])
            for i, item in enumerate(records_for_size(args.rows, seed=3)):
                p = item["person"]
                a = p["addresses"][0]
                w.writerow([f"R{i:08d}", p["given_names"] or "", p["family_name"] or "", p["date_of_birth"] or "",
                            p["sex"] or "", p["identifiers"].get("nhs_number", ""), a["lines"][0], a["locality"],
                            a["postcode"] or "", 1])
        FileConnector(settings, parse_mapping(MAPPING, "bench"), name="bench-warm-up").load(path, resume=False)
        rates = {}
        for workers in args.workers:
            connector = FileConnector(settings, parse_mapping(MAPPING, "bench"), name=f"bench-{workers}")
            report = connector.load_parallel(path, workers, resume=False)
            rates[workers] = report.rows / report.seconds
            print(f"file connector, {workers} worker process(es): {rates[workers]:,.0f} rows/s "
                  f"({report.events:,} events, {report.dead_letters} dead letters)")
        connector_rate = max(rates.values())

        lines = path.read_bytes().splitlines()[1:]
        producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers, "enable.idempotence": True,
                             "acks": "all", "linger.ms": 5, "compression.type": "lz4", "batch.num.messages": 10000})
        started = time.perf_counter()
        for i, line in enumerate(lines):
            while True:
                try:
                    producer.produce("agency.health.person-events", line, key=b"%d" % i)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
        producer.flush(60)
        ceiling = len(lines) / (time.perf_counter() - started)
        results = {"rows": report.rows, "events": report.events, "dead_letters": report.dead_letters,
                   "connector_rows_per_s_by_workers": rates, "connector_rows_per_s": connector_rate,
                   "bare_producer_rows_per_s": ceiling, "ratio": connector_rate / ceiling}
        print(f"file connector, best: {connector_rate:,.0f} rows/s; bare producer loop: {ceiling:,.0f} rows/s; "
              f"ratio {connector_rate / ceiling:.1%}")
        print(f"saved {save('connector_throughput', results)}")


if __name__ == "__main__":
    main()
