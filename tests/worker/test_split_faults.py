"""Split jobs (issue 12) under bad input and faults: the real daemon, moto, ffmpeg, one outcome each time.

Every test ends with one terminal event (one ``X-Event-Id``), the queues and
their dead-letter queues empty, no segment object left, and workers that stop
cleanly. ``--max-jobs`` stops a worker after the plan and some segments, so a
fault lands at a known step rather than at whatever a timer hits.
"""

from __future__ import annotations

import hashlib
import json
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.clips import FFMPEG, ffprobe, stream
from tests.conftest import Clips
from tests.worker.harness import Stack, WorkerProcess, relay, wait_until
from worker.embedded import serve
from worker.segments import stage_body

pytestmark = pytest.mark.slow

SPLIT = {"WORKER_SEGMENT_SECONDS": "1"}
"""split3 (3 s, 30 frames) in three segments of 10 frames."""
SOURCE = "uploads/long.mp4"
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")


# ---------------------------------------------------------------------- helpers


def output_key(job_id: str) -> str:
    return f"processed/upscaled/{job_id}/long_upscaled.mp4"


def one_outcome(stack: Stack, job_id: str, status: str) -> dict[str, Any]:
    """The job's one terminal event: however often it was (re)sent, one status and one event id."""
    events = [item for item in stack.receiver.of(job_id) if item.body.get("status") in TERMINAL]
    outcomes = {(item.body["status"], item.headers["X-Event-Id"]) for item in events}
    assert len(outcomes) == 1 and events[0].body["status"] == status, outcomes
    return events[0].body


def settled(stack: Stack, job_id: str, queue: str = "cpu") -> None:
    """Nothing left of the job in flight: its queue and dead-letter queue empty, no segment object."""
    assert wait_until(lambda: stack.queue_counts(queue) == (0, 0), 60), stack.queue_counts(queue)
    assert stack.queue_counts(queue, dead=True) == (0, 0)
    assert wait_until(lambda: segment_objects(stack, job_id) == [], 30), segment_objects(stack, job_id)


def segment_objects(stack: Stack, job_id: str) -> list[str]:
    return [key for key in stack.keys(f"jobs/{job_id}/segments/") if key.endswith(".ts")]


def output_frames(stack: Stack, job_id: str, completed: dict[str, Any]) -> int:
    """Frames of the published output, checked against the COMPLETED event (key, size, SHA-256, audio)."""
    assert completed["outputS3Key"] == output_key(job_id)
    local = stack.root / f"{job_id}-out.mp4"
    stack.aws.client("s3").download_file(stack.aws.bucket, output_key(job_id), str(local))
    data = local.read_bytes()
    assert (completed["fileSize"], completed["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    assert stream(ffprobe(local), "audio") is not None
    video = stream(ffprobe(local, count=True), "video")
    assert video is not None
    return int(video["nb_read_frames"])


def completed_whole(stack: Stack, job_id: str) -> dict[str, Any]:
    """The job COMPLETED once, as three segments making the whole 30 frames, and nothing is left over."""
    done = one_outcome(stack, job_id, "COMPLETED")
    assert done["metadata"]["segments"] == 3 and done["metadata"]["frameCount"] == 30
    assert output_frames(stack, job_id, done) == 30
    assert stack.keys() == [output_key(job_id)]
    settled(stack, job_id)
    return done


def logs(*workers: WorkerProcess) -> str:
    return "".join(worker.text() for worker in workers)


def segments_done(text: str) -> list[int]:
    """How many times each of the three segments was finished, in order."""
    return [text.count(f"segment {index} of 3 done") for index in (1, 2, 3)]


def run_until_merge(stack: Stack, clips: Clips, job_id: str, **extra: str) -> dict[str, Any]:
    """Plan the job and finish its three segments on a worker that then exits: the merge is queued."""
    stack.upload(clips("split3"), SOURCE)
    message = stack.enqueue(job_id, SOURCE)
    first = stack.start("--max-jobs", "4", **SPLIT, **extra)
    assert first.wait(180) == 0, first.text()[-3000:]
    assert segments_done(first.text()) == [1, 1, 1] and "merge enqueued" in first.text(), first.text()[-3000:]
    return message


@dataclass(frozen=True)
class Sent:
    """One SendMessage a worker made."""

    queue: str
    group: str | None
    dedup: str | None
    body: dict[str, Any]

    @property
    def stage(self) -> dict[str, Any]:
        stage: dict[str, Any] = self.body.get("vidworker", {})
        return stage


class SqsWitness:
    """A proxy in front of the stack's fault proxy that notes every SendMessage the workers make
    (its group and deduplication id), which neither moto nor the queue counts show."""

    def __init__(self, upstream: str) -> None:
        target = urlsplit(upstream)
        self.sent: list[Sent] = []
        outer, lock = self, threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
                if self.headers.get("X-Amz-Target", "").endswith(".SendMessage"):
                    request = json.loads(body)
                    group, dedup = request.get("MessageGroupId"), request.get("MessageDeduplicationId")
                    sent = Sent(request["QueueUrl"], group, dedup, json.loads(request["MessageBody"]))
                    with lock:
                        outer.sent.append(sent)
                relay(self, target, body)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = serve(Handler, "sqs-witness")
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stages(self, stage: str, index: int | None = None) -> list[Sent]:
        return [
            item
            for item in self.sent
            if item.stage.get("stage") == stage and item.stage.get("index") == index
        ]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def witness(fifo_stack: Stack) -> Iterator[SqsWitness]:
    found = SqsWitness(fifo_stack.proxy.endpoint)
    yield found
    for worker in fifo_stack.workers:  # before the witness goes: the workers talk to AWS through it
        worker.stop()
    found.stop()


# ---------------------------------------------------------------------- bad input


def test_a_source_changed_under_its_plan_fails_source_changed_once_and_is_never_merged(
    stack: Stack, clips: Clips
) -> None:
    stack.upload(clips("split3"), SOURCE)
    stack.enqueue("changed", SOURCE)
    first = stack.start("--max-jobs", "2", **SPLIT)  # the plan and the first segment
    assert first.wait(120) == 0, first.text()[-3000:]
    assert segments_done(first.text()) == [1, 0, 0]
    assert len(segment_objects(stack, "changed")) == 1
    stack.upload(clips("faststart"), SOURCE)  # re-uploaded with other bytes (3 s too): another ETag
    second = stack.start(**SPLIT)
    failed = stack.wait_for_status("changed", "FAILED", timeout=120)
    assert (failed["errorCode"], failed["retryable"]) == ("SOURCE_CHANGED", False)
    settled(stack, "changed")  # the first segment's object too
    assert one_outcome(stack, "changed", "FAILED")["errorCode"] == "SOURCE_CHANGED"
    assert stack.receiver.of("changed", "COMPLETED") == []
    assert stack.keys("processed/") == [] and stack.keys("jobs/changed/result.json") == []
    text = logs(first, second)
    assert segments_done(text) == [1, 0, 0] and "merge enqueued" not in text
    assert second.stop() == 0


def test_a_job_message_redelivered_mid_way_re_enqueues_only_the_unfinished_segments(
    stack: Stack, clips: Clips
) -> None:
    stack.upload(clips("split3"), SOURCE)
    message = stack.enqueue("again", SOURCE)
    first = stack.start("--max-jobs", "2", **SPLIT)  # the plan and segment 1 of 3
    assert first.wait(120) == 0, first.text()[-3000:]
    assert "split into 3 segments; 3 to do" in first.text() and segments_done(first.text()) == [1, 0, 0]
    # The other two segments' messages are held out of sight while the job's own message comes again
    # (the backend re-sending it): the plan is found, and only segments 2 and 3 are sent once more.
    sqs, url = stack.aws.client("sqs"), stack.aws.queues["cpu"]
    held: list[dict[str, Any]] = []
    while len(held) < 2:
        reply = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=2, VisibilityTimeout=600, WaitTimeSeconds=1
        )
        held += reply.get("Messages", [])
    assert sorted(json.loads(item["Body"])["vidworker"]["index"] for item in held) == [1, 2]
    stack.send_raw(json.dumps(message))
    second = stack.start(**SPLIT)
    done = stack.wait_for_status("again", "COMPLETED", timeout=150)
    assert "split into 3 segments; 2 to do" in second.text()
    # the held originals come back after the job is done: each re-sends the outcome, none reruns
    for item in held:
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=item["ReceiptHandle"], VisibilityTimeout=0)
    assert wait_until(lambda: second.text().count("outcome is already COMPLETED") == 2, 60), second.text()[
        -3000:
    ]
    assert done["metadata"]["segments"] == 3
    completed_whole(stack, "again")
    assert segments_done(logs(first, second)) == [1, 1, 1]  # a finished segment is never redone
    assert stack.receiver.of("again", "FAILED") == []
    assert second.stop() == 0


def test_a_merge_delivered_twice_publishes_one_output_and_one_completed(stack: Stack, clips: Clips) -> None:
    s3 = stack.aws.client("s3")
    s3.put_bucket_versioning(Bucket=stack.aws.bucket, VersioningConfiguration={"Status": "Enabled"})
    message = run_until_merge(stack, clips, "merged")
    stack.send_raw(stage_body(json.dumps(message), "merge"))  # the duplicate, queued beside the first
    assert stack.queue_counts("cpu") == (2, 0)
    workers = [stack.start(**SPLIT), stack.start(**SPLIT)]  # so both merges may run at once
    stack.wait_for_status("merged", "COMPLETED", timeout=120)
    assert wait_until(lambda: stack.queue_counts("cpu") == (0, 0), 60)
    stack.send_raw(stage_body(json.dumps(message), "merge"))  # and once more, after the job is done
    assert wait_until(lambda: "outcome is already COMPLETED" in logs(*workers), 60), logs(*workers)[-3000:]
    completed_whole(stack, "merged")
    versions = s3.list_object_versions(Bucket=stack.aws.bucket, Prefix=output_key("merged"))["Versions"]
    assert len(versions) == 1  # published once
    record = json.loads(s3.get_object(Bucket=stack.aws.bucket, Key="jobs/merged/result.json")["Body"].read())
    assert record["sha256"] == one_outcome(stack, "merged", "COMPLETED")["sha256"]
    assert stack.receiver.of("merged", "FAILED") == []
    assert segments_done(logs(*workers)) == [0, 0, 0]
    for worker in workers:
        assert worker.stop() == 0


# ---------------------------------------------------------------------- faults


def test_s3_refusing_segment_uploads_delays_the_job_but_it_completes_once(stack: Stack, clips: Clips) -> None:
    def segment_upload(method: str, path: str) -> bool:
        return method == "PUT" and "/segments/" in path and ".ts" in urlsplit(path).path

    # 7 refusals: the 5 tries botocore makes for one upload (the segment's message is retried), then 2 more
    stack.proxy.fail(segment_upload, 7)
    stack.upload(clips("split3"), SOURCE)
    stack.enqueue("flaky", SOURCE)
    worker = stack.start(**SPLIT)
    stack.wait_for_status("flaky", "COMPLETED", timeout=180)
    assert stack.proxy.failed == 7
    assert "failed with STORAGE_ERROR (retryable)" in worker.text()
    completed_whole(stack, "flaky")
    assert segments_done(worker.text()) == [1, 1, 1]  # an upload that failed marked nothing
    assert stack.receiver.of("flaky", "FAILED") == []
    assert worker.stop() == 0


def test_a_worker_killed_as_it_plans_leaves_a_plan_that_the_job_s_next_try_finishes(
    stack: Stack, clips: Clips
) -> None:
    # Its delete of the job's message is refused: however soon after planning the kill lands, the
    # message was not settled and comes back, to find the plan (and, queued, the segments' messages).
    stack.proxy.fail_sqs("DeleteMessage", "AccessDenied", times=1)
    stack.upload(clips("split3"), SOURCE)
    stack.enqueue("planned", SOURCE)
    first = stack.start(**SPLIT)
    assert wait_until(lambda: "split into 3 segments" in first.text(), 120, step=0.05), first.text()[-3000:]
    first.signal(signal.SIGKILL)
    first.wait(10)
    second = stack.start(**SPLIT)
    stack.wait_for_status("planned", "COMPLETED", timeout=180)
    assert re.search(r"split into 3 segments; \d to do", second.text()), second.text()[-3000:]
    completed_whole(stack, "planned")
    assert segments_done(logs(first, second)) == [1, 1, 1]  # the segments sent twice were done once
    assert stack.receiver.of("planned", "FAILED") == []
    assert second.stop() == 0


def test_segment_messages_refused_after_the_plan_is_written_are_sent_by_the_job_s_next_try(
    stack: Stack, clips: Clips
) -> None:
    stack.proxy.fail_sqs("SendMessage", "AccessDenied", times=1)  # the first segment's: none is sent
    stack.upload(clips("split3"), SOURCE)
    stack.enqueue("unsent", SOURCE)
    worker = stack.start(**SPLIT)
    stack.wait_for_status("unsent", "COMPLETED", timeout=180)
    text = worker.text()
    assert "failed with INTERNAL_ERROR (retryable)" in text and "SendMessage" in text, text[-3000:]
    assert text.count("split into 3 segments; 3 to do") == 1  # the retry found the plan and sent all three
    assert stack.keys("jobs/unsent/segments/plan.json")
    completed_whole(stack, "unsent")
    assert segments_done(text) == [1, 1, 1]
    assert stack.receiver.of("unsent", "FAILED") == []
    assert worker.stop() == 0


def test_a_worker_killed_during_the_merge_is_replaced_and_the_job_completes_once(
    stack: Stack, clips: Clips
) -> None:
    stack.upload(clips("split3"), SOURCE)
    stack.enqueue("joined", SOURCE)
    first = stack.start(**SPLIT)
    tmp = stack.root / "tmp"

    def merge_running() -> bool:  # the merge fetches segment-00000.ts (a segment's own output is 9 digits)
        return any(tmp.glob("vidworker-*/job-*/segment-00000.ts"))

    assert wait_until(merge_running, 180, step=0.02), first.text()[-3000:]
    first.signal(signal.SIGKILL)
    first.wait(10)
    assert segments_done(first.text()) == [1, 1, 1] and "merge enqueued" in first.text()
    assert stack.receiver.of("joined", "COMPLETED") == []  # killed before its outcome went out
    second = stack.start(**SPLIT)
    stack.wait_for_status("joined", "COMPLETED", timeout=120)
    completed_whole(stack, "joined")
    assert segments_done(second.text()) == [0, 0, 0]  # only the merge was run again
    assert stack.receiver.of("joined", "FAILED") == []
    assert second.stop() == 0


# ---------------------------------------------------------------------- a bad segment


def tamper(stack: Stack, job_id: str, index: int, how: str) -> None:
    """Replace finished segment ``index`` by its first 5 frames (a valid MPEG-TS segment).

    ``bytes``: the object alone, so it no longer matches its marker. ``frames``: the marker too, truthful
    for the new object (size, SHA-256, 5 frames), as a segment worker that lost frames would have written.
    """
    s3, bucket = stack.aws.client("s3"), stack.aws.bucket
    key = f"jobs/{job_id}/segments/{index:05d}.ts"
    whole, short = stack.root / "whole.ts", stack.root / "short.ts"
    s3.download_file(bucket, key, str(whole))
    args = ["-i", str(whole), "-map", "0", "-c", "copy", "-frames:v", "5", "-f", "mpegts", str(short)]
    subprocess.run([*FFMPEG, *args], check=True)
    video = stream(ffprobe(short, count=True), "video")
    assert video is not None and int(video["nb_read_frames"]) == 5
    s3.upload_file(str(short), bucket, key)
    if how == "frames":
        marker_key = f"jobs/{job_id}/segments/{index:05d}.json"
        marker = json.loads(s3.get_object(Bucket=bucket, Key=marker_key)["Body"].read())
        data = short.read_bytes()
        marker.update(frames=5, size=len(data), sha256=hashlib.sha256(data).hexdigest())
        s3.put_object(Bucket=bucket, Key=marker_key, Body=json.dumps(marker).encode())


def test_a_segment_that_is_not_what_was_planned_is_redone_not_merged(stack: Stack, clips: Clips) -> None:
    run_until_merge(stack, clips, "redo")
    tamper(stack, "redo", 1, "frames")  # on FIFO below: "bytes"
    second = stack.start(**SPLIT)
    stack.wait_for_status("redo", "COMPLETED", timeout=150)
    assert "merge: segment 1 " in second.text() and "redoing it" in second.text(), second.text()[-3000:]
    completed_whole(stack, "redo")
    assert segments_done(second.text()) == [0, 1, 0]  # the middle one, again
    assert stack.receiver.of("redo", "FAILED") == []
    assert second.stop() == 0


def test_on_fifo_segments_run_in_groups_of_their_own_and_a_redo_is_not_deduplicated_away(
    fifo_stack: Stack, witness: SqsWitness, clips: Clips
) -> None:
    """Each segment and the merge in a group of its own (segments of one job run side by side, not in
    order behind each other). SQS drops a FIFO message whose deduplication id was used in the last 5
    minutes (moto only while the first is still queued): the redone segment's message and the next
    merge need ids of their own."""
    stack = fifo_stack
    run_until_merge(stack, clips, "redo", AWS_ENDPOINT_URL=witness.endpoint)
    segments = [witness.stages("segment", index) for index in range(3)]
    assert [[item.group for item in sent] for sent in segments] == [["redo-s0"], ["redo-s1"], ["redo-s2"]]
    assert [item.group for item in witness.stages("merge")] == ["redo-merge"]
    assert all(item.dedup and item.queue == stack.aws.queues["cpu"] for item in witness.sent)
    tamper(stack, "redo", 1, "bytes")
    second = stack.start(AWS_ENDPOINT_URL=witness.endpoint, **SPLIT)
    stack.wait_for_status("redo", "COMPLETED", timeout=150)
    assert "redoing it" in second.text(), second.text()[-3000:]
    completed_whole(stack, "redo")
    assert segments_done(second.text()) == [0, 1, 0]
    assert stack.receiver.of("redo", "FAILED") == []
    assert second.stop() == 0
    redone, merges = witness.stages("segment", 1), witness.stages("merge")
    assert len(redone) == 2 and len(merges) == 2
    assert len({item.dedup for item in redone}) == 2, (
        f"segment 1 re-sent with its first dedup id {redone[0].dedup}"
    )
    assert len({item.dedup for item in merges}) == 2, (
        f"the merge re-sent with its first dedup id {merges[0].dedup} (a redone segment is often the same"
        " bytes: ids made of the segments' SHA-256s repeat)"
    )
