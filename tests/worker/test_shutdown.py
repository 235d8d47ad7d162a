"""Shutdown and redelivery end to end: signals, drain, SIGKILL, redelivered and concurrent workers.

The daemon as a real subprocess against moto's server, as in ``test_daemon.py``.
"""

from __future__ import annotations

import signal

import pytest

from tests.conftest import Clips
from tests.worker.harness import Stack, wait_until

pytestmark = pytest.mark.slow


def test_sigterm_drains_the_running_job_and_exits_zero(stack: Stack, clips: Clips) -> None:
    stack.upload(clips("audio"), "uploads/d.mp4")
    stack.enqueue("drain", "uploads/d.mp4")
    worker = stack.start()
    stack.wait_for_status("drain", "PROCESSING")
    worker.signal(signal.SIGTERM)
    assert worker.wait(60) == 0
    stack.wait_for_status("drain", "COMPLETED", timeout=5)
    assert stack.queue_counts("cpu") == (0, 0)


def test_second_signal_aborts_and_hands_the_job_back_without_spending_a_try(
    any_stack: Stack, clips: Clips
) -> None:
    stack = any_stack
    stack.upload(clips("clip20"), "uploads/e.mp4")
    stack.enqueue("abort", "uploads/e.mp4")
    worker = stack.start()
    stack.wait_for_status("abort", "PROCESSING")
    worker.signal(signal.SIGTERM)
    assert wait_until(lambda: "received SIGTERM" in worker.text(), 10)  # two at once would coalesce
    worker.signal(signal.SIGTERM)
    assert worker.wait(60) == 0
    assert "handing the message back" in worker.text()
    assert stack.receiver.of("abort", "COMPLETED") == [] and stack.receiver.of("abort", "FAILED") == []
    assert wait_until(lambda: stack.queue_counts("cpu") == (1, 0), 10), stack.queue_counts("cpu")
    assert stack.keys() == []
    stack.start()  # the fresh copy carries the tries spent: none, so this is try 1 again
    done = stack.wait_for_status("abort", "COMPLETED", timeout=120)
    assert done["attempt"] == 1


def test_sigkill_mid_job_is_redelivered_and_finished_once(stack: Stack, clips: Clips) -> None:
    stack.upload(clips("clip20"), "uploads/k.mp4")
    stack.enqueue("killed", "uploads/k.mp4")
    first = stack.start()
    stack.wait_for_status("killed", "PROCESSING")
    first.signal(signal.SIGKILL)
    first.wait(10)
    second = stack.start()  # also removes the dead worker's scratch dir
    done = stack.wait_for_status("killed", "COMPLETED", timeout=120)
    assert done["attempt"] == 2
    assert len(stack.receiver.of("killed", "COMPLETED")) == 1
    assert stack.keys() == ["processed/upscaled/killed/k_upscaled.mp4"]
    assert "left by a worker that is gone" in second.text()


def test_redelivery_after_upload_resends_the_completion_without_reprocessing(
    stack: Stack, clips: Clips
) -> None:
    """What a worker killed between upload and delete leaves behind: the output and result.json."""
    stack.upload(clips("audio"), "uploads/r.mp4")
    stack.enqueue("finished", "uploads/r.mp4")
    worker = stack.start()
    first = stack.wait_for_status("finished", "COMPLETED")
    worker.stop()
    stack.enqueue("finished", "uploads/r.mp4")  # the same message, delivered again
    again = stack.start()
    assert wait_until(lambda: len(stack.receiver.of("finished", "COMPLETED")) == 2, 60)
    resent = stack.receiver.of("finished", "COMPLETED")
    assert resent[0].headers["X-Event-Id"] == resent[1].headers["X-Event-Id"]
    assert resent[1].body["metadata"] == first["metadata"]
    assert "re-sending it instead of reprocessing" in again.text() and "upscaling" not in again.text()
    assert wait_until(lambda: stack.queue_counts("cpu") == (0, 0), 10)


def test_two_workers_and_a_job_longer_than_the_visibility_timeout_each_job_once(
    stack: Stack, clips: Clips
) -> None:
    stack.upload(clips("clip20"), "uploads/long.mp4")
    stack.upload(clips("audio"), "uploads/short.mp4")
    stack.enqueue("long", "uploads/long.mp4")  # ~4 s of work against a 2 s visibility timeout
    for index in range(3):
        stack.enqueue(f"short-{index}", "uploads/short.mp4")
    short_visibility = {"WORKER_VISIBILITY_TIMEOUT": "2", "WORKER_HEARTBEAT_SECONDS": "0.5"}
    workers = [stack.start(**short_visibility), stack.start(**short_visibility)]
    for job in ("long", "short-0", "short-1", "short-2"):
        stack.wait_for_status(job, "COMPLETED", timeout=120)
    assert wait_until(lambda: stack.queue_counts("cpu") == (0, 0), 15)
    for job in ("long", "short-0", "short-1", "short-2"):
        assert len(stack.receiver.of(job, "COMPLETED")) == 1
    started = sum(worker.text().count("received UPSCALE") for worker in workers)
    assert started == 4, "a job was run twice"


def test_a_job_outliving_the_drain_time_is_aborted_and_released(stack: Stack, clips: Clips) -> None:
    stack.upload(clips("clip20"), "uploads/slow.mp4")
    stack.enqueue("slow", "uploads/slow.mp4")
    worker = stack.start(WORKER_DRAIN_SECONDS="1")
    stack.wait_for_status("slow", "PROCESSING")
    worker.signal(signal.SIGTERM)
    assert worker.wait(60) == 0
    assert "drain time of 1 s is over" in worker.text() and "handing the message back" in worker.text()
    assert stack.receiver.of("slow", "COMPLETED") == [] and stack.receiver.of("slow", "FAILED") == []
    assert wait_until(lambda: stack.queue_counts("cpu") == (1, 0), 10)
