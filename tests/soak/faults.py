"""The flaky cloud and backend: S3 5xx from a proxy in front of moto; callback 5xx and slow replies."""

from __future__ import annotations

import random
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.worker.harness import LIFECYCLE_COMPLETED, answer, relay
from worker.embedded import serve

S3_FAULTS = (
    (503, "SlowDown", "Please reduce your request rate."),
    (503, "ServiceUnavailable", "injected by the soak"),
    (500, "InternalError", "We encountered an internal error. Please try again."),
)


def quiet(server: ThreadingHTTPServer) -> None:
    """Do not print a traceback when a client hangs up mid-request: killed workers do that all the time."""
    loud = server.handle_error

    def handle_error(request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            loud(request, client_address)

    setattr(server, "handle_error", handle_error)  # noqa: B010 - an instance's method, replaced


class ChaosProxy:
    """Forwards every request to ``upstream`` (moto); a seeded fraction ``rate`` of S3 requests
    gets an S3 500/503 (SlowDown, ServiceUnavailable, InternalError) instead.

    SQS and Auto Scaling requests (``POST /``) pass untouched, except Auto Scaling's
    CompleteLifecycleAction, which moto lacks: answered here and recorded in ``completed``
    (instance ids, in order). Like tests.worker.harness.FaultProxy (whose ``answer`` and
    ``relay`` it uses), but random.
    """

    def __init__(self, upstream: str, *, rate: float, rng: random.Random) -> None:
        self.rate = rate
        self.rng = rng
        self.requests: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self.completed: list[str] = []
        self._lock = threading.Lock()
        target = urlsplit(upstream)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
                if body.startswith(b"Action=CompleteLifecycleAction"):
                    with outer._lock:
                        outer.completed.append(dict(parse_qsl(body.decode()))["InstanceId"])
                    answer(self, 200, LIFECYCLE_COMPLETED, [("Content-Type", "text/xml")])
                    return
                fault = outer._fault(self.command, self.path)
                if fault is None:
                    relay(self, target, body)
                    return
                status, code, message = fault
                payload = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()
                answer(self, status, payload, [("Content-Type", "application/xml")])

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = serve(Handler, "chaos-proxy")
        quiet(self.server)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _fault(self, method: str, path: str) -> tuple[int, str, str] | None:
        service = "sqs" if path.split("?", 1)[0] == "/" else "s3"
        with self._lock:
            self.requests[service] += 1
            if service != "s3":
                return None
            draw, pick = self.rng.random(), self.rng.randrange(len(S3_FAULTS))
            if draw >= self.rate:
                return None
            fault = S3_FAULTS[pick]
            self.injected[f"{method} {fault[0]} {fault[1]}"] += 1
            return fault

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FlakyBackend:
    """The callback receiver's ``answer``: a seeded fraction ``rate`` of POSTs gets a 500/503, a slow 200,
    or a 200 that comes after the worker gave up waiting (``timeout`` seconds, its
    ``CALLBACK_TIMEOUT_SECONDS``): the backend took it, the worker does not know and retries.
    :meth:`status_of` tells what a recorded callback was answered.
    """

    def __init__(self, *, rate: float, rng: random.Random, timeout: float = 1.0) -> None:
        self.rate = rate
        self.timeout = timeout
        self.rng = rng
        self.injected: Counter[str] = Counter()
        self._answers: dict[int, tuple[dict[str, Any], int]] = {}
        self._lock = threading.Lock()

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            draw, pause = self.rng.random(), self.rng.uniform(0.2, 0.8) * self.timeout
            if draw < self.rate * 0.4:
                status, kind = 500, "500"
            elif draw < self.rate * 0.6:
                status, kind = 503, "503"
            elif draw < self.rate * 0.8:
                status, kind = 200, "slow"
            elif draw < self.rate:
                status, kind, pause = 200, "timeout", self.timeout * 1.5
            else:
                status, kind = 200, ""
            if kind:
                self.injected[kind] += 1
            self._answers[id(body)] = (body, status)  # the body is kept: its id stays unique
        if kind in ("slow", "timeout"):
            time.sleep(pause)
        return status, {}

    def status_of(self, body: dict[str, Any]) -> int | None:
        with self._lock:
            found = self._answers.get(id(body))
        return None if found is None else found[1]
