"""Errors raised by tasks themselves (media and model errors pass through as they are)."""

from __future__ import annotations

from errors import ErrorCode, VidworkerError


class TaskError(VidworkerError):
    """Base of the errors in :mod:`tasks`; ``code`` and ``retryable`` as in ``media``/``models``."""

    code = ErrorCode.TASK_FAILED
    retryable = False


class InvalidParameters(TaskError):
    """The job's parameters do not validate; the message names the field."""

    code = ErrorCode.INPUT_INVALID


class UnknownTask(TaskError):
    """The job names a task type that is not registered."""

    code = ErrorCode.INPUT_INVALID


class Cancelled(TaskError):
    """The job was cancelled (by the backend or a shutdown) while it ran."""

    code = ErrorCode.CANCELLED


class StageFailed(TaskError):
    """A pipeline stage raised something that is not one of our errors (a bug, a library fault)."""

    code = ErrorCode.INTERNAL_ERROR
    retryable = True
