"""The one error vocabulary of vidworker: every coded error's base and every ``errorCode``.

Each layer raises its own subclasses of :class:`VidworkerError` (``media``,
``models``, ``tasks``, ``worker``), and each names its ``code`` from
:class:`ErrorCode` and whether another try could help (``retryable``). The
failure policy (``worker.retries.decide``) reads only those two attributes; an
exception without them is a worker fault, retried.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar


class ErrorCode(StrEnum):
    """The ``errorCode`` of a FAILED or CANCELLED callback (spec §6)."""

    # the job as sent
    INPUT_INVALID = "INPUT_INVALID"
    SOURCE_NOT_FOUND = "SOURCE_NOT_FOUND"
    CALLBACK_REFUSED = "CALLBACK_REFUSED"
    # the media
    UNSUPPORTED_MEDIA = "UNSUPPORTED_MEDIA"
    MEDIA_CORRUPT = "MEDIA_CORRUPT"
    MEDIA_LIMIT_EXCEEDED = "MEDIA_LIMIT_EXCEEDED"
    DECODE_FAILED = "DECODE_FAILED"
    FONT_UNAVAILABLE = "FONT_UNAVAILABLE"
    MEDIA_ERROR = "MEDIA_ERROR"
    # the machine doing it
    ENCODE_FAILED = "ENCODE_FAILED"
    FRAME_COUNT_MISMATCH = "FRAME_COUNT_MISMATCH"
    MEDIA_TIMEOUT = "MEDIA_TIMEOUT"
    FFMPEG_UNAVAILABLE = "FFMPEG_UNAVAILABLE"
    MODEL_UNAVAILABLE = "MODEL_UNAVAILABLE"
    WEIGHTS_INVALID = "WEIGHTS_INVALID"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    INFERENCE_FAILED = "INFERENCE_FAILED"
    DEVICE_ERROR = "DEVICE_ERROR"
    DEVICE_LOST = "DEVICE_LOST"
    MODEL_ERROR = "MODEL_ERROR"
    STORAGE_ERROR = "STORAGE_ERROR"
    DISK_FULL = "DISK_FULL"
    TASK_FAILED = "TASK_FAILED"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    # the job's life
    CANCELLED = "CANCELLED"
    ABORTED = "ABORTED"
    LEASE_LOST = "LEASE_LOST"
    JOB_TIMEOUT = "JOB_TIMEOUT"
    WORKER_DIED = "WORKER_DIED"
    PLAN_UNSUPPORTED = "PLAN_UNSUPPORTED"
    SOURCE_CHANGED = "SOURCE_CHANGED"


class VidworkerError(Exception):
    """Base of every coded error: ``code`` for the callback, ``retryable`` for the failure policy."""

    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL_ERROR
    retryable: ClassVar[bool] = True
