"""The job message (spec §3): decoding, what a bad one recovers, the callback body and the schemas."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from pydantic.alias_generators import to_camel

from worker.message import BadMessage, Callback, Job, Metadata, Status, decode, schemas

CAMEL: dict[str, Any] = {
    "jobId": "3f0c-42",
    "userId": 123,
    "taskType": "UPSCALE",
    "sourceS3Key": "uploads/user123/video.final.mp4",
    "sourceBucket": "echoshotx-videos",
    "outputS3Key": "processed/custom/out.mp4",
    "callbackUrl": "https://backend.example/api/jobs/callback",
    "parameters": {"scaleFactor": 2, "model": "realesr-animevideov3"},
    "status": "QUEUED",
}


def body(**fields: Any) -> str:
    message = {"jobId": "j1", "taskType": "UPSCALE", "sourceS3Key": "uploads/a.mp4", **fields}
    return json.dumps({key: value for key, value in message.items() if value is not None})


def bad(raw: str) -> BadMessage:
    with pytest.raises(BadMessage) as caught:
        decode(raw)
    assert caught.value.code == "INPUT_INVALID"
    assert caught.value.retryable is False
    return caught.value


def test_camel_case_message() -> None:
    job = decode(json.dumps(CAMEL))
    assert job.job_id == "3f0c-42"
    assert job.user_id == "123"
    assert job.task_type == "UPSCALE"
    assert job.source_s3_key == "uploads/user123/video.final.mp4"
    assert job.source_bucket == "echoshotx-videos"
    assert job.output_s3_key == "processed/custom/out.mp4"
    assert job.callback_url == "https://backend.example/api/jobs/callback"
    assert job.parameters == {"scaleFactor": 2, "model": "realesr-animevideov3"}
    assert job.stem == "video.final"


def test_snake_case_message_decodes_to_the_same_job() -> None:
    snake = {
        "job_id": "3f0c-42",
        "user_id": 123,
        "task_type": "UPSCALE",
        "source_s3_key": "uploads/user123/video.final.mp4",
        "source_bucket": "echoshotx-videos",
        "output_s3_key": "processed/custom/out.mp4",
        "callback_url": "https://backend.example/api/jobs/callback",
        "parameters": {"scaleFactor": 2, "model": "realesr-animevideov3"},
    }
    assert decode(json.dumps(snake)) == decode(json.dumps(CAMEL))


def test_numeric_ids_become_strings_and_optional_fields_default() -> None:
    job = decode(json.dumps({"jobId": 42, "userId": 7, "taskType": "caption_render", "sourceS3Key": "a.mp4"}))
    assert (job.job_id, job.user_id) == ("42", "7")
    assert job.task_type == "caption_render"  # kept as sent; the task registry matches it
    assert job.source_bucket is None
    assert job.output_s3_key is None
    assert job.callback_url is None
    assert job.parameters == {}


def test_unknown_fields_are_ignored() -> None:
    job = decode(body(status="QUEUED", priority=5, createdAt="2026-01-01T00:00:00Z"))
    assert not hasattr(job, "status")
    assert job.model_dump().keys() == Job.model_fields.keys()


def test_job_is_frozen() -> None:
    job = decode(body())
    with pytest.raises(ValidationError):
        job.job_id = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("key", "stem"),
    [
        ("uploads/a/clip.mp4", "clip"),
        ("clip", "clip"),
        ("uploads/.hidden", ".hidden"),
        ("uploads/archive.tar.gz", "archive.tar"),
        ("uploads/영상.mov", "영상"),
    ],
)
def test_stem(key: str, stem: str) -> None:
    assert decode(body(sourceS3Key=key)).stem == stem


@pytest.mark.parametrize(
    "raw",
    ["not json", "", "{", "[1, 2]", '"a string"', "42", "null"],
    ids=["text", "empty", "truncated", "array", "string", "number", "null"],
)
def test_not_a_json_object(raw: str) -> None:
    error = bad(raw)
    assert error.job_id is None
    assert error.callback_url is None


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"jobId": None}, "job_id"),
        ({"taskType": None}, "task_type"),
        ({"sourceS3Key": None}, "source_s3_key"),
        ({"jobId": ""}, "job_id"),
        ({"taskType": ""}, "task_type"),
        ({"jobId": True}, "job_id"),
        ({"userId": False}, "user_id"),
        ({"jobId": "a/b"}, "job_id"),
        ({"jobId": ".."}, "job_id"),
        ({"jobId": ".hidden"}, "job_id"),
        ({"jobId": "job 1"}, "job_id"),
        ({"jobId": "x" * 129}, "job_id"),
        ({"sourceS3Key": "../../etc/x"}, "source_s3_key"),
        ({"sourceS3Key": "uploads/../x.mp4"}, "source_s3_key"),
        ({"sourceS3Key": "/abs/x.mp4"}, "source_s3_key"),
        ({"sourceS3Key": "a//b"}, "source_s3_key"),
        ({"sourceS3Key": "a/"}, "source_s3_key"),
        ({"sourceS3Key": "a\x00b.mp4"}, "source_s3_key"),
        ({"sourceS3Key": "k" * 1025}, "source_s3_key"),
        ({"sourceS3Key": "é" * 513}, "source_s3_key"),  # 513 characters, 1026 bytes
        ({"outputS3Key": "../out.mp4"}, "output_s3_key"),
        ({"callbackUrl": "https://x/" + "p" * 2048}, "callback_url"),
        ({"parameters": [1]}, "parameters"),
    ],
)
def test_invalid_fields_are_bad_messages(fields: dict[str, Any], problem: str) -> None:
    error = bad(body(**fields))  # a None field is left out of the body
    assert problem in str(error) or to_camel(problem) in str(error), str(error)


def test_longest_valid_key_is_accepted() -> None:
    assert decode(body(sourceS3Key="k" * 1024)).source_s3_key == "k" * 1024


def test_bad_message_recovers_job_id_and_callback() -> None:
    error = bad(body(jobId="j-7", sourceS3Key="../x", callbackUrl="https://backend.example/cb"))
    assert error.job_id == "j-7"
    assert error.callback_url == "https://backend.example/cb"


def test_bad_message_recovers_snake_case_and_numeric_job_id() -> None:
    raw = json.dumps({"job_id": 17, "callback_url": "https://backend.example/cb", "task_type": "UPSCALE"})
    error = bad(raw)
    assert error.job_id == "17"
    assert error.callback_url == "https://backend.example/cb"


def test_bad_message_recovers_nothing_unreadable() -> None:
    error = bad(json.dumps({"jobId": True, "callbackUrl": 5, "taskType": "UPSCALE", "sourceS3Key": "a"}))
    assert error.job_id is None
    assert error.callback_url is None


def test_callback_body_is_camel_case_without_none_fields() -> None:
    callback = Callback(
        job_id="j1",
        status=Status.COMPLETED,
        progress=100,
        message="done",
        output_bucket="videos",
        output_s3_key="processed/upscaled/j1/a_upscaled.mp4",
        download_url="https://s3.example/signed",
        file_size=1234,
        duration=2.5,
        metadata=Metadata(
            width=1280,
            height=960,
            fps=30.0,
            frame_count=75,
            duration=2.5,
            audio=True,
            device="cpu",
            model="realesr-animevideov3",
            encoder="libx264",
            processing_seconds=1.5,
        ),
        attempt=2,
    )
    sent = callback.body()
    assert set(sent) == {
        "jobId",
        "status",
        "progress",
        "message",
        "timestamp",
        "outputBucket",
        "outputS3Key",
        "downloadUrl",
        "fileSize",
        "duration",
        "metadata",
        "attempt",
    }
    assert sent["status"] == "COMPLETED"
    assert sent["outputS3Key"] == "processed/upscaled/j1/a_upscaled.mp4"
    assert sent["metadata"]["frameCount"] == 75
    assert sent["metadata"]["processingSeconds"] == 1.5
    assert sent["metadata"]["warnings"] == []
    json.dumps(sent)  # plain JSON types only


def test_failure_callback_body() -> None:
    sent = Callback(
        job_id="j1",
        status=Status.FAILED,
        message="bad input",
        error_code="INPUT_INVALID",
        error_message="source_s3_key: must be relative",
        retryable=False,
    ).body()
    assert sent["errorCode"] == "INPUT_INVALID"
    assert sent["errorMessage"] == "source_s3_key: must be relative"
    assert sent["retryable"] is False
    assert (sent["progress"], sent["attempt"]) == (0, 1)
    assert not {"downloadUrl", "metadata", "outputS3Key", "fileSize"} & set(sent)


def test_callback_timestamp_is_iso_utc_with_z() -> None:
    stamp = Callback(job_id="j1", status=Status.PROCESSING).body()["timestamp"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamp)
    when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert abs(datetime.now(UTC) - when) < timedelta(minutes=5)


@pytest.mark.parametrize("progress", [0, 55, 100])
def test_progress_in_bounds(progress: int) -> None:
    assert Callback(job_id="j1", status=Status.PROCESSING, progress=progress).body()["progress"] == progress


@pytest.mark.parametrize("progress", [-1, 101])
def test_progress_out_of_bounds(progress: int) -> None:
    with pytest.raises(ValidationError):
        Callback(job_id="j1", status=Status.PROCESSING, progress=progress)


def test_callback_schema_names_the_callback_fields() -> None:
    callback = schemas()["callback"]
    expected = {
        "jobId",
        "status",
        "progress",
        "message",
        "timestamp",
        "outputBucket",
        "outputS3Key",
        "downloadUrl",
        "fileSize",
        "sha256",
        "duration",
        "metadata",
        "errorCode",
        "errorMessage",
        "retryable",
        "attempt",
    }
    assert set(callback["properties"]) == expected
    assert set(callback["required"]) >= {"jobId", "status"}
    assert callback["properties"]["progress"]["minimum"] == 0
    assert callback["properties"]["progress"]["maximum"] == 100
    json.dumps(schemas())


def test_job_schema_uses_the_camel_case_names_spring_sends() -> None:
    job = schemas()["job"]
    assert job["type"] == "object"
    assert set(job["properties"]) == {
        "jobId",
        "userId",
        "taskType",
        "sourceS3Key",
        "sourceBucket",
        "outputS3Key",
        "callbackUrl",
        "parameters",
    }
    assert set(job["required"]) == {"jobId", "taskType", "sourceS3Key"}
