"""A fake EC2 instance metadata service on loopback, strict about IMDSv2 as EC2 is.

``PUT /latest/api/token`` with a TTL header gives a token; every
``GET /latest/meta-data/…`` without a live token is 401; an item not in
``items`` is 404. Tests change ``items`` while a worker runs (a spot notice
appears, the group starts terminating the instance) and ``revoke()`` tokens.
"""

from __future__ import annotations

import threading
import uuid
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.worker.harness import answer
from worker.embedded import serve

PREFIX = "/latest/meta-data/"


class FakeMetadata:
    def __init__(self, **items: str) -> None:
        self.items: dict[str, str] = dict(items)
        self.tokens: set[str] = set()
        self.requests: list[tuple[str, str]] = []
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                with lock:
                    outer.requests.append(("PUT", self.path))
                if self.path != "/latest/api/token" or not self.headers.get(
                    "X-aws-ec2-metadata-token-ttl-seconds"
                ):
                    answer(self, 400, b"")
                    return
                token = uuid.uuid4().hex
                outer.tokens.add(token)
                answer(self, 200, token.encode())

            def do_GET(self) -> None:
                with lock:
                    outer.requests.append(("GET", self.path))
                if self.headers.get("X-aws-ec2-metadata-token") not in outer.tokens:
                    answer(self, 401, b"")
                    return
                value = (
                    outer.items.get(self.path.removeprefix(PREFIX)) if self.path.startswith(PREFIX) else None
                )
                if value is None:
                    answer(self, 404, b"<html>Not Found</html>")
                else:
                    answer(self, 200, value.encode())

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = serve(Handler, "fake-imds")
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def revoke(self) -> None:
        """Every token issued so far stops working (as after the TTL)."""
        self.tokens.clear()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
