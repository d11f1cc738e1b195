"""HTTP ingest under a sustained load from a second process on loopback.

    python benchmarks/ingest_throughput.py [--seconds 15] [--concurrency 16] [--batch 1]

Starts Kafka and `caselink ingest serve` (uvicorn, one process), then a load generator in this
process keeps --concurrency requests in flight for --seconds, each carrying --batch events, and
reports requests/s, events/s and latency p50/p99 (every answer is a 202 after Kafka's ack).
Results: benchmarks/results/ingest_throughput_b<batch>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request

import httpx
from caselink.infra.kafka_runtime import free_port
from common import local_broker, percentile, save


async def load(url: str, token: str, seconds: float, concurrency: int, batch: int) -> tuple[list[float], int]:
    latencies: list[float] = []
    failures = 0
    deadline = time.perf_counter() + seconds
    counter = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal counter, failures
        while time.perf_counter() < deadline:
            counter += 1
            body = [{"source_record_id": f"R{counter}-{i}", "source_version": 1,
                     "person": {"given_names": "Ann", "family_name": f"Lee{counter}", "date_of_birth": "1990-04-03"}}
                    for i in range(batch)]
            started = time.perf_counter()
            r = await client.post(url, json=body if batch > 1 else body[0],
                                  headers={"Authorization": f"Bearer {token}"})
            latencies.append(time.perf_counter() - started)
            if r.status_code != 202:
                failures += 1

    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=concurrency)) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return latencies, failures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    with local_broker(["health"]) as (settings, _directory):
        port = free_port()
        token = "bench-token"
        env = {**os.environ, "CASELINK_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
               "CASELINK_INGEST__TOKENS": json.dumps({"health": token}), "CASELINK_INGEST__PORT": str(port)}
        server = subprocess.Popen([sys.executable, "-m", "caselink.cli", "ingest", "serve"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                    break
                except OSError:
                    time.sleep(0.1)
            url = f"http://127.0.0.1:{port}/v1/health/person-events"
            asyncio.run(load(url, token, 2, args.concurrency, args.batch))  # warm up
            started = time.perf_counter()
            latencies, failures = asyncio.run(load(url, token, args.seconds, args.concurrency, args.batch))
            elapsed = time.perf_counter() - started
        finally:
            server.terminate()
            server.wait(10)
    results = {"concurrency": args.concurrency, "batch": args.batch, "requests": len(latencies),
               "failures": failures, "requests_per_s": len(latencies) / elapsed,
               "events_per_s": len(latencies) * args.batch / elapsed,
               "p50_ms": percentile(latencies, 50) * 1000, "p99_ms": percentile(latencies, 99) * 1000}
    print(f"HTTP ingest, {args.concurrency} in flight, {args.batch} event(s)/request: "
          f"{results['requests_per_s']:,.0f} requests/s ({results['events_per_s']:,.0f} events/s), "
          f"p50 {results['p50_ms']:.1f} ms, p99 {results['p99_ms']:.1f} ms, {failures} failures")
    print(f"saved {save(f'ingest_throughput_b{args.batch}', results)}")


if __name__ == "__main__":
    main()
