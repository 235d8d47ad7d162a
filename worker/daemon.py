"""The worker loop: receive → decode → stage input → run task → publish → settle.

Shutdown order (see :meth:`Worker.stop`): a warm stop ends receiving at once
and gives the running job ``drain_seconds`` to finish; past that, or on a cold
stop, the job is aborted (its ffmpeg children killed, temp dir removed) and its
message released so another worker takes it at once. Nothing is deleted from
the queue before the output is in S3 and ``result.json`` records it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks import (
    TASKS,
    Cancelled,
    InvalidParameters,
    Progress,
    Resources,
    Task,
    TaskContext,
    TaskRegistry,
    TaskResult,
)
from worker import metrics
from worker.consumer import Consumer, Received
from worker.errors import OutputTaken
from worker.heartbeat import Heartbeat
from worker.logs import job_context
from worker.message import BadMessage, Callback, Job, Metadata, Status, check_key, decode
from worker.notify import CallbackRefused, Notifier, ProgressChannel
from worker.retries import Action, decide, describe
from worker.settings import Settings
from worker.storage import Storage, output_key, result_key

log = logging.getLogger(__name__)

SOURCE_NAME = "source"
"""The downloaded source inside a job dir; never a name taken from the message."""

EVENTS = uuid.UUID("5c1b2d54-8a43-4c1e-9a55-2f7e1d0c9b11")


def remove_orphans(tmp_dir: Path) -> None:
    """Remove the scratch dirs of workers that died without cleaning up (SIGKILL, power loss)."""
    for scratch in tmp_dir.glob("worker-*"):
        pid = scratch.name.removeprefix("worker-")
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            log.warning("removing %s, left by a worker that is gone", scratch)
            shutil.rmtree(scratch, ignore_errors=True)


def event_id(job_id: str, status: Status, attempt: int = 0) -> str:
    """Stable per job and outcome, so a re-sent completion carries the same id (the backend dedupes)."""
    return str(uuid.uuid5(EVENTS, f"{job_id}/{status}/{attempt}"))


@dataclass
class Current:
    """The job being run, for /health and for aborts."""

    job_id: str
    task: str


class Worker:
    """One job at a time from ``consumer``; ``stop()`` may be called from any thread or signal."""

    def __init__(
        self,
        settings: Settings,
        *,
        consumer: Consumer,
        storage: Storage,
        notifier: Notifier,
        resources: Resources,
        tasks: TaskRegistry = TASKS,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.storage = storage
        self.notifier = notifier
        self.resources = resources
        self.tasks = tasks
        self.current: Current | None = None
        self.jobs_done = 0
        self._stopping = threading.Event()
        self._abort = threading.Event()
        self._limits: dict[str, int | None] = {}
        self.scratch = settings.tmp_dir / f"worker-{os.getpid()}"

    # ------------------------------------------------------------------ lifecycle

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self, *, cold: bool = False) -> None:
        """Warm stop: receive nothing more, let the running job drain. Cold (or a second call): abort it."""
        if cold or self._stopping.is_set():
            log.warning("cold stop: aborting the running job and releasing its message")
            self._abort.set()
        self._stopping.set()
        if not self._abort.is_set() and self.settings.drain_seconds >= 0:
            timer = threading.Timer(self.settings.drain_seconds, self._drain_expired)
            timer.daemon = True
            timer.start()

    def _drain_expired(self) -> None:
        if self.current is not None:
            log.warning(
                "drain time of %g s is over; aborting %s", self.settings.drain_seconds, self.current.job_id
            )
        self._abort.set()

    def run(self, max_jobs: int | None = None) -> int:
        """Work until stopped (or ``max_jobs`` messages handled); returns the number handled."""
        remove_orphans(self.settings.tmp_dir)
        self.scratch.mkdir(parents=True, exist_ok=True)
        try:
            return self._loop(max_jobs)
        finally:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def _loop(self, max_jobs: int | None) -> int:
        log.info("consuming %s", ", ".join(self.consumer.queues))
        handled = 0
        failures = 0
        while not self._stopping.is_set() and (max_jobs is None or handled < max_jobs):
            try:
                if not self._limits:  # the queues' redrive limits, read once SQS answers
                    self._limits = self.consumer.max_receives()
                    log.info("max receives before the dead-letter queue: %s", self._limits)
                received = self.consumer.receive()
                failures = 0
            except Exception as error:  # SQS unreachable: back off, never busy-loop
                failures += 1
                delay = min(60.0, 2.0**failures)
                log.warning("receive failed (%s); retrying in %.0f s", error, delay)
                metrics.RECEIVE_ERRORS.inc()
                self._stopping.wait(delay)
                continue
            if received is None:
                continue
            if self._stopping.is_set():  # arrived during the last long poll: not ours to start
                self.consumer.release(received, 0)
                break
            self.handle(received)
            handled += 1
        log.info("stopped after %d messages", handled)
        return handled

    # ------------------------------------------------------------------ one message

    def handle(self, received: Received) -> None:
        """Settle one message, whatever happens: every path deletes it, releases it or leaves it to expire."""
        try:
            job = decode(received.body)
        except BadMessage as error:
            self._refuse(received, error)
            return
        with job_context(job.job_id):
            log.info("received %s from %s (attempt %d)", job.task_type, received.queue, received.attempt)
            self._handle_job(received, job)

    def _handle_job(self, received: Received, job: Job) -> None:
        callback = job.callback_url or self.settings.callback_url
        started = time.monotonic()
        try:
            task = self.tasks.get(job.task_type)
            params = task.parse(self._parameters(job, received))
            if callback is not None:
                self.notifier.check(callback)
            key = output_key(task.name, job.job_id, job.stem, job.output_s3_key)
            if self._already_done(received, job, key, callback):
                return
            self.current = Current(job.job_id, task.name)
            with Heartbeat(
                self.consumer.sqs,
                received.queue_url,
                received.receipt,
                interval=self.settings.heartbeat_seconds,
                extend_to=self.settings.visibility_timeout,
            ):  # fmt: skip  (the callback's retries stay covered too)
                record = self._process(received, job, task, params, key, callback)
                self._publish(received, job, record, callback)
            metrics.JOBS.labels(task.name, "COMPLETED").inc()
        except Exception as error:
            self._settle_failure(received, job, callback, error)
        finally:
            metrics.JOB_SECONDS.observe(time.monotonic() - started)
            self.current = None

    def _parameters(self, job: Job, received: Received) -> dict[str, Any]:
        parameters = dict(job.parameters)
        if job.task_type.upper() == "UPSCALE" and "device" not in parameters:
            parameters["device"] = received.queue  # spec §3: default, the queue it came from
        return parameters

    def _already_done(self, received: Received, job: Job, key: str, callback: str | None) -> bool:
        """A redelivered job whose result is recorded: re-send its completion, delete, do not rerun."""
        record = self.storage.read_result(result_key(key, job.job_id))
        if record is None:
            return False
        if record.get("jobId") != job.job_id or record.get("outputS3Key") != key:
            raise OutputTaken(f"{key} is already the recorded output of job {record.get('jobId')!r}")
        log.info("result.json exists for %s; re-sending the completion instead of reprocessing", key)
        self._publish(received, job, record, callback)
        return True

    def _process(
        self, received: Received, job: Job, task: Task[Any], params: Any, key: str, callback: str | None
    ) -> dict[str, Any]:
        work = Path(tempfile.mkdtemp(prefix="job-", dir=self.scratch))
        channel = self.notifier.progress_channel(callback, job_id=job.job_id) if callback else None
        try:
            source = work / SOURCE_NAME
            bucket = self.storage.source_bucket(job.source_bucket)
            inputs = self._fetch_attachments(task, params, bucket, work)
            self.storage.download(bucket, job.source_s3_key, source)
            context = TaskContext(
                work_dir=work,
                resources=self.resources,
                inputs=inputs,
                progress=lambda update: self._progress(job, received, channel, update),
                cancelled=lambda: (
                    self._abort.is_set() or (channel is not None and channel.cancelled.is_set())
                ),
            )
            result = task.run(source, params, context)
            size = self.storage.upload(result.output, key)
            record = self._completion(job, received, key, size, result)
            self.storage.write_result(result_key(key, job.job_id), record)
            return record
        finally:
            if channel is not None:
                channel.close()
            shutil.rmtree(work, ignore_errors=True)

    def _fetch_attachments(self, task: Task[Any], params: Any, bucket: str, work: Path) -> dict[str, Path]:
        """Download the files the job's parameters name (a scenario, a cover) beside the source."""
        inputs: dict[str, Path] = {}
        for name, attachment in task.attachments(params).items():
            try:
                check_key(attachment.key)
            except ValueError as error:
                raise InvalidParameters(f"{task.name} parameters: {name} key {error}") from None
            path = work / name
            self.storage.download(bucket, attachment.key, path, max_bytes=attachment.max_bytes)
            inputs[name] = path
        return inputs

    def _progress(
        self, job: Job, received: Received, channel: ProgressChannel | None, update: Progress
    ) -> None:
        if channel is None:
            return
        percent = min(99, int(update.fraction * 100))
        body = Callback(
            job_id=job.job_id, status=Status.PROCESSING, progress=percent, attempt=received.attempt
        )
        channel.update(body.body())

    def _completion(
        self, job: Job, received: Received, key: str, size: int, result: TaskResult
    ) -> dict[str, Any]:
        body = Callback(
            job_id=job.job_id,
            status=Status.COMPLETED,
            progress=100,
            message="done",
            output_bucket=self.storage.bucket,
            output_s3_key=key,
            file_size=size,
            duration=round(result.duration, 3),
            metadata=Metadata.model_validate(result.metadata()),
            attempt=received.attempt,
        )
        return body.body()

    def _publish(self, received: Received, job: Job, record: dict[str, Any], callback: str | None) -> None:
        """Send the completion (with a fresh presigned link) and delete the message."""
        if callback is not None:
            body = {**record, "downloadUrl": self.storage.presign(str(record["outputS3Key"]))}
            reply = self.notifier.send(callback, body, event_id=event_id(job.job_id, Status.COMPLETED))
            if not reply.delivered:
                log.error("completion callback not delivered; the result stays recorded in result.json")
        self.consumer.delete(received)
        self.jobs_done += 1
        log.info("completed; message deleted")

    # ------------------------------------------------------------------ failures

    def _refuse(self, received: Received, error: BadMessage) -> None:
        """A message that is not a job: permanent, deleted, FAILED sent where we safely can."""
        with job_context(error.job_id or "-"):
            log.error("refused message %s: %s", received.message_id, error)
            callback = error.callback_url or self.settings.callback_url
            if error.job_id is not None and callback is not None:
                self._notify_failure(callback, error.job_id, received.attempt, error, Status.FAILED)
            metrics.JOBS.labels("unknown", "FAILED").inc()
            self.consumer.delete(received)

    def _settle_failure(self, received: Received, job: Job, callback: str | None, error: Exception) -> None:
        code, _ = describe(error)
        task = job.task_type.upper()
        if isinstance(error, Cancelled) and self._abort.is_set():
            log.warning("aborted by shutdown; releasing the message for another worker")
            self.consumer.release(received, 0)
            metrics.JOBS.labels(task, "RELEASED").inc()
            return
        if isinstance(error, Cancelled):
            log.info("cancelled by the backend")
            if callback is not None:
                self._notify_failure(callback, job.job_id, received.attempt, error, Status.CANCELLED)
            self.consumer.delete(received)
            metrics.JOBS.labels(task, "CANCELLED").inc()
            return
        if isinstance(error, CallbackRefused):
            callback = None  # never send anything to a refused address
        limit = self._limits.get(received.queue)
        decision = decide(
            error, attempt=received.attempt, max_attempts=limit or self.settings.max_attempts,
            dead_letter=limit is not None, base=self.settings.retry_base_seconds,
            cap=self.settings.retry_max_seconds,
        )  # fmt: skip
        log.error("failed with %s (%s): %s -> %s", code, "retryable" if decision.retryable else "permanent",
                  error, decision.action, exc_info=code == "INTERNAL_ERROR")  # fmt: skip
        if decision.notify and callback is not None:
            self._notify_failure(callback, job.job_id, received.attempt, error, Status.FAILED)
        if decision.action is Action.RETRY:
            self.consumer.release(received, decision.delay)
        elif decision.action is Action.DEAD_LETTER:
            self.consumer.release(received, 0)
        else:
            self.consumer.delete(received)
        metrics.JOBS.labels(task, "FAILED" if decision.notify else "RETRIED").inc()

    def _notify_failure(
        self, callback: str, job_id: str, attempt: int, error: Exception, status: Status
    ) -> None:
        code, retryable = describe(error)
        body = Callback(
            job_id=job_id, status=status, message=str(error)[:2000], error_code=code,
            error_message=str(error)[:2000], retryable=retryable, attempt=attempt,
        )  # fmt: skip
        try:
            self.notifier.send(callback, body.body(), event_id=event_id(job_id, status, attempt))
        except CallbackRefused as refused:
            log.error("not sending %s to a refused callback URL: %s", status, refused)
