"""Long jobs in segments (issue 12), the coordination side: the plan, segment markers, stage messages.

The state the planner, the segment workers and the merge (``worker.split``)
share, all under ``jobs/{jobId}/segments/``, and the estimate that sizes a plan
(:func:`segment_count`, :class:`FrameCost`):

* ``plan.json`` — written once (``If-None-Match: *``): schema version, the
  source it was made from (bucket, key, ETag), frame ranges in the unsplit
  pipeline's frame domain, and the pinned settings every segment must honour.
  A second planner reads the first one's plan instead of writing its own.
* ``{index:05d}.ts`` — a finished segment (MPEG-TS, see ``media.segments``),
  tagged :data:`SEGMENT_TAGS`; removed once the job's outcome is decided.
* ``{index:05d}.json`` — its marker, written once after the upload: frames,
  size and SHA-256 of the segment object, and a run id. A segment with a marker
  is never redone unless the merge finds it bad; the merge starts when every
  range has one.

A stage message is the job's own body plus ``"vidworker": {"stage":
"segment", "index": i}`` (or ``{"stage": "merge"}``), so everything that
works on a job message (keys, callbacks, the dead-letter watcher, the
terminal marker) works on its segments too.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from errors import ErrorCode, VidworkerError
from media.segments import MIN_SEGMENT_FRAMES
from models import MODELS
from worker.keys import KeyPolicy
from worker.storage import Storage

SCHEMA = 1
SEGMENT_TAGS = {"vidworker": "segment"}
"""Tags of a segment object: a lifecycle rule on them expires what a lost job leaves (deploy/README.md)."""
STAGE = "vidworker"
"""Top-level field of a stage message; the backend never sends it."""
COMFORT = 0.5
"""A segment's estimated compute may use at most this share of ``WORKER_JOB_TIMEOUT``."""
MIN_OBSERVED_SECONDS = 60.0
"""A run measures the per-frame cost only when it took this long (start-up is then a few per cent)."""


class TooLong(VidworkerError):
    """Even one frame's estimated compute would not fit the job deadline: refused up front."""

    code = ErrorCode.JOB_TIMEOUT
    retryable = False


class PlanMismatch(VidworkerError):
    """A stage message that does not fit its job: no plan, an index outside it, a task that is not split."""

    code = ErrorCode.INPUT_INVALID
    retryable = False


class PlanUnsupported(VidworkerError):
    """This worker cannot honour the plan (a schema it does not know, an encoder it lacks): the message
    waits for one that can. Retried, so counted: where no worker can, the job fails instead of going
    round forever."""

    code = ErrorCode.PLAN_UNSUPPORTED
    retryable = True


def segment_count(
    frames: int, fps: Fraction, *, segment_seconds: float, seconds_per_frame: float, job_timeout: float
) -> int:
    """How many segments a job of ``frames`` needs: 1 when it fits whole.

    Split when the source is longer than 1.5 x ``segment_seconds`` (0: never
    for length), or when the estimated compute (``frames x seconds_per_frame``)
    would not fit comfortably (:data:`COMFORT`) in ``job_timeout``; segments are
    then sized so each one's estimate fits. Raises :class:`TooLong` when even the
    shortest segment (:data:`~media.segments.MIN_SEGMENT_FRAMES`) would not fit the deadline.
    """
    if MIN_SEGMENT_FRAMES * seconds_per_frame > job_timeout and frames > 1:
        raise TooLong(
            f"one frame takes about {seconds_per_frame:.0f} s here: even a {MIN_SEGMENT_FRAMES}-frame "
            f"segment would not fit the job deadline of {job_timeout:.0f} s (WORKER_JOB_TIMEOUT)"
        )
    by_length = 1
    if segment_seconds > 0 and frames / fps > 1.5 * segment_seconds:
        by_length = round(frames / fps / segment_seconds)
    by_cost = math.ceil(frames * seconds_per_frame / (COMFORT * job_timeout))
    return max(1, min(frames // MIN_SEGMENT_FRAMES, max(by_length, by_cost)))


class FrameCost:
    """Seconds per input megapixel of one frame, by model and device: what this worker measured, else
    the model's CPU figure (:attr:`~models.ModelSpec.cpu_cost`) times ``factor`` (``WORKER_COST_FACTOR``:
    this host's speed against the box that figure was measured on; 0 never splits by cost).

    A GPU has no table figure (none was measured here): until its worker has run a job of that model,
    only the length splits there.
    """

    def __init__(self, factor: float = 1.0) -> None:
        self.factor = factor
        self._runs: dict[tuple[str, str], tuple[float, float]] = {}  # seconds, frame-megapixels

    def seconds_per_frame(self, model: str, device: str, pixels: int) -> float:
        """The estimated compute of one ``pixels``-pixel source frame (decode, inference, encode)."""
        if self.factor == 0:
            return 0.0
        measured = self._runs.get((model, device))
        if measured is not None:
            per_megapixel = measured[0] / measured[1]
        else:
            per_megapixel = MODELS.get(model).cpu_cost * self.factor if device == "cpu" else 0.0
        return per_megapixel * pixels / 1e6

    def observe(self, model: str | None, device: str, pixels: int, frames: int, seconds: float) -> None:
        """A finished run's cost. Runs shorter than :data:`MIN_OBSERVED_SECONDS` are ignored (start-up
        would dominate them); the others add up: their seconds over their frame-megapixels."""
        if model is None or frames < 1 or pixels < 1 or seconds < MIN_OBSERVED_SECONDS:
            return
        key = (model, device)
        total_seconds, megapixels = self._runs.get(key, (0.0, 0.0))
        total_seconds, megapixels = total_seconds + seconds, megapixels + frames * pixels / 1e6
        self._runs[key] = (total_seconds, megapixels)


@dataclass(frozen=True)
class Plan:
    """One split job: frame ranges ``[start, stop)`` and what every segment must honour."""

    job_id: str
    source: dict[str, Any]  # bucket, key, etag
    fps: Fraction
    ranges: tuple[tuple[int, int], ...]
    settings: dict[str, Any]  # pinned: model, scale, tile, encoder, quality…
    schema: int = SCHEMA

    @property
    def frames(self) -> int:
        return self.ranges[-1][1] if self.ranges else 0

    def body(self) -> dict[str, Any]:
        return {
            "schema": self.schema, "jobId": self.job_id, "source": self.source, "fps": str(self.fps),
            "ranges": [list(item) for item in self.ranges], "settings": self.settings,
        }  # fmt: skip

    @classmethod
    def of(cls, body: dict[str, Any]) -> Plan:
        """A stored plan; :class:`PlanUnsupported` for a schema this worker does not know."""
        if body.get("schema") != SCHEMA:
            raise PlanUnsupported(f"plan schema {body.get('schema')!r}; this worker knows {SCHEMA}")
        ranges = tuple((int(start), int(stop)) for start, stop in body["ranges"])
        return cls(
            str(body["jobId"]), dict(body["source"]), Fraction(body["fps"]), ranges, dict(body["settings"])
        )


class SegmentStore:
    """The plan and segment objects of split jobs in the output bucket."""

    def __init__(self, storage: Storage, keys: KeyPolicy) -> None:
        self.storage = storage
        self.keys = keys

    def prefix(self, job_id: str) -> str:
        return f"{self.keys.state_prefix(job_id)}segments/"

    def plan_key(self, job_id: str) -> str:
        return f"{self.prefix(job_id)}plan.json"

    def segment_key(self, job_id: str, index: int) -> str:
        return f"{self.prefix(job_id)}{index:05d}.ts"

    def marker_key(self, job_id: str, index: int) -> str:
        return f"{self.prefix(job_id)}{index:05d}.json"

    def plan(self, job_id: str) -> Plan | None:
        body = self.storage.get_json(self.plan_key(job_id))
        return None if body is None else Plan.of(body)

    def propose(self, plan: Plan) -> Plan:
        """Write ``plan`` unless one exists; returns the plan that holds (a second planner's is dropped)."""
        if self.storage.put_json_once(self.plan_key(plan.job_id), plan.body()):
            return plan
        held = self.plan(plan.job_id)
        return held if held is not None else plan

    def mark(self, job_id: str, index: int, marker: dict[str, Any]) -> None:
        """Record a finished segment (once; a second run's marker is dropped)."""
        self.storage.put_json_once(self.marker_key(job_id, index), {**marker, "index": index})

    def finished(self, job_id: str) -> dict[int, dict[str, Any]]:
        """Markers of the finished segments, by index."""
        found: dict[int, dict[str, Any]] = {}
        for key in self.storage.keys(self.prefix(job_id), limit=10_000):
            name = key.rsplit("/", 1)[1]
            if name.endswith(".json") and name[:5].isdigit():
                marker = self.storage.get_json(key)
                if marker is not None:
                    found[int(name[:5])] = marker
        return found

    def forget(self, job_id: str, index: int) -> None:
        """Segment ``index`` is bad: its marker and object go, so that it is redone."""
        self.storage.delete(self.marker_key(job_id, index))
        self.storage.delete(self.segment_key(job_id, index))

    def remove_segments(self, plan: Plan) -> None:
        """Delete the segment objects (after the merge published, or found it published)."""
        for index in range(len(plan.ranges)):
            self.storage.delete(self.segment_key(plan.job_id, index))


def stage_body(job_body: str, stage: str, index: int | None = None) -> str:
    """The body of a segment or merge message for the job whose message body is ``job_body``."""
    raw = json.loads(job_body)
    raw[STAGE] = {"stage": stage, **({} if index is None else {"index": index})}
    return json.dumps(raw)
