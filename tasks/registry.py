"""The task registry: task type name (spec §3 ``taskType``) → task."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tasks.base import Task
from tasks.captions import CaptionRenderTask
from tasks.errors import UnknownTask
from tasks.upscale import UpscaleTask
from tasks.visualize import VisualizeTask


class TaskRegistry:
    """Tasks by upper-case name; :meth:`add` refuses a name twice."""

    def __init__(self) -> None:
        self._tasks: dict[str, Task[Any]] = {}

    def add(self, task: Task[Any]) -> None:
        key = task.name.upper()
        if key in self._tasks:
            raise ValueError(f"task {key} is already registered")
        self._tasks[key] = task

    def get(self, name: str) -> Task[Any]:
        """The task for ``name`` (case-insensitive) or :class:`UnknownTask`."""
        task = self._tasks.get(name.strip().upper())
        if task is None:
            raise UnknownTask(f"unknown task type {name!r}; known: {', '.join(self._tasks)}")
        return task

    def __iter__(self) -> Iterator[str]:
        return iter(self._tasks)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.strip().upper() in self._tasks


TASKS = TaskRegistry()
TASKS.add(UpscaleTask())
TASKS.add(CaptionRenderTask())
TASKS.add(VisualizeTask())
