"""Split jobs end to end (issue 12): plan, segments on several workers, one merge, one COMPLETED."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.clips import ffprobe, stream
from tests.conftest import ROOT, Clips
from tests.worker.harness import Stack, wait_until

pytestmark = pytest.mark.slow


def test_a_long_job_is_split_across_workers_merged_once_and_cleaned_up(stack: Stack, clips: Clips) -> None:
    stack.upload(clips("split3"), "uploads/long.mp4")
    stack.enqueue("split", "uploads/long.mp4")
    workers = [stack.start(WORKER_SEGMENT_SECONDS="1"), stack.start(WORKER_SEGMENT_SECONDS="1")]
    done = stack.wait_for_status("split", "COMPLETED", timeout=180)
    assert done["metadata"]["segments"] == 3 and done["metadata"]["frameCount"] == 30
    progress = [item.body["progress"] for item in stack.receiver.of("split", "PROCESSING")]
    # the job's progress, not a segment's (at most 33 %): the third segment starts once one is done
    assert max(progress) > 33 and all(value < 100 for value in progress)
    assert wait_until(lambda: stack.queue_counts("cpu") == (0, 0), 30)
    assert stack.receiver.of("split", "FAILED") == []
    assert len({item.headers["X-Event-Id"] for item in stack.receiver.of("split", "COMPLETED")}) == 1
    key = "processed/upscaled/split/long_upscaled.mp4"
    local = stack.root / "out.mp4"
    stack.aws.client("s3").download_file(stack.aws.bucket, key, str(local))
    video = stream(ffprobe(local, count=True), "video")
    assert video is not None and int(video["nb_read_frames"]) == 30
    assert stream(ffprobe(local), "audio") is not None
    segments = stack.keys("jobs/split/segments/")
    assert not [item for item in segments if item.endswith(".ts")], segments
    assert len([item for item in segments if item.endswith(".json")]) == 4  # the plan and 3 markers
    logs = "".join(worker.text() for worker in workers)
    assert "split into 3 segments" in logs and "merge enqueued" in logs
    for worker in workers:
        assert worker.stop() == 0


def test_worker_cancel_stops_every_segment_and_the_merge_never_runs(stack: Stack, clips: Clips) -> None:
    stack.upload(clips("split3"), "uploads/long.mp4")
    stack.enqueue("stopped", "uploads/long.mp4")
    first = stack.start("--max-jobs", "2", WORKER_SEGMENT_SECONDS="1")  # the plan and one segment, then exits
    assert first.wait(120) == 0, first.text()[-2000:]
    assert " of 3 done" in first.text(), first.text()[-2000:]
    cancel = subprocess.run(
        [sys.executable, "-m", "worker", "cancel", "stopped"], cwd=ROOT, env=stack.env(),
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert "cancel requested" in cancel.stdout
    worker = stack.start(WORKER_SEGMENT_SECONDS="1")  # finds the marker on every segment left
    cancelled = stack.wait_for_status("stopped", "CANCELLED", timeout=120)
    assert cancelled["errorCode"] == "CANCELLED"
    assert wait_until(lambda: stack.queue_counts("cpu") == (0, 0), 60)
    assert stack.receiver.of("stopped", "COMPLETED") == [] and stack.receiver.of("stopped", "FAILED") == []
    assert len({item.headers["X-Event-Id"] for item in stack.receiver.of("stopped", "CANCELLED")}) == 1
    assert stack.keys() == []  # nothing published
    assert not [key for key in stack.keys("jobs/stopped/segments/") if key.endswith(".ts")]
    assert worker.stop() == 0


def test_a_job_too_costly_for_its_deadline_is_split_by_cost(stack: Stack, clips: Clips) -> None:
    """No length split (WORKER_SEGMENT_SECONDS=0): 30 frames estimated at 200 x the table's cost (1.75 s
    each, 52 s in all) do not fit half of a 60 s deadline, so two segments of 26 s each do."""
    stack.upload(clips("split3"), "uploads/long.mp4")
    stack.enqueue("costly", "uploads/long.mp4")
    worker = stack.start(WORKER_SEGMENT_SECONDS="0", WORKER_JOB_TIMEOUT="60", WORKER_COST_FACTOR="200")
    done = stack.wait_for_status("costly", "COMPLETED", timeout=180)
    assert done["metadata"]["segments"] == 2 and done["metadata"]["frameCount"] == 30
    assert "split into 2 segments" in worker.text()
    assert worker.stop() == 0


def test_a_job_that_cannot_fit_its_deadline_even_split_is_refused_up_front(
    stack: Stack, clips: Clips
) -> None:
    stack.upload(clips("split3"), "uploads/long.mp4")
    stack.enqueue("hopeless", "uploads/long.mp4")
    worker = stack.start(WORKER_JOB_TIMEOUT="10", WORKER_COST_FACTOR="1000")  # 8.8 s a frame
    failed = stack.wait_for_status("hopeless", "FAILED", timeout=120)
    assert (failed["errorCode"], failed["retryable"]) == ("JOB_TIMEOUT", False)
    assert "WORKER_JOB_TIMEOUT" in failed["errorMessage"]
    assert wait_until(lambda: stack.queue_counts("cpu") == (0, 0), 30)
    assert stack.keys() == [] and stack.keys("jobs/hopeless/segments/") == []
    assert "upscaling" not in worker.text()  # refused before a frame was decoded
    assert worker.stop() == 0
