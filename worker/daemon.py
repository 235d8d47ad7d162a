"""The worker loop: receive → decode → prepare → (replay | stage input → run task → publish) → settle.

Shutdown order (see :meth:`Worker.stop`): a warm stop ends receiving at once
and gives the running job ``drain_seconds`` to finish; past that, or on a cold
stop, the job is aborted (its ffmpeg children killed, a transfer in flight
stopped, temp dir removed) and handed back — a fresh copy of its message that
keeps its tries — so another worker takes it at once. Nothing is deleted from
the queue before the job's outcome is decided in ``jobs/{jobId}/``.

A message can fail; the loop cannot: whatever one message raises is logged
and counted, and the loop goes on. Only a signal (or a lost GPU, which asks
systemd for a fresh process) ends it.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from errors import ErrorCode
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
from worker.attempt import Attempt
from worker.autoscaling import GroupMember
from worker.consumer import Consumer, Received
from worker.errors import OutputTaken
from worker.heartbeat import Heartbeat
from worker.housekeeping import Housekeeping
from worker.imds import Notice
from worker.keys import KeyPolicy
from worker.logs import job_context
from worker.message import BadMessage, Callback, Job, Metadata, Status, check_key, decode, safe_id
from worker.notify import CallbackRefused, Notifier
from worker.retries import Action, Decision, backoff, decide
from worker.scratch import Scratch
from worker.settings import MAX_JOB_SECONDS, Settings
from worker.split import Splitter
from worker.state import JobState, Terminal, event_id
from worker.storage import Storage, Stored

log = logging.getLogger(__name__)

SOURCE_NAME = "source"
"""The downloaded source inside a job dir; never a name taken from the message."""

EXIT_DEVICE_LOST = 75
"""Exit status after the GPU context broke for good: systemd restarts the worker (a fresh process)."""


@dataclass
class Current:
    """The job being run, for /health, aborts and notices: how far it is and since when (monotonic)."""

    job_id: str
    task: str
    stage: str = "whole"
    started: float = 0.0
    fraction: float = 0.0

    def seconds_left(self, now: float) -> float | None:
        """The task's remaining seconds at its pace so far; None before 5 % (too early to tell)."""
        if self.fraction < 0.05:
            return None
        return (now - self.started) * (1 - self.fraction) / self.fraction


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
        member: GroupMember | None = None,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.storage = storage
        self.notifier = notifier
        self.resources = resources
        self.tasks = tasks
        self.member = member
        self.keys = KeyPolicy(settings.output_prefixes, settings.jobs_prefix)
        self.state = JobState(storage, self.keys)
        self.current: Current | None = None
        self.jobs_done = 0
        self.exit_code = 0
        self.scratch = settings.tmp_dir
        self._stopping = threading.Event()
        self._abort = threading.Event()
        self._policies: dict[str, tuple[int, str] | None] | None = None
        self.splitter = Splitter(self)

    # ------------------------------------------------------------------ lifecycle

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self, *, cold: bool = False, within: float | None = None) -> None:
        """Warm stop: receive nothing more, let the running job drain. Cold (or a second call): abort it.

        ``within``: a notice's limit; the running job gets at most that long
        (never more than the drain time), and the call is not taken as a second one.
        """
        if cold or (self._stopping.is_set() and within is None):
            log.warning("cold stop: aborting the running job and handing its message back")
            self._abort.set()
        self._stopping.set()
        metrics.DRAINING.set(1)
        drain = self.settings.drain_seconds if within is None else min(within, self.settings.drain_seconds)
        if not self._abort.is_set():
            timer = threading.Timer(drain, self._drain_expired, args=(drain,))
            timer.daemon = True
            timer.start()

    def _drain_expired(self, drain: float) -> None:
        if self.current is not None:
            log.warning("drain time of %g s is over; aborting %s", drain, self.current.job_id)
        self._abort.set()

    def notice(self, notice: Notice) -> None:
        """The instance is going away. Scale-in: drain as SIGTERM does (the lifecycle hook outlasts it).

        Spot: the job in hand finishes only when its pace says it ends
        ``WORKER_SPOT_MARGIN_SECONDS`` before the instance does (the output
        must still be uploaded); otherwise it is released at once, so another
        worker starts it now instead of after a lost lease.
        """
        if notice.kind == "lifecycle" or notice.deadline is None:  # a notice is never a second signal
            self.stop(within=self.settings.drain_seconds)
            return
        now = time.monotonic()
        room = notice.deadline - now - self.settings.spot_margin_seconds
        current = self.current
        left = None if current is None else current.seconds_left(now)
        if current is not None and (left is None or left > room):
            log.warning("spot notice: %s would need %s s, %.0f s are left; releasing it now", current.job_id,
                        "unknown" if left is None else f"{left:.0f}", max(room, 0))  # fmt: skip
            self.stop(cold=True)
        else:
            self.stop(within=max(room, 0.0))

    def run(self, max_jobs: int | None = None) -> int:
        """Work until stopped (or ``max_jobs`` messages handled); returns the number handled."""
        with Scratch(self.settings.tmp_dir) as scratch:
            self.scratch = scratch
            keeper = Housekeeping(self, interval=self.settings.dead_letter_watch_seconds)
            keeper.start()
            try:
                return self._loop(max_jobs)
            finally:
                keeper.stop()

    def _loop(self, max_jobs: int | None) -> int:
        log.info("consuming %s", ", ".join(self.consumer.queues))
        handled = 0
        failures = 0
        while not self._stopping.is_set() and (max_jobs is None or handled < max_jobs):
            try:
                self.policies()
                received = self.consumer.receive()
                failures = 0
            except Exception as error:  # SQS unreachable: back off, never busy-loop
                failures += 1
                delay = backoff(failures, 2.0, 60.0)
                log.warning("receive failed (%s); retrying in %.0f s", error, delay)
                metrics.RECEIVE_ERRORS.inc()
                self._stopping.wait(delay)
                continue
            if received is None:
                self._protect(False)  # idle: the group may choose this instance to scale in
                continue
            if self._stopping.is_set():  # arrived during the last long poll: not ours to start
                self.settle("hand back", lambda item=received: self.consumer.hand_back(item))  # type: ignore[misc]
                break
            self._protect(True)
            self.handle(received)
            handled += 1
        self._protect(False)
        log.info("stopped after %d messages", handled)
        return handled

    def _protect(self, on: bool) -> None:
        if self.member is not None:
            self.member.protect(on)

    def policies(self) -> dict[str, tuple[int, str] | None]:
        """Each served queue's redrive policy ``(maxReceiveCount, DLQ URL)``, read once SQS answers."""
        if self._policies is None:
            self._policies = {
                name: self.consumer.redrive_policy(url) for name, url in self.consumer.queues.items()
            }
            log.info("redrive policies: %s", self._policies)
        return self._policies

    def depth(self) -> dict[tuple[str, bool], tuple[int, int]]:
        """(visible, in flight) of each served queue and of its dead-letter queue, for /metrics."""
        found = {}
        for name, url in self.consumer.queues.items():
            found[name, False] = self.consumer.depth(url)
            policy = self.policies().get(name)
            if policy is not None:
                found[name, True] = self.consumer.depth(policy[1])
        return found

    # ------------------------------------------------------------------ one message

    def handle(self, received: Received) -> None:
        """Settle one message, whatever happens; never raises."""
        try:
            try:
                job = decode(received.body)
            except BadMessage as error:
                self._refuse(received, error)
                return
            with job_context(job.job_id):
                log.info("received %s from %s (try %d)", job.task_type, received.queue, received.attempt)
                self._attempt(self._start(received, job))
        except Exception:
            log.exception("unexpected error handling message %s; the loop goes on", received.message_id)
            metrics.LOOP_ERRORS.inc()

    def _start(self, received: Received, job: Job) -> Attempt:
        timeout = min(self.settings.job_timeout, MAX_JOB_SECONDS)
        callback = job.callback_url or self.settings.callback_url
        return Attempt(received, job, callback, deadline=time.monotonic() + timeout)

    def _attempt(self, attempt: Attempt) -> None:
        try:
            task, params = self._prepare(attempt)
            if self._replay(attempt):
                return
            if self.state.cancel_requested(attempt.job_id):
                raise Cancelled("the job was cancelled")
            attempt.cancel_marker = lambda: self.state.cancel_requested(attempt.job_id)
            self.current = Current(attempt.job_id, task.name, attempt.job.stage.stage if attempt.job.stage
                                   else "whole", started=time.monotonic())  # fmt: skip
            metrics.RUNNING.labels(task.name, self.current.stage).set(1)
            metrics.PROGRESS_TIME.set(time.time())
            with Heartbeat(
                self.consumer.sqs,
                attempt.received.queue_url,
                attempt.received.receipt,
                interval=self.settings.heartbeat_seconds,
                extend_to=self.settings.visibility_timeout,
            ) as heartbeat:  # fmt: skip  (the callback's retries stay covered too)
                attempt.heartbeat = heartbeat
                record = self._produce(attempt, task, params)
                if record is None:
                    self._delete(attempt)
                    return
                self._complete(attempt, record)
        except Exception as error:
            self._fail(attempt, error)
        finally:
            metrics.JOB_SECONDS.observe(time.monotonic() - attempt.started)
            if self.current is not None:
                metrics.RUNNING.labels(self.current.task, self.current.stage).set(0)
            metrics.PROGRESS_TIME.set(0)
            self.current = None

    def _complete(self, attempt: Attempt, record: dict[str, Any]) -> None:
        """The output is published and recorded: the job can only end COMPLETED from here on.

        If the outcome cannot be decided now (S3 failing), the message comes back
        and the replay (or the dead-letter watcher) finishes it; never FAILED.
        """
        try:
            self._conclude(attempt.received, attempt.job_id, attempt.callback, record)
        except Exception as error:
            log.error("output recorded but its outcome not yet decided (%s); the message comes back", error)
            if attempt.heartbeat is not None:
                attempt.heartbeat.stop()  # or its next beat would hide the message again
            self.settle("retry later", lambda: self.consumer.retry_later(attempt.received, 1))
            return
        if attempt.job.stage is not None:  # a merge completed: a job run whole never had segments
            self._remove_segments(attempt.job_id)
        self._delete(attempt)
        self.jobs_done += 1
        metrics.JOBS.labels(attempt.task, "COMPLETED").inc()
        log.info("completed; message deleted")

    def _remove_segments(self, job_id: str) -> None:
        """The job's outcome is decided: its segments go, before its message does.

        In that order a worker killed in between leaves the message, whose
        redelivery replays the outcome and removes them; the other way round
        nothing would come back for them.
        """
        self.settle("remove segments", lambda: self.splitter.cleanup(job_id))

    def _delete(self, attempt: Attempt) -> None:
        """The try is settled: stop extending the message (no beat may meet it deleted), then delete it."""
        if attempt.heartbeat is not None:
            attempt.heartbeat.stop()
        self.settle("delete", lambda: self.consumer.delete(attempt.received))

    def _prepare(self, attempt: Attempt) -> tuple[Task[Any], Any]:
        """Task, parameters, callback URL and output key checked: anything wrong is INPUT_INVALID."""
        job = attempt.job
        task = self.tasks.get(job.task_type)
        attempt.task = task.name
        params = task.parse({**task.defaults(attempt.received.queue, self.resources), **job.parameters})
        if attempt.callback is not None:
            self.notifier.check(attempt.callback)
        attempt.key = self.keys.output_key(task.name, job.job_id, job.stem, job.output_s3_key)
        inputs = (job.source_s3_key, *(item.key for item in task.attachments(params).values()))
        self.keys.check_output(attempt.key, job.job_id, inputs)
        stamp = self.storage.stamp(attempt.key)
        if stamp is not None and stamp.job_id != job.job_id:
            raise OutputTaken(f"{attempt.key} already holds an output of job {stamp.job_id!r}")
        return task, params

    def _replay(self, attempt: Attempt) -> bool:
        """A job whose outcome is decided (or whose result is recorded): re-send it, delete, do not rerun."""
        terminal = self.state.terminal(attempt.job_id, attempt.lifetime)
        if terminal is None:
            record = self.state.result(attempt.job_id)
            if record is None:
                return False
            terminal = self.state.decide(attempt.job_id, attempt.lifetime, Status.COMPLETED, record)
        log.info("the job's outcome is already %s; re-sending it instead of reprocessing", terminal.status)
        self.deliver(attempt.callback, terminal)
        self._remove_segments(attempt.job_id)
        self._delete(attempt)
        return True

    def _produce(self, attempt: Attempt, task: Task[Any], params: Any) -> dict[str, Any] | None:
        """Download, run the task, publish the output once and record it; returns the holding record.

        None: a split job's step (plan, one segment) is done and its message may go.
        """
        work = Path(tempfile.mkdtemp(prefix="job-", dir=self.scratch))
        if attempt.callback is not None:
            attempt.channel = self.notifier.progress_channel(attempt.callback, job_id=attempt.job_id)
        try:
            context = self._stage(attempt, task, params, work)
            if self.splitter.applies(attempt, task):
                return self.splitter.run(attempt, task, params, work / SOURCE_NAME, context)
            return self.publish(attempt, task.run(work / SOURCE_NAME, params, context))
        finally:
            if attempt.channel is not None:
                attempt.channel.close()
            shutil.rmtree(work, ignore_errors=True)

    def publish(self, attempt: Attempt, result: TaskResult, segments: int | None = None) -> dict[str, Any]:
        """Publish ``result``'s output once and record it; returns the record that holds."""
        attempt.check()  # a lost lease or a passed deadline stops the job before publishing
        stored = self.storage.publish(result.output, attempt.key, attempt.job_id, abort=self._abort.is_set)
        record = self._completion(attempt, stored, result)
        if segments is not None:
            record["metadata"]["segments"] = segments
        return self.state.record_result(attempt.job_id, record)

    def _stage(self, attempt: Attempt, task: Task[Any], params: Any, work: Path) -> TaskContext:
        """Fetch the source and the attachments into ``work``; the task's context."""
        bucket = self.storage.source_bucket(attempt.job.source_bucket)
        inputs: dict[str, Path] = {}
        for name, attachment in task.attachments(params).items():
            try:
                check_key(attachment.key)
            except ValueError as error:
                raise InvalidParameters(f"{task.name} parameters: {name} key {error}") from None
            inputs[name] = work / name
            self.storage.download(
                bucket, attachment.key, inputs[name], max_bytes=attachment.max_bytes, abort=self._abort.is_set
            )
        self.storage.download(bucket, attempt.job.source_s3_key, work / SOURCE_NAME, abort=self._abort.is_set)
        return TaskContext(
            work_dir=work,
            resources=self.resources,
            inputs=inputs,
            progress=lambda update: self._progress(attempt, update),
            cancelled=lambda: attempt.cancelled(self._abort.is_set()),
        )

    def _progress(self, attempt: Attempt, update: Progress) -> None:
        if self.current is not None:
            self.current.fraction = update.fraction
        metrics.PROGRESS_TIME.set(time.time())
        if attempt.channel is None:
            return
        percent = min(99, int(update.fraction * 100))
        body = Callback(
            job_id=attempt.job_id, status=Status.PROCESSING, progress=percent, attempt=attempt.number
        )
        attempt.channel.update(body.body())

    def _completion(self, attempt: Attempt, stored: Stored, result: TaskResult) -> dict[str, Any]:
        """The completion record (``result.json``) and COMPLETED body: the stored bytes' size and SHA-256."""
        body = Callback(
            job_id=attempt.job_id,
            status=Status.COMPLETED,
            progress=100,
            message="done",
            output_bucket=self.storage.bucket,
            output_s3_key=stored.key,
            file_size=stored.size,
            sha256=stored.sha256,
            duration=round(result.duration, 3),
            metadata=Metadata.model_validate(result.metadata()),
            attempt=attempt.number,
        )
        return body.body()

    # ------------------------------------------------------------------ outcomes

    def _conclude(self, received: Received, job_id: str, callback: str | None, body: dict[str, Any]) -> None:
        """Decide the job's terminal outcome (once, in ``jobs/{jobId}/``) and call the backend."""
        status = Status(body["status"])
        terminal = self.state.decide(job_id, received.lifetime, status, body)
        if not terminal.ours and terminal.status is not status:
            log.warning("the job's outcome was already decided as %s; not %s", terminal.status, status)
        self.deliver(callback, terminal)

    def deliver(self, callback: str | None, terminal: Terminal) -> None:
        """Send a terminal event; one the backend did not take is kept in the outbox for re-sending."""
        if callback is None:
            return
        try:
            reply = self.notifier.send(callback, self.sendable(terminal), event_id=terminal.event_id)
        except CallbackRefused as refused:
            log.error("not sending %s to a refused callback URL: %s", terminal.status, refused)
            return
        if not reply.delivered:
            log.error("%s callback not delivered; kept in the outbox for re-sending", terminal.status)
            self.settle("keep in the outbox", lambda: self.state.keep(callback, terminal))

    def sendable(self, terminal: Terminal) -> dict[str, Any]:
        """The terminal body as sent: a COMPLETED one with a fresh presigned ``downloadUrl``."""
        body = dict(terminal.body)
        if terminal.status is Status.COMPLETED and body.get("outputS3Key"):
            body["downloadUrl"] = self.storage.presign(str(body["outputS3Key"]))
        return body

    def _fail(self, attempt: Attempt, error: Exception) -> None:
        limit = (self._policies or {}).get(attempt.received.queue)
        decision = decide(
            error, attempt=attempt.number, max_attempts=limit[0] if limit else self.settings.max_attempts,
            dead_letter=limit is not None, base=self.settings.retry_base_seconds,
            cap=self.settings.retry_max_seconds, shutting_down=self._abort.is_set(),
        )  # fmt: skip
        kind = "retryable" if decision.retryable else "permanent"
        log.error("failed with %s (%s): %s -> %s", decision.code, kind, error, decision.action,
                  exc_info=decision.code == ErrorCode.INTERNAL_ERROR)  # fmt: skip
        if isinstance(error, CallbackRefused):
            attempt.callback = None  # never send anything to a refused address
        if decision.terminal is Status.CANCELLED:  # every worker on the job (its other segments) stops too
            self.settle("mark cancelled", lambda: self.state.request_cancel(attempt.job_id, str(error)))
        body = failure_body(attempt.job_id, error, decision, attempt.number)
        if decision.terminal is not None and not self._concluded(
            attempt.received, attempt.job_id, attempt.callback, body
        ):
            decision = Decision(Action.RETRY, 1, None, decision.code, True)  # undecided: never drop it
        if decision.terminal is not None:
            self._remove_segments(attempt.job_id)
        self.settle(str(decision.action), lambda: self._apply(attempt.received, decision))
        if decision.code == ErrorCode.DEVICE_LOST:
            self.exit_code = EXIT_DEVICE_LOST
            self.stop(cold=True)
        outcome = {Action.RETRY: "RETRIED", Action.HAND_BACK: "RELEASED", Action.LEAVE: "LEFT"}
        metrics.JOBS.labels(attempt.task, outcome.get(decision.action, str(decision.terminal))).inc()

    def _concluded(self, received: Received, job_id: str, callback: str | None, body: dict[str, Any]) -> bool:
        """Decide and send a failure's terminal outcome; False when it could not be recorded."""
        try:
            self._conclude(received, job_id, callback, body)
        except Exception as problem:
            log.error("could not record the outcome %s (%s); the job will be tried again", body["status"],
                      problem)  # fmt: skip
            return False
        return True

    def _apply(self, received: Received, decision: Decision) -> None:
        if decision.action is Action.DELETE:
            self.consumer.delete(received)
        elif decision.action is Action.RETRY:
            self.consumer.retry_later(received, decision.delay)
        elif decision.action is Action.DEAD_LETTER:
            self.consumer.retry_later(received, 0)
        elif decision.action is Action.HAND_BACK:
            log.warning("handing the message back for another worker (this try not counted)")
            self.consumer.hand_back(received)

    def settle(self, what: str, call: Callable[[], None]) -> None:
        """Run one settling call to SQS/S3; a failure is logged and counted, never raised."""
        try:
            call()
        except Exception as error:
            log.error("could not %s: %s (the message comes back when its visibility ends)", what, error)
            metrics.SETTLE_ERRORS.labels(what).inc()

    def _refuse(self, received: Received, error: BadMessage) -> None:
        """A message that is not a job: permanent, deleted, FAILED sent where we safely can."""
        job_id = error.job_id
        with job_context(job_id or "-"):
            log.error("refused message %s: %s", received.message_id, error)
            callback = error.callback_url or self.settings.callback_url
            metrics.JOBS.labels("unknown", "FAILED").inc()
            if job_id is None or callback is None:
                self.settle("delete", lambda: self.consumer.delete(received))
                return
            decision = Decision(Action.DELETE, 0, Status.FAILED, error.code, False)
            body = failure_body(job_id, error, decision, received.attempt)
            if not safe_id(job_id):  # no state can be kept for it: the one event, sent once
                terminal = Terminal(Status.FAILED, event_id(job_id, Status.FAILED), body, ours=True)
                self.deliver(callback, terminal)
                self.settle("delete", lambda: self.consumer.delete(received))
                return
            if self._concluded(received, job_id, callback, body):
                self.settle("delete", lambda: self.consumer.delete(received))
            else:
                self.settle("retry later", lambda: self.consumer.retry_later(received, 1))


def failure_body(job_id: str, error: Exception, decision: Decision, attempt: int = 1) -> dict[str, Any]:
    """The FAILED or CANCELLED callback body for ``error``."""
    text = str(error)[:2000]
    body = Callback(
        job_id=job_id, status=decision.terminal or Status.FAILED, message=text, error_code=decision.code,
        error_message=text, retryable=decision.retryable, attempt=attempt,
    )  # fmt: skip
    return body.body()
