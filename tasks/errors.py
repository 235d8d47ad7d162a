"""Errors raised by tasks themselves (media and model errors pass through as they are)."""

from __future__ import annotations

from typing import ClassVar


class TaskError(Exception):
    """Base of the errors in :mod:`tasks`; ``code`` and ``retryable`` as in ``media``/``models``."""

    code: ClassVar[str] = "TASK_FAILED"
    retryable: ClassVar[bool] = False


class InvalidParameters(TaskError):
    """The job's parameters do not validate; the message names the field."""

    code = "INPUT_INVALID"


class UnknownTask(TaskError):
    """The job names a task type that is not registered."""

    code = "INPUT_INVALID"


class Cancelled(TaskError):
    """The job was cancelled (by the backend or a shutdown) while it ran."""

    code = "CANCELLED"


class StageFailed(TaskError):
    """A pipeline stage raised something that is not one of our errors (a bug, a library fault)."""

    code = "INTERNAL_ERROR"
    retryable = True
