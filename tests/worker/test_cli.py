"""``python -m worker schema | run | enqueue | check`` as subprocesses (spec §9), and the log formats.

Each CLI process spends seconds importing torch, so the module starts every
invocation at once (each against its own bucket and queues on the shared moto
server) and each test checks the one it is named after.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, mirror_dir
from worker.embedded import EmbeddedAWS
from worker.logs import configure, job_context
from worker.message import decode

UNREACHABLE = "http://127.0.0.1:9"
ENQUEUES = ("enqueue", "enqueue-upload", "enqueue-text")
CHECKS = ("check", "check-unreachable")
ENQUEUED = {
    "jobId": "j1",
    "taskType": "UPSCALE",
    "sourceS3Key": "uploads/x.mp4",
    "parameters": {"scaleFactor": 2, "model": "realesr-animevideov3"},
    "status": "QUEUED",
}


@dataclass(frozen=True)
class Done:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return f"exit {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


@dataclass
class Invocation:
    """``python -m worker ARGS`` running in the background, stdout and stderr to files."""

    proc: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path
    timeout: float
    aws: EmbeddedAWS | None
    done: Done | None = None

    def wait(self) -> Done:
        if self.done is None:
            try:
                code = self.proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"{self.proc.args!r} ran past {self.timeout} s") from None
            self.done = Done(code, self.stdout.read_text(), self.stderr.read_text())
        return self.done


@dataclass
class Cli:
    """Named invocations, each with its own scratch folder and (optionally) its own AWS resources."""

    root: Path
    moto: EmbeddedAWS
    started: dict[str, Invocation] = field(default_factory=dict)

    def folder(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def env(self, name: str, **extra: str) -> dict[str, str]:
        """PATH and HOME only (no SQS_*, WEIGHTS_*, AWS config files) plus ``extra``."""
        folder = self.folder(name)
        return {
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", str(folder)),
            "AWS_CONFIG_FILE": str(folder / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(folder / "no-aws-credentials"),
            **extra,
        }

    def fresh_aws(self) -> EmbeddedAWS:
        """A new bucket and queues on the shared server (the session object is left alone)."""
        aws = EmbeddedAWS.__new__(EmbeddedAWS)
        aws.server, aws.endpoint = self.moto.server, self.moto.endpoint
        aws.queues, aws.dead_letters = {}, {}
        return aws.provision(f"cli{uuid.uuid4().hex[:10]}")

    def start(
        self, name: str, *args: str, env: dict[str, str], aws: EmbeddedAWS | None = None, timeout: float = 180
    ) -> None:
        folder = self.folder(name)
        stdout, stderr = folder / "stdout", folder / "stderr"
        with stdout.open("wb") as out, stderr.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "worker", *args], cwd=ROOT, env=env, stdout=out, stderr=err
            )
        self.started[name] = Invocation(proc, stdout, stderr, timeout, aws)

    def __getitem__(self, name: str) -> Done:
        return self.started[name].wait()

    def aws(self, name: str) -> EmbeddedAWS:
        aws = self.started[name].aws
        assert aws is not None
        return aws

    def stop(self) -> None:
        for invocation in self.started.values():
            if invocation.proc.poll() is None:
                invocation.proc.kill()
            invocation.proc.wait()


def launch(cli: Cli) -> None:
    """Provision every scenario first, then start them all (provisioning would compete with the imports)."""
    stacks = {name: cli.fresh_aws() for name in ENQUEUES + CHECKS + ("run-refused", "status")}
    _job_state(stacks["status"])
    clip = cli.folder("enqueue-upload") / "clip.mp4"
    clip.write_bytes(os.urandom(10_000))
    clip.with_suffix(".json").write_text('{"cues": []}')
    altered = cli.folder("run-refused") / "weights"
    altered.mkdir()
    (altered / "realesr-animevideov3.pth").write_bytes(b"not the released weights" * 100)
    weights = {"WEIGHTS_MIRROR": str(mirror_dir()), "WEIGHTS_DIR": str(cli.folder("weights"))}
    unreachable = {"AWS_ENDPOINT_URL": UNREACHABLE, "AWS_MAX_ATTEMPTS": "1", "AWS_RETRY_MODE": "standard",
                   "WORKER_FLEET": "true", "AWS_EC2_METADATA_SERVICE_ENDPOINT": UNREACHABLE}  # fmt: skip
    refused = {
        "WEIGHTS_DIR": str(altered),
        "WORKER_TMP_DIR": str(cli.folder("run-refused") / "tmp"),
        "WORKER_HEALTH_PORT": "0",
    }
    scenarios: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
        "schema": (("schema",), {}),
        "run-unconfigured": (("run",), {}),
        "enqueue": (
            ("enqueue", "--queue", "cpu", "--source", "uploads/x.mp4", "--job-id", "j1",
             "--param", "scaleFactor=2", "--param", "model=realesr-animevideov3"),
            {},
        ),
        "enqueue-upload": (
            ("enqueue", "--queue", "gpu", "--task", "CAPTION_RENDER", "--source", "uploads/u1/clip.mp4",
             "--upload", str(clip), "--callback-url", "http://127.0.0.1:1/cb",
             "--attach", f"scenarios/s.json={clip.with_suffix('.json')}"),
            {},
        ),
        "enqueue-text": (
            ("enqueue", "--task", "VISUALIZE", "--source", "uploads/a.mp3", "--job-id", "v1",
             "--param", "resolution=1920x1080", "--param", "style=fancy", "--param", "coverS3Key=c.png"),
            {},
        ),
        "check": (("check",), weights),
        "check-unreachable": (("check",), {**weights, **unreachable}),
        "run-refused": (("run", "--max-jobs", "1"), refused),
        "status": (("status", "split-job"), {}),
    }  # fmt: skip
    for name, (args, extra) in scenarios.items():
        aws = stacks.get(name)
        environment = aws.environment(**extra) if aws is not None else extra
        cli.start(name, *args, env=cli.env(name, **environment), aws=aws)


@pytest.fixture(scope="module")
def cli(moto_server: EmbeddedAWS, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    runs = Cli(tmp_path_factory.mktemp("cli"), moto_server)
    try:
        launch(runs)
        yield runs
    finally:
        runs.stop()


def receive_all(aws: EmbeddedAWS, queue: str) -> list[dict[str, Any]]:
    """Every message on the queue (moto makes a sent message visible at once: short polls suffice)."""
    sqs = aws.client("sqs")
    found: list[dict[str, Any]] = []
    while True:
        reply = sqs.receive_message(QueueUrl=aws.queues[queue], MaxNumberOfMessages=10, WaitTimeSeconds=0)
        messages = reply.get("Messages", [])
        if not messages:
            return found
        found.extend(json.loads(message["Body"]) for message in messages)


def test_schema_prints_both_json_schemas(cli: Cli) -> None:
    done = cli["schema"]
    assert done.returncode == 0, done.output
    printed = json.loads(done.stdout)
    assert set(printed) == {"job", "callback"}
    assert {"jobId", "taskType", "sourceS3Key", "parameters"} <= set(printed["job"]["properties"])
    assert {"jobId", "status", "progress", "downloadUrl", "errorCode", "metadata"} <= set(
        printed["callback"]["properties"]
    )


def test_run_without_configuration_exits_2_naming_the_queue_variables(cli: Cli) -> None:
    done = cli["run-unconfigured"]
    assert done.returncode == 2, done.output
    assert "SQS_GPU_QUEUE_URL" in done.stderr
    assert "SQS_CPU_QUEUE_URL" in done.stderr
    assert "Traceback" not in done.stderr


def test_enqueue_sends_the_backend_message(cli: Cli) -> None:
    done, aws = cli["enqueue"], cli.aws("enqueue")
    assert done.returncode == 0, done.output
    assert receive_all(aws, "cpu") == [ENQUEUED]
    assert receive_all(aws, "gpu") == []
    assert json.loads(done.stdout) == ENQUEUED
    assert decode(done.stdout).parameters == ENQUEUED["parameters"]


def test_enqueue_upload_puts_the_file_at_the_source_key_first(cli: Cli) -> None:
    done, aws = cli["enqueue-upload"], cli.aws("enqueue-upload")
    assert done.returncode == 0, done.output
    stored = aws.client("s3").get_object(Bucket=aws.bucket, Key="uploads/u1/clip.mp4")["Body"].read()
    assert stored == (cli.folder("enqueue-upload") / "clip.mp4").read_bytes()
    attached = aws.client("s3").get_object(Bucket=aws.bucket, Key="scenarios/s.json")["Body"].read()
    assert attached == b'{"cues": []}'
    [message] = receive_all(aws, "gpu")
    assert message["taskType"] == "CAPTION_RENDER"
    assert message["sourceS3Key"] == "uploads/u1/clip.mp4"
    assert message["callbackUrl"] == "http://127.0.0.1:1/cb"
    assert message["parameters"] == {}
    uuid.UUID(message["jobId"])  # a fresh id when none is given
    assert receive_all(aws, "cpu") == []


def test_enqueue_keeps_non_json_values_as_text(cli: Cli) -> None:
    done, aws = cli["enqueue-text"], cli.aws("enqueue-text")
    assert done.returncode == 0, done.output
    [message] = receive_all(aws, "cpu")
    assert message["parameters"] == {"resolution": "1920x1080", "style": "fancy", "coverS3Key": "c.png"}


def _job_state(aws: EmbeddedAWS) -> None:
    """What a split job that completed leaves under jobs/: outcome, record, plan, one marker."""
    from fractions import Fraction

    from worker.keys import KeyPolicy
    from worker.message import Status
    from worker.segments import Plan, SegmentStore
    from worker.state import JobState
    from worker.storage import Storage

    storage = Storage(aws.client("s3"), bucket=aws.bucket, allowed_buckets=frozenset({aws.bucket}))
    state, store = JobState(storage, KeyPolicy()), SegmentStore(storage, KeyPolicy())
    record = {"jobId": "split-job", "status": "COMPLETED", "outputS3Key": "processed/o.mp4", "fileSize": 9,
              "sha256": "ab"}  # fmt: skip
    state.record_result("split-job", record)
    state.decide("split-job", 0, Status.COMPLETED, record)
    store.propose(Plan("split-job", {"etag": "e"}, Fraction(10), ((0, 10), (10, 30)), {}))
    store.mark("split-job", 1, {"frames": 20})


def test_status_prints_what_s3_knows_of_a_job(cli: Cli) -> None:
    done = cli["status"]
    assert done.returncode == 0, done.output
    report = json.loads(done.stdout)
    assert report["outcome"]["status"] == "COMPLETED" and report["outcome"]["errorCode"] is None
    assert report["result"] == {"outputS3Key": "processed/o.mp4", "fileSize": 9, "sha256": "ab"}
    assert report["segments"] == {"planned": 2, "frames": 30, "done": [1]}


def test_check_reports_a_healthy_environment(cli: Cli) -> None:
    done, aws = cli["check"], cli.aws("check")
    assert done.returncode == 0, done.output
    lines = done.stdout.splitlines()
    assert "queue      cpu: reachable" in lines
    assert f"bucket     {aws.bucket}: reachable" in lines
    assert any(line.startswith("weights    realesr-animevideov3: verified") for line in lines)
    assert lines[-1] == "OK"


def test_check_reports_an_unreachable_endpoint(cli: Cli) -> None:
    done, aws = cli["check-unreachable"], cli.aws("check-unreachable")
    assert done.returncode == 1, done.output
    assert "queue      cpu: UNREACHABLE" in done.stdout
    assert f"bucket     {aws.bucket}: UNREACHABLE" in done.stdout
    assert "realesr-animevideov3: verified" in done.stdout  # the weights are not the problem
    assert "fleet      not on EC2 (no instance metadata)" in done.stdout.splitlines()
    assert done.stdout.splitlines()[-1] == "PROBLEMS FOUND"


def test_run_refuses_an_altered_weights_file(cli: Cli) -> None:
    done = cli["run-refused"]
    assert done.returncode == 2, done.output
    assert "REFUSED" in done.stderr
    assert "realesr-animevideov3" in done.stderr
    weights = cli.folder("run-refused") / "weights" / "realesr-animevideov3.pth"
    assert weights.read_bytes().startswith(b"not the released")  # refused, not replaced
    assert not (cli.folder("run-refused") / "tmp").exists()  # stopped before setting up for jobs


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    noisy = {name: logging.getLogger(name).level for name in ("botocore", "boto3", "urllib3", "s3transfer")}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, saved in noisy.items():
        logging.getLogger(name).setLevel(saved)


@pytest.mark.usefixtures("restore_logging")
def test_json_logs_are_one_object_per_line_with_the_job_id(capsys: pytest.CaptureFixture[str]) -> None:
    configure("INFO", "json")
    log = logging.getLogger("worker.test")
    with job_context("abc"):
        log.info("hello %s", "wörld")
        log.debug("not at INFO")
    log.warning("outside")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2, lines
    first, second = (json.loads(line) for line in lines)
    assert set(first) == {"time", "level", "logger", "job_id", "message"}
    assert (first["job_id"], first["level"], first["logger"]) == ("abc", "INFO", "worker.test")
    assert first["message"] == "hello wörld"
    assert first["time"].endswith("+00:00")
    assert (second["job_id"], second["level"]) == ("-", "WARNING")


@pytest.mark.usefixtures("restore_logging")
def test_json_logs_carry_exceptions(capsys: pytest.CaptureFixture[str]) -> None:
    configure("INFO", "json")
    with job_context("abc"):
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("worker.test").exception("failed")
    [line] = capsys.readouterr().err.splitlines()
    entry = json.loads(line)
    assert entry["job_id"] == "abc"
    assert "ValueError: boom" in entry["exception"]


@pytest.mark.usefixtures("restore_logging")
def test_text_logs_carry_the_job_id(capsys: pytest.CaptureFixture[str]) -> None:
    configure("WARNING", "text")
    with job_context("abc"):
        logging.getLogger("worker.test").warning("careful")
        logging.getLogger("worker.test").info("quiet")
    [line] = capsys.readouterr().err.splitlines()
    assert line.endswith("WARNING worker.test [abc] careful")
    assert logging.getLogger("botocore").level == logging.WARNING
