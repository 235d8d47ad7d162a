"""Which keys a job may write, and the job state under jobs/{jobId}/ (moto's server)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from worker.embedded import EmbeddedAWS
from worker.errors import OutputTaken
from worker.keys import KeyPolicy
from worker.message import Status
from worker.state import JobState, event_id
from worker.storage import Storage

POLICY = KeyPolicy()


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ("UPSCALE", "processed/upscaled/j1/clip_upscaled.mp4"),
        ("upscale", "processed/upscaled/j1/clip_upscaled.mp4"),
        ("CAPTION_RENDER", "processed/captioned/j1/clip_captioned.mp4"),
        ("VISUALIZE", "processed/visualized/j1/clip_visualized.mp4"),
    ],
)
def test_default_output_keys(task: str, expected: str) -> None:
    assert POLICY.output_key(task, "j1", "clip", None) == expected
    assert POLICY.output_key(task, "j1", "clip", "") == expected


@pytest.mark.parametrize(
    "key",
    [
        "processed/j1/final.mp4",
        "processed/upscaled/j1/other.mp4",
        "processed/upscaled/final.mp4",
        "processed/x",
    ],
)
def test_requested_keys_the_job_owns_are_kept(key: str) -> None:
    assert POLICY.output_key("UPSCALE", "j1", "clip", key) == key


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("processed/upscaled/j2/clip_upscaled.mp4", "another job's output folder"),
        ("processed/visualized/j2/x.mp4", "another job's output folder"),
        ("jobs/j2/result.json", "job state"),
        ("jobs/j1/result.json", "job state"),
        ("exports/final.mp4", "outside the output prefixes"),
        ("uploads/clip.mp4", "outside the output prefixes"),
    ],
)
def test_keys_the_job_does_not_own_are_refused(key: str, why: str) -> None:
    with pytest.raises(OutputTaken, match=why) as caught:
        POLICY.output_key("UPSCALE", "j1", "clip", key)
    assert (caught.value.code, caught.value.retryable) == ("INPUT_INVALID", False)


def test_an_input_key_is_never_an_output() -> None:
    with pytest.raises(OutputTaken, match="inputs"):
        POLICY.check_output("processed/in.mp4", "j1", ("processed/in.mp4",))


def test_configured_prefixes() -> None:
    policy = KeyPolicy(output_prefixes=("exports/", "processed/"), jobs_prefix="state/")
    assert policy.output_key("UPSCALE", "j1", "c", None) == "exports/upscaled/j1/c_upscaled.mp4"
    assert policy.output_key("UPSCALE", "j1", "c", "processed/a.mp4") == "processed/a.mp4"
    assert policy.state_prefix("j1") == "state/j1/"


@pytest.fixture
def state(moto_server: EmbeddedAWS) -> JobState:
    bucket = f"st-{uuid.uuid4().hex[:12]}"
    client: Any = moto_server.client("s3")
    client.create_bucket(Bucket=bucket)
    return JobState(Storage(client, bucket=bucket, allowed_buckets=frozenset({bucket})), POLICY)


def test_the_first_outcome_holds_and_is_resent_with_its_event_id(state: JobState) -> None:
    failed = {"jobId": "j1", "status": "FAILED", "errorCode": "WORKER_DIED"}
    first = state.decide("j1", 0, Status.FAILED, failed)
    assert first.ours and first.event_id == event_id("j1", Status.FAILED)
    later = state.decide("j1", 0, Status.COMPLETED, {"jobId": "j1", "status": "COMPLETED"})
    assert not later.ours and later.status is Status.FAILED and later.event_id == first.event_id
    assert state.storage.keys("jobs/j1/") == ["jobs/j1/terminal.json"]


def test_a_redrive_starts_a_new_lifetime_but_completed_is_final(state: JobState) -> None:
    state.decide("j1", 0, Status.FAILED, {"jobId": "j1", "status": "FAILED"})
    assert state.terminal("j1", 1) is None  # redriven: decided anew
    done = state.decide("j1", 1, Status.COMPLETED, {"jobId": "j1", "status": "COMPLETED"})
    assert done.ours and done.event_id == event_id("j1", Status.COMPLETED)
    assert event_id("j1", Status.FAILED, 1) != event_id("j1", Status.FAILED, 0)
    state.decide("j2", 0, Status.COMPLETED, {"jobId": "j2", "status": "COMPLETED"})
    final = state.terminal("j2", 3)
    assert final is not None and final.status is Status.COMPLETED


def test_the_completion_record_is_written_once(state: JobState) -> None:
    first = state.record_result("j1", {"jobId": "j1", "fileSize": 1, "sha256": "aa"})
    assert state.record_result("j1", {"jobId": "j1", "fileSize": 2, "sha256": "bb"}) == first
    assert state.result("j1") == first and state.result("j2") is None


def test_the_outbox_keeps_and_forgets(state: JobState) -> None:
    terminal = state.decide("j1", 0, Status.FAILED, {"jobId": "j1", "status": "FAILED"})
    state.keep("http://backend/cb", terminal)
    state.keep("http://backend/cb", terminal)  # kept again: one entry
    kept = state.kept()
    assert [entry["eventId"] for _, entry in kept] == [terminal.event_id]
    state.forget(kept[0][0])
    assert state.kept() == []
