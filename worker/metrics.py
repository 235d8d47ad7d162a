"""Prometheus metrics of the daemon (served on /metrics by :mod:`worker.health`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry()

JOBS = Counter(
    "vidworker_jobs", "Messages settled, by task and outcome", ["task", "outcome"], registry=REGISTRY
)
JOB_SECONDS = Histogram(
    "vidworker_job_seconds",
    "Wall time per handled message, in seconds",
    buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600),
    registry=REGISTRY,
)
FRAMES = Counter(
    "vidworker_frames",
    "Upscaled frames, by how: computed by the network or reused from the previous frame (identical input)",
    ["how"],
    registry=REGISTRY,
)
RECEIVE_ERRORS = Counter("vidworker_receive_errors", "Failed SQS receive calls", registry=REGISTRY)
LOOP_ERRORS = Counter(
    "vidworker_loop_errors",
    "Unexpected errors while handling a message (the loop went on)",
    registry=REGISTRY,
)
SETTLE_ERRORS = Counter(
    "vidworker_settle_errors", "Failed settling calls (delete, retry, hand back, outbox)", ["call"],
    registry=REGISTRY,
)  # fmt: skip
HEARTBEAT_FAILURES = Counter(
    "vidworker_heartbeat_failures", "Visibility extensions that failed", registry=REGISTRY
)
LEASES_LOST = Counter(
    "vidworker_leases_lost", "Jobs stopped because their message was lost", registry=REGISTRY
)
DEAD_LETTERS = Counter(
    "vidworker_dead_letters_failed", "Dead-lettered jobs reported FAILED by the watcher", registry=REGISTRY
)
OUTBOX = Counter(
    "vidworker_outbox", "Kept terminal callbacks, by what became of them", ["outcome"], registry=REGISTRY
)


def count_frames(frames: int, reused: int) -> None:
    """An upscale finished: ``frames`` output frames, ``reused`` of them without running the network."""
    FRAMES.labels("reused").inc(reused)
    FRAMES.labels("computed").inc(frames - reused)
