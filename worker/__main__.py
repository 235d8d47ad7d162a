"""``python -m worker run | check | enqueue | schema`` (spec §9).

Signals are wired here, not in the worker: the first SIGTERM/SIGINT is a warm
stop (finish or drain the running job), a second one a cold stop (abort it
and release its message). Exit status 0 after a clean stop, 2 on bad
configuration, 1 when ``check`` finds a problem.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import signal
import sys
import uuid
from pathlib import Path
from types import FrameType
from typing import Any

from worker.message import schemas
from worker.settings import ConfigError, Settings, load

log = logging.getLogger("worker")


def _clients(settings: Settings) -> tuple[Any, Any]:
    """SQS and S3 clients; throttling and 5xx are retried by botocore's standard retry mode alone."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(region_name=settings.region)
    config = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=10, read_timeout=60)
    return (
        session.client("sqs", endpoint_url=settings.endpoint_url, config=config),
        session.client("s3", endpoint_url=settings.endpoint_url, config=config),
    )


def _settings() -> Settings:
    import torch

    return load(cuda=torch.cuda.is_available())


def _with_secret(settings: Settings) -> Settings:
    """The callback secret read from SSM Parameter Store when CALLBACK_SECRET_PARAMETER names it.

    A parameter that does not exist is bad configuration (exit 2); SSM not
    answering is not, and raises, so that systemd starts the worker again later.
    """
    if settings.callback_secret_parameter is None:
        return settings
    import boto3

    ssm = boto3.session.Session(region_name=settings.region).client("ssm", endpoint_url=settings.endpoint_url)
    try:
        reply = ssm.get_parameter(Name=settings.callback_secret_parameter, WithDecryption=True)
    except ssm.exceptions.ParameterNotFound:
        raise ConfigError(
            f"CALLBACK_SECRET_PARAMETER: no parameter {settings.callback_secret_parameter!r}"
        ) from None
    return settings.model_copy(update={"callback_secret": reply["Parameter"]["Value"]})


def _fleet(settings: Settings) -> tuple[Any, Any]:
    """(instance metadata, this instance in its Auto Scaling group), when WORKER_FLEET is on and found.

    Off EC2 neither is: said once, not an error.
    """
    if not settings.fleet:
        return None, None
    import boto3

    from worker.autoscaling import GroupMember
    from worker.imds import InstanceMetadata, MetadataUnavailable

    metadata = InstanceMetadata(settings.metadata_endpoint)
    try:
        instance = metadata.get("instance-id")
        group = settings.autoscaling_group or metadata.get("tags/instance/aws:autoscaling:groupName")
    except MetadataUnavailable as error:
        log.info("WORKER_FLEET: instance metadata unreachable (%s): not on EC2, nothing to watch", error)
        return None, None
    if not instance or not group:
        log.warning(
            "WORKER_FLEET: no Auto Scaling group for this instance (set WORKER_AUTOSCALING_GROUP or allow "
            "instance tags in metadata): spot and scale-in notices only, no protection"
        )
        return metadata, None
    session = boto3.session.Session(region_name=settings.region)
    client = session.client("autoscaling", endpoint_url=settings.endpoint_url)
    log.info("WORKER_FLEET: instance %s in Auto Scaling group %s", instance, group)
    return metadata, GroupMember(client, group, instance, settings.lifecycle_hook)


def cmd_run(args: argparse.Namespace) -> int:
    from models import MODELS, WeightStore
    from worker import metrics
    from worker.consumer import Consumer
    from worker.daemon import Worker
    from worker.health import HealthServer
    from worker.imds import MetadataWatcher
    from worker.logs import configure
    from worker.notify import Notifier
    from worker.storage import Storage

    settings = _settings()
    configure(settings.log_level, settings.log_format)
    settings = _with_secret(settings)
    store = WeightStore(
        settings.weights_dir, settings.weights_mirror, allow_download=not settings.weights_offline
    )
    for spec in MODELS:  # an altered weights file stops the worker before it takes any job
        _, status = store.status(spec)
        if status.startswith("REFUSED"):
            log.error("weights for %s: %s", spec.name, status)
            return 2
    sqs, s3 = _clients(settings)
    settings.tmp_dir.mkdir(parents=True, exist_ok=True)
    metadata, member = _fleet(settings)
    worker = Worker(
        settings,
        consumer=Consumer(
            sqs, {name: settings.queue_url(name) for name in _served(settings)},
            wait_seconds=settings.wait_seconds, visibility_timeout=settings.visibility_timeout,
        ),
        storage=Storage(
            s3, bucket=settings.bucket, allowed_buckets=settings.allowed_buckets,
            multipart_threshold=settings.multipart_threshold, presign_seconds=settings.presign_seconds,
            max_source_bytes=settings.max_source_bytes, reserve_bytes=settings.min_free_bytes,
        ),
        notifier=Notifier(
            secret=settings.callback_secret, allowed_hosts=settings.callback_allowed_hosts,
            allow_private=settings.callback_allow_private, timeout=settings.callback_timeout,
        ),
        resources=_resources(settings, store), member=member,
    )  # fmt: skip
    metrics.REGISTRY.register(
        metrics.HostCollector(worker.depth, lambda: shutil.disk_usage(settings.tmp_dir).free)
    )
    device = _device_report(settings)  # once: /health must stay cheap
    health = HealthServer(settings.health_port, lambda: {**_health(worker), **device}).start()
    log.info("health and metrics on port %d", health.port)

    def on_signal(number: int, frame: FrameType | None) -> None:
        log.warning("received %s", signal.Signals(number).name)
        worker.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    watcher = None if metadata is None else MetadataWatcher(metadata, worker.notice).start()
    try:
        worker.run(max_jobs=args.max_jobs)
    finally:
        health.close()
        if watcher is not None:
            watcher.stop()
    if member is not None and watcher is not None and "lifecycle" in watcher.seen:
        member.complete_termination()  # the job is finished or handed back: the instance may go
    return worker.exit_code


def _resources(settings: Settings, store: Any) -> Any:
    """Binaries, their kernel limits, media limits and the engine cache, as configured."""
    from media import MediaLimits, Tools
    from tasks import EngineCache, Resources

    tools = Tools(
        ffmpeg=settings.ffmpeg, ffprobe=settings.ffprobe, max_address_space=settings.ffmpeg_max_address_space,
        max_file_size=settings.ffmpeg_max_file_bytes, max_cpu_seconds=settings.ffmpeg_max_cpu_seconds,
    )  # fmt: skip
    limits = MediaLimits(max_file_bytes=settings.max_source_bytes)
    if settings.video_codecs is not None:
        limits = dataclasses.replace(limits, video_codecs=settings.video_codecs)
    defaults = {"gpu": settings.default_model_gpu, "cpu": settings.default_model_cpu}
    engines = EngineCache(store, runtime=settings.runtime, reuse=settings.reuse)
    return Resources(tools=tools, store=store, engines=engines, limits=limits, default_models=defaults)


def _served(settings: Settings) -> tuple[str, ...]:
    if "gpu" in settings.queues and not settings.take_cpu_when_idle:
        return ("gpu",)
    return settings.queues


def _health(worker: Any) -> dict[str, Any]:
    current = worker.current
    return {
        "status": "stopping" if worker.stopping else "ok",
        "queues": list(worker.consumer.queues),
        "currentJob": None if current is None else {"jobId": current.job_id, "task": current.task},
        "jobsDone": worker.jobs_done,
    }


def _device_report(settings: Settings) -> dict[str, Any]:
    import torch

    from media import Tools
    from models.runtime import describe

    tools = Tools(ffmpeg=settings.ffmpeg, ffprobe=settings.ffprobe)
    cuda = torch.cuda.is_available()
    return {
        "device": "cuda" if cuda else "cpu",
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "runtime": describe(settings.runtime, "cuda" if cuda else "cpu"),
        "ffmpeg": tools.version(),
        "nvenc": cuda and tools.encoder_works("h264_nvenc"),
    }


def cmd_check(args: argparse.Namespace) -> int:
    from models import MODELS, WeightStore

    settings = _settings()
    ok = True
    report = _device_report(settings)
    lines = [f"{key:<10} {value}" for key, value in report.items()]
    ok &= not str(report["ffmpeg"]).startswith("unavailable")
    store = WeightStore(settings.weights_dir, settings.weights_mirror, allow_download=False)
    for spec in MODELS:
        _, status = store.status(spec)
        ok &= not status.startswith("REFUSED")
        lines.append(f"weights    {spec.name}: {status}")
    if settings.fleet:
        metadata, member = _fleet(settings)
        where = (
            "not on EC2 (no instance metadata)" if metadata is None else "on EC2, no Auto Scaling group found"
        )
        if member is not None:
            where = f"instance {member.instance_id} in Auto Scaling group {member.group}"
        lines.append(f"fleet      {where}")
    sqs, s3 = _clients(settings)
    for name in settings.queues:
        try:
            sqs.get_queue_attributes(QueueUrl=settings.queue_url(name), AttributeNames=["QueueArn"])
            lines.append(f"queue      {name}: reachable")
        except Exception as error:
            ok = False
            lines.append(f"queue      {name}: UNREACHABLE ({error})")
    try:
        s3.head_bucket(Bucket=settings.bucket)
        lines.append(f"bucket     {settings.bucket}: reachable")
    except Exception as error:
        ok = False
        lines.append(f"bucket     {settings.bucket}: UNREACHABLE ({error})")
    print("\n".join(lines))
    print("OK" if ok else "PROBLEMS FOUND")
    return 0 if ok else 1


def cmd_enqueue(args: argparse.Namespace) -> int:
    settings = load(cuda=False)
    sqs, s3 = _clients(settings)
    bucket = args.bucket or settings.bucket
    if args.upload is not None:
        s3.upload_file(str(args.upload), bucket, args.source)
    for item in args.attach:  # a scenario or a cover the parameters name
        key, _, path = item.partition("=")
        s3.upload_file(path, bucket, key)
    parameters: dict[str, Any] = {}
    for item in args.param:
        name, _, value = item.partition("=")
        try:
            parameters[name] = json.loads(value)
        except ValueError:
            parameters[name] = value  # plain text: resolution=1920x1080, style=fancy
    message = {
        "jobId": args.job_id or str(uuid.uuid4()),
        "taskType": args.task,
        "sourceS3Key": args.source,
        "sourceBucket": args.bucket,
        "callbackUrl": args.callback_url,
        "parameters": parameters,
        "status": "QUEUED",
    }
    body = json.dumps({key: value for key, value in message.items() if value is not None})
    sqs.send_message(QueueUrl=settings.queue_url(args.queue), MessageBody=body)
    print(body)
    return 0


def cmd_redrive(args: argparse.Namespace) -> int:
    from worker.consumer import Consumer

    settings = load(cuda=False)
    sqs, _ = _clients(settings)
    names = (args.queue,) if args.queue else settings.queues
    urls = {name: settings.queue_url(name) for name in names}
    consumer = Consumer(sqs, urls, wait_seconds=0, visibility_timeout=60)
    for name in names:
        moved = consumer.redrive(name, args.max)
        print(f"{name}: {moved} message(s) moved back from the dead-letter queue")
    return 0


def _job_storage() -> tuple[Any, Any]:
    """The output bucket and the key policy, as configured: where the operator commands read job state."""
    from worker.keys import KeyPolicy
    from worker.storage import Storage

    settings = load(cuda=False)
    _, s3 = _clients(settings)
    storage = Storage(s3, bucket=settings.bucket, allowed_buckets=settings.allowed_buckets)
    return storage, KeyPolicy(settings.output_prefixes, settings.jobs_prefix)


def cmd_status(args: argparse.Namespace) -> int:
    """What S3 knows of a job: its outcome, its record, and for a split job the plan and segments done."""
    from worker.segments import SegmentStore
    from worker.state import JobState

    storage, keys = _job_storage()
    state, segments = JobState(storage, keys), SegmentStore(storage, keys)
    terminal = state.terminal(args.job_id, args.lifetime)
    record = state.result(args.job_id)
    plan = segments.plan(args.job_id)
    outcome = None
    if terminal is not None:
        outcome = {
            "status": terminal.status,
            "eventId": terminal.event_id,
            "errorCode": terminal.body.get("errorCode"),
        }
    kept = ("outputS3Key", "fileSize", "sha256")
    report: dict[str, Any] = {
        "jobId": args.job_id,
        "outcome": outcome,
        "result": None if record is None else {key: record.get(key) for key in kept},
        "segments": None if plan is None else {"planned": len(plan.ranges), "frames": plan.frames,
                                               "done": sorted(segments.finished(args.job_id))},
    }  # fmt: skip
    print(json.dumps(report, indent=2))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel a job, split or not: its workers stop at their next batch; CANCELLED is sent once."""
    from worker.state import JobState

    storage, keys = _job_storage()
    JobState(storage, keys).request_cancel(args.job_id, "cancelled by an operator")
    print(f"{args.job_id}: cancel requested")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(schemas(), indent=2))
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m worker", description="vidworker daemon")
    commands = root.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the daemon")
    run.add_argument("--max-jobs", type=int, default=None, help="stop after this many messages")
    run.set_defaults(func=cmd_run)
    commands.add_parser("check", help="validate the environment").set_defaults(func=cmd_check)
    enqueue = commands.add_parser("enqueue", help="send a job as the backend would")
    enqueue.add_argument("--queue", choices=("gpu", "cpu"), default="cpu")
    enqueue.add_argument("--task", default="UPSCALE")
    enqueue.add_argument("--source", required=True, help="source S3 key")
    enqueue.add_argument("--upload", type=Path, help="upload this local file to the source key first")
    enqueue.add_argument(
        "--attach", action="append", default=[], metavar="KEY=FILE",
        help="upload FILE to KEY too (a scenarioS3Key, a coverS3Key)",
    )  # fmt: skip
    enqueue.add_argument("--bucket", help="source bucket (default S3_BUCKET_NAME)")
    enqueue.add_argument("--job-id")
    enqueue.add_argument("--callback-url")
    enqueue.add_argument("--param", action="append", default=[], help="NAME=VALUE (JSON values allowed)")
    enqueue.set_defaults(func=cmd_enqueue)
    redrive = commands.add_parser("redrive", help="move dead-lettered jobs back to their queue")
    redrive.add_argument("--queue", choices=("gpu", "cpu"), help="default: every configured queue")
    redrive.add_argument("--max", type=int, default=None, help="move at most this many per queue")
    redrive.set_defaults(func=cmd_redrive)
    status = commands.add_parser("status", help="what S3 knows of a job (outcome, record, segments)")
    status.add_argument("job_id")
    status.add_argument("--lifetime", type=int, default=0, help="the job's lifetime (redrives so far)")
    status.set_defaults(func=cmd_status)
    cancel = commands.add_parser("cancel", help="cancel a job, split or not")
    cancel.add_argument("job_id")
    cancel.set_defaults(func=cmd_cancel)
    commands.add_parser("schema", help="JSON Schema of the message and callbacks").set_defaults(
        func=cmd_schema
    )
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        status: int = args.func(args)
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    return status


if __name__ == "__main__":
    sys.exit(main())
