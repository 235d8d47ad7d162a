"""One try of one job: everything per-try in one object, passed once through the daemon's steps."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from worker.consumer import Received
from worker.errors import JobTimeout, LeaseLost
from worker.heartbeat import Heartbeat
from worker.message import Job
from worker.notify import ProgressChannel

CANCEL_POLL = 2.0
"""Seconds between reads of the job's cancel marker while it runs."""


@dataclass
class Attempt:
    """The message, its job, and what this try has set up so far.

    ``deadline`` is on the monotonic clock: past it the try ends JOB_TIMEOUT.
    """

    received: Received
    job: Job
    callback: str | None
    deadline: float
    started: float = field(default_factory=time.monotonic)
    task: str = "unknown"
    key: str = ""
    heartbeat: Heartbeat | None = None
    channel: ProgressChannel | None = None
    cancel_marker: Callable[[], bool] | None = None
    _polled: float = 0.0

    @property
    def job_id(self) -> str:
        return self.job.job_id

    @property
    def number(self) -> int:
        """This try's number in the job's lifetime (1-based)."""
        return self.received.attempt

    @property
    def lifetime(self) -> int:
        return self.received.lifetime

    def check(self) -> None:
        """Raise when the try must end now: the lease is lost, or the deadline has passed."""
        if self.heartbeat is not None and self.heartbeat.lost.is_set():
            raise LeaseLost("the message's visibility could not be kept; another run may own the job")
        if time.monotonic() > self.deadline:
            raise JobTimeout(f"the job ran past its deadline of {self.deadline - self.started:.0f} s")

    def cancelled(self, aborting: bool) -> bool:
        """For the task between batches: raises as :meth:`check`; True on shutdown or a cancel.

        A cancel is the backend's answer to this try's progress, or the job's
        cancel marker (any worker's, ``worker cancel``), read at most every
        :data:`CANCEL_POLL` seconds.
        """
        self.check()
        if aborting or (self.channel is not None and self.channel.cancelled.is_set()):
            return True
        now = time.monotonic()
        if self.cancel_marker is not None and now - self._polled >= CANCEL_POLL:
            self._polled = now
            return self.cancel_marker()
        return False
