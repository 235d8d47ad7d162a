"""The daemon as a real subprocess against moto's server, a callback receiver and a fault proxy."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, parse_qsl, urlsplit

from tasks import Resources, Task, TaskRegistry
from tests.conftest import ROOT, mirror_dir
from worker.consumer import Consumer
from worker.daemon import Worker
from worker.embedded import CallbackReceiver, EmbeddedAWS, serve
from worker.notify import Notifier
from worker.settings import load
from worker.storage import Storage

Rule = Callable[[str, str], bool]
"""``(method, path) -> bool``: whether the proxy should answer this request with a 503."""


LIFECYCLE_COMPLETED = b"""<CompleteLifecycleActionResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/">
<CompleteLifecycleActionResult/><ResponseMetadata><RequestId>stub</RequestId></ResponseMetadata>
</CompleteLifecycleActionResponse>"""
"""Auto Scaling's answer to CompleteLifecycleAction, which moto lacks: proxies give it in moto's place."""

_HOP = ("content-length", "transfer-encoding", "connection", "date", "server")
"""Reply headers a proxy must not copy as they are."""


def answer(
    handler: BaseHTTPRequestHandler, status: int, payload: bytes, headers: Sequence[tuple[str, str]] = ()
) -> None:
    """Answer ``handler``'s request in the proxy's name; a HEAD gets the headers, never a body
    (a body there would poison the kept-alive connection)."""
    handler.send_response(status)
    for key, value in headers:
        handler.send_header(key, value)
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(payload)


def relay(handler: BaseHTTPRequestHandler, target: SplitResult, body: bytes) -> None:
    """Forward ``handler``'s request to ``target`` and its reply back.

    A HEAD keeps upstream's Content-Length (the object's size, not that of the empty body).
    """
    connection = http.client.HTTPConnection(target.hostname or "", target.port, timeout=60)
    try:
        headers = {k: v for k, v in handler.headers.items() if k.lower() != "transfer-encoding"}
        connection.request(handler.command, handler.path, body=body, headers=headers)
        reply = connection.getresponse()
        data = reply.read()
    finally:
        connection.close()
    handler.send_response(reply.status)
    for key, value in reply.getheaders():
        if key.lower() not in _HOP:
            handler.send_header(key, value)
    length = reply.getheader("Content-Length") if handler.command == "HEAD" else None
    handler.send_header("Content-Length", length or str(len(data)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(data)


@dataclass
class FaultProxy:
    """Forwards every request to ``upstream``; the first ``budget`` requests matching ``rule`` get a 503."""

    upstream: str
    rule: Rule = lambda method, path: False
    budget: int = 0
    failed: int = 0
    seen: list[tuple[str, str]] = field(default_factory=list)
    sqs_faults: dict[str, tuple[str, int]] = field(default_factory=dict)
    """SQS action (``ChangeMessageVisibility``) → (error code answered, how many more times)."""
    stubs: dict[str, bytes] = field(default_factory=dict)
    """Query-protocol action (``CompleteLifecycleAction``, which moto lacks) → the reply the proxy gives."""
    stubbed: list[dict[str, str]] = field(default_factory=list)
    """The parameters of every stubbed call, in order."""

    def __post_init__(self) -> None:
        target = urlsplit(self.upstream)
        outer = self
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
                action = self.headers.get("X-Amz-Target", "").rpartition(".")[2]
                form = dict(parse_qsl(body.decode("utf-8", "replace"))) if b"Action=" in body[:200] else {}
                if form.get("Action") in outer.stubs:
                    with lock:
                        outer.stubbed.append(form)
                    answer(self, 200, outer.stubs[form["Action"]], [("Content-Type", "text/xml")])
                    return
                with lock:
                    outer.seen.append((self.command, self.path))
                    inject = outer.failed < outer.budget and outer.rule(self.command, self.path)
                    outer.failed += inject
                    code, left = outer.sqs_faults.get(action, ("", 0))
                    if left > 0:
                        outer.sqs_faults[action] = (code, left - 1)
                if left > 0:
                    payload = json.dumps(
                        {"__type": f"com.amazonaws.sqs#{code}", "message": "injected"}
                    ).encode()
                    sqs_error = [("x-amzn-query-error", f"{code};Sender"),
                                 ("Content-Type", "application/x-amz-json-1.0")]  # fmt: skip
                    answer(self, 400, payload, sqs_error)
                elif inject:
                    answer(self, 503, b"<Error><Code>SlowDown</Code><Message>injected</Message></Error>")
                else:
                    relay(self, target, body)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = serve(Handler, "fault-proxy")
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def fail(self, rule: Rule, budget: int) -> None:
        self.rule, self.budget, self.failed = rule, budget, 0

    def fail_sqs(self, action: str, code: str, times: int = 10**6) -> None:
        """Answer the next ``times`` calls of SQS ``action`` with the client error ``code``."""
        self.sqs_faults[action] = (code, times)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class WorkerProcess:
    """``python -m worker run`` with its stderr captured to ``log``."""

    proc: subprocess.Popen[bytes]
    log: Path
    tmp_dir: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, number: int) -> None:
        self.proc.send_signal(number)

    def wait(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


@dataclass
class Stack:
    """One test's world: its own queues and bucket, a receiver, a proxy, and workers."""

    aws: EmbeddedAWS
    receiver: CallbackReceiver
    proxy: FaultProxy
    root: Path
    secret: str = "s3cret-for-tests"
    workers: list[WorkerProcess] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        base = self.aws.environment(
            AWS_ENDPOINT_URL=self.proxy.endpoint,
            BACKEND_CALLBACK_URL=self.receiver.url,
            CALLBACK_SECRET=self.secret,
            CALLBACK_ALLOW_PRIVATE_NETWORKS="true",
            WEIGHTS_MIRROR=str(mirror_dir()),
            WEIGHTS_DIR=str(self.root / "weights"),
            WEIGHTS_OFFLINE="true",
            WORKER_TMP_DIR=str(self.root / "tmp"),
            WORKER_HEALTH_PORT="0",
            WORKER_WAIT_SECONDS="1",
            WORKER_QUEUES="cpu",
            WORKER_HEARTBEAT_SECONDS="1",
            WORKER_VISIBILITY_TIMEOUT="4",
            WORKER_RETRY_BASE_SECONDS="1",
            WORKER_RETRY_MAX_SECONDS="2",
            WORKER_DRAIN_SECONDS="30",
        )
        return {**os.environ, **base, **extra}

    def start(self, *args: str, **extra: str) -> WorkerProcess:
        index = len(self.workers)
        log = self.root / f"worker{index}.log"
        tmp = Path(self.env(**extra)["WORKER_TMP_DIR"])
        tmp.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                [sys.executable, "-m", "worker", "run", *args],
                cwd=ROOT, env=self.env(**extra), stdout=sink, stderr=subprocess.STDOUT,
            )  # fmt: skip
        worker = WorkerProcess(proc, log, tmp)
        self.workers.append(worker)
        return worker

    def upload(self, path: Path, key: str) -> None:
        self.aws.client("s3").upload_file(str(path), self.aws.bucket, key)

    def enqueue(self, job_id: str, key: str, *, queue: str = "cpu", **fields: Any) -> dict[str, Any]:
        message = {
            "jobId": job_id, "taskType": "UPSCALE", "sourceS3Key": key, "status": "QUEUED",
            "parameters": {"scaleFactor": 2, "model": "realesr-animevideov3"}, **fields,
        }  # fmt: skip
        self.send_raw(json.dumps(message), queue=queue)
        return message

    def send_raw(self, body: str, *, queue: str = "cpu", group: str = "jobs") -> None:
        url = self.aws.queues[queue]
        fifo = (
            {"MessageGroupId": group, "MessageDeduplicationId": uuid.uuid4().hex}
            if url.endswith(".fifo")
            else {}
        )
        self.aws.client("sqs").send_message(QueueUrl=url, MessageBody=body, **fifo)

    def queue_counts(self, name: str, *, dead: bool = False) -> tuple[int, int]:
        """(visible, in flight) messages of queue ``name`` (or its DLQ)."""
        url = (self.aws.dead_letters if dead else self.aws.queues)[name]
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        found = self.aws.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
        return int(found[names[0]]), int(found[names[1]])

    def keys(self, prefix: str = "processed/") -> list[str]:
        listing = self.aws.client("s3").list_objects_v2(Bucket=self.aws.bucket, Prefix=prefix)
        return sorted(item["Key"] for item in listing.get("Contents", []))

    def wait_for_status(self, job_id: str, status: str, timeout: float = 90) -> dict[str, Any]:
        found = self.receiver.wait_for(
            lambda item: item.body.get("jobId") == job_id and item.body.get("status") == status, timeout
        )
        if found is None:
            logs = "\n".join(worker.text()[-3000:] for worker in self.workers)
            raise AssertionError(f"no {status} callback for {job_id}; got {self.receiver.of(job_id)}\n{logs}")
        return found.body


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def processes_using(path: Path) -> list[str]:
    """Command lines of live processes that mention ``path`` (an ffmpeg left on a job dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(path) in command and state != "Z" and "pytest" not in command:
            found.append(command)
    return found


def one_job_world(moto_server: EmbeddedAWS, prefix: str, job_id: str) -> EmbeddedAWS:
    """Fresh queues and bucket on the shared moto server, a source, and one UPSCALE job queued on cpu."""
    world = EmbeddedAWS.__new__(EmbeddedAWS)
    world.server, world.endpoint = moto_server.server, moto_server.endpoint
    world.queues, world.dead_letters = {}, {}
    world.provision(f"{prefix}{uuid.uuid4().hex[:10]}", visibility=30, max_receives=3)
    world.client("s3").put_object(Bucket=world.bucket, Key="uploads/a.mp4", Body=b"video")
    world.client("sqs").send_message(
        QueueUrl=world.queues["cpu"],
        MessageBody=json.dumps({"jobId": job_id, "taskType": "UPSCALE", "sourceS3Key": "uploads/a.mp4"}),
    )
    return world


def inprocess_worker(
    aws: EmbeddedAWS, tmp_path: Path, task: Task[Any], *, resources: dict[str, Any] | None = None,
    **variables: str,
) -> Worker:  # fmt: skip
    """A Worker in this process on ``aws``'s cpu queue that knows only ``task``; extra ``variables``."""
    settings = load(aws.environment(WORKER_TMP_DIR=str(tmp_path / "tmp"), WORKER_WAIT_SECONDS="0",
                                    WORKER_DLQ_WATCH_SECONDS="0", **variables), cuda=False)  # fmt: skip
    registry = TaskRegistry()
    registry.add(task)
    return Worker(
        settings,
        consumer=Consumer(
            aws.client("sqs"), {"cpu": aws.queues["cpu"]}, wait_seconds=0, visibility_timeout=30
        ),
        storage=Storage(aws.client("s3"), bucket=aws.bucket, allowed_buckets=frozenset({aws.bucket})),
        notifier=Notifier(secret=None, allowed_hosts=frozenset(), allow_private=True),
        resources=Resources(**(resources or {})),
        tasks=registry,
    )


def auto_scaling_group(aws: EmbeddedAWS, name: str, size: int = 1) -> list[str]:
    """An Auto Scaling group of ``size`` instances in moto (real moto EC2 instances); their ids."""
    aws.client("ec2").create_launch_template(
        LaunchTemplateName=name, LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "t3.micro"}
    )
    scaling = aws.client("autoscaling")
    scaling.create_auto_scaling_group(
        AutoScalingGroupName=name, LaunchTemplate={"LaunchTemplateName": name}, MinSize=size, MaxSize=size,
        DesiredCapacity=size, AvailabilityZones=["us-east-1a"],
    )  # fmt: skip
    [group] = scaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]
    return [str(instance["InstanceId"]) for instance in group["Instances"]][:size]
