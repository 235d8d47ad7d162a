"""The at-least-once core tried as a hostile backend and a flaky cloud would: the real daemon, moto, faults.

Each test here fails without the part of the core it names (issue 11).
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import ROOT, Clips
from tests.worker.harness import Stack, wait_until
from worker.embedded import Received

pytestmark = pytest.mark.slow

UPSCALE = {"scaleFactor": 2, "model": "realesr-animevideov3"}


def job(job_id: str, **fields: Any) -> str:
    body = {"jobId": job_id, "taskType": "UPSCALE", "sourceS3Key": "uploads/a.mp4", "parameters": UPSCALE}
    return json.dumps({**body, **fields})


HOSTILE = {
    "deep": '{"jobId": "deep", "parameters": ' + "[" * 2000 + "]" * 2000 + "}",
    "big": job("big", parameters={"pad": "x" * 250_000}),
    "surrogate": '{"jobId": "\\ud800", "taskType": "UPSCALE", "sourceS3Key": "uploads/a.mp4"}',
    "nan": job("nan", parameters={"scaleFactor": float("nan")}),
    "huge-int": '{"jobId": "huge-int", "taskType": "UPSCALE", "sourceS3Key": "a.mp4", "parameters": {"tile": '
    + "9" * 5000
    + "}}",
    "huge-id": json.dumps({"jobId": 10**400, "taskType": "UPSCALE", "sourceS3Key": "a.mp4"}),
    "types": json.dumps(
        {"jobId": "types", "taskType": ["UPSCALE"], "sourceS3Key": {"k": 1}, "parameters": 7}
    ),
    "params": job("params", parameters=[1, 2]),
    "caption-types": job("caption-types", taskType="CAPTION_RENDER", parameters={"scenario": 5}),
}
"""Bodies that once crashed the loop or could: each fails alone; those with a readable id get FAILED."""


def test_hostile_bodies_fail_alone_and_the_daemon_lives(stack: Stack, clips: Clips) -> None:
    stack.upload(clips("silent"), "uploads/a.mp4")
    for body in HOSTILE.values():
        stack.send_raw(body)
    worker = stack.start()
    for job_id in ("nan", "types", "params", "caption-types"):
        failed = stack.wait_for_status(job_id, "FAILED")
        assert failed["errorCode"] == "INPUT_INVALID" and failed["retryable"] is False
    stack.send_raw(job("after"))
    stack.wait_for_status("after", "COMPLETED", timeout=120)
    assert worker.proc.poll() is None, "the daemon died of a message"
    assert wait_until(lambda: stack.queue_counts("cpu") == (0, 0), 15)
    assert stack.queue_counts("cpu", dead=True) == (0, 0)
    assert "Traceback" not in worker.text()
    assert worker.stop() == 0


@pytest.mark.parametrize(
    "key",
    [
        "processed/upscaled/victim/a_upscaled.mp4",  # another job's default output folder
        "jobs/victim/result.json",  # job state
        "uploads/a.mp4",  # its own source (and outside the output prefixes)
        "exports/elsewhere.mp4",  # outside the output prefixes
    ],
    ids=["other-job-folder", "job-state", "source", "outside"],
)
def test_an_output_key_the_job_does_not_own_is_refused_and_nothing_is_written(
    stack: Stack, clips: Clips, key: str
) -> None:
    stack.upload(clips("silent"), "uploads/a.mp4")
    stack.send_raw(job("victim"))
    worker = stack.start()
    stack.wait_for_status("victim", "COMPLETED")
    before = {item: stack.aws.client("s3").head_object(Bucket=stack.aws.bucket, Key=item)["ETag"]
              for item in stack.keys("")}  # fmt: skip
    stack.send_raw(job("hijack", outputS3Key=key))
    failed = stack.wait_for_status("hijack", "FAILED")
    assert (failed["errorCode"], failed["retryable"]) == ("INPUT_INVALID", False)
    after = {item: stack.aws.client("s3").head_object(Bucket=stack.aws.bucket, Key=item)["ETag"]
             for item in stack.keys("") if not item.startswith("jobs/hijack/")}  # fmt: skip
    assert after == before
    assert worker.stop() == 0


def test_the_same_job_delivered_twice_at_once_is_published_once(stack: Stack, clips: Clips) -> None:
    s3 = stack.aws.client("s3")
    s3.put_bucket_versioning(Bucket=stack.aws.bucket, VersioningConfiguration={"Status": "Enabled"})
    stack.upload(clips("silent"), "uploads/a.mp4")
    stack.send_raw(job("twice"))
    stack.send_raw(job("twice"))
    workers = [stack.start(), stack.start()]
    stack.wait_for_status("twice", "COMPLETED", timeout=120)
    assert wait_until(lambda: stack.queue_counts("cpu") == (0, 0), 120)
    key = "processed/upscaled/twice/a_upscaled.mp4"
    assert len(s3.list_object_versions(Bucket=stack.aws.bucket, Prefix=key)["Versions"]) == 1
    record = json.loads(s3.get_object(Bucket=stack.aws.bucket, Key="jobs/twice/result.json")["Body"].read())
    body = s3.get_object(Bucket=stack.aws.bucket, Key=key)["Body"].read()
    assert (record["fileSize"], record["sha256"]) == (len(body), hashlib.sha256(body).hexdigest())
    assert stack.receiver.of("twice", "FAILED") == []
    assert len({item.headers["X-Event-Id"] for item in stack.receiver.of("twice", "COMPLETED")}) == 1
    for worker in workers:
        assert worker.stop() == 0


def test_a_lost_lease_stops_the_job_before_publishing(stack: Stack, clips: Clips) -> None:
    """moto accepts stale receipt handles, so the fault proxy answers one extension as SQS would.

    The fault is armed before the worker starts: only the heartbeat extends a running job's message, so
    its first beat (one second in) is the one refused, however fast the job runs on this box.
    """
    stack.upload(clips("clip6"), "uploads/a.mp4")
    stack.send_raw(job("lease"))
    stack.proxy.fail_sqs("ChangeMessageVisibility", "ReceiptHandleIsInvalid", times=1)
    worker = stack.start()
    assert wait_until(lambda: "lease lost" in worker.text(), 30), worker.text()[-2000:]
    assert wait_until(lambda: "LEASE_LOST" in worker.text(), 30), worker.text()[-2000:]
    assert stack.keys() == [] and stack.receiver.of("lease", "FAILED") == []
    done = stack.wait_for_status("lease", "COMPLETED", timeout=120)  # the message came back: run again
    assert done["attempt"] == 2
    assert worker.stop() == 0


def test_a_job_past_its_deadline_fails_job_timeout_once(stack: Stack, clips: Clips) -> None:
    stack.upload(clips("clip6"), "uploads/a.mp4")
    stack.send_raw(job("slow"))
    worker = stack.start(WORKER_JOB_TIMEOUT="1", WORKER_COST_FACTOR="0")  # run it whole, past the deadline
    failed = stack.wait_for_status("slow", "FAILED", timeout=120)
    assert (failed["errorCode"], failed["retryable"]) == ("JOB_TIMEOUT", False)
    assert wait_until(lambda: stack.queue_counts("cpu") == (0, 0), 15)
    assert stack.keys() == [] and len(stack.receiver.of("slow", "FAILED")) == 1
    assert worker.stop() == 0


def test_settling_errors_are_survived_and_never_turn_a_completion_into_a_failure(
    stack: Stack, clips: Clips
) -> None:
    stack.upload(clips("silent"), "uploads/a.mp4")
    stack.proxy.fail_sqs("DeleteMessage", "AccessDenied", times=1)
    stack.send_raw(job("undeleted"))
    worker = stack.start()
    stack.wait_for_status("undeleted", "COMPLETED")
    assert wait_until(lambda: "could not delete" in worker.text(), 30)
    assert wait_until(lambda: len(stack.receiver.of("undeleted", "COMPLETED")) == 2, 60)  # came back: re-sent
    assert wait_until(lambda: stack.queue_counts("cpu") == (0, 0), 15)
    assert stack.receiver.of("undeleted", "FAILED") == []
    assert len({item.headers["X-Event-Id"] for item in stack.receiver.of("undeleted", "COMPLETED")}) == 1
    assert worker.proc.poll() is None and "upscaling" in worker.text()
    assert worker.text().count("upscaling") == 1
    assert worker.stop() == 0


def test_a_job_that_kills_its_worker_every_time_is_failed_once_then_redrivable(
    stack: Stack, clips: Clips
) -> None:
    stack.upload(clips("clip6"), "uploads/a.mp4")
    stack.send_raw(job("doomed"))
    watch = {"WORKER_DLQ_WATCH_SECONDS": "1"}
    for attempt in (1, 2, 3):
        worker = stack.start(**watch)

        def running(item: Received, n: int = attempt) -> bool:
            return item.body.get("jobId") == "doomed" and item.body.get("attempt") == n

        assert stack.receiver.wait_for(running, 120)
        worker.signal(signal.SIGKILL)  # as the OOM killer would
        worker.wait(10)
    watcher = stack.start(**watch)
    failed = stack.wait_for_status("doomed", "FAILED", timeout=60)
    assert (failed["errorCode"], failed["retryable"]) == ("WORKER_DIED", True)
    assert wait_until(lambda: sum(stack.queue_counts("cpu", dead=True)) == 1, 15)
    wait_until(lambda: False, 3)  # more watch rounds: still one FAILED
    assert len(stack.receiver.of("doomed", "FAILED")) == 1
    redrive = subprocess.run(
        [sys.executable, "-m", "worker", "redrive", "--queue", "cpu"], cwd=ROOT, env=stack.env(),
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert "1 message(s) moved back" in redrive.stdout
    done = stack.wait_for_status("doomed", "COMPLETED", timeout=120)  # a new lifetime
    assert done["attempt"] == 1
    assert len(stack.receiver.of("doomed", "FAILED")) == 1
    assert watcher.stop() == 0


def test_an_undelivered_terminal_callback_is_kept_and_resent(stack: Stack, clips: Clips) -> None:
    stack.upload(clips("silent"), "uploads/a.mp4")
    down = True
    stack.receiver.answer = lambda body: (
        (500, {}) if down and body.get("status") == "COMPLETED" else (200, {})
    )
    stack.send_raw(job("kept"))
    worker = stack.start(WORKER_DLQ_WATCH_SECONDS="1")
    assert wait_until(lambda: "kept in the outbox" in worker.text(), 90), worker.text()[-2000:]
    assert [key for key in stack.keys("jobs/.outbox/")]
    down = False
    assert wait_until(lambda: stack.keys("jobs/.outbox/") == [], 60)
    delivered = [item for item in stack.receiver.of("kept", "COMPLETED")]
    assert len({item.headers["X-Event-Id"] for item in delivered}) == 1
    assert "downloadUrl" in delivered[-1].body
    assert worker.stop() == 0
