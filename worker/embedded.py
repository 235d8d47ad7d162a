"""An embedded AWS (moto's server) and a callback receiver: for the demo and the tests.

Nothing here is used by the daemon itself; ``moto`` is a development
dependency, imported only when :class:`EmbeddedAWS` starts.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from worker.notify import verify

REGION = "us-east-1"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}


def serve(handler: type[BaseHTTPRequestHandler], name: str) -> ThreadingHTTPServer:
    """``handler`` on a free loopback port, served by a daemon thread (one more per request)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
    return server


class EmbeddedAWS:
    """moto's threaded server on 127.0.0.1 (a real HTTP endpoint other processes can use).

    :meth:`provision` creates a bucket and GPU/CPU queues, each with a
    dead-letter queue after ``max_receives`` receives.
    """

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.queues: dict[str, str] = {}
        self.dead_letters: dict[str, str] = {}
        self.bucket = ""

    def client(self, service: str) -> Any:
        import boto3

        return boto3.session.Session(
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=REGION,
        ).client(service, endpoint_url=self.endpoint)

    def provision(
        self, prefix: str = "vidworker", *, visibility: int = 30, max_receives: int = 3, fifo: bool = False
    ) -> EmbeddedAWS:
        """Create ``{prefix}-bucket`` and queues ``{prefix}-gpu``/``-cpu``, each with a DLQ.

        ``fifo``: FIFO queues (``….fifo``, as the backend may name them), FIFO DLQs too.
        """
        sqs, s3 = self.client("sqs"), self.client("s3")
        self.bucket = f"{prefix}-bucket"
        s3.create_bucket(Bucket=self.bucket)
        suffix, kind = (".fifo", {"FifoQueue": "true"}) if fifo else ("", {})
        for name in ("gpu", "cpu"):
            dead = sqs.create_queue(QueueName=f"{prefix}-{name}-dlq{suffix}", Attributes=kind)["QueueUrl"]
            attributes = sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])["Attributes"]
            policy = json.dumps(
                {"deadLetterTargetArn": attributes["QueueArn"], "maxReceiveCount": str(max_receives)}
            )
            self.queues[name] = sqs.create_queue(
                QueueName=f"{prefix}-{name}{suffix}",
                Attributes={"VisibilityTimeout": str(visibility), "RedrivePolicy": policy, **kind},
            )["QueueUrl"]
            self.dead_letters[name] = dead
        return self

    def environment(self, **extra: str) -> dict[str, str]:
        """The worker's environment for this emulator (spec §8 names)."""
        return {
            **CREDENTIALS,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint,
            "SQS_GPU_QUEUE_URL": self.queues["gpu"],
            "SQS_CPU_QUEUE_URL": self.queues["cpu"],
            "S3_BUCKET_NAME": self.bucket,
            **extra,
        }

    def stop(self) -> None:
        self.server.stop()


@dataclass
class Received:
    """One callback as the receiver saw it."""

    body: dict[str, Any]
    headers: dict[str, str]
    signature_ok: bool | None


@dataclass
class CallbackReceiver:
    """A local backend: records every POST, checks signatures, answers as told.

    ``answer(body) -> (status, reply body)`` decides each reply (default 200 ``{}``).
    """

    secret: str | None = None
    answer: Callable[[dict[str, Any]], tuple[int, dict[str, Any]]] = lambda body: (200, {})
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._changed = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                signature = self.headers.get("X-Signature")
                ok = (
                    None if outer.secret is None else bool(signature and verify(outer.secret, signature, raw))
                )
                body = json.loads(raw)
                status, reply = outer.answer(body)
                payload = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                with outer._changed:
                    outer.received.append(Received(body, dict(self.headers.items()), ok))
                    outer._changed.notify_all()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = serve(Handler, "callbacks")
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/jobs/callback"

    def wait_for(self, predicate: Callable[[Received], bool], timeout: float) -> Received | None:
        """The first callback matching ``predicate``, waiting up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = next((item for item in self.received if predicate(item)), None)
                remaining = deadline - time.monotonic()
                if found is not None or remaining <= 0:
                    return found
                self._changed.wait(remaining)

    def of(self, job_id: str, status: str | None = None) -> list[Received]:
        with self._changed:
            return [
                item
                for item in self.received
                if item.body.get("jobId") == job_id and (status is None or item.body.get("status") == status)
            ]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
