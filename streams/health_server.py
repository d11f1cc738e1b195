"""/health and /metrics for a caselink process that is not the worker (`caselink gate`, `caselink
shard`): one small HTTP server, so each such process answers the same way. /health is the
process's status as JSON, 200 when its ``status`` is "ok" and 503 otherwise (the body says why);
/metrics is the Prometheus exposition of this process's registry."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


def serve_health(host: str, port: int, status: Callable[[], dict[str, Any]], name: str) -> ThreadingHTTPServer:
    """Start serving in a daemon thread; ``shutdown()`` the returned server to stop."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                body, ctype, code = generate_latest(), CONTENT_TYPE_LATEST, 200
            elif self.path == "/health":
                report = status()
                body, ctype = json.dumps(report).encode(), "application/json"
                code = 200 if report.get("status") == "ok" else 503
            else:
                body, ctype, code = b'{"error": "not found"}', "application/json", 404
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name=f"caselink-{name}-web", daemon=True).start()
    return server
