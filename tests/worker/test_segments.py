"""The coordination state of split jobs (plan, markers, stage messages) against moto's server."""

from __future__ import annotations

import json
import uuid
from fractions import Fraction
from typing import Any

import pytest

from worker.embedded import EmbeddedAWS
from worker.keys import KeyPolicy
from worker.segments import (
    STAGE,
    FrameCost,
    Plan,
    PlanUnsupported,
    SegmentStore,
    TooLong,
    segment_count,
    stage_body,
)
from worker.storage import Storage

FPS = Fraction(30)
HOUR = 3600.0


@pytest.mark.parametrize(
    ("seconds", "segment_seconds", "per_frame", "expected"),
    [
        (10, 60, 0.01, 1),  # short and cheap: whole
        (89, 60, 0.01, 1),  # under 1.5 x the target length: whole
        (91, 60, 0.01, 2),  # over it: about target-long segments
        (600, 60, 0.01, 10),
        (600, 0, 0.01, 1),  # 0: never split for length
        (60, 0, 13.0, 3),  # 1800 frames x 13 s = 6.5 h: segments of at most half a 6 h deadline
        (60, 0, 73.0, 13),  # x4plus on a CPU: 36.5 h, each segment <= 3 h
    ],
)
def test_segment_count(seconds: int, segment_seconds: float, per_frame: float, expected: int) -> None:
    count = segment_count(
        seconds * 30, FPS, segment_seconds=segment_seconds, seconds_per_frame=per_frame, job_timeout=6 * HOUR
    )
    assert count == expected
    assert seconds * 30 * per_frame / count <= 0.5 * 6 * HOUR or count == 1


def test_a_job_that_cannot_fit_even_split_is_refused_up_front() -> None:
    with pytest.raises(TooLong, match="WORKER_JOB_TIMEOUT") as caught:  # the shortest segment is 2 frames
        segment_count(100, FPS, segment_seconds=0, seconds_per_frame=0.6 * HOUR, job_timeout=HOUR)
    assert (caught.value.code, caught.value.retryable) == ("JOB_TIMEOUT", False)
    assert segment_count(100, FPS, segment_seconds=0, seconds_per_frame=0.4 * HOUR, job_timeout=HOUR) == 50


def test_the_cost_is_the_model_table_until_this_worker_has_measured_its_own() -> None:
    costs = FrameCost()
    frame = 640 * 480
    assert costs.seconds_per_frame("realesrgan-x4plus", "cpu", frame) == pytest.approx(130.0 * 0.3072)
    assert costs.seconds_per_frame("realesrgan-x4plus", "cuda", frame) == 0  # nothing measured on a GPU here
    costs.observe("realesrgan-x4plus", "cuda", frame, frames=100, seconds=30)  # start-up would dominate
    assert costs.seconds_per_frame("realesrgan-x4plus", "cuda", frame) == 0
    costs.observe("realesrgan-x4plus", "cuda", frame, frames=1000, seconds=100)
    costs.observe("realesrgan-x4plus", "cuda", frame * 4, frames=1000, seconds=200)  # summed per pixel
    assert costs.seconds_per_frame("realesrgan-x4plus", "cuda", frame) == pytest.approx(0.06)
    assert costs.seconds_per_frame("realesrgan-x4plus", "cpu", frame) == pytest.approx(130.0 * 0.3072)
    slow_host = FrameCost(factor=2.0)
    assert slow_host.seconds_per_frame("realesr-general-x4v3", "cpu", 10**6) == pytest.approx(14.6)
    assert FrameCost(factor=0).seconds_per_frame("realesrgan-x4plus", "cpu", frame) == 0  # 0: length only


def test_never_a_segment_of_one_frame() -> None:
    assert segment_count(5, FPS, segment_seconds=0.01, seconds_per_frame=0.01, job_timeout=HOUR) == 2


@pytest.fixture
def store(moto_server: EmbeddedAWS) -> SegmentStore:
    bucket = f"sg-{uuid.uuid4().hex[:12]}"
    client: Any = moto_server.client("s3")
    client.create_bucket(Bucket=bucket)
    return SegmentStore(Storage(client, bucket=bucket, allowed_buckets=frozenset({bucket})), KeyPolicy())


def plan(job_id: str = "j1", model: str = "realesr-general-x4v3") -> Plan:
    source = {"bucket": "b", "key": "uploads/a.mp4", "etag": '"abc"'}
    ranges = ((0, 300), (300, 600), (600, 900))
    return Plan(job_id, source, Fraction(30000, 1001), ranges, {"model": model, "scale": 2})


def test_the_first_plan_holds(store: SegmentStore) -> None:
    first = store.propose(plan())
    second = store.propose(plan(model="realesrgan-x4plus"))  # a second planner cannot write a different plan
    assert second == first and store.plan("j1") == first
    assert first.frames == 900 and first.fps == Fraction(30000, 1001)
    assert store.storage.keys("jobs/j1/") == ["jobs/j1/segments/plan.json"]


def test_an_unknown_schema_waits_for_a_worker_that_knows_it(store: SegmentStore) -> None:
    store.storage.put_json_once(store.plan_key("j2"), {**plan("j2").body(), "schema": 99})
    with pytest.raises(PlanUnsupported, match="schema 99") as caught:
        store.plan("j2")
    assert (caught.value.code, caught.value.retryable) == ("PLAN_UNSUPPORTED", True)


def test_markers_say_what_is_left_and_segments_are_removed(store: SegmentStore) -> None:
    held = store.propose(plan())
    assert store.finished("j1") == {}
    store.storage.client.put_object(Bucket=store.storage.bucket, Key=store.segment_key("j1", 1), Body=b"ts")
    store.mark("j1", 1, {"frames": 300, "size": 2, "sha256": "x"})
    store.mark("j1", 1, {"frames": 1, "size": 1, "sha256": "y"})  # a second run's marker is dropped
    assert set(store.finished("j1")) == {1}
    assert store.finished("j1") == {1: {"frames": 300, "size": 2, "sha256": "x", "index": 1}}
    store.remove_segments(held)
    assert store.storage.keys("jobs/j1/segments/") == [
        "jobs/j1/segments/00001.json",
        "jobs/j1/segments/plan.json",
    ]
    store.forget("j1", 1)  # a bad segment: redone
    assert store.finished("j1") == {}


def test_a_stage_message_is_the_job_plus_its_stage() -> None:
    job = json.dumps(
        {"jobId": "j1", "taskType": "UPSCALE", "sourceS3Key": "a.mp4", "parameters": {"scale": 2}}
    )
    segment = json.loads(stage_body(job, "segment", 3))
    assert segment[STAGE] == {"stage": "segment", "index": 3} and segment["parameters"] == {"scale": 2}
    assert json.loads(stage_body(job, "merge"))[STAGE] == {"stage": "merge"}


def test_stage_messages_decode_and_bad_stages_are_refused() -> None:
    from worker.message import BadMessage, decode

    job = json.dumps({"jobId": "j1", "taskType": "UPSCALE", "sourceS3Key": "a.mp4"})
    decoded = decode(stage_body(job, "segment", 2))
    assert decoded.stage is not None and (decoded.stage.stage, decoded.stage.index) == ("segment", 2)
    assert decode(job).stage is None
    for stage in ({"stage": "segment", "index": -1}, {"stage": "explode"}, {"stage": "merge", "extra": 1}):
        with pytest.raises(BadMessage, match="vidworker"):
            decode(json.dumps({**json.loads(job), STAGE: stage}))
