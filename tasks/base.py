"""What every task is given and what it returns. Tasks know nothing of AWS or HTTP."""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from media import Encoder, MediaLimits, Output, Tools
from media.render import finish_output, partial_path, run_render
from models import WeightStore
from tasks.engines import EngineCache
from tasks.errors import Cancelled, InvalidParameters


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` units (frames) of ``stage``; ``total`` is an estimate until the end."""

    done: int
    total: int
    stage: str = "processing"

    @property
    def fraction(self) -> float:
        """0-1, never above 1 even when the estimate was low."""
        return min(1.0, self.done / self.total) if self.total > 0 else 0.0


def _no_progress(progress: Progress) -> None:
    return None


def _never_cancelled() -> bool:
    return False


@dataclass(frozen=True)
class Resources:
    """Long-lived things a task uses: binaries, limits, weights and loaded engines."""

    tools: Tools = field(default_factory=Tools)
    limits: MediaLimits = field(default_factory=MediaLimits)
    store: WeightStore | None = None
    engines: EngineCache | None = None
    default_models: Mapping[str, str] = field(default_factory=dict)
    """Queue (``gpu``/``cpu``) → the model a job that names none gets (``DEFAULT_MODEL_GPU``/``_CPU``)."""


@dataclass(frozen=True)
class TaskContext:
    """One run of a task.

    ``work_dir`` is the job's own empty directory; the task writes only there.
    ``progress`` is called from the task's main thread after each batch and must
    return quickly. ``cancelled`` is polled between batches; when it returns
    True the task stops and raises :class:`~tasks.errors.Cancelled`.
    """

    work_dir: Path
    resources: Resources
    progress: Callable[[Progress], None] = _no_progress
    cancelled: Callable[[], bool] = _never_cancelled
    inputs: Mapping[str, Path] = field(default_factory=dict)
    """The files of :meth:`Task.attachments`, by name, already fetched (in ``work_dir``)."""

    def input(self, name: str) -> Path:
        """The fetched attachment ``name``; a task asks only for those it declared."""
        path = self.inputs.get(name)
        if path is None:
            raise InvalidParameters(f"the input {name!r} was not provided")
        return path


@dataclass(frozen=True)
class Attachment:
    """A second input a job names in its parameters (an S3 key in the source's bucket).

    The worker fetches it to ``work_dir/name`` (a fixed name, never the key's)
    before :meth:`Task.run`, refusing it above ``max_bytes``.
    """

    key: str
    max_bytes: int


@dataclass(frozen=True)
class TaskResult:
    """A finished output file in the work dir and what it is. Seconds, pixels, frames/s."""

    output: Path
    width: int
    height: int
    fps: float
    frame_count: int
    duration: float
    audio: bool
    device: str
    model: str | None
    encoder: str
    processing_seconds: float
    warnings: tuple[str, ...] = ()
    runtime: str | None = None
    """What executed the network (``torch``, ``openvino``); None for a task without a model."""
    frames_reused: int | None = None
    """Frames whose every window was the previous frame's (:mod:`models.reuse`); None: no model."""
    skip_rate: float | None = None
    """The share of the network's work that reuse skipped, 0-1."""

    def metadata(self) -> dict[str, Any]:
        """The callback's ``metadata`` object (spec §6), camelCase."""
        return {
            "width": self.width,
            "height": self.height,
            "fps": round(self.fps, 3),
            "frameCount": self.frame_count,
            "duration": round(self.duration, 3),
            "audio": self.audio,
            "device": self.device,
            "model": self.model,
            "encoder": self.encoder,
            "processingSeconds": round(self.processing_seconds, 3),
            "warnings": list(self.warnings),
        } | self._inference()

    def _inference(self) -> dict[str, Any]:
        if self.runtime is None:
            return {}
        return {"runtime": self.runtime, "framesReused": self.frames_reused, "skipRate": self.skip_rate}


def report_progress(context: TaskContext, done: int, total: int) -> None:
    """Report ``done`` of about ``total`` frames; raises :class:`Cancelled` once the job is cancelled."""
    if context.cancelled():
        raise Cancelled("the job was cancelled")
    context.progress(Progress(done, max(total, done)))


def render_once(
    command: Sequence[str],
    target: Path,
    encoder: Encoder,
    context: TaskContext,
    *,
    name: str,
    expected: int,
    verify: Callable[[Path], int] | None = None,
) -> Output:
    """Run a one-pass ffmpeg render of ``target``, reporting progress against ``expected`` frames.

    ``verify(partial file)``, when given, checks the file first and returns the
    frame count it must hold (instead of ``expected``). Returns the checked
    output; no ``.partial`` file outlives this, whatever happens.
    """
    tools = context.resources.tools
    encoded = 0

    def on_frames(done: int) -> None:
        nonlocal encoded
        encoded = done
        report_progress(context, done, expected)

    try:
        run_render(command, tools=tools, name=name, on_frames=on_frames)
        due = verify(partial_path(target)) if verify is not None else expected
        output = finish_output(target, tools, encoder, written=encoded, expected=due)
    finally:
        partial_path(target).unlink(missing_ok=True)
    context.progress(Progress(output.frames, output.frames))
    return output


def problems(error: ValidationError, root: str) -> str:
    """One line naming each invalid field (``root`` for the object itself) and why."""
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or root}: {item['msg']}" for item in error.errors()
    )


P = TypeVar("P", bound=BaseModel)


class Task(abc.ABC, Generic[P]):
    """One kind of job: validated parameters + a local source file → a local output file."""

    name: ClassVar[str]
    params_model: ClassVar[type[BaseModel]]

    def parse(self, raw: Mapping[str, Any] | None) -> P:
        """Validate the message's ``parameters``; :class:`InvalidParameters` names what is wrong.

        A ``null`` parameter counts as left out (Jackson writes unset fields as ``null``).
        """
        given = {key: value for key, value in (raw or {}).items() if value is not None}
        try:
            return self.params_model.model_validate(given)  # type: ignore[return-value]
        except ValidationError as error:
            raise InvalidParameters(f"{self.name} parameters: {problems(error, 'parameters')}") from None

    def attachments(self, params: P) -> Mapping[str, Attachment]:
        """Files besides the source that ``params`` names, by the local name the task reads them as."""
        return {}

    def defaults(self, queue: str, resources: Resources) -> Mapping[str, Any]:
        """Parameters a job left out that depend on the queue (``gpu``/``cpu``) it came from."""
        return {}

    @abc.abstractmethod
    def run(self, source: Path, params: P, context: TaskContext) -> TaskResult:
        """Process ``source`` into a file in ``context.work_dir``, or raise a coded error."""
