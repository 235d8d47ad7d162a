"""A worker in an Auto Scaling group: instance metadata, scale-in protection, spot and scale-in notices.

Against a fake IMDSv2 service on loopback (tests/worker/fake_imds.py) and
moto's Auto Scaling, whose instances are real moto EC2 instances; moto lacks
CompleteLifecycleAction, so the fault proxy answers that one call and records it.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from tasks import Task, TaskContext, TaskResult
from tests.conftest import Clips
from tests.worker.fake_imds import FakeMetadata
from tests.worker.harness import (
    LIFECYCLE_COMPLETED,
    Stack,
    auto_scaling_group,
    inprocess_worker,
    one_job_world,
    wait_until,
)
from worker.autoscaling import GroupMember
from worker.consumer import ATTEMPTS
from worker.daemon import Worker
from worker.embedded import EmbeddedAWS
from worker.imds import InstanceMetadata, MetadataUnavailable, MetadataWatcher, Notice, spot_notice
from worker.settings import load


@pytest.fixture
def imds() -> Iterator[FakeMetadata]:
    fake = FakeMetadata(**{"instance-id": "i-0123456789abcdef0"})
    yield fake
    fake.stop()


def group(aws: EmbeddedAWS, name: str) -> str:
    """A one-instance Auto Scaling group in moto; its instance's id."""
    [instance] = auto_scaling_group(aws, name)
    return instance


def protected(aws: EmbeddedAWS, instance: str) -> bool:
    [found] = aws.client("autoscaling").describe_auto_scaling_instances(InstanceIds=[instance])[
        "AutoScalingInstances"
    ]
    return bool(found["ProtectedFromScaleIn"])


# ---------------------------------------------------------------------- instance metadata


def test_metadata_reads_with_a_session_token_and_renews_a_revoked_one(imds: FakeMetadata) -> None:
    metadata = InstanceMetadata(imds.endpoint)
    assert metadata.get("instance-id") == "i-0123456789abcdef0"
    assert metadata.get("spot/instance-action") is None  # 404: no notice
    imds.revoke()
    assert metadata.get("instance-id") == "i-0123456789abcdef0"
    assert [method for method, path in imds.requests if path == "/latest/api/token"] == ["PUT", "PUT"]
    assert all(path != "/latest/meta-data/instance-id" or method == "GET" for method, path in imds.requests)


def test_metadata_off_ec2_is_unavailable_not_a_hang(unused_port: int) -> None:
    started = time.monotonic()
    with pytest.raises(MetadataUnavailable):
        InstanceMetadata(f"http://127.0.0.1:{unused_port}").get("instance-id")
    assert time.monotonic() - started < 5


def test_a_spot_notice_carries_its_deadline() -> None:
    now = datetime(2026, 12, 3, 10, 0, 0, tzinfo=UTC)
    notice = spot_notice('{"action": "terminate", "time": "2026-12-03T10:02:00Z"}', now)
    assert notice is not None and notice.kind == "spot" and "terminate" in notice.detail
    assert notice.deadline is not None and 115 < notice.deadline - time.monotonic() <= 120
    assert spot_notice(None) is None
    unreadable = spot_notice("garbage")  # still a notice: the instance is going, when is unknown
    assert unreadable is not None and unreadable.deadline is not None


def test_the_watcher_reports_each_notice_once_and_a_present_one_before_start_returns(
    imds: FakeMetadata,
) -> None:
    seen: list[Notice] = []
    imds.items["autoscaling/target-lifecycle-state"] = "Terminated"
    watcher = MetadataWatcher(InstanceMetadata(imds.endpoint), seen.append, interval=0.05).start()
    try:
        assert [notice.kind for notice in seen] == ["lifecycle"]  # read synchronously at start
        when = (datetime.now(UTC) + timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
        imds.items["spot/instance-action"] = f'{{"action": "terminate", "time": "{when}"}}'
        assert wait_until(lambda: len(seen) == 2, 5)
        time.sleep(0.3)  # several more polls
        assert [notice.kind for notice in seen] == ["lifecycle", "spot"]
    finally:
        watcher.stop()


def test_the_watcher_off_ec2_logs_once_and_does_not_poll(
    unused_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="worker.imds")
    watcher = MetadataWatcher(
        InstanceMetadata(f"http://127.0.0.1:{unused_port}"), print, interval=0.01
    ).start()
    time.sleep(0.1)
    assert not watcher.available and not watcher._thread.is_alive()
    assert [r.levelname for r in caplog.records if "metadata unreachable" in r.message] == ["INFO"]


# ---------------------------------------------------------------------- the group


def test_protection_follows_the_worker_and_is_set_only_on_change(moto_server: EmbeddedAWS) -> None:
    name = f"g{uuid.uuid4().hex[:8]}"
    instance = group(moto_server, name)
    member = GroupMember(moto_server.client("autoscaling"), name, instance)
    member.protect(True)
    assert protected(moto_server, instance)
    member.client = None  # any further call would raise: an unchanged state makes none
    member.protect(True)
    member.client = moto_server.client("autoscaling")
    member.protect(False)
    assert not protected(moto_server, instance)


def test_a_failed_protection_call_is_retried_at_the_next_change_and_never_raises(
    moto_server: EmbeddedAWS,
) -> None:
    member = GroupMember(moto_server.client("autoscaling"), "no-such-group", "i-0000000000000000")
    member.protect(True)  # moto: the group does not exist
    assert member.protected is None


# ---------------------------------------------------------------------- the notice policy, in process


class NoParams(BaseModel):
    pass


class Paced(Task[NoParams]):
    """Reports progress every ``step`` seconds over ``steps`` steps; stops when cancelled."""

    name = "UPSCALE"
    params_model = NoParams

    def __init__(self, steps: int, step: float) -> None:
        self.steps, self.step = steps, step

    def run(self, source: Path, params: NoParams, context: TaskContext) -> TaskResult:
        from tasks import Cancelled, Progress

        for done in range(self.steps):
            if context.cancelled():
                raise Cancelled("shutting down")
            time.sleep(self.step)
            context.progress(Progress(done + 1, self.steps))
        output = context.work_dir / "out.mp4"
        output.write_bytes(b"video")
        return TaskResult(output=output, width=2, height=2, fps=1.0, frame_count=1, duration=1.0, audio=False,
                          device="cpu", model=None, encoder="copy", processing_seconds=1.0)  # fmt: skip


def paced_worker(aws: EmbeddedAWS, tmp_path: Path, task: Task[Any]) -> Worker:
    return inprocess_worker(aws, tmp_path, task, WORKER_SPOT_MARGIN_SECONDS="1")


@pytest.fixture
def aws(moto_server: EmbeddedAWS) -> EmbeddedAWS:
    return one_job_world(moto_server, "fl", "spot-job")


def run_until_notice(worker: Worker, notice_in: float) -> tuple[threading.Thread, list[int]]:
    handled: list[int] = []
    thread = threading.Thread(target=lambda: handled.append(worker.run(max_jobs=1)))
    thread.start()
    assert wait_until(lambda: worker.current is not None and worker.current.fraction >= 0.1, 20)
    worker.notice(Notice("spot", "spot terminate", deadline=time.monotonic() + notice_in))
    return thread, handled


def test_a_spot_notice_releases_a_job_that_would_not_finish_in_time(aws: EmbeddedAWS, tmp_path: Path) -> None:
    worker = paced_worker(aws, tmp_path, Paced(steps=100, step=0.2))  # 20 s of work, 3 s of notice
    thread, handled = run_until_notice(worker, 3.0)
    thread.join(20)
    assert handled == [1] and worker.stopping
    reply = aws.client("sqs").receive_message(QueueUrl=aws.queues["cpu"], MessageAttributeNames=["All"])
    [copy] = reply["Messages"]  # handed back at once, visible now, no try spent
    assert copy["MessageAttributes"][ATTEMPTS]["StringValue"] == "0"
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_spot_notice_lets_a_job_finish_that_will_end_well_inside_it(
    aws: EmbeddedAWS, tmp_path: Path
) -> None:
    worker = paced_worker(aws, tmp_path, Paced(steps=10, step=0.2))  # 2 s of work, 30 s of notice
    thread, handled = run_until_notice(worker, 30.0)
    thread.join(20)
    assert handled == [1] and worker.jobs_done == 1
    assert aws.client("s3").get_object(Bucket=aws.bucket, Key="jobs/spot-job/result.json")


# ---------------------------------------------------------------------- the daemon in a group, end to end


def in_a_group(stack: Stack, imds: FakeMetadata, clip: Path, job_id: str) -> tuple[str, str, dict[str, str]]:
    """A one-instance group that ``imds`` speaks for, and ``clip`` queued as ``job_id``.

    Returns the group's name, its instance and the variables of a worker in it.
    """
    name = f"g{uuid.uuid4().hex[:8]}"
    imds.items["instance-id"] = instance = group(stack.aws, name)
    imds.items["tags/instance/aws:autoscaling:groupName"] = name
    stack.proxy.stubs["CompleteLifecycleAction"] = LIFECYCLE_COMPLETED
    stack.upload(clip, f"uploads/{job_id}.mp4")
    stack.enqueue(job_id, f"uploads/{job_id}.mp4")
    env = {"WORKER_FLEET": "true", "WORKER_LIFECYCLE_HOOK": "vidworker-drain",
           "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.endpoint}  # fmt: skip
    return name, instance, env


@pytest.mark.slow
def test_scale_in_drains_the_job_then_completes_the_lifecycle_action(
    stack: Stack, clips: Clips, imds: FakeMetadata
) -> None:
    name, instance, env = in_a_group(stack, imds, clips("clip20"), "scalein")  # outlasts the checks
    worker = stack.start(**env)
    stack.wait_for_status("scalein", "PROCESSING")
    assert wait_until(lambda: protected(stack.aws, instance), 10)  # busy: not a scale-in candidate
    imds.items["autoscaling/target-lifecycle-state"] = "Terminated"
    assert worker.wait(90) == 0
    stack.wait_for_status("scalein", "COMPLETED", timeout=5)  # drained: finished, not abandoned
    assert not protected(stack.aws, instance)
    [call] = stack.proxy.stubbed
    assert call["LifecycleHookName"] == "vidworker-drain" and call["InstanceId"] == instance
    assert call["AutoScalingGroupName"] == name and call["LifecycleActionResult"] == "CONTINUE"
    text = worker.text()
    assert text.index("terminating this instance") < text.index("lifecycle hook vidworker-drain completed")


@pytest.mark.slow
def test_a_spot_notice_releases_a_long_job_at_once_and_the_next_worker_finishes_it(
    stack: Stack, clips: Clips, imds: FakeMetadata
) -> None:
    _, _, env = in_a_group(stack, imds, clips("clip60"), "spot")  # 600 frames: longer than a metadata poll
    worker = stack.start(**env, WORKER_SPOT_MARGIN_SECONDS="60")
    stack.wait_for_status("spot", "PROCESSING")
    when = (datetime.now(UTC) + timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ")  # inside the margin
    imds.items["spot/instance-action"] = f'{{"action": "terminate", "time": "{when}"}}'
    assert worker.wait(60) == 0
    assert "releasing it now" in worker.text() and "handing the message back" in worker.text()
    assert stack.proxy.stubbed == []  # a spot notice alone is not the group's lifecycle action
    done = stack.start(WORKER_SEGMENT_SECONDS="0")  # not in a group; whole
    assert stack.wait_for_status("spot", "COMPLETED", timeout=120)["attempt"] == 1
    done.signal(signal.SIGTERM)


@pytest.mark.slow
def test_a_worker_started_on_a_terminating_instance_takes_no_job(
    stack: Stack, clips: Clips, imds: FakeMetadata
) -> None:
    _, _, env = in_a_group(stack, imds, clips("audio"), "late")
    imds.items["autoscaling/target-lifecycle-state"] = "Terminated"
    worker = stack.start(**env)
    assert worker.wait(60) == 0
    assert stack.queue_counts("cpu") == (1, 0)  # untouched
    assert len(stack.proxy.stubbed) == 1


@pytest.mark.slow
def test_fleet_mode_off_ec2_runs_jobs_says_so_once_and_signs_with_the_secret_from_ssm(
    stack: Stack, clips: Clips, unused_port: int
) -> None:
    name = f"/vidworker/{uuid.uuid4().hex[:8]}/callback-secret"
    stack.aws.client("ssm").put_parameter(Name=name, Value=stack.secret, Type="SecureString")
    stack.upload(clips("audio"), "uploads/o.mp4")
    stack.enqueue("offec2", "uploads/o.mp4")
    worker = stack.start(
        WORKER_FLEET="true", AWS_EC2_METADATA_SERVICE_ENDPOINT=f"http://127.0.0.1:{unused_port}",
        CALLBACK_SECRET="", CALLBACK_SECRET_PARAMETER=name,
    )  # fmt: skip
    stack.wait_for_status("offec2", "COMPLETED")
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert worker.text().count("instance metadata unreachable") == 1
    assert all(item.signature_ok for item in stack.receiver.received)  # signed with the SSM value


def test_a_missing_secret_parameter_is_bad_configuration(
    aws: EmbeddedAWS, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.__main__ import _with_secret
    from worker.embedded import CREDENTIALS
    from worker.settings import ConfigError

    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    settings = load(aws.environment(CALLBACK_SECRET_PARAMETER="/vidworker/none"), cuda=False)
    with pytest.raises(ConfigError, match="no parameter"):
        _with_secret(settings)
    with pytest.raises(ConfigError, match="not both"):
        load(aws.environment(CALLBACK_SECRET_PARAMETER="/vidworker/none", CALLBACK_SECRET="x"), cuda=False)


def test_a_scale_in_notice_after_sigterm_keeps_draining_rather_than_aborting(
    aws: EmbeddedAWS, tmp_path: Path
) -> None:
    worker = paced_worker(aws, tmp_path, Paced(steps=10, step=0.2))
    handled: list[int] = []
    thread = threading.Thread(target=lambda: handled.append(worker.run(max_jobs=1)))
    thread.start()
    assert wait_until(lambda: worker.current is not None and worker.current.fraction >= 0.1, 20)
    worker.stop()  # SIGTERM: drain
    worker.notice(Notice("lifecycle", "the Auto Scaling group is terminating this instance"))
    thread.join(20)
    assert handled == [1] and worker.jobs_done == 1  # finished, not handed back
