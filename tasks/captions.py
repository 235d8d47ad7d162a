"""CAPTION_RENDER: a video + a caption scenario → the captions burned in by libass, in one encode."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from media import choose_encoder, probe
from media.captions import (
    CaptionLimits,
    Scenario,
    ass_filter,
    parse_scenario,
    prepare_fonts,
    recolored,
    to_ass,
)
from media.color import blend_color
from media.render import Frame, burn_command
from tasks.base import Attachment, Task, TaskContext, TaskResult, render_once
from tasks.errors import InvalidParameters

log = logging.getLogger(__name__)

OUTPUT_NAME = "output.mp4"
SCENARIO_INPUT = "scenario.json"
"""The local name a scenario given by ``scenarioS3Key`` is fetched to."""

MAX_SIDE = 7680
MAX_PIXELS = 7680 * 4320
"""The largest output a job may ask for: each side, and in all (8K)."""


def caption_filter(scenario: Scenario, width: int, height: int, work_dir: Path) -> str:
    """Write ``scenario`` as ASS for a ``width`` x ``height`` output; returns the ``ass`` filter drawing it.

    Fonts are resolved first: a missing font, or one without glyphs for the
    text, is :class:`~media.fonts.FontUnavailable` before anything is encoded.
    """
    fonts = prepare_fonts(scenario, work_dir / "fonts")
    script = work_dir / "captions.ass"
    script.write_text(to_ass(scenario, width, height), encoding="utf-8")
    return ass_filter(script, fonts)


def frame_rate(value: float) -> Fraction:
    """``value`` frames/s as an exact rate; the NTSC rates (29.97, 23.976, 59.94) as n x 1000/1001."""
    exact = Fraction(value).limit_denominator(1001)
    ntsc = Fraction(round(value * 1.001) * 1000, 1001)
    return ntsc if exact.denominator > 1 and abs(float(ntsc) - value) < 0.005 else exact


class RenderOptions(BaseModel):
    """``options``: output size (pixels; one side alone keeps the aspect ratio), rate (frames/s), CRF/CQ."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    width: int | None = Field(None, ge=16, le=MAX_SIDE)
    height: int | None = Field(None, ge=16, le=MAX_SIDE)
    fps: float | None = Field(None, gt=0, le=120)
    quality: int = Field(23, ge=0, le=51)


class CaptionParams(BaseModel):
    """``parameters`` of a CAPTION_RENDER job: exactly one of ``scenario`` and ``scenarioS3Key``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scenario: dict[str, Any] | None = None
    scenario_s3_key: str | None = Field(
        None, validation_alias=AliasChoices("scenarioS3Key", "scenario_s3_key"), min_length=1
    )
    options: RenderOptions = Field(default_factory=RenderOptions)

    @model_validator(mode="after")
    def _one_scenario(self) -> CaptionParams:
        if (self.scenario is None) == (self.scenario_s3_key is None):
            raise ValueError("give exactly one of scenario and scenarioS3Key")
        return self


class CaptionRenderTask(Task[CaptionParams]):
    name = "CAPTION_RENDER"
    params_model = CaptionParams

    def attachments(self, params: CaptionParams) -> Mapping[str, Attachment]:
        if params.scenario_s3_key is None:
            return {}
        return {SCENARIO_INPUT: Attachment(params.scenario_s3_key, CaptionLimits().max_json_bytes)}

    def run(self, source: Path, params: CaptionParams, context: TaskContext) -> TaskResult:
        started = time.monotonic()
        tools = context.resources.tools
        scenario = parse_scenario(
            params.scenario if params.scenario is not None else context.input(SCENARIO_INPUT).read_bytes()
        )
        info = probe(source, tools, context.resources.limits)
        options = params.options
        frame = Frame.fit(info.width, info.height, options.width, options.height)
        if max(frame.width, frame.height) > MAX_SIDE or frame.width * frame.height > MAX_PIXELS:
            raise InvalidParameters(
                f"CAPTION_RENDER options: the output would be {frame.width}x{frame.height}; "
                f"at most {MAX_SIDE} px a side and {MAX_PIXELS} pixels"
            )
        encoder = choose_encoder(tools, frame.width, frame.height, gpu=True)
        # ffmpeg blends captions into the YUV frames with BT.601 weights; colours are given to it so
        # that they land right in the video's own matrix (an untagged HD video is shown as BT.709).
        space = info.color.space or ("bt709" if info.height >= 720 or info.width >= 1280 else None)
        scenario = recolored(scenario, lambda color: blend_color(color, space))
        captions = caption_filter(scenario, frame.width, frame.height, context.work_dir)
        fps = frame_rate(options.fps) if options.fps else None
        rate = fps or info.fps
        expected = max(1, round(info.duration * rate)) if fps or info.vfr else info.frames
        log.info(
            "burning %d cues into %dx%d %s frames, %dx%d at %s/s, encoding %s", len(scenario.cues),
            info.width, info.height, info.frames, frame.width, frame.height, rate, encoder.name,
        )  # fmt: skip
        target = context.work_dir / OUTPUT_NAME
        command = burn_command(
            info, target, frame=frame, fps=fps, encoder=encoder, quality=options.quality, tools=tools,
            overlay=(captions,),
        )  # fmt: skip
        output = render_once(command, target, encoder, context, name="caption render", expected=expected)
        return TaskResult(
            output=output.path,
            width=output.width,
            height=output.height,
            fps=float(rate),
            frame_count=output.frames,
            duration=output.frames / float(rate),
            audio=output.audio,
            device="gpu" if encoder.hardware else "cpu",
            model=None,
            encoder=output.encoder,
            processing_seconds=time.monotonic() - started,
        )
