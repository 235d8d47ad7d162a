"""Split jobs, the worker's steps (issue 12): plan, upscale one segment, merge.

Every UPSCALE job message is planned first (``worker.segments``): when its
source is longer than 1.5 x ``WORKER_SEGMENT_SECONDS`` or its estimated compute
would not fit half of ``WORKER_JOB_TIMEOUT``, the plan is written once, one
message per unfinished segment goes to the job's queue and the job's own
message is settled; otherwise the job runs whole. A segment message upscales
its frame range into a segment object and marks it; the worker that marks the
last one enqueues the merge. The merge checks every segment (a bad one is
redone), joins them by stream copy with the source's audio, and the daemon
publishes the result as for any job; once the outcome is decided, whatever it
is, the segment objects are removed. Every message is a copy of the job's, so
heartbeats, deadlines, the terminal marker, the dead-letter watcher and the
failure policy are the job's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from errors import ErrorCode
from media import Encoder, FrameRange, MediaError, MediaInfo, choose_encoder, concat, probe, split
from media.segments import read_segment
from media.writer import ENCODERS
from models.device import select_device
from tasks import Cancelled, Progress, TaskContext, TaskResult, UpscaleParams, UpscaleTask
from worker import metrics
from worker.attempt import Attempt
from worker.errors import SourceNotFound, WorkerError
from worker.segments import (
    SEGMENT_TAGS,
    FrameCost,
    Plan,
    PlanMismatch,
    PlanUnsupported,
    SegmentStore,
    segment_count,
    stage_body,
)
from worker.storage import sha256_file

if TYPE_CHECKING:
    from worker.daemon import Worker

log = logging.getLogger(__name__)


class SourceChanged(WorkerError):
    """The source's bytes changed under the plan: never merge mismatched segments."""

    code = ErrorCode.SOURCE_CHANGED
    retryable = False


class Splitter:
    """The split steps of one worker; ``run`` returns a completion record, or None when the step is done."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.store = SegmentStore(worker.storage, worker.keys)
        self.costs = FrameCost(worker.settings.cost_factor)
        self.reported: dict[str, int] = {}  # job → the most frames this worker reported done

    def applies(self, attempt: Attempt, task: Any) -> bool:
        """A stage message, or an UPSCALE job (planned: split when long or costly, else run whole)."""
        return attempt.job.stage is not None or isinstance(task, UpscaleTask)

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

    def cleanup(self, job_id: str) -> None:
        """The job's outcome is decided (published, failed or cancelled): its segment objects go."""
        self.reported.pop(job_id, None)
        plan = self.store.plan(job_id)
        if plan is not None:
            self.store.remove_segments(plan)

    # ------------------------------------------------------------------ steps

    def _plan(
        self, attempt: Attempt, task: UpscaleTask, params: UpscaleParams, source: Path, context: TaskContext
    ) -> dict[str, Any] | None:
        """Split the job, or run it whole when it is short and cheap (returns its record then)."""
        held = self.store.plan(attempt.job_id)
        if held is None:
            info = probe(source, context.resources.tools, context.resources.limits)
            device = select_device(params.device)[0].type
            settings = self.worker.settings
            cost = self.costs.seconds_per_frame(params.model, device, info.width * info.height)
            count = segment_count(
                info.frames, info.fps, segment_seconds=settings.segment_seconds, seconds_per_frame=cost,
                job_timeout=settings.job_timeout,
            )  # fmt: skip
            if count == 1:
                result = task.run(source, params, context)
                self._observe(result, params)
                return self.worker.publish(attempt, result)
            plan = self._new_plan(attempt, info, count, params, device, context)
            held = self.store.propose(plan)
        self._enqueue(attempt, held)
        return None

    def _new_plan(
        self, attempt: Attempt, info: MediaInfo, count: int, params: UpscaleParams, device: str,
        context: TaskContext,
    ) -> Plan:  # fmt: skip
        bucket = self.worker.storage.source_bucket(attempt.job.source_bucket)
        etag = self.worker.storage.etag(bucket, attempt.job.source_s3_key)
        ranges = split(info.frames, info.fps, float(info.frames / info.fps) / count)
        scale = params.scale_factor
        encoder = choose_encoder(context.resources.tools, info.width * scale, info.height * scale,
                                 codec=params.codec, gpu=device == "cuda")  # fmt: skip
        pinned = {**params.model_dump(mode="json", exclude={"captions"}), "encoder": encoder.name}
        source = {"bucket": bucket, "key": attempt.job.source_s3_key, "etag": etag}
        cuts = tuple((item.start, item.stop) for item in ranges)
        return Plan(attempt.job_id, source, info.fps, cuts, pinned)

    def _enqueue(self, attempt: Attempt, plan: Plan) -> None:
        """One message per unfinished segment (each its own FIFO group); or the merge when none is left."""
        markers = self.store.finished(plan.job_id)
        left = [index for index in range(len(plan.ranges)) if index not in markers]
        for index in left:
            self._send_segment(attempt, index)
        if not left:
            self._enqueue_merge(attempt, markers)
        log.info("split into %d segments; %d to do", len(plan.ranges), len(left))

    def _send_segment(self, attempt: Attempt, index: int, redo: str = "") -> None:
        """Segment ``index``'s message; on FIFO its own group (segments run side by side), deduplicated
        by job, segment and lifetime (``redo``: what was wrong with the segment it replaces)."""
        received = attempt.received
        group = _fifo_id(attempt.job_id, f"s{index}")
        body = stage_body(received.body, "segment", index)
        dedup = _fifo_id(attempt.job_id, f"s{index}", str(received.lifetime), redo)
        self.worker.consumer.send(received.queue_url, body, group=group, dedup=dedup)

    def _enqueue_merge(self, attempt: Attempt, markers: dict[int, dict[str, Any]]) -> None:
        """The merge's message, deduplicated by job, lifetime and the segment runs it will join (a redone
        segment is a new run even where its bytes are the same: the encode is deterministic)."""
        received = attempt.received
        joined = hashlib.sha256("".join(str(markers[i].get("run")) for i in sorted(markers)).encode())
        dedup = _fifo_id(attempt.job_id, "merge", str(received.lifetime), joined.hexdigest()[:16])
        body = stage_body(received.body, "merge")
        self.worker.consumer.send(
            received.queue_url, body, group=_fifo_id(attempt.job_id, "merge"), dedup=dedup
        )
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
            pinned, encoder = self._pinned(task, params, plan, context)
            frames = FrameRange(*plan.ranges[index])
            log.info("segment %d of %d: frames %d-%d", index + 1, len(plan.ranges), frames.start,
                     frames.stop - 1)  # fmt: skip
            context = self._job_progress(context, finished, plan)
            last = index == len(plan.ranges) - 1
            result = task.run_segment(source, pinned, context, frames, last=last, encoder=encoder)
            self._observe(result, pinned)
            attempt.check()
            key = store.segment_key(attempt.job_id, index)
            stored = self.worker.storage.publish(
                result.output, key, attempt.job_id, content_type="video/mp2t", tags=SEGMENT_TAGS
            )
            store.mark(attempt.job_id, index, _marker(result, stored.size, stored.sha256))
            log.info("segment %d of %d done (%d frames)", index + 1, len(plan.ranges), result.frame_count)
            if self.worker.state.cancel_requested(attempt.job_id):  # cancelled meanwhile: no merge
                raise Cancelled("the job was cancelled")
            if self.worker.state.terminal(attempt.job_id, attempt.lifetime) is not None:
                store.storage.delete(key)  # failed meanwhile; whoever decided it removed the others
                return
        markers = store.finished(attempt.job_id)
        if len(markers) == len(plan.ranges):
            self._enqueue_merge(attempt, markers)

    def _pinned(
        self, task: UpscaleTask, params: UpscaleParams, plan: Plan, context: TaskContext
    ) -> tuple[UpscaleParams, Encoder]:
        """The plan's parameters (this worker's defaults may differ) and encoder; :class:`PlanUnsupported`
        when this worker cannot honour them."""
        settings = dict(plan.settings)
        name = str(settings.pop("encoder", ""))
        encoder = next((item for item in ENCODERS.values() if item.name == name), None)
        if encoder is None or (encoder.hardware and not context.resources.tools.encoder_works(name)):
            raise PlanUnsupported(f"the plan's encoder {name!r} does not work on this worker")
        try:
            pinned = task.parse({**settings, "captions": params.captions})
        except Exception as error:
            raise PlanUnsupported(f"the plan's settings are not valid here: {error}") from None
        return pinned, encoder

    def _job_progress(
        self, context: TaskContext, finished: dict[int, dict[str, Any]], plan: Plan
    ) -> TaskContext:
        """The segment's progress as the job's: frames of the finished segments plus this one's, of all;
        never below what this worker last reported for the job (another segment's figure may be ahead)."""
        base = sum(int(marker.get("frames", 0)) for marker in finished.values())
        job_id = plan.job_id

        def progress(update: Progress) -> None:
            done = max(min(base + update.done, plan.frames), self.reported.get(job_id, 0))
            self.reported[job_id] = done
            if len(self.reported) > 1000:  # jobs another worker finished: forget the oldest
                del self.reported[next(iter(self.reported))]
            context.progress(Progress(done, plan.frames))

        return dataclasses.replace(context, progress=progress)

    def _observe(self, result: TaskResult, params: UpscaleParams) -> None:
        metrics.count_frames(result.frame_count, result.frames_reused or 0)
        pixels = result.width * result.height // params.scale_factor**2
        self.costs.observe(result.model, result.device, pixels, result.frame_count, result.processing_seconds)

    def _merge(
        self, attempt: Attempt, source: Path, context: TaskContext, plan: Plan
    ) -> dict[str, Any] | None:
        """Join the segments and publish; None (the message goes) while some are not (or no longer) done:
        the worker that marks the last one enqueues another merge."""
        markers = self.store.finished(attempt.job_id)
        if len(markers) < len(plan.ranges):
            log.info("merge: %d of %d segments are done; the last one enqueues the merge", len(markers),
                     len(plan.ranges))  # fmt: skip
            return None
        tools = context.resources.tools
        parts = []
        for index in range(len(plan.ranges)):
            part = self._fetch(attempt, index, markers[index], plan, context)
            if part is None:
                return None
            parts.append(part)
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
            **_reuse_of(list(markers.values())),
        )  # fmt: skip
        return self.worker.publish(attempt, result, segments=len(plan.ranges))

    def _fetch(
        self, attempt: Attempt, index: int, marker: dict[str, Any], plan: Plan, context: TaskContext
    ) -> Path | None:
        """Segment ``index``, checked: the marked object (size, SHA-256), MPEG-TS, the planned frames.

        None when it is gone (a concurrent merge published and removed it: the replay will tell) or
        bad: then it is redone (its object and marker removed, its message sent again).
        """
        path = context.work_dir / f"segment-{index:05d}.ts"
        storage = self.worker.storage
        key = self.store.segment_key(attempt.job_id, index)
        try:
            storage.download(storage.bucket, key, path)
        except SourceNotFound:
            log.warning("merge: segment %d is gone (another merge finished the job?)", index)
            return None
        start, stop = plan.ranges[index]
        last = index == len(plan.ranges) - 1
        problem = None
        if path.stat().st_size != marker["size"] or sha256_file(path) != marker["sha256"]:
            problem = "is not the object its marker describes"
        else:
            try:
                frames = read_segment(path, context.resources.tools).frames
            except MediaError as error:
                frames, problem = 0, f"does not read back ({error})"
            if problem is None and (frames != marker["frames"] or (not last and frames != stop - start)):
                problem = f"holds {frames} frames where {stop - start} were planned"
        if problem is None:
            return path
        log.error("merge: segment %d %s; redoing it", index, problem)
        self.store.forget(attempt.job_id, index)
        self._send_segment(attempt, index, redo=str(marker.get("run") or marker.get("sha256"))[:16])
        return None


def _fifo_id(*parts: str) -> str:
    """A FIFO group or deduplication id from ``parts`` (ids are letters, digits, ``-_.``); hashed when
    it would pass SQS's 128 characters."""
    joined = "-".join(part for part in parts if part)
    return joined if len(joined) <= 128 else hashlib.sha256(joined.encode()).hexdigest()


def _marker(result: TaskResult, size: int, sha256: str) -> dict[str, Any]:
    return {
        "run": uuid.uuid4().hex, "frames": result.frame_count, "size": size, "sha256": sha256,
        "device": result.device, "model": result.model, "encoder": result.encoder,
        "seconds": round(result.processing_seconds, 3), "runtime": result.runtime,
        "framesReused": result.frames_reused, "skipRate": result.skip_rate,
    }  # fmt: skip


def _reuse_of(markers: list[dict[str, Any]]) -> dict[str, Any]:
    """The joined job's runtime and reuse figures: frames summed, skip rate weighted by frames."""
    frames = sum(int(marker["frames"]) for marker in markers) or 1
    skipped = sum(float(marker.get("skipRate") or 0.0) * int(marker["frames"]) for marker in markers)
    return {
        "runtime": markers[0].get("runtime"),
        "frames_reused": sum(int(marker.get("framesReused") or 0) for marker in markers),
        "skip_rate": round(skipped / frames, 4),
    }
