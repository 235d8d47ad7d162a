"""Signed HTTP callbacks to the backend (spec §6) behind an SSRF guard (spec §7).

Contract:

* Only ``http``/``https`` URLs without user info, whose host is in the
  allowlist, are called. Every address the host resolves to is checked, never
  the URL text (``2130706433``, ``0x7f.1`` and ``[::ffff:127.0.0.1]`` are all
  127.0.0.1). Link-local (169.254.0.0/16, fe80::/10), multicast and reserved
  addresses are refused always; loopback, private, unspecified, CGNAT and other
  non-global addresses only unless ``allow_private``. A refusal raises
  :class:`CallbackRefused` (permanent).
* The connection goes to a checked address (no second lookup, so no DNS
  rebinding); HTTPS verifies the certificate against the URL's host (SNI), and
  the ``Host`` header names the URL's host.
* Redirects are never followed: a 3xx is a failed delivery, not retried.
* Terminal events (:meth:`Notifier.send`) are retried on connection errors,
  timeouts, 429 and 5xx with the daemon's one backoff (``worker.retries``); network
  failures end in ``Reply(delivered=False)``, never an exception.
* Progress (:meth:`Notifier.progress_channel`) never blocks the caller: the
  latest body is sent from a thread at most once per interval, one attempt each.
* Headers: ``X-Event-Id`` (same on every retry of one event) and, with a
  secret, ``X-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``
  signed afresh on each attempt. Neither the secret nor a signature is logged.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from errors import ErrorCode, VidworkerError
from worker import metrics
from worker.retries import backoff

log = logging.getLogger(__name__)

Resolver = Callable[..., Sequence[tuple[Any, ...]]]
"""``socket.getaddrinfo``-compatible: ``(host, port, family, type)`` → address infos."""

_MAX_REPLY = 64 * 1024  # bytes of a reply body read to look for {"cancel": true}
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_ALWAYS_REFUSED = ("link-local", "multicast", "reserved")


class CallbackRefused(VidworkerError):
    """The callback URL breaks the policy (scheme, host, address or redirect)."""

    code = ErrorCode.CALLBACK_REFUSED
    retryable = False


@dataclass(frozen=True)
class Reply:
    """How a callback ended; ``attempts`` counts the HTTP attempts made."""

    delivered: bool
    status: int | None
    cancel: bool
    attempts: int


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """``X-Signature`` value: ``t=<unix seconds>,v1=<hex HMAC-SHA256(secret, b"<t>." + body)>``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify(secret: str, header: str, body: bytes, *, tolerance: int = 300, now: float | None = None) -> bool:
    """True when ``header`` signs ``body`` with ``secret`` within ``tolerance`` seconds of ``now``."""
    fields = [item.partition("=") for item in header.split(",")]
    stamps = [value.strip() for key, _, value in fields if key.strip() == "t"]
    macs = [value.strip() for key, _, value in fields if key.strip() == "v1"]
    if len(stamps) != 1 or not (stamps[0].isascii() and stamps[0].isdigit()) or not macs:
        return False
    timestamp = int(stamps[0])
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).partition(",v1=")[2]
    return any(hmac.compare_digest(expected.encode(), mac.encode()) for mac in macs)


def _address_kind(text: str) -> str | None:
    """The special range an address lies in, or None for a global address."""
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(text.partition("%")[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    checks: list[tuple[str, bool]] = [
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("loopback", ip.is_loopback),  # before reserved: ::1 lies in reserved ::/8
        ("unspecified", ip.is_unspecified),
        ("reserved", ip.is_reserved),
        ("shared (CGNAT)", ip in _CGNAT),
        ("private", ip.is_private),
        ("non-global", not ip.is_global),
    ]
    return next((kind for kind, hit in checks if hit), None)


def _redact(url: str) -> str:
    """The URL without user info, query or fragment, for logs."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str
    port: int
    path: str  # path and query, as sent in the request line


@dataclass(frozen=True)
class _Outcome:
    """One attempt: ``retry`` asks for another attempt, else the reply is final."""

    status: int | None
    delivered: bool = False
    cancel: bool = False
    retry: bool = False


class _PinnedConnection(http.client.HTTPConnection):
    """HTTP(S) to ``host`` through pre-checked addresses; TLS verifies ``host``."""

    def __init__(
        self, target: _Target, addresses: list[str], timeout: float, tls: ssl.SSLContext | None
    ) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self.default_port = 443 if tls else 80  # the Host header omits the default port
        self._addresses = addresses
        self._tls = tls

    def connect(self) -> None:
        error: OSError = OSError("no address")
        for address in self._addresses:
            try:
                sock = socket.create_connection((address, self.port), self.timeout)
                break
            except OSError as exc:
                error = exc
        else:
            raise error
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host) if self._tls else sock


class Notifier:
    """Posts signed JSON callbacks to allowed hosts; see the module docstring.

    ``timeout`` is the socket timeout in seconds (connect and each read) of one
    attempt; ``backoff``/``max_backoff`` are seconds; the delay before retry
    ``n`` (0-based) is ``worker.retries.backoff(n + 1, backoff, max_backoff)``.
    """

    def __init__(
        self,
        *,
        secret: str | None,
        allowed_hosts: frozenset[str],
        allow_private: bool,
        timeout: float = 10.0,
        attempts: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        resolver: Resolver = socket.getaddrinfo,
        sleep: Callable[[float], None] = time.sleep,
        user_agent: str = "vidworker",
        progress_interval: float = 1.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if attempts < 1 or timeout <= 0 or backoff < 0 or max_backoff < 0 or progress_interval < 0:
            raise ValueError("attempts must be >= 1, timeout > 0, backoff and intervals >= 0")
        self.secret = secret
        self.allowed_hosts = frozenset(host.lower().strip("[]") for host in allowed_hosts)
        self.allow_private = allow_private
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.user_agent = user_agent
        self.progress_interval = progress_interval
        self._resolver = resolver
        self._sleep = sleep
        self._ssl_context = ssl_context or ssl.create_default_context()

    def check(self, url: str) -> tuple[str, int, list[str]]:
        """(host, port, resolved addresses) of an allowed URL.

        Raises CallbackRefused for a policy breach, OSError when the host does
        not resolve (a transient failure, not a refusal).
        """
        target = self._target(url)
        return target.host, target.port, self._addresses(target)

    def send(self, url: str, body: dict[str, Any], *, event_id: str) -> Reply:
        """Deliver a terminal event with retries; raises only CallbackRefused."""
        payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        outcome = _Outcome(status=None)
        for attempt in range(self.attempts):
            outcome = self._attempt(url, payload, event_id)
            if not outcome.retry:
                metrics.CALLBACKS.labels("delivered" if outcome.delivered else "failed").inc()
                return Reply(outcome.delivered, outcome.status, outcome.cancel, attempt + 1)
            if attempt + 1 < self.attempts:
                self._sleep(self._delay(attempt))
        log.warning("callback %s event %s: gave up after %d attempts", _redact(url), event_id, self.attempts)
        metrics.CALLBACKS.labels("failed").inc()
        return Reply(False, outcome.status, False, self.attempts)

    def progress_channel(
        self, url: str, *, job_id: str, min_interval: float | None = None
    ) -> ProgressChannel:
        """A started channel for PROCESSING updates; raises CallbackRefused for a refused URL."""
        try:
            self.check(url)
        except OSError as exc:  # a lookup failure may pass; each send checks again
            log.warning("callback %s for job %s: lookup failed: %s", _redact(url), job_id, exc)
        interval = self.progress_interval if min_interval is None else min_interval
        return ProgressChannel(self, url, job_id=job_id, min_interval=interval)

    def _delay(self, attempt: int) -> float:
        """Seconds before retry number ``attempt`` (0-based): the daemon's one backoff, no floor."""
        return backoff(attempt + 1, self.backoff, self.max_backoff, floor=0.0)

    def _target(self, url: str) -> _Target:
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError as exc:
            raise CallbackRefused(f"callback URL refused: {exc}") from exc
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise CallbackRefused(f"callback scheme {scheme!r} refused: only http and https")
        if parts.username is not None or parts.password is not None:
            raise CallbackRefused("callback URL with user info refused")
        host = (parts.hostname or "").rstrip(".")
        if not host or not host.isascii() or host not in self.allowed_hosts:
            raise CallbackRefused(f"callback host {host!r} not allowed (CALLBACK_ALLOWED_HOSTS)")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if any(char <= " " or char == "\x7f" for char in path):
            raise CallbackRefused("callback URL path has spaces or control characters")
        return _Target(scheme, host, port or (443 if scheme == "https" else 80), path)

    def _addresses(self, target: _Target) -> list[str]:
        infos = self._resolver(target.host, target.port, 0, socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not addresses:
            raise OSError(f"{target.host} resolved to no address")
        for address in addresses:
            self._refuse_if_special(target.host, address)
        return addresses

    def _refuse_if_special(self, host: str, address: str) -> None:
        try:
            kind = _address_kind(address)
        except ValueError as exc:
            raise CallbackRefused(f"callback host {host!r} resolved to unparsable {address!r}") from exc
        if kind is None or (self.allow_private and kind not in _ALWAYS_REFUSED):
            return
        raise CallbackRefused(f"callback host {host!r} resolves to {kind} address {address}")

    def _attempt(self, url: str, payload: bytes, event_id: str) -> _Outcome:
        """One POST; CallbackRefused propagates, network errors become a retry outcome."""
        target = self._target(url)
        try:
            addresses = self._addresses(target)
            status, reply = self._post(target, addresses, payload, event_id)
        except (OSError, http.client.HTTPException) as exc:
            log.warning(
                "callback %s event %s failed: %s: %s", _redact(url), event_id, type(exc).__name__, exc
            )
            return _Outcome(status=None, retry=True)
        return self._judge(url, event_id, status, reply)

    def _post(
        self, target: _Target, addresses: list[str], payload: bytes, event_id: str
    ) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json", "X-Event-Id": event_id, "User-Agent": self.user_agent}
        if self.secret:
            headers["X-Signature"] = sign(self.secret, payload, int(time.time()))
        tls = self._ssl_context if target.scheme == "https" else None
        connection = _PinnedConnection(target, addresses, self.timeout, tls)
        try:
            connection.request("POST", target.path, body=payload, headers=headers)
            response = connection.getresponse()
            return response.status, response.read(_MAX_REPLY)
        finally:
            connection.close()

    def _judge(self, url: str, event_id: str, status: int, reply: bytes) -> _Outcome:
        if 200 <= status < 300:
            return _Outcome(status, delivered=True, cancel=_asks_cancel(reply))
        if status in (409, 410):
            return _Outcome(status, delivered=True, cancel=True)
        retry = status == 429 or status >= 500
        reason = "redirect not followed" if 300 <= status < 400 else f"HTTP {status}"
        log.warning(
            "callback %s event %s: %s%s", _redact(url), event_id, reason, "" if retry else ", not retried"
        )
        return _Outcome(status, retry=retry)


def _asks_cancel(reply: bytes) -> bool:
    """True for a JSON object body with ``"cancel": true``."""
    try:
        data = json.loads(reply)
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("cancel") is True


class ProgressChannel:
    """Latest-wins PROCESSING updates for one job, sent from a daemon thread.

    ``update`` never blocks on the network. Sends start at most once per
    ``min_interval`` seconds, one attempt each with a fresh event id. A reply
    asking to cancel sets ``cancelled``. After ``close`` returns no send starts;
    a send already in flight gets up to ``timeout`` seconds to finish.
    """

    def __init__(self, notifier: Notifier, url: str, *, job_id: str, min_interval: float = 1.0) -> None:
        self.url = url
        self.job_id = job_id
        self.min_interval = min_interval
        self.cancelled = threading.Event()
        self._notifier = notifier
        self._pending: bytes | None = None
        self._closed = False
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"progress-{job_id}", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        """Whether the sending thread is still alive."""
        return self._thread.is_alive()

    def update(self, body: dict[str, Any]) -> None:
        """Replace the pending update with ``body``; ignored after close."""
        payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        with self._wake:
            if not self._closed:
                self._pending = payload
                self._wake.notify()

    def close(self, timeout: float | None = None) -> None:
        """Drop any pending update and stop the thread (join up to ``timeout`` s, default the notifier's)."""
        with self._wake:
            self._closed = True
            self._pending = None
            self._wake.notify()
        self._thread.join(self._notifier.timeout if timeout is None else timeout)

    def __enter__(self) -> ProgressChannel:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def _run(self) -> None:
        next_at = 0.0
        while (payload := self._next(next_at)) is not None:
            next_at = time.monotonic() + self.min_interval
            self._send(payload)

    def _next(self, not_before: float) -> bytes | None:
        """Wait for a pending update due at ``not_before`` (monotonic); None once closed."""
        with self._wake:
            while not self._closed:
                delay = not_before - time.monotonic()
                if self._pending is not None and delay <= 0:
                    payload, self._pending = self._pending, None
                    return payload
                self._wake.wait(delay if self._pending is not None else None)
        return None

    def _send(self, payload: bytes) -> None:
        try:
            outcome = self._notifier._attempt(self.url, payload, str(uuid.uuid4()))
        except CallbackRefused as exc:
            log.warning("progress for job %s refused: %s", self.job_id, exc)
            return
        except Exception:  # the thread must outlive any one bad send
            log.exception("progress for job %s: send failed", self.job_id)
            return
        if outcome.cancel:
            log.info("progress for job %s: backend asked to cancel (HTTP %s)", self.job_id, outcome.status)
            self.cancelled.set()
