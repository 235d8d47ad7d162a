"""Errors raised by the daemon itself; ``code``/``retryable`` as everywhere else.

The retry decision reads only these two attributes (see :mod:`worker.retries`):
an exception without them is a worker-side fault and retried.
"""

from __future__ import annotations

from typing import ClassVar


class WorkerError(Exception):
    code: ClassVar[str] = "INTERNAL_ERROR"
    retryable: ClassVar[bool] = True


class SourceNotFound(WorkerError):
    """The source object does not exist (or we may not read it)."""

    code = "SOURCE_NOT_FOUND"
    retryable = False


class BucketNotAllowed(WorkerError):
    """The job names a bucket outside ``ALLOWED_BUCKETS``."""

    code = "INPUT_INVALID"
    retryable = False


class SourceTooLarge(WorkerError):
    code = "MEDIA_LIMIT_EXCEEDED"
    retryable = False


class OutputTaken(WorkerError):
    """The requested output key already holds another job's recorded result."""

    code = "INPUT_INVALID"
    retryable = False


class StorageUnavailable(WorkerError):
    """S3 failed in a way another attempt may not (5xx, throttling, network)."""

    code = "STORAGE_ERROR"
    retryable = True
