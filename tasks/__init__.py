"""Task classes: a local source file + validated parameters → a local output file.

Tasks never talk to AWS or HTTP; they report progress and poll for cancellation
through the :class:`TaskContext` they are given.
"""

from tasks.base import Progress, Resources, Task, TaskContext, TaskResult
from tasks.engines import EngineCache
from tasks.errors import Cancelled, InvalidParameters, TaskError, UnknownTask
from tasks.registry import TASKS, TaskRegistry
from tasks.upscale import UpscaleParams, UpscaleTask

__all__ = [
    "TASKS",
    "Cancelled",
    "EngineCache",
    "InvalidParameters",
    "Progress",
    "Resources",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskRegistry",
    "TaskResult",
    "UnknownTask",
    "UpscaleParams",
    "UpscaleTask",
]
