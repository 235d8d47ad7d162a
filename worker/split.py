"""Split jobs, the worker's steps (issue 12): plan, upscale one segment, merge.

A job message whose source is longer than 1.5 x ``WORKER_SEGMENT_SECONDS``
(0: never split) is planned (``worker.segments``): one message per unfinished
segment goes to the job's queue and the job's own message is settled. A
segment message upscales its frame range into a segment object and marks it;
the worker that marks the last one enqueues the merge. The merge joins the
segments by stream copy with the source's audio, and the daemon publishes the
result as for any job, then the segment objects are removed. Every message is
a copy of the job's, so heartbeats, deadlines, the terminal marker, the
dead-letter watcher and the failure policy are the job's.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from errors import ErrorCode
from media import FrameRange, concat, probe, split
from tasks import Progress, TaskContext, TaskResult, UpscaleParams, UpscaleTask
from worker.attempt import Attempt
from worker.errors import SourceNotFound, WorkerError
from worker.segments import Plan, PlanMismatch, SegmentStore, segment_count, stage_body
from worker.storage import sha256_file

if TYPE_CHECKING:
    from worker.daemon import Worker

log = logging.getLogger(__name__)


class SegmentsPending(WorkerError):
    """A merge message arrived before every segment was marked (a duplicate, or a race): later."""

    code = ErrorCode.SEGMENTS_PENDING
    retryable = True


class SourceChanged(WorkerError):
    """The source's bytes changed under the plan: never merge mismatched segments."""

    code = ErrorCode.SOURCE_CHANGED
    retryable = False


class Splitter:
    """The split steps of one worker; ``run`` returns a completion record, or None when the step is done."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.store = SegmentStore(worker.storage, worker.keys)

    def applies(self, attempt: Attempt, task: Any) -> bool:
        """A stage message, or an UPSCALE job on a worker that splits."""
        split = self.worker.settings.segment_seconds > 0 and isinstance(task, UpscaleTask)
        return attempt.job.stage is not None or split

    def run(
        self, attempt: Attempt, task: Any, params: Any, source: Path, context: TaskContext
    ) -> dict[str, Any] | None:
        """The step this message asks for; None once a plan or a segment is done."""
        if not isinstance(task, UpscaleTask) or not isinstance(params, UpscaleParams):
            raise PlanMismatch(f"{attempt.job.task_type} jobs are not split")
        stage = attempt.job.stage
        if stage is None:
            return self._plan(attempt, task, params, source, context)
        plan = self._plan_of(attempt, source)
        if stage.stage == "segment":
            self._segment(attempt, task, params, source, context, plan, stage.index or 0)
            return None
        return self._merge(attempt, source, context, plan)

    def cleanup(self, attempt: Attempt) -> None:
        """After a merge published (or found the job published): the segment objects go."""
        if attempt.job.stage is not None and attempt.job.stage.stage == "merge":
            plan = self.store.plan(attempt.job_id)
            if plan is not None:
                self.store.remove_segments(plan)

    # ------------------------------------------------------------------ steps

    def _plan(
        self, attempt: Attempt, task: UpscaleTask, params: UpscaleParams, source: Path, context: TaskContext
    ) -> dict[str, Any] | None:
        """Split the job, or run it whole when it is short (returns its record then)."""
        held = self.store.plan(attempt.job_id)
        if held is None:
            info = probe(source, context.resources.tools, context.resources.limits)
            settings = self.worker.settings
            count = segment_count(
                info.frames, info.fps, segment_seconds=settings.segment_seconds, seconds_per_frame=0.0,
                job_timeout=settings.job_timeout,
            )  # fmt: skip
            if count == 1:
                return self.worker.publish(attempt, task.run(source, params, context))
            held = self.store.propose(self._new_plan(attempt, info.frames, info.fps, count, params))
        self._enqueue(attempt, held)
        return None

    def _new_plan(self, attempt: Attempt, frames: int, fps: Any, count: int, params: UpscaleParams) -> Plan:
        bucket = self.worker.storage.source_bucket(attempt.job.source_bucket)
        etag = self.worker.storage.etag(bucket, attempt.job.source_s3_key)
        ranges = split(frames, fps, float(frames / fps) / count)
        pinned = params.model_dump(mode="json", exclude={"captions"})
        source = {"bucket": bucket, "key": attempt.job.source_s3_key, "etag": etag}
        return Plan(attempt.job_id, source, fps, tuple((item.start, item.stop) for item in ranges), pinned)

    def _enqueue(self, attempt: Attempt, plan: Plan) -> None:
        """One message per unfinished segment (each its own FIFO group); or the merge when none is left."""
        received = attempt.received
        left = self.store.unfinished(plan)
        consumer = self.worker.consumer
        for index in left:
            body = stage_body(received.body, "segment", index)
            group = f"{attempt.job_id}-s{index}"
            consumer.send(received.queue_url, body, group=group, dedup=f"{group}-{received.lifetime}")
        if not left:
            self._enqueue_merge(attempt)
        log.info("split into %d segments; %d to do", len(plan.ranges), len(left))

    def _enqueue_merge(self, attempt: Attempt) -> None:
        received = attempt.received
        group = f"{attempt.job_id}-merge"
        body = stage_body(received.body, "merge")
        self.worker.consumer.send(received.queue_url, body, group=group, dedup=f"{group}-{received.lifetime}")
        log.info("every segment is done; merge enqueued")

    def _plan_of(self, attempt: Attempt, source: Path) -> Plan:
        plan = self.store.plan(attempt.job_id)
        if plan is None:
            raise PlanMismatch("a segment or merge message without a plan")
        bucket = self.worker.storage.source_bucket(attempt.job.source_bucket)
        if self.worker.storage.etag(bucket, attempt.job.source_s3_key) != plan.source.get("etag"):
            raise SourceChanged("the source changed after the job was split; its segments cannot be merged")
        return plan

    def _segment(
        self, attempt: Attempt, task: UpscaleTask, params: UpscaleParams, source: Path, context: TaskContext,
        plan: Plan, index: int,
    ) -> None:  # fmt: skip
        if index >= len(plan.ranges):
            raise PlanMismatch(f"segment {index} is not in the plan of {len(plan.ranges)}")
        store = self.store
        finished = store.finished(attempt.job_id)
        if index not in finished:
            frames = FrameRange(*plan.ranges[index])
            context = _job_progress(context, finished, plan)
            result = task.run_segment(source, params, context, frames, last=index == len(plan.ranges) - 1)
            attempt.check()
            key = store.segment_key(attempt.job_id, index)
            stored = self.worker.storage.publish(result.output, key, attempt.job_id)
            store.mark(attempt.job_id, index, _marker(result, stored.size, stored.sha256))
            log.info("segment %d of %d done (%d frames)", index + 1, len(plan.ranges), result.frame_count)
        if not store.unfinished(plan):
            self._enqueue_merge(attempt)

    def _merge(self, attempt: Attempt, source: Path, context: TaskContext, plan: Plan) -> dict[str, Any]:
        markers = self.store.finished(attempt.job_id)
        if len(markers) < len(plan.ranges):
            raise SegmentsPending(f"{len(markers)} of {len(plan.ranges)} segments are done")
        parts = [
            self._fetch(attempt, index, markers[index], context.work_dir) for index in range(len(plan.ranges))
        ]
        tools = context.resources.tools
        info = probe(source, tools, context.resources.limits)
        expected = sum(int(markers[index]["frames"]) for index in range(len(plan.ranges)))
        joined = concat(parts, context.work_dir / "output.mp4", fps=plan.fps, audio_from=info, tools=tools,
                        expected=expected)  # fmt: skip
        first = markers[0]
        result = TaskResult(
            output=joined.path, width=joined.width, height=joined.height, fps=float(plan.fps),
            frame_count=joined.frames, duration=joined.frames / float(plan.fps), audio=joined.audio,
            device=str(first["device"]), model=first.get("model"), encoder=joined.encoder,
            processing_seconds=sum(float(marker["seconds"]) for marker in markers.values()),
        )  # fmt: skip
        return self.worker.publish(attempt, result, segments=len(plan.ranges))

    def _fetch(self, attempt: Attempt, index: int, marker: dict[str, Any], work: Path) -> Path:
        """Download segment ``index`` and check it is the marked one (size, SHA-256)."""
        path = work / f"segment-{index:05d}.ts"
        storage = self.worker.storage
        try:
            storage.download(storage.bucket, self.store.segment_key(attempt.job_id, index), path)
        except SourceNotFound:  # removed by a concurrent merge that published: the replay will tell
            raise SegmentsPending(f"segment {index} is gone (another merge finished the job?)") from None
        if path.stat().st_size != marker["size"] or sha256_file(path) != marker["sha256"]:
            raise SegmentsPending(f"segment {index} in S3 is not the one its marker describes")
        return path


def _job_progress(context: TaskContext, finished: dict[int, dict[str, Any]], plan: Plan) -> TaskContext:
    """The segment's progress as the job's: frames of the finished segments plus this one's, of all."""
    base = sum(int(marker.get("frames", 0)) for marker in finished.values())

    def progress(update: Progress) -> None:
        context.progress(Progress(min(base + update.done, plan.frames), plan.frames))

    return dataclasses.replace(context, progress=progress)


def _marker(result: TaskResult, size: int, sha256: str) -> dict[str, Any]:
    return {
        "frames": result.frame_count, "size": size, "sha256": sha256, "device": result.device,
        "model": result.model, "encoder": result.encoder, "seconds": round(result.processing_seconds, 3),
    }  # fmt: skip
