"""``GET /health`` (JSON) and ``GET /metrics`` (Prometheus text) on WORKER_HEALTH_PORT."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from worker.metrics import REGISTRY


class HealthServer:
    """Serves ``status()`` as /health and the metrics registry as /metrics, in a daemon thread."""

    def __init__(self, port: int, status: Callable[[], dict[str, Any]], host: str = "0.0.0.0") -> None:  # noqa: S104
        self.started = time.monotonic()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/health":
                    body = json.dumps(
                        {**status(), "uptimeSeconds": round(time.monotonic() - outer.started, 1)}
                    )
                    self._reply(200, "application/json", body.encode())
                elif self.path == "/metrics":
                    self._reply(200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY))
                else:
                    self._reply(404, "text/plain", b"not found\n")

            def _reply(self, code: int, kind: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="health", daemon=True)

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
