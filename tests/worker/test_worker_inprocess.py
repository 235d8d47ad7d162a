"""The Worker in this process against moto's server, with tasks that fail as a broken GPU would."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from models import DeviceError, DeviceLost
from tasks import (
    InvalidParameters,
    Task,
    TaskContext,
    TaskResult,
    UpscaleParams,
    UpscaleTask,
)
from tests.conftest import Clips
from tests.worker.harness import inprocess_worker, one_job_world
from worker.consumer import ATTEMPTS
from worker.daemon import EXIT_DEVICE_LOST, Worker
from worker.embedded import EmbeddedAWS


class NoParams(BaseModel):
    pass


class Broken(Task[NoParams]):
    """Raises ``error`` instead of running."""

    name = "UPSCALE"
    params_model = NoParams

    def __init__(self, error: Exception) -> None:
        self.error = error

    def run(self, source: Path, params: NoParams, context: TaskContext) -> TaskResult:
        raise self.error


def worker_for(
    aws: EmbeddedAWS, tmp_path: Path, error: Exception, task: Task[Any] | None = None, **resources: Any
) -> Worker:
    return inprocess_worker(aws, tmp_path, task or Broken(error), resources=resources)


@pytest.fixture
def aws(moto_server: EmbeddedAWS) -> EmbeddedAWS:
    return one_job_world(moto_server, "ip", "gpu-job")


def visible(aws: EmbeddedAWS) -> list[dict[str, Any]]:
    reply = aws.client("sqs").receive_message(
        QueueUrl=aws.queues["cpu"], MaxNumberOfMessages=10, MessageAttributeNames=["All"],
        MessageSystemAttributeNames=["ApproximateReceiveCount"], WaitTimeSeconds=0,
    )  # fmt: skip
    messages: list[dict[str, Any]] = reply.get("Messages", [])
    return messages


def test_a_lost_gpu_hands_the_job_back_and_asks_for_a_fresh_process(aws: EmbeddedAWS, tmp_path: Path) -> None:
    worker = worker_for(aws, tmp_path, DeviceLost("CUDA error: an illegal memory access"))
    assert worker.run(max_jobs=5) == 1  # stops after the first: no further job in a broken context
    assert worker.exit_code == EXIT_DEVICE_LOST
    [copy] = visible(aws)
    assert copy["Attributes"]["ApproximateReceiveCount"] == "1"  # a fresh copy...
    assert copy["MessageAttributes"][ATTEMPTS]["StringValue"] == "0"  # ...that spent no try
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_device_error_is_retried_later_and_the_worker_goes_on(aws: EmbeddedAWS, tmp_path: Path) -> None:
    worker = worker_for(aws, tmp_path, DeviceError("CUDA error: unspecified launch failure"))
    assert worker.run(max_jobs=1) == 1
    assert worker.exit_code == 0 and not worker.stopping
    assert visible(aws) == []  # released with a backoff: invisible for now, not deleted
    counts = aws.client("sqs").get_queue_attributes(
        QueueUrl=aws.queues["cpu"], AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    assert counts["ApproximateNumberOfMessagesNotVisible"] == "1"


def test_a_fifo_hand_back_keeps_the_group_and_gets_a_fresh_deduplication_id(
    moto_server: EmbeddedAWS, tmp_path: Path
) -> None:
    """AWS drops a repeated deduplication id for 5 minutes (moto does not): test the id itself."""
    world = EmbeddedAWS.__new__(EmbeddedAWS)
    world.server, world.endpoint = moto_server.server, moto_server.endpoint
    world.queues, world.dead_letters = {}, {}
    world.provision(f"ff{uuid.uuid4().hex[:10]}", visibility=30, max_receives=3, fifo=True)
    world.client("s3").put_object(Bucket=world.bucket, Key="uploads/a.mp4", Body=b"video")
    world.client("sqs").send_message(
        QueueUrl=world.queues["cpu"], MessageGroupId="user-7", MessageDeduplicationId="first",
        MessageBody='{"jobId": "gpu-job", "taskType": "UPSCALE", "sourceS3Key": "uploads/a.mp4"}',
    )  # fmt: skip
    worker = worker_for(world, tmp_path, DeviceLost("CUDA error: an illegal memory access"))
    assert worker.run(max_jobs=1) == 1
    reply = world.client("sqs").receive_message(
        QueueUrl=world.queues["cpu"], MessageAttributeNames=["All"], WaitTimeSeconds=0,
        MessageSystemAttributeNames=["MessageGroupId", "MessageDeduplicationId"],
    )  # fmt: skip
    [copy] = reply["Messages"]
    assert copy["Attributes"]["MessageGroupId"] == "user-7"
    assert copy["Attributes"]["MessageDeduplicationId"] not in ("first", "")
    assert copy["MessageAttributes"][ATTEMPTS]["StringValue"] == "0"


class Recording(UpscaleTask):
    """UPSCALE that records the parameters it was given, then stops the job (permanently)."""

    def __init__(self) -> None:
        self.seen: list[UpscaleParams] = []

    def run(self, source: Path, params: UpscaleParams, context: TaskContext) -> TaskResult:
        self.seen.append(params)
        raise InvalidParameters("recorded")


def test_a_job_that_names_no_model_gets_its_tiers_default(
    aws: EmbeddedAWS, tmp_path: Path, clips: Clips
) -> None:
    aws.client("s3").upload_file(str(clips("clip6")), aws.bucket, "uploads/a.mp4")  # probed by the planner
    task = Recording()
    tiers = {"gpu": "realesrgan-x4plus", "cpu": "realesr-general-x4v3"}
    worker = worker_for(aws, tmp_path, RuntimeError(), task=task, default_models=tiers)
    assert worker.run(max_jobs=1) == 1
    assert [(params.model, params.device) for params in task.seen] == [("realesr-general-x4v3", "cpu")]
