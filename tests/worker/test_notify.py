"""Callbacks against real local HTTP(S) servers: signing, retries, cancel, redirects, SSRF, progress."""

from __future__ import annotations

import datetime
import itertools
import json
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from worker.notify import CallbackRefused, Notifier, Reply, sign, verify

SECRET = "s3cret"
LOCAL = frozenset({"127.0.0.1", "localhost"})


@dataclass(frozen=True)
class Answer:
    """One scripted response; the handler waits on ``gate`` (if any) before answering."""

    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)
    gate: threading.Event | None = None


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() on arrival

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """A ThreadingHTTPServer on 127.0.0.1 that records POSTs and answers from a script."""

    def __init__(self, script: Sequence[Answer] = (), default: Answer = Answer()) -> None:
        self.script = list(script)
        self.default = default
        self.requests: list[Request] = []
        self.arrived = threading.Condition()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/cb?x=1"
        # a short poll interval makes shutdown() quick at teardown
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True)
        self.thread.start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                answer = receiver.record(Request(self.path, dict(self.headers), body, time.monotonic()))
                if answer.gate is not None:
                    answer.gate.wait(10)
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def record(self, request: Request) -> Answer:
        with self.arrived:
            self.requests.append(request)
            self.arrived.notify_all()
            return self.script.pop(0) if self.script else self.default

    def wait_for(self, done: Callable[[list[Request]], bool], timeout: float = 5.0) -> list[Request]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: done(self.requests), timeout), self.requests
            return list(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(*script: Answer, default: Answer = Answer()) -> Receiver:
        made.append(Receiver(script, default))
        return made[-1]

    yield make
    for receiver in made:
        for answer in [*receiver.script, receiver.default]:
            if answer.gate is not None:
                answer.gate.set()
        receiver.close()


@pytest.fixture
def sleeps() -> list[float]:
    return []


def notifier(sleeps: list[float], **overrides: Any) -> Notifier:
    options: dict[str, Any] = {
        "secret": SECRET,
        "allowed_hosts": LOCAL,
        "allow_private": True,
        "timeout": 2.0,
        "attempts": 3,
        "sleep": sleeps.append,
    }
    return Notifier(**(options | overrides))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- signatures ---------------------------------------------------------------------------


def test_sign_and_verify() -> None:
    body = b'{"jobId":"1"}'
    header = sign(SECRET, body, 1_700_000_000)
    assert header.startswith("t=1700000000,v1=")
    assert verify(SECRET, header, body, now=1_700_000_100)
    assert not verify("wrong", header, body, now=1_700_000_100)
    assert not verify(SECRET, header, body + b" ", now=1_700_000_100)
    assert not verify(SECRET, header, body, now=1_700_000_301)  # older than the 300 s tolerance
    assert not verify(SECRET, "garbage", body)
    assert not verify(SECRET, header.replace("v1=", "v1=é"), body, now=1_700_000_000)


def test_signed_post_headers_and_body(receivers: Callable[..., Receiver], sleeps: list[float]) -> None:
    server = receivers()
    reply = notifier(sleeps).send(server.url, {"jobId": "j1", "status": "COMPLETED"}, event_id="ev-1")
    assert reply == Reply(delivered=True, status=200, cancel=False, attempts=1)
    [request] = server.requests
    assert request.path == "/cb?x=1"
    assert request.json() == {"jobId": "j1", "status": "COMPLETED"}
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Event-Id"] == "ev-1"
    assert request.headers["Host"] == f"127.0.0.1:{server.port}"
    assert request.headers["User-Agent"] == "vidworker"
    assert verify(SECRET, request.headers["X-Signature"], request.body)
    assert not verify("other", request.headers["X-Signature"], request.body)


def test_no_signature_without_secret(receivers: Callable[..., Receiver], sleeps: list[float]) -> None:
    server = receivers()
    assert notifier(sleeps, secret=None).send(server.url, {"a": 1}, event_id="e").delivered
    assert "X-Signature" not in server.requests[0].headers


def test_host_header_names_the_url_host(receivers: Callable[..., Receiver], sleeps: list[float]) -> None:
    server = receivers()
    url = f"http://localhost:{server.port}/cb"
    assert notifier(sleeps).send(url, {}, event_id="e").delivered
    assert server.requests[0].headers["Host"] == f"localhost:{server.port}"


# --- retries --------------------------------------------------------------------------------


def test_retries_500_then_succeeds(receivers: Callable[..., Receiver], sleeps: list[float]) -> None:
    server = receivers(Answer(500), Answer(503), Answer(429), Answer(200))
    sender = notifier(sleeps, attempts=5, backoff=0.5, max_backoff=1.5)
    reply = sender.send(server.url, {"jobId": "j"}, event_id="ev-stable")
    assert reply == Reply(delivered=True, status=200, cancel=False, attempts=4)
    assert [r.headers["X-Event-Id"] for r in server.requests] == ["ev-stable"] * 4
    assert len({r.body for r in server.requests}) == 1
    assert all(verify(SECRET, r.headers["X-Signature"], r.body) for r in server.requests)
    assert len(sleeps) == 3
    assert all(0 <= delay <= bound for delay, bound in zip(sleeps, [0.5, 1.0, 1.5], strict=True))


def test_backoff_is_full_jitter_capped(
    receivers: Callable[..., Receiver], sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    bounds: list[tuple[float, float]] = []

    def upper(low: float, high: float) -> float:
        bounds.append((low, high))
        return high

    monkeypatch.setattr(random, "uniform", upper)
    server = receivers(default=Answer(502))
    reply = notifier(sleeps, attempts=5, backoff=0.5, max_backoff=3.0).send(server.url, {}, event_id="e")
    assert reply == Reply(delivered=False, status=502, cancel=False, attempts=5)
    assert bounds == [(0.25, 0.5), (0.5, 1.0), (1.0, 2.0), (1.5, 3.0)]
    assert sleeps == [0.5, 1.0, 2.0, 3.0]


def test_400_is_not_retried(receivers: Callable[..., Receiver], sleeps: list[float]) -> None:
    server = receivers(default=Answer(400))
    reply = notifier(sleeps).send(server.url, {}, event_id="e")
    assert reply == Reply(delivered=False, status=400, cancel=False, attempts=1)
    assert len(server.requests) == 1 and sleeps == []


def test_connection_refused_gives_up_without_raising(sleeps: list[float]) -> None:
    url = f"http://127.0.0.1:{free_port()}/cb"
    reply = notifier(sleeps, attempts=4).send(url, {}, event_id="e")
    assert reply == Reply(delivered=False, status=None, cancel=False, attempts=4)
    assert len(sleeps) == 3


def test_timeout_is_retried(receivers: Callable[..., Receiver], sleeps: list[float]) -> None:
    server = receivers(Answer(gate=threading.Event()), Answer(200))
    reply = notifier(sleeps, timeout=0.3).send(server.url, {}, event_id="e")
    assert reply == Reply(delivered=True, status=200, cancel=False, attempts=2)
    assert [r.headers["X-Event-Id"] for r in server.requests] == ["e", "e"]


# --- cancel and redirects ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "cancel"),
    [
        (Answer(409), True),
        (Answer(410), True),
        (Answer(200, b'{"cancel": true}'), True),
        (Answer(200, b'{"cancel": false}'), False),
        (Answer(204, b""), False),
        (Answer(200, b"not json"), False),
    ],
)
def test_cancel_replies(
    receivers: Callable[..., Receiver], sleeps: list[float], answer: Answer, cancel: bool
) -> None:
    server = receivers(answer)
    reply = notifier(sleeps).send(server.url, {}, event_id="e")
    assert reply == Reply(delivered=True, status=answer.status, cancel=cancel, attempts=1)


@pytest.mark.parametrize("location", ["other", "http://169.254.169.254/latest/meta-data/"])
def test_redirect_is_not_followed(
    receivers: Callable[..., Receiver], sleeps: list[float], location: str
) -> None:
    target = receivers()
    where = target.url if location == "other" else location
    server = receivers(default=Answer(302, headers={"Location": where}))
    reply = notifier(sleeps).send(server.url, {}, event_id="e")
    assert reply == Reply(delivered=False, status=302, cancel=False, attempts=1)
    assert len(server.requests) == 1 and target.requests == [] and sleeps == []


# --- SSRF guard -------------------------------------------------------------------------------


def resolving_to(*addresses: str) -> Callable[..., list[tuple[Any, ...]]]:
    def resolve(host: str, port: int, *args: Any) -> list[tuple[Any, ...]]:
        infos: list[tuple[Any, ...]] = []
        for address in addresses:
            if ":" in address:
                infos.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0)))
            else:
                infos.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)))
        return infos

    return resolve


LITERALS_REFUSED_WITHOUT_PRIVATE = [
    ("127.0.0.1", "loopback"),
    ("[::ffff:127.0.0.1]", "loopback"),
    ("[::1]", "loopback"),
    ("2130706433", "loopback"),
    ("0x7f.0.0.1", "loopback"),
    ("0x7f.1", "loopback"),
    ("017700000001", "loopback"),
    ("10.0.0.5", "private"),
    ("192.168.1.1", "private"),
    ("0.0.0.0", "unspecified"),
    ("100.64.0.1", "CGNAT"),
    ("[fc00::1]", "private"),
]


@pytest.mark.parametrize(("host", "kind"), LITERALS_REFUSED_WITHOUT_PRIVATE)
def test_private_literals_refused(host: str, kind: str) -> None:
    """Real getaddrinfo turns each literal into an address; the address is what is checked."""
    guard = Notifier(secret=None, allowed_hosts=frozenset({host.strip("[]")}), allow_private=False)
    with pytest.raises(CallbackRefused, match=kind) as caught:
        guard.check(f"http://{host}:8080/cb")
    assert caught.value.code == "CALLBACK_REFUSED" and caught.value.retryable is False


@pytest.mark.parametrize(
    "host", ["169.254.169.254", "[fe80::1]", "[::ffff:169.254.169.254]", "0251.0376.0251.0376"]
)
@pytest.mark.parametrize("allow_private", [False, True])
def test_link_local_refused_always(host: str, allow_private: bool) -> None:
    guard = Notifier(secret=None, allowed_hosts=frozenset({host.strip("[]")}), allow_private=allow_private)
    with pytest.raises(CallbackRefused, match="link-local"):
        guard.check(f"http://{host}/latest/meta-data/")


@pytest.mark.parametrize("address", ["224.0.0.1", "ff02::1", "240.0.0.1", "255.255.255.255"])
def test_multicast_and_reserved_refused_always(address: str) -> None:
    guard = Notifier(
        secret=None, allowed_hosts=frozenset({"cb.test"}), allow_private=True, resolver=resolving_to(address)
    )
    with pytest.raises(CallbackRefused, match="multicast|reserved"):
        guard.check("https://cb.test/x")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://cb.test/x", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("http://user:pass@cb.test/x", "user info"),
        ("http://evil.test/x", "not allowed"),
        ("http://cb.test.evil.test/x", "not allowed"),
        ("http://cb.test:99999/x", "(?i)port"),
        ("http://[::1/x", "URL refused"),
        ("http://cb.test/a b", "control"),
    ],
)
def test_url_policy_refusals(url: str, reason: str) -> None:
    public = resolving_to("8.8.8.8")
    guard = Notifier(secret=None, allowed_hosts=frozenset({"cb.test"}), allow_private=True, resolver=public)
    with pytest.raises(CallbackRefused, match=reason):
        guard.check(url)


def test_empty_allowlist_allows_nothing() -> None:
    guard = Notifier(secret=None, allowed_hosts=frozenset(), allow_private=True)
    with pytest.raises(CallbackRefused, match="not allowed"):
        guard.check("http://127.0.0.1/x")


def test_any_private_address_among_public_refuses() -> None:
    guard = Notifier(
        secret=None,
        allowed_hosts=frozenset({"cb.test"}),
        allow_private=False,
        resolver=resolving_to("93.184.216.34", "2606:2800:220:1::1", "10.1.2.3"),
    )
    with pytest.raises(CallbackRefused, match=r"private address 10\.1\.2\.3"):
        guard.check("https://cb.test/hook")


def test_public_addresses_pass_and_are_returned() -> None:
    guard = Notifier(
        secret=None,
        allowed_hosts=frozenset({"cb.test"}),
        allow_private=False,
        resolver=resolving_to("93.184.216.34", "93.184.216.34", "2606:2800:220:1::1"),
    )
    assert guard.check("https://CB.test./hook") == ("cb.test", 443, ["93.184.216.34", "2606:2800:220:1::1"])


def test_loopback_allowed_with_allow_private() -> None:
    guard = Notifier(secret=None, allowed_hosts=LOCAL, allow_private=True)
    assert guard.check("http://127.0.0.1:8080/cb") == ("127.0.0.1", 8080, ["127.0.0.1"])


def test_send_raises_refusal_and_makes_no_request(sleeps: list[float]) -> None:
    guard = notifier(sleeps, allow_private=False)
    with pytest.raises(CallbackRefused, match="loopback"):
        guard.send(f"http://127.0.0.1:{free_port()}/cb", {}, event_id="e")
    assert sleeps == []


def test_connects_to_the_checked_address_not_a_second_lookup(
    receivers: Callable[..., Receiver], sleeps: list[float]
) -> None:
    """A rebinding resolver answers differently each time; each attempt connects where it checked."""
    server = receivers()
    answers = iter(["127.0.0.1", "169.254.169.254"])
    calls: list[str] = []

    def rebinding(host: str, port: int, *args: Any) -> list[tuple[Any, ...]]:
        calls.append(host)
        return resolving_to(next(answers))(host, port)

    guard = notifier(sleeps, allowed_hosts=frozenset({"cb.test"}), resolver=rebinding)
    url = f"http://cb.test:{server.port}/cb"
    assert guard.send(url, {}, event_id="e").delivered
    assert server.requests[0].headers["Host"] == f"cb.test:{server.port}"
    with pytest.raises(CallbackRefused, match="link-local"):
        guard.send(url, {}, event_id="e")
    assert calls == ["cb.test", "cb.test"] and len(server.requests) == 1


# --- HTTPS --------------------------------------------------------------------------------------


def self_signed(directory: Path, name: str) -> Path:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = directory / f"{name}.pem"
    path.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return path


def test_https_verifies_the_url_host_through_the_pinned_address(
    receivers: Callable[..., Receiver], sleeps: list[float], tmp_path: Path
) -> None:
    pem = self_signed(tmp_path, "cb.test")
    server = receivers()
    served = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    served.load_cert_chain(pem)
    server.server.socket = served.wrap_socket(server.server.socket, server_side=True)
    trusting = ssl.create_default_context(cafile=str(pem))
    names = frozenset({"cb.test", "other.test"})
    guard = notifier(
        sleeps, allowed_hosts=names, resolver=resolving_to("127.0.0.1"), ssl_context=trusting, attempts=1
    )
    reply = guard.send(f"https://cb.test:{server.port}/cb", {"ok": True}, event_id="e")
    assert reply == Reply(delivered=True, status=200, cancel=False, attempts=1)
    assert server.requests[0].headers["Host"] == f"cb.test:{server.port}"
    wrong_name = guard.send(f"https://other.test:{server.port}/cb", {}, event_id="e")
    assert wrong_name == Reply(delivered=False, status=None, cancel=False, attempts=1)
    assert len(server.requests) == 1


# --- progress channel ---------------------------------------------------------------------------


def test_progress_rapid_updates_are_coalesced(
    receivers: Callable[..., Receiver], sleeps: list[float]
) -> None:
    server = receivers()
    interval = 0.2
    started = time.monotonic()
    with notifier(sleeps).progress_channel(server.url, job_id="j", min_interval=interval) as channel:
        for progress in range(200):
            channel.update({"jobId": "j", "progress": progress})
            time.sleep(0.002)  # a busy encode loop reporting every few ms
        requests = server.wait_for(lambda got: bool(got) and got[-1].json()["progress"] == 199)
    elapsed = time.monotonic() - started
    assert len(requests) <= elapsed / interval + 1
    gaps = [b.at - a.at for a, b in itertools.pairwise(requests)]
    assert all(gap >= interval * 0.5 for gap in gaps), gaps  # arrival jitter aside, >= interval
    assert len({r.headers["X-Event-Id"] for r in requests}) == len(requests)
    assert all(verify(SECRET, r.headers["X-Signature"], r.body) for r in requests)
    assert sleeps == []


def test_progress_update_never_blocks_on_a_slow_server(
    receivers: Callable[..., Receiver], sleeps: list[float]
) -> None:
    gate = threading.Event()
    server = receivers(default=Answer(gate=gate))
    channel = notifier(sleeps).progress_channel(server.url, job_id="j", min_interval=0.0)
    try:
        channel.update({"progress": 0})
        server.wait_for(lambda got: len(got) == 1)  # the sender is now stuck on the server
        durations = []
        for progress in range(1, 50):
            began = time.perf_counter()
            channel.update({"progress": progress})
            durations.append(time.perf_counter() - began)
        assert max(durations) < 0.010
        gate.set()
        requests = server.wait_for(lambda got: got[-1].json()["progress"] == 49)
        assert len(requests) == 2  # the 48 updates in between were superseded
    finally:
        gate.set()
        channel.close()


@pytest.mark.parametrize("answer", [Answer(409), Answer(410), Answer(200, b'{"cancel":true}')])
def test_progress_cancel_reply_sets_cancelled(
    receivers: Callable[..., Receiver], sleeps: list[float], answer: Answer
) -> None:
    server = receivers(default=answer)
    with notifier(sleeps).progress_channel(server.url, job_id="j") as channel:
        assert not channel.cancelled.is_set()
        channel.update({"progress": 10})
        assert channel.cancelled.wait(5)


def test_progress_errors_do_not_cancel_or_retry(
    receivers: Callable[..., Receiver], sleeps: list[float]
) -> None:
    server = receivers(Answer(500), Answer(200))
    with notifier(sleeps).progress_channel(server.url, job_id="j", min_interval=0.0) as channel:
        channel.update({"progress": 1})
        server.wait_for(lambda got: len(got) == 1)
        channel.update({"progress": 2})
        requests = server.wait_for(lambda got: len(got) == 2)
    assert [r.json()["progress"] for r in requests] == [1, 2]
    assert not channel.cancelled.is_set() and sleeps == []


def test_progress_close_stops_promptly_and_drops_pending(
    receivers: Callable[..., Receiver], sleeps: list[float]
) -> None:
    server = receivers()
    channel = notifier(sleeps).progress_channel(server.url, job_id="j", min_interval=30.0)
    channel.update({"progress": 1})
    server.wait_for(lambda got: len(got) == 1)
    channel.update({"progress": 2})  # due only in 30 s
    began = time.monotonic()
    channel.close()
    assert time.monotonic() - began < 1.0
    assert not channel.running
    channel.update({"progress": 3})  # ignored after close
    assert [r.json()["progress"] for r in server.requests] == [1]


def test_progress_channel_refuses_before_starting(sleeps: list[float]) -> None:
    guard = notifier(sleeps, allow_private=False)
    with pytest.raises(CallbackRefused, match="loopback"):
        guard.progress_channel("http://127.0.0.1:9/cb", job_id="j")
    with pytest.raises(CallbackRefused, match="not allowed"):
        guard.progress_channel("http://evil.test/cb", job_id="j")
