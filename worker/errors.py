"""Errors raised by the daemon itself; ``code``/``retryable`` as everywhere else.

The retry decision reads only these two attributes (see :mod:`worker.retries`):
an exception without them is a worker-side fault and retried.
"""

from __future__ import annotations

from errors import ErrorCode, VidworkerError


class WorkerError(VidworkerError):
    code = ErrorCode.INTERNAL_ERROR
    retryable = True


class SourceNotFound(WorkerError):
    """The source object does not exist (or we may not read it)."""

    code = ErrorCode.SOURCE_NOT_FOUND
    retryable = False


class BucketNotAllowed(WorkerError):
    """The job names a bucket outside ``ALLOWED_BUCKETS``."""

    code = ErrorCode.INPUT_INVALID
    retryable = False


class SourceTooLarge(WorkerError):
    code = ErrorCode.MEDIA_LIMIT_EXCEEDED
    retryable = False


class OutputTaken(WorkerError):
    """The output key is not this job's to write: outside the output prefixes, a source, job state,
    another job's folder, or an object stamped by another job. Nothing is written."""

    code = ErrorCode.INPUT_INVALID
    retryable = False


class StorageUnavailable(WorkerError):
    """S3 failed in a way another attempt may not (5xx, throttling, network)."""

    code = ErrorCode.STORAGE_ERROR
    retryable = True


class DiskFull(WorkerError):
    """Not enough free disk for the job here; another worker (or later) may have it."""

    code = ErrorCode.DISK_FULL
    retryable = True


class TransferAborted(WorkerError):
    """A download or upload stopped by a cold stop (the second signal)."""

    code = ErrorCode.ABORTED
    retryable = True


class LeaseLost(WorkerError):
    """The job's message can no longer be kept invisible: another run may own it now.

    The job stops before publishing and leaves the message alone (no callback,
    no delete, no release): whoever holds it now settles it.
    """

    code = ErrorCode.LEASE_LOST
    retryable = True


class JobTimeout(WorkerError):
    """The job ran past ``WORKER_JOB_TIMEOUT`` (or would pass SQS's 12 h cap); never re-run forever."""

    code = ErrorCode.JOB_TIMEOUT
    retryable = False


class WorkerDied(WorkerError):
    """Every try of the job ended with its worker killed (OOM killer, a crash): seen in the DLQ."""

    code = ErrorCode.WORKER_DIED
    retryable = True
