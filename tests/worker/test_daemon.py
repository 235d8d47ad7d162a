"""The daemon end to end: a real subprocess, moto's server, a callback receiver, real ffmpeg and weights."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.clips import ffprobe, stream
from tests.conftest import Clips
from tests.media.test_visualize import make_audio, make_cover
from tests.worker.harness import Stack, wait_until

pytestmark = pytest.mark.slow


def test_happy_path_signed_callbacks_output_and_result_record(any_stack: Stack, clips: Clips) -> None:
    stack = any_stack
    stack.upload(clips("audio"), "uploads/u1/clip.mp4")
    stack.enqueue("job-1", "uploads/u1/clip.mp4", userId=7)
    worker = stack.start()
    done = stack.wait_for_status("job-1", "COMPLETED")
    key = "processed/upscaled/job-1/clip_upscaled.mp4"
    assert done["outputS3Key"] == key and done["outputBucket"] == stack.aws.bucket
    assert done["metadata"]["frameCount"] == 10 and done["metadata"]["width"] == 128
    assert done["downloadUrl"].startswith(stack.proxy.endpoint) and "Signature" in done["downloadUrl"]
    assert stack.keys() == [key]
    assert stack.keys("jobs/") == ["jobs/job-1/result.json", "jobs/job-1/terminal.json"]
    record = json.loads(
        stack.aws.client("s3")
        .get_object(Bucket=stack.aws.bucket, Key="jobs/job-1/result.json")["Body"]
        .read()
    )
    assert record["outputS3Key"] == key and record["fileSize"] == done["fileSize"]
    assert all(item.signature_ok for item in stack.receiver.of("job-1"))
    events = [item.headers["X-Event-Id"] for item in stack.receiver.of("job-1")]
    assert len(set(events)) == len(events)
    assert wait_until(lambda: stack.queue_counts("cpu") == (0, 0), 10)
    local = stack.root / "out.mp4"
    stack.aws.client("s3").download_file(stack.aws.bucket, key, str(local))
    video = stream(ffprobe(local, count=True), "video")
    assert video is not None and int(video["nb_read_frames"]) == 10
    assert worker.stop() == 0


def test_cpu_host_leaves_the_gpu_queue_alone_and_gpu_jobs_fall_back_when_served(
    stack: Stack, clips: Clips
) -> None:
    stack.upload(clips("silent"), "uploads/a.mp4")
    stack.enqueue("gpu-job", "uploads/a.mp4", queue="gpu")
    stack.enqueue("cpu-job", "uploads/a.mp4", queue="cpu")
    worker = stack.start()
    stack.wait_for_status("cpu-job", "COMPLETED")
    assert stack.queue_counts("gpu") == (1, 0)  # WORKER_QUEUES=cpu: never touched
    worker.stop()
    stack.start(WORKER_QUEUES="gpu,cpu")
    done = stack.wait_for_status("gpu-job", "COMPLETED")
    assert done["metadata"]["device"] == "cpu"
    assert any("CUDA is not available" in warning for warning in done["metadata"]["warnings"])
    assert done["metadata"]["runtime"] == "openvino"  # the CPU's runtime, WORKER_RUNTIME=auto
    assert 0 <= done["metadata"]["framesReused"] <= 10 and 0.0 <= done["metadata"]["skipRate"] <= 1.0


@pytest.mark.parametrize(
    ("body", "job_id", "code"),
    [
        ("{not json", None, None),
        (json.dumps({"jobId": "bad-task", "taskType": "TRANSCODE", "sourceS3Key": "uploads/x.mp4"}),
         "bad-task", "INPUT_INVALID"),
        (json.dumps({"jobId": "no-source", "taskType": "UPSCALE", "sourceS3Key": "uploads/missing.mp4",
                     "parameters": {"model": "realesr-animevideov3"}}), "no-source", "SOURCE_NOT_FOUND"),
        (json.dumps({"jobId": "escape", "taskType": "UPSCALE", "sourceS3Key": "../../etc/passwd"}),
         "escape", "INPUT_INVALID"),
        (json.dumps({"jobId": "other-bucket", "taskType": "UPSCALE", "sourceS3Key": "a.mp4",
                     "sourceBucket": "someone-elses", "parameters": {"model": "realesr-animevideov3"}}),
         "other-bucket", "INPUT_INVALID"),
        (json.dumps({"jobId": "bad-scale", "taskType": "UPSCALE", "sourceS3Key": "a.mp4",
                     "parameters": {"scaleFactor": 3}}), "bad-scale", "INPUT_INVALID"),
    ],
)  # fmt: skip
def test_permanent_failures_are_not_retried(
    stack: Stack, body: str, job_id: str | None, code: str | None
) -> None:
    stack.send_raw(body)
    worker = stack.start()
    if job_id is not None:
        failed = stack.wait_for_status(job_id, "FAILED")
        assert failed["errorCode"] == code and failed["retryable"] is False and failed["errorMessage"]
    # 60 s: the worker's start-up (torch, the runtime) comes first, slow on two busy cores
    assert wait_until(lambda: stack.queue_counts("cpu") == (0, 0), 60), "message not deleted"
    assert stack.queue_counts("cpu", dead=True) == (0, 0)
    assert stack.keys() == []
    if job_id is None:
        assert wait_until(lambda: "refused message" in worker.text(), 10)
        assert stack.receiver.received == []


def test_transient_s3_errors_are_retried_then_succeed(stack: Stack, clips: Clips) -> None:
    stack.upload(clips("audio"), "uploads/flaky.mp4")
    stack.proxy.fail(lambda method, path: method == "GET" and "/uploads/flaky.mp4" in path, budget=6)
    stack.enqueue("flaky", "uploads/flaky.mp4")
    worker = stack.start()
    done = stack.wait_for_status("flaky", "COMPLETED", timeout=120)
    assert done["attempt"] >= 2 and stack.proxy.failed == 6  # botocore's own retries use some of the 6
    assert stack.receiver.of("flaky", "FAILED") == []
    assert "STORAGE_ERROR" in worker.text()


def test_repeated_transient_failure_ends_in_the_dead_letter_queue(stack: Stack, clips: Clips) -> None:
    stack.upload(clips("audio"), "uploads/never.mp4")
    stack.proxy.fail(lambda method, path: method == "GET" and "/uploads/never.mp4" in path, budget=10_000)
    stack.enqueue("never", "uploads/never.mp4")
    stack.start()
    failed = stack.wait_for_status("never", "FAILED", timeout=120)
    assert failed["attempt"] == 3 and failed["retryable"] is True and failed["errorCode"] == "STORAGE_ERROR"
    assert wait_until(lambda: stack.queue_counts("cpu", dead=True)[0] == 1, 30)
    assert stack.keys() == []


def test_refused_callback_target_fails_the_job_without_calling_it(stack: Stack, clips: Clips) -> None:
    stack.upload(clips("audio"), "uploads/c.mp4")
    stack.enqueue("ssrf", "uploads/c.mp4", callbackUrl="http://169.254.169.254/latest/meta-data/")
    worker = stack.start()
    assert wait_until(lambda: stack.queue_counts("cpu") == (0, 0), 20)
    assert stack.receiver.received == [] and stack.keys() == []
    assert "CALLBACK_REFUSED" in worker.text()


def test_backend_cancel_stops_the_job(stack: Stack, clips: Clips) -> None:
    stack.upload(clips("clip20"), "uploads/long.mp4")
    stack.receiver.answer = lambda body: (409, {}) if body.get("status") == "PROCESSING" else (200, {})
    stack.enqueue("cancel-me", "uploads/long.mp4")
    stack.start()
    cancelled = stack.wait_for_status("cancel-me", "CANCELLED")
    assert cancelled["errorCode"] == "CANCELLED"
    assert wait_until(lambda: stack.queue_counts("cpu") == (0, 0), 15)
    assert stack.keys() == []


def test_health_and_metrics_endpoints(stack: Stack, clips: Clips) -> None:
    stack.upload(clips("audio"), "uploads/h.mp4")
    stack.enqueue("health", "uploads/h.mp4")
    worker = stack.start()
    stack.wait_for_status("health", "COMPLETED")
    assert wait_until(lambda: "health and metrics on port" in worker.text(), 10)
    port = int(worker.text().split("health and metrics on port ")[1].split()[0])

    def health() -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as reply:
            found: dict[str, Any] = json.loads(reply.read())
            return found

    assert wait_until(lambda: health()["jobsDone"] == 1, 10)  # the callback goes out just before the delete
    assert health()["status"] == "ok" and health()["device"] == "cpu" and health()["currentJob"] is None
    assert health()["ffmpeg"].startswith("ffmpeg version") and health()["nvenc"] is False
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        metrics = reply.read().decode()
    assert 'vidworker_jobs_total{outcome="COMPLETED",task="UPSCALE"} 1.0' in metrics


def test_sqs_outage_backs_off_without_a_busy_loop_then_recovers(stack: Stack, clips: Clips) -> None:
    stack.upload(clips("audio"), "uploads/o.mp4")
    stack.enqueue("outage", "uploads/o.mp4")
    stack.proxy.fail(lambda method, path: method == "POST" and path == "/", budget=10_000)  # every SQS call
    worker = stack.start()
    assert wait_until(lambda: "receive failed" in worker.text(), 30)
    before = len(stack.proxy.seen)
    time.sleep(4)
    assert len(stack.proxy.seen) - before < 20, "busy loop against an unreachable SQS"
    stack.proxy.fail(lambda method, path: False, budget=0)
    stack.wait_for_status("outage", "COMPLETED", timeout=120)


def test_callback_endpoint_down_keeps_the_output_and_settles_the_message(stack: Stack, clips: Clips) -> None:
    stack.upload(clips("audio"), "uploads/cb.mp4")
    stack.receiver.answer = lambda body: (500, {})
    stack.enqueue("cb-down", "uploads/cb.mp4")
    worker = stack.start()
    assert wait_until(lambda: "COMPLETED callback not delivered" in worker.text(), 90), worker.text()[-2000:]
    assert 2 <= len(stack.receiver.of("cb-down", "COMPLETED")) <= 5  # bounded retries
    assert stack.keys() == ["processed/upscaled/cb-down/cb_upscaled.mp4"]
    assert "jobs/cb-down/result.json" in stack.keys("jobs/")
    assert wait_until(lambda: stack.queue_counts("cpu") == (0, 0), 10)


def test_json_logs_carry_the_job_id(stack: Stack, clips: Clips) -> None:
    stack.upload(clips("audio"), "uploads/j.mp4")
    stack.enqueue("logged", "uploads/j.mp4")
    worker = stack.start(LOG_FORMAT="json")
    stack.wait_for_status("logged", "COMPLETED")
    worker.stop()
    records = [json.loads(line) for line in worker.text().splitlines() if line.startswith("{")]
    mine = [record for record in records if record["job_id"] == "logged"]
    assert any("completed" in record["message"] for record in mine)
    assert all({"time", "level", "logger", "message"} <= record.keys() for record in records)
    assert "s3cret-for-tests" not in worker.text()


def test_a_requested_output_key_holding_another_jobs_result_is_refused(stack: Stack, clips: Clips) -> None:
    stack.upload(clips("audio"), "uploads/s.mp4")
    stack.enqueue("first", "uploads/s.mp4", outputS3Key="processed/shared.mp4")
    worker = stack.start()
    stack.wait_for_status("first", "COMPLETED")
    stack.enqueue("second", "uploads/s.mp4", outputS3Key="processed/shared.mp4")
    failed = stack.wait_for_status("second", "FAILED")
    assert failed["errorCode"] == "INPUT_INVALID" and "first" in failed["errorMessage"]
    assert stack.keys() == ["processed/shared.mp4"]
    assert len(stack.receiver.of("first", "COMPLETED")) == 1
    worker.stop()


def test_caption_and_visualizer_jobs_fetch_their_attachments_and_bad_ones_are_refused(
    stack: Stack, clips: Clips, tmp_path: Path
) -> None:
    scenario = {"cues": [{"start": 0.0, "end": 1.0, "text": "안녕하세요 hello", "animation": "fade"}]}
    stack.upload(clips("audio"), "uploads/talk.mp4")
    stack.upload(make_audio("mp3", tmp_path, seconds=1.5), "uploads/song.mp3")
    stack.upload(make_cover("png", tmp_path), "covers/song.png")
    visualize = {"coverS3Key": "covers/song.png", "resolution": "320x180", "fps": 10}
    stack.enqueue("vis", "uploads/song.mp3", taskType="VISUALIZE", parameters=visualize)
    stack.aws.client("s3").put_object(
        Bucket=stack.aws.bucket, Key="scenarios/talk.json", Body=json.dumps(scenario).encode()
    )
    captions = {"taskType": "CAPTION_RENDER"}
    stack.enqueue(
        "cap-s3", "uploads/talk.mp4", **captions, parameters={"scenarioS3Key": "scenarios/talk.json"}
    )
    stack.enqueue("cap-inline", "uploads/talk.mp4", **captions, parameters={"scenario": scenario,
                  "options": {"width": 128}})  # fmt: skip
    stack.enqueue("cap-escape", "uploads/talk.mp4", **captions, parameters={"scenarioS3Key": "../etc/passwd"})
    stack.enqueue(
        "cap-missing", "uploads/talk.mp4", **captions, parameters={"scenarioS3Key": "scenarios/no.json"}
    )
    stack.enqueue("cap-invalid", "uploads/talk.mp4", **captions,
                  parameters={"scenario": {"cues": [{"start": 2, "end": 1, "text": "x"}]}})  # fmt: skip
    worker = stack.start()
    from_s3 = stack.wait_for_status("cap-s3", "COMPLETED")
    assert from_s3["outputS3Key"] == "processed/captioned/cap-s3/talk_captioned.mp4"
    assert from_s3["metadata"]["frameCount"] == 10 and from_s3["metadata"]["audio"] is True
    assert "model" not in from_s3["metadata"] and from_s3["metadata"]["encoder"] == "libx264"
    visualized = stack.wait_for_status("vis", "COMPLETED")
    assert visualized["outputS3Key"] == "processed/visualized/vis/song_visualized.mp4"
    assert (visualized["metadata"]["width"], visualized["metadata"]["height"]) == (320, 180)
    assert abs(visualized["duration"] - 1.5) <= 0.15 and visualized["metadata"]["audio"] is True
    inline = stack.wait_for_status("cap-inline", "COMPLETED")
    assert (inline["metadata"]["width"], inline["metadata"]["height"]) == (128, 72)
    for job_id, code in (("cap-escape", "INPUT_INVALID"), ("cap-missing", "SOURCE_NOT_FOUND"),
                         ("cap-invalid", "INPUT_INVALID")):  # fmt: skip
        failed = stack.wait_for_status(job_id, "FAILED")
        assert failed["errorCode"] == code and failed["retryable"] is False, failed
    assert wait_until(lambda: stack.queue_counts("cpu") == (0, 0), 15)
    assert stack.keys() == [
        "processed/captioned/cap-inline/talk_captioned.mp4", "processed/captioned/cap-s3/talk_captioned.mp4",
        "processed/visualized/vis/song_visualized.mp4",
    ]  # fmt: skip
    assert "cues[0].end" in stack.wait_for_status("cap-invalid", "FAILED")["errorMessage"]
    assert worker.stop() == 0
