"""One-pass ffmpeg renders: decode, filter and encode inside one ffmpeg, no frames through Python.

Used where nothing of ours touches the pixels (captions burned into a video,
a waveform over a cover image). ffmpeg reports its progress on stdout
(``-progress pipe:1``), which also feeds the stall watchdog: a render that
reports nothing for ``Tools.stall_timeout`` seconds is killed. The output is
written under a ``.partial`` name and renamed only once its packets have been
counted.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from media.color import encoder_tags
from media.errors import DecodeFailed, EncodeFailed, FrameCountMismatch
from media.probe import MediaInfo, input_args
from media.process import STDERR_LINES, Child
from media.tools import Tools
from media.writer import MP4_AUDIO_COPY, Encoder, Output, count_frames, partial_path

__all__ = ["Frame", "burn_command", "finish_output", "partial_path", "run_render"]

log = logging.getLogger(__name__)

PROGRESS_PERIOD = 0.5
"""Seconds between ffmpeg's progress reports."""

SOURCE_ERRORS = (
    "Error while decoding stream",
    "Invalid data found when processing input",
    "Cannot determine format of input stream",
)
"""ffmpeg 5.1's stderr when it fails on its input rather than in the encoder or muxer."""

OUTPUT_ERRORS = (
    "No space left on device",
    "Error while opening encoder",
    "Error initializing output stream",
    "Error submitting video frame",
    "av_interleaved_write_frame",
    "Error writing trailer",
)
"""ffmpeg 5.1's stderr when the encoder or the muxer failed: worth a retry whatever the input said."""


def run_render(args: Sequence[str], *, tools: Tools, name: str, on_frames: Callable[[int], None]) -> None:
    """Run the ffmpeg command ``args`` to completion, calling ``on_frames(encoded so far)`` as it goes.

    ``on_frames`` may raise (a cancelled job): ffmpeg and anything it started are
    killed and the error propagates. A non-zero exit is :class:`DecodeFailed`
    when ffmpeg complained about its input (:data:`SOURCE_ERRORS`: a damaged
    source, not worth a retry) and not about its output (:data:`OUTPUT_ERRORS`:
    ffmpeg logs input errors it recovers from too, so a damaged source that
    meets a full disk is still retried), else :class:`EncodeFailed`, with ffmpeg's last
    error lines; a render that stops reporting for
    ``tools.stall_timeout`` seconds is :class:`~media.errors.MediaTimeout`.
    """
    command = [args[0], "-progress", "pipe:1", "-nostats", "-stats_period", str(PROGRESS_PERIOD), *args[1:]]
    with Child(
        command,
        name=name,
        stall_timeout=tools.stall_timeout,
        stdout=True,
        nice=tools.nice,
        limits=tools.limits,
    ) as child:
        while line := child.read_line():
            key, _, value = line.decode("ascii", "replace").strip().partition("=")
            if key == "frame" and value.isdigit():
                on_frames(int(value))
        status = child.finish()
        if status != 0:
            message = f"{name} failed (exit status {status}): {child.stderr_tail()}"
            tail = child.stderr_tail(STDERR_LINES)
            source = any(marker in tail for marker in SOURCE_ERRORS)
            if source and not any(marker in tail for marker in OUTPUT_ERRORS):
                raise DecodeFailed(message)
            raise EncodeFailed(message)


def finish_output(path: Path, tools: Tools, encoder: Encoder, *, written: int, expected: int) -> Output:
    """Check the render at ``partial_path(path)`` and move it to ``path``.

    The file must hold exactly the ``written`` frames ffmpeg reported encoding
    (:class:`FrameCountMismatch` otherwise), and may fall short of the
    ``expected`` count by at most 2 frames or 1 %: past that the source was
    truncated (:class:`DecodeFailed`).
    """
    partial = partial_path(path)
    found = count_frames(partial, tools)
    if found.frames != written:
        raise FrameCountMismatch(f"ffmpeg encoded {written} frames but the file holds {found.frames}")
    if found.frames == 0:
        raise DecodeFailed("the render produced no frames at all")
    if found.frames < expected - max(2, expected // 100):
        raise DecodeFailed(
            f"rendered {found.frames} frames of about {expected}: the source is truncated or damaged"
        )
    os.replace(partial, path)
    return Output(path, found.frames, found.width, found.height, encoder.name, found.audio)


@dataclass(frozen=True)
class Frame:
    """Output geometry: the canvas (even sides, for yuv420p) and the picture placed in it."""

    width: int
    height: int
    content_width: int
    content_height: int

    @classmethod
    def fit(cls, source_width: int, source_height: int, width: int | None, height: int | None) -> Frame:
        """The source scaled to ``width`` x ``height``, keeping its aspect ratio.

        Both given: fitted inside and letterboxed (never stretched, never cropped).
        One given: the other follows the aspect ratio, rounded to an even size (no
        padding bar). None: the source size. Odd canvas sides (a source's, or one
        asked for) are padded up by one pixel.
        """
        if width and height:
            scale = min(width / source_width, height / source_height)
            content = (_even(source_width * scale, width), _even(source_height * scale, height))
        elif width:
            content = (width, _even(source_height * width / source_width))
        elif height:
            content = (_even(source_width * height / source_height), height)
        else:
            content = (source_width, source_height)
        canvas = (width or content[0], height or content[1])
        return cls(canvas[0] + canvas[0] % 2, canvas[1] + canvas[1] % 2, *content)

    def filters(self, source_width: int, source_height: int, scale_options: str = "") -> list[str]:
        """``scale`` (and ``pad``, centred) filters from a ``source_width`` x ``source_height`` picture."""
        filters = []
        size = (self.content_width, self.content_height)
        if size != (source_width, source_height) or scale_options:
            options = f"{size[0]}:{size[1]}:flags=bicubic" + (f":{scale_options}" if scale_options else "")
            filters.append(f"scale={options}")
        if size != (self.width, self.height):
            x, y = (self.width - size[0]) // 2, (self.height - size[1]) // 2
            filters.append(f"pad={self.width}:{self.height}:{x}:{y}:color=black")
        return filters


def _even(value: float, limit: int | None = None) -> int:
    """``value`` rounded to an even number of pixels, at least 2 and at most ``limit``."""
    even = 2 * round(value / 2)
    return max(2, even if limit is None else min(limit, even))


def burn_command(
    info: MediaInfo,
    target: Path,
    *,
    frame: Frame,
    fps: Fraction | None,
    encoder: Encoder,
    quality: int,
    tools: Tools,
    overlay: Sequence[str],
) -> list[str]:
    """ffmpeg arguments: ``info``'s video resized to ``frame``, ``overlay`` filters drawn, encoded once.

    The source's audio is copied when MP4 takes its codec, else AAC; frames are
    as displayed (rotation applied by ffmpeg); a variable-rate source, or one
    given a new ``fps``, is resampled to a constant rate; 10-bit becomes 8-bit.
    The overlay (``ass``) blends into the YUV frames, as it would in any
    player, at no measurable cost (see ``bench/captions.py``).
    """
    filters = [f"fps=fps={fps or info.fps}"] if info.vfr or fps else []
    value_range = info.color.range if info.color.range in ("tv", "pc") else None
    keep_range = f"in_range={value_range}:out_range={value_range}" if value_range else ""
    filters += frame.filters(info.width, info.height, keep_range)
    filters += ["format=yuv420p", *overlay]
    args = [tools.ffmpeg, "-hide_banner", "-nostdin", "-v", "error", *input_args(info.path, info.demuxer)]
    args += ["-map", "0:v:0", "-vf", ",".join(filters), "-fps_mode", "passthrough"]
    args += [*encoder.args(quality), "-pix_fmt", "yuv420p", *encoder_tags(info.color)]
    if info.audio is not None:
        audio = ["-c:a", "copy"] if info.audio.codec in MP4_AUDIO_COPY else ["-c:a", "aac", "-b:a", "192k"]
        args += ["-map", "0:a:0", *audio]
    args += ["-sn", "-dn", "-map_metadata", "-1", "-map_chapters", "-1", "-movflags", "+faststart"]
    return [*args, "-f", "mp4", f"file:{partial_path(target)}"]
