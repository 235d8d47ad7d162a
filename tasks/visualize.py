"""VISUALIZE: an audio file + a cover image → an MP4 of the cover with a moving waveform, one encode."""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from media import choose_encoder
from media.visualize import (
    ImageLimits,
    Layout,
    Waves,
    check_render,
    probe_audio,
    probe_cover,
    visualize_command,
)
from tasks.base import Attachment, Task, TaskContext, TaskResult, render_once

log = logging.getLogger(__name__)

OUTPUT_NAME = "output.mp4"
COVER_INPUT = "cover"
"""The local name the image given by ``coverS3Key`` is fetched to."""

MAX_COVER_BYTES = ImageLimits().max_file_bytes

MIN_SIDE, MAX_SIDE = 16, 7680
MAX_PIXELS = 7680 * 4320
"""Output sizes a job may ask for: each side even and within these, at most 8K's pixel count."""

_RESOLUTION = re.compile(r"\s*(\d{1,5})\s*[xX]\s*(\d{1,5})\s*")


class WaveStyle(BaseModel):
    """``style``: the waveform's colour (``#RRGGBB`` or ``#RRGGBBAA``) and ``showwaves`` mode."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    color: str = Field(Waves().color, pattern=r"^#[0-9A-Fa-f]{6}([0-9A-Fa-f]{2})?$")
    mode: Literal["cline", "line", "p2p", "point"] = "cline"


class VisualizeParams(BaseModel):
    """``parameters`` of a VISUALIZE job; the audio is the job's source, the cover ``coverS3Key``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cover_s3_key: str = Field(validation_alias=AliasChoices("coverS3Key", "cover_s3_key"), min_length=1)
    resolution: str = "1920x1080"
    style: WaveStyle = Field(default_factory=WaveStyle)
    fps: int = Field(30, ge=1, le=60)
    quality: int = Field(23, ge=0, le=51)

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, value: str) -> str:
        match = _RESOLUTION.fullmatch(value)
        if match is None:
            raise ValueError("give the size as WIDTHxHEIGHT, e.g. 1920x1080")
        width, height = int(match[1]), int(match[2])
        if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
            raise ValueError(f"each side must be {MIN_SIDE} to {MAX_SIDE} pixels")
        if width % 2 or height % 2:
            raise ValueError("both sides must be even (the video is yuv420p)")
        if width * height > MAX_PIXELS:
            raise ValueError(f"at most {MAX_PIXELS} pixels")
        return f"{width}x{height}"

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` in pixels."""
        width, height = self.resolution.split("x")
        return int(width), int(height)


class VisualizeTask(Task[VisualizeParams]):
    name = "VISUALIZE"
    params_model = VisualizeParams

    def attachments(self, params: VisualizeParams) -> Mapping[str, Attachment]:
        return {COVER_INPUT: Attachment(params.cover_s3_key, MAX_COVER_BYTES)}

    def run(self, source: Path, params: VisualizeParams, context: TaskContext) -> TaskResult:
        """Render the audio ``source`` over the cover; the video lasts as long as the audio."""
        started = time.monotonic()
        tools = context.resources.tools
        audio = probe_audio(source, tools, context.resources.limits)
        cover = probe_cover(context.input(COVER_INPUT), tools)
        width, height = params.size
        encoder = choose_encoder(tools, width, height, gpu=True)
        log.info(
            "visualizing %.1f s of %s audio over a %dx%d %s cover, %dx%d at %d/s, encoding %s",
            audio.duration, audio.codec, cover.width, cover.height, cover.codec, width, height, params.fps,
            encoder.name,
        )  # fmt: skip
        target = context.work_dir / OUTPUT_NAME
        command = visualize_command(
            audio, cover, target, layout=Layout.of(width, height, cover.width, cover.height),
            waves=Waves(params.style.color, params.style.mode), fps=params.fps, encoder=encoder,
            quality=params.quality, tools=tools,
        )  # fmt: skip
        expected = max(1, math.ceil(audio.duration * params.fps))
        durations: list[float] = []

        def verify(partial: Path) -> int:
            """The render lasts as long as its own audio track; the frames that takes."""
            durations.append(check_render(partial, tools, params.fps))
            return max(1, math.ceil(durations[-1] * params.fps - 0.01))

        output = render_once(
            command, target, encoder, context, name="visualizer", expected=expected, verify=verify
        )
        [duration] = durations
        return TaskResult(
            output=output.path,
            width=output.width,
            height=output.height,
            fps=float(params.fps),
            frame_count=output.frames,
            duration=duration,
            audio=output.audio,
            device="gpu" if encoder.hardware else "cpu",
            model=None,
            encoder=output.encoder,
            processing_seconds=time.monotonic() - started,
        )
