"""UPSCALE: probe → decode → Real-ESRGAN in batches → encode with the source's audio."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from media import (
    Encoder,
    FrameRange,
    FrameReader,
    FrameWriter,
    MediaInfo,
    choose_encoder,
    probe,
    segment_writer,
)
from media.captions import parse_scenario
from media.errors import DecodeFailed, FrameCountMismatch
from models import DEFAULT_MODEL, MODELS, InferenceFailed, ModelError, UpscalerConfig
from tasks.base import Progress, Resources, Task, TaskContext, TaskResult, report_progress
from tasks.captions import caption_filter
from tasks.engines import EngineCache, EngineLease
from tasks.errors import InvalidParameters
from tasks.stream import run_stream

log = logging.getLogger(__name__)

OUTPUT_NAME = "output.mp4"
"""The task's output file inside the job's work dir (never a name from the message)."""


class UpscaleParams(BaseModel):
    """``parameters`` of an UPSCALE job (spec §3); camelCase and snake_case both accepted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: Literal["gpu", "cpu", "auto"] = "auto"
    scale_factor: Literal[2, 4] = Field(
        4, validation_alias=AliasChoices("scale_factor", "scaleFactor", "scale")
    )
    model: str = DEFAULT_MODEL
    tile: int | None = Field(
        None, ge=0, le=4096, description="core tile size in input pixels; 0 = whole frame"
    )
    codec: Literal["h264", "hevc"] | None = None
    quality: int = Field(23, ge=0, le=51, description="CRF (x264/x265) or CQ (NVENC)")
    captions: dict[str, Any] | None = Field(
        None, description="a caption scenario burned in during the encode"
    )

    @field_validator("device", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if value not in MODELS:
            raise ValueError(f"unknown model {value!r}; known: {', '.join(MODELS.names())}")
        return value

    @field_validator("tile")
    @classmethod
    def _tile_floor(cls, value: int | None) -> int | None:
        if value is not None and 0 < value < 32:
            raise ValueError("tile must be 0 (whole frame) or at least 32 pixels")
        return value


class UpscaleTask(Task[UpscaleParams]):
    name = "UPSCALE"
    params_model = UpscaleParams

    def defaults(self, queue: str, resources: Resources) -> Mapping[str, Any]:
        """spec §3: ``device`` defaults to the queue the job came from, ``model`` to that tier's default."""
        return {"device": queue, "model": resources.default_models.get(queue, DEFAULT_MODEL)}

    def run(self, source: Path, params: UpscaleParams, context: TaskContext) -> TaskResult:
        started = time.monotonic()
        resources = context.resources
        info = probe(source, resources.tools, resources.limits)
        engine = self._engine(params, context)
        width, height = info.width * params.scale_factor, info.height * params.scale_factor
        encoder = choose_encoder(
            resources.tools, width, height, codec=params.codec, gpu=engine.device.type == "cuda"
        )
        log.info(
            "upscaling %dx%d %s frames x%d on %s with %s, encoding %s", info.width, info.height,
            info.frames, params.scale_factor, engine.device, engine.spec.name, encoder.name,
        )  # fmt: skip
        target = context.work_dir / OUTPUT_NAME
        filters: tuple[str, ...] = ()
        if params.captions is not None:  # validated and fonts checked before anything is decoded
            filters = (caption_filter(parse_scenario(params.captions), width, height, context.work_dir),)
        with (
            FrameReader(info, resources.tools) as reader,
            FrameWriter(
                target, width=width, height=height, fps=info.fps, encoder=encoder, tools=resources.tools,
                quality=params.quality, color=info.color, audio_from=info, filters=filters,
            ) as writer,
        ):  # fmt: skip
            _pipe(engine, reader, writer, context, total=info.frames)
            _check_complete(info, reader.frames_read, writer.frames_written)
            output = writer.finish()
        context.progress(Progress(output.frames, output.frames))
        return TaskResult(
            output=output.path,
            width=output.width,
            height=output.height,
            fps=float(info.fps),
            frame_count=output.frames,
            duration=output.frames / float(info.fps),
            audio=output.audio,
            device=engine.device.type,
            model=engine.spec.name,
            encoder=output.encoder,
            processing_seconds=time.monotonic() - started,
            warnings=engine.warnings,
            **_inference(engine),
        )

    def run_segment(
        self, source: Path, params: UpscaleParams, context: TaskContext, frames: FrameRange, *, last: bool,
        encoder: Encoder | None = None,
    ) -> TaskResult:  # fmt: skip
        """Upscale frames ``[start, stop)`` of the whole decode into one MPEG-TS segment (no audio).

        The frames are those an unsplit run would upscale there (``last``: the
        range runs to the end of the source, however many frames it holds);
        the encode uses ``media.segments``' pinned settings and ``encoder`` (the
        plan's; this host's choice when None) so segments join without
        re-encoding. Captions are burned at the segment's own times: frame ``i``
        of the source is drawn at ``i / fps`` as in an unsplit run.
        """
        started = time.monotonic()
        tools = context.resources.tools
        info = probe(source, tools, context.resources.limits)
        engine = self._engine(params, context)
        width, height = info.width * params.scale_factor, info.height * params.scale_factor
        if encoder is None:
            gpu = engine.device.type == "cuda"
            encoder = choose_encoder(tools, width, height, codec=params.codec, gpu=gpu)
        filters: tuple[str, ...] = ()
        if params.captions is not None:  # shifted to the range's time, drawn, shifted back to 0
            drawn = caption_filter(parse_scenario(params.captions), width, height, context.work_dir)
            filters = (f"setpts=PTS+{frames.start}/(FRAME_RATE*TB)", drawn, "setpts=PTS-STARTPTS")
        reading = FrameRange(frames.start, max(frames.stop, info.frames) if last else frames.stop)  # open end
        target = context.work_dir / f"segment-{frames.start:09d}.ts"
        with (
            FrameReader(info, tools, frames=reading) as reader,
            segment_writer(
                target, width=width, height=height, fps=info.fps, encoder=encoder, tools=tools,
                quality=params.quality, color=info.color, filters=filters,
            ) as writer,
        ):  # fmt: skip
            _pipe(engine, reader, writer, context, total=len(frames))
            if reader.frames_read != writer.frames_written or (
                not last and reader.frames_read != len(frames)
            ):
                raise FrameCountMismatch(f"segment {frames}: decoded {reader.frames_read}, encoded "
                                         f"{writer.frames_written}, planned {len(frames)}")  # fmt: skip
            output = writer.finish()
        return TaskResult(
            output=output.path, width=output.width, height=output.height, fps=float(info.fps),
            frame_count=output.frames, duration=output.frames / float(info.fps), audio=False,
            device=engine.device.type, model=engine.spec.name, encoder=output.encoder,
            processing_seconds=time.monotonic() - started, warnings=engine.warnings, **_inference(engine),
        )  # fmt: skip

    @staticmethod
    def _engine(params: UpscaleParams, context: TaskContext) -> EngineLease:
        """This job's lease on the cached engine: per-job warnings, device faults handled."""
        resources = context.resources
        engines = resources.engines
        if engines is None:
            if resources.store is None:
                raise InvalidParameters("no weight store configured for UPSCALE")
            engines = EngineCache(resources.store)
        return engines.lease(UpscaleTask.engine_config(params))

    @staticmethod
    def engine_config(params: UpscaleParams) -> UpscalerConfig:
        return UpscalerConfig(
            model=params.model, scale=params.scale_factor, device=params.device, tile=params.tile
        )


def _pipe(
    engine: EngineLease, reader: FrameReader, writer: FrameWriter, context: TaskContext, *, total: int
) -> None:
    """Decode → engine → encode, overlapped (:func:`~tasks.stream.run_stream`), progress of ``total``."""

    def abort() -> None:
        reader.close()
        writer.abort()

    run_stream(
        reader.batches(engine.frames_per_call(reader.info.height, reader.info.width)),
        lambda frames: _infer(engine, frames),
        writer.write,
        abort=abort,
        after_batch=lambda done: report_progress(context, done, total),
    )


def _infer(engine: EngineLease, frames: np.ndarray) -> np.ndarray:
    """The engine over one batch; anything but our own errors becomes :class:`InferenceFailed`.

    Ours pass through: :class:`~models.OutOfMemory` and :class:`~models.DeviceError`
    (retryable), :class:`~models.DeviceLost` (the worker must restart), NaN output.
    """
    try:
        return engine(frames)
    except ModelError:
        raise
    except Exception as error:
        raise InferenceFailed(f"inference failed: {type(error).__name__}: {error}") from error


def _inference(engine: EngineLease) -> dict[str, Any]:
    """The result's runtime and reuse fields (reuse off: nothing reused)."""
    reuse = engine.reuse
    return {
        "runtime": engine.runtime,
        "frames_reused": 0 if reuse is None else reuse.frames_reused,
        "skip_rate": 0.0 if reuse is None else round(reuse.skip_rate, 4),
    }


def _check_complete(info: MediaInfo, read: int, written: int) -> None:
    """Frames out must equal frames in, and the frames must cover the time the file says it lasts.

    The reader yields frames at the constant ``info.fps`` (a variable-rate or
    uncounted source resampled), so they cover ``read / fps`` seconds; more
    than max(2 frame periods, 1 %) short of ``info.duration`` is a truncated or
    damaged file. Time, not a frame count: a variable-rate source's count is an estimate.
    """
    if read != written:
        raise FrameCountMismatch(f"decoded {read} frames but encoded {written}")
    if read == 0:
        raise DecodeFailed("the video stream decoded to no frames at all")
    period = 1 / float(info.fps)
    covered = read * period
    if covered < info.duration - max(2 * period, info.duration / 100):
        raise DecodeFailed(
            f"decoded {covered:.2f} s of video ({read} frames at {float(info.fps):g}/s) where the container "
            f"declares {info.duration:.2f} s: truncated or damaged"
        )
