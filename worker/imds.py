"""The EC2 instance metadata service (IMDSv2) and a watcher for the notices that end an instance.

Two notices stop a worker that runs in a fleet, and both are read here:

* ``spot/instance-action``: EC2 will stop or terminate this spot instance at
  the ``time`` given, two minutes after the notice;
* ``autoscaling/target-lifecycle-state`` = ``Terminated``: the Auto Scaling group
  is terminating this instance (scale-in, rebalance, an operator), held by a
  termination lifecycle hook until the worker completes it.

IMDSv2 only: a session token from ``PUT /latest/api/token``, then every read
carries it. Off EC2 (nothing answers at the link-local address) there is
nothing to watch; that is said once, at start, and is not an error.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import urlsplit

from worker import metrics

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "http://169.254.169.254"
TOKEN_TTL = 21600
"""Seconds a session token lives (the IMDSv2 maximum); renewed a minute before it ends."""


class MetadataUnavailable(Exception):
    """Nothing answered at the metadata endpoint, or it answered with an error."""


@dataclass(frozen=True)
class Notice:
    """This instance is going away: ``kind`` says who said so; ``deadline`` (monotonic) when, if known."""

    kind: Literal["spot", "lifecycle"]
    detail: str
    deadline: float | None = None


class InstanceMetadata:
    """An IMDSv2 client on ``endpoint``; ``get`` returns None for a path that does not exist (404)."""

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, *, timeout: float = 1.0) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"instance metadata endpoint {endpoint!r} is not an http:// URL")
        self.host, self.port, self.timeout = parts.hostname, parts.port or 80, timeout
        self._token: tuple[str, float] | None = None
        self._lock = threading.Lock()

    def get(self, path: str) -> str | None:
        """``/latest/meta-data/{path}``, as text; None when the item does not exist."""
        for fresh in (False, True):  # a token the service no longer takes (401): one more with a new one
            token = {"X-aws-ec2-metadata-token": self._session(fresh)}
            status, body = self._request("GET", f"/latest/meta-data/{path}", token)
            if status == 200:
                return body
            if status == 404:
                return None
            if status != 401:
                break
        raise MetadataUnavailable(f"GET {path}: HTTP {status}")

    def _session(self, fresh: bool) -> str:
        with self._lock:
            if fresh or self._token is None or time.monotonic() > self._token[1]:
                ttl = {"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL)}
                status, token = self._request("PUT", "/latest/api/token", ttl)
                if status != 200 or not token:
                    raise MetadataUnavailable(f"no IMDSv2 session token (HTTP {status})")
                self._token = (token, time.monotonic() + TOKEN_TTL - 60)
            return self._token[0]

    def _request(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, str]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            connection.request(method, path, headers=headers)
            reply = connection.getresponse()
            return reply.status, reply.read().decode("utf-8", "replace").strip()
        except (OSError, http.client.HTTPException) as error:
            raise MetadataUnavailable(f"{method} {path}: {error}") from None
        finally:
            connection.close()


def spot_notice(document: str | None, now: datetime | None = None) -> Notice | None:
    """The notice in ``spot/instance-action`` (``{"action": "terminate", "time": "…Z"}``), if any."""
    if not document:
        return None
    try:
        action = json.loads(document)
        when = datetime.strptime(action["time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        kind = str(action["action"])
    except (ValueError, KeyError, TypeError):
        log.warning("unreadable spot instance-action %r: treated as a notice due now", document[:200])
        return Notice("spot", "unreadable spot interruption notice", deadline=time.monotonic())
    left = (when - (now or datetime.now(UTC))).total_seconds()
    return Notice("spot", f"spot {kind} at {action['time']}", deadline=time.monotonic() + max(0.0, left))


class MetadataWatcher:
    """Reads both notices every ``interval`` seconds in a daemon thread; calls ``on_notice`` once each.

    :meth:`start` reads once before it returns, so a worker that starts on an
    instance already being terminated takes no job.
    """

    def __init__(
        self, metadata: InstanceMetadata, on_notice: Callable[[Notice], None], *, interval: float = 5.0
    ) -> None:
        self.metadata = metadata
        self.on_notice = on_notice
        self.interval = interval
        self.seen: set[str] = set()
        self.available = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metadata-watch", daemon=True)

    def start(self) -> MetadataWatcher:
        try:
            self.poll()
        except MetadataUnavailable as error:
            log.info(
                "instance metadata unreachable (%s): not on EC2, no spot or scale-in notice to watch", error
            )
            return self
        self.available = True
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def poll(self) -> None:
        """Read both notices; hand each one on the first time it appears."""
        found = [spot_notice(self.metadata.get("spot/instance-action"))]
        if self.metadata.get("autoscaling/target-lifecycle-state") == "Terminated":
            found.append(Notice("lifecycle", "the Auto Scaling group is terminating this instance"))
        for notice in found:
            if notice is not None and notice.kind not in self.seen:
                self.seen.add(notice.kind)
                metrics.NOTICES.labels(notice.kind).inc()
                log.warning("%s", notice.detail)
                self.on_notice(notice)

    def _run(self) -> None:
        failures = 0
        while not self._stop.wait(self.interval):
            try:
                self.poll()
                failures = 0
            except MetadataUnavailable as error:
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    log.warning("instance metadata read failed %d time(s): %s", failures, error)
            except Exception:  # the notice handler's own failure: logged, the watch goes on
                log.exception("handling an instance notice failed")
