"""Long videos in segments: plan frame ranges, encode each range alone, join them without re-encoding.

A segment is the frames ``[start, stop)`` of the whole decode
(:class:`~media.reader.FrameReader` with ``frames=``, bit for bit the same
frames), encoded by :func:`segment_writer` with pinned settings into MPEG-TS.
:func:`concat` joins the segments by stream copy into one ``+faststart`` MP4,
muxes the source's audio once, and checks the frame count and that the frame
times step by exactly one frame period across every cut.

Why MPEG-TS between the two (measured with ffmpeg 5.1, three 2 s x264
segments at 30000/1001 frames/s joined by the concat demuxer into MP4): its
90 kHz clock holds that frame period exactly (3003 ticks), so every step of
the joined file is 3003; Matroska's millisecond clock rounds it to 33 or
34 ms, and the joined file steps unevenly (528 and 544 ticks of 1/16000).
(24000/1001 is 3753.75 ticks: steps of 3753 and 3754, within the one tick
:func:`check_continuous` allows; 40 segments joined measured the same.)
MPEG-TS also repeats the SPS/PPS at each IDR, so a decoder needs nothing from
the first segment's header to read a later one, and it has no edit lists.
Each segment's timestamps start where the muxer likes (1.4 s); the concat
demuxer moves each one to the sum of the earlier segments' durations, which
the list file states (frames / fps, to the microsecond, without adding up
rounding errors).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

from media.errors import EncodeFailed, FrameCountMismatch, MediaError
from media.probe import Color, MediaInfo, input_args, sniff_demuxer
from media.process import run_captured
from media.reader import FrameRange
from media.render import run_render
from media.tools import Tools
from media.writer import MP4, Container, Encoder, FrameWriter, Output, audio_args, count_frames, partial_path

__all__ = [
    "SEGMENT_CONTAINER",
    "DiscontinuousOutput",
    "FrameRange",
    "SegmentMismatch",
    "check_continuous",
    "concat",
    "frame_stamps",
    "read_segment",
    "segment_options",
    "segment_writer",
    "split",
]

MIN_SEGMENT_FRAMES = 2
"""No segment is shorter than this, so no plan ends on an empty or one-frame tail."""

SEGMENT_GOP = 250
"""Frames between IDRs inside a segment (the x264 and NVENC default, so segments encode like a
whole run); every segment also starts on one."""

SEGMENT_CONTAINER = Container("mpegts", (), "mpegts")
"""Segments travel as MPEG-TS (see the module's docstring for why)."""


class SegmentMismatch(FrameCountMismatch):
    """The segments or the joined file do not hold the frames planned; redo, do not publish."""


class DiscontinuousOutput(EncodeFailed):
    """The joined file's frame times jump or overlap at a cut; a worker-side fault, retried."""


def split(frames: int, fps: Fraction, target_seconds: float) -> list[FrameRange]:
    """``frames`` (a whole decode's count) cut into ranges of about ``target_seconds`` each.

    The ranges are as even as whole frames allow (their lengths differ by at
    most one), cover ``[0, frames)`` in order, and hold at least
    :data:`MIN_SEGMENT_FRAMES` each, one range when there are fewer.
    """
    if frames < 1 or fps <= 0 or target_seconds <= 0:
        raise ValueError(f"cannot split {frames} frames at {fps}/s into {target_seconds} s segments")
    wanted = round(frames / max(MIN_SEGMENT_FRAMES, target_seconds * fps))
    count = max(1, min(wanted, frames // MIN_SEGMENT_FRAMES))
    edges = [frames * index // count for index in range(count + 1)]
    return [FrameRange(start, stop) for start, stop in itertools.pairwise(edges)]


def segment_options(encoder: Encoder) -> tuple[str, ...]:
    """Encoder arguments pinned for every segment of a plan: closed GOPs of :data:`SEGMENT_GOP`
    frames, a forced keyframe is an IDR, no open GOP (x265 leaves it on by default)."""
    options = ["-g", str(SEGMENT_GOP), "-flags", "+cgop", "-forced-idr", "1"]
    if encoder.name == "libx265":
        options += ["-x265-params", "log-level=error:open-gop=0"]
    return tuple(options)


def segment_writer(
    path: Path,
    *,
    width: int,
    height: int,
    fps: Fraction,
    encoder: Encoder,
    tools: Tools,
    quality: int = 23,
    color: Color | None = None,
    filters: tuple[str, ...] = (),
) -> FrameWriter:
    """A :class:`FrameWriter` for one segment: MPEG-TS at ``path``, no audio, :func:`segment_options`.

    Its timestamps start at the muxer's offset whatever the range;
    :func:`concat` places it after the segments before it.
    """
    return FrameWriter(
        path,
        width=width,
        height=height,
        fps=fps,
        encoder=encoder,
        tools=tools,
        quality=quality,
        color=color,
        filters=filters,
        container=SEGMENT_CONTAINER,
        encoder_options=segment_options(encoder),
    )


def concat(
    segments: Sequence[Path],
    target: Path,
    *,
    fps: Fraction,
    audio_from: MediaInfo | None,
    tools: Tools,
    expected: int | None = None,
) -> Output:
    """Join ``segments`` (MPEG-TS from :func:`segment_writer`, in order) into the MP4 ``target``.

    Video is copied, never re-encoded; the first audio stream of ``audio_from``
    (the original source) is muxed once, cut to the video's duration (whole
    audio frames: at most one frame longer), copied or AAC as
    :func:`~media.writer.audio_args` decides. Written under a ``.partial`` name
    and renamed only once it holds the segments' frames (``expected`` too, when
    given; :class:`SegmentMismatch` otherwise) at evenly spaced times
    (:class:`DiscontinuousOutput`).
    """
    found = _read_segments(segments, tools)
    counts = [segment.frames for segment in found]
    if expected is not None and sum(counts) != expected:
        raise SegmentMismatch(f"segments hold {counts} = {sum(counts)} frames; {expected} were planned")
    listing = target.with_name(f"{target.stem}.concat.txt")
    listing.write_text(_listing(segments, counts, fps))
    try:
        args = _concat_command(
            listing, target, Fraction(sum(counts)) / fps, audio_from, tools, found[0].encoder
        )
        run_render(args, tools=tools, name="segment concat", on_frames=lambda frames: None)
        output = _verify(partial_path(target), sum(counts), fps, tools)
        os.replace(partial_path(target), target)
    except BaseException:
        partial_path(target).unlink(missing_ok=True)
        raise
    finally:
        listing.unlink(missing_ok=True)
    return Output(target, output.frames, output.width, output.height, output.encoder, output.audio)


def _read_segments(segments: Sequence[Path], tools: Tools) -> list[Output]:
    """Each segment's frame count, codec and size; :class:`SegmentMismatch` unless they are
    non-empty MPEG-TS files of one codec and size."""
    if not segments:
        raise SegmentMismatch("no segments to join")
    found = [read_segment(path, tools) for path in segments]
    kinds = {(segment.encoder, segment.width, segment.height) for segment in found}
    if len(kinds) > 1 or min(segment.frames for segment in found) < 1:
        raise SegmentMismatch(
            f"segments differ or are empty: {[(s.path.name, s.frames) for s in found]} {kinds}"
        )
    return found


def read_segment(path: Path, tools: Tools) -> Output:
    """What segment ``path`` holds (frames, codec, size), demuxed; :class:`SegmentMismatch` unless it
    is MPEG-TS."""
    demuxer = _sniff(path)
    if demuxer != SEGMENT_CONTAINER.demuxer:
        raise SegmentMismatch(f"segment {path.name} is {demuxer}, not {SEGMENT_CONTAINER.muxer}")
    return count_frames(path, tools, SEGMENT_CONTAINER.demuxer)


def _sniff(path: Path) -> str:
    """The demuxer ``path`` looks like, or why it looks like none (a segment is ours: never refused
    as media, it is redone)."""
    try:
        return sniff_demuxer(path)
    except MediaError as error:
        return str(error)


def _listing(segments: Sequence[Path], counts: Sequence[int], fps: Fraction) -> str:
    """An ffconcat script: each segment by absolute ``file:`` path, with its duration.

    The concat demuxer starts each segment at the sum of the durations before
    it, in microseconds; each duration is the difference of the rounded ends,
    so a segment starts within half a microsecond of its exact time however
    many come before it (rounding each duration would add up the errors).
    """
    lines = ["ffconcat version 1.0"]
    done = 0
    for path, frames in zip(segments, counts, strict=True):
        quoted = f"file:{path.resolve()}".replace("'", "'\\''")
        micros = round((done + frames) / fps * 1_000_000) - round(done / fps * 1_000_000)
        lines += [f"file '{quoted}'", f"duration {micros}us"]
        done += frames
    return "\n".join(lines) + "\n"


def _concat_command(
    listing: Path, target: Path, seconds: Fraction, audio_from: MediaInfo | None, tools: Tools, codec: str
) -> list[str]:
    """ffmpeg arguments: the script's video copied (HEVC tagged ``hvc1``, as :class:`FrameWriter`
    tags it, for Apple players), ``audio_from``'s audio cut to ``seconds``."""
    args = [tools.ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-f", "concat", "-safe", "0",
            "-protocol_whitelist", "file", "-i", f"file:{listing.resolve()}"]  # fmt: skip
    audio = audio_from.audio if audio_from is not None else None
    if audio_from is not None and audio is not None:
        args += ["-t", _decimal(seconds), *input_args(audio_from.path, audio_from.demuxer)]
    args += ["-map", "0:v:0", "-c:v", "copy", *(["-tag:v", "hvc1"] if codec == "hevc" else [])]
    if audio is not None:
        args += ["-map", "1:a:0", *audio_args(audio)]
    muxer = [*MP4.options, "-f", MP4.muxer]
    return [*args, "-sn", "-dn", "-map_metadata", "-1", *muxer, f"file:{partial_path(target)}"]


def _verify(path: Path, frames: int, fps: Fraction, tools: Tools) -> Output:
    """The joined file holds ``frames`` frames, each shown one period after the one before."""
    found = count_frames(path, tools)
    if found.frames != frames:
        raise SegmentMismatch(f"the segments hold {frames} frames but the joined file {found.frames}")
    check_continuous(path, fps, tools)
    return found


def check_continuous(path: Path, fps: Fraction, tools: Tools, demuxer: str = "mov") -> None:
    """:class:`DiscontinuousOutput` unless each video frame of ``path`` is shown ``1/fps`` seconds
    after the one before it, to within one tick of the stream's clock (a gap or an overlap at a
    cut is a whole frame); times measured from the first frame."""
    stamps, tick = frame_stamps(path, tools, demuxer)
    period = 1 / (fps * tick)  # ticks per frame, maybe fractional
    for index, stamp in enumerate(stamps):
        drift = (stamp - stamps[0]) * period.denominator - index * period.numerator
        if abs(drift) > period.denominator:
            raise DiscontinuousOutput(
                f"frame {index} of {path.name} is shown {float(drift / period.denominator * tick):+.6f} s "
                f"off the {fps}/s grid: a gap or an overlap at a cut"
            )


def frame_stamps(path: Path, tools: Tools, demuxer: str = "mov") -> tuple[list[int], Fraction]:
    """The presentation times of ``path``'s video packets in ticks, sorted, and the tick (seconds).

    Demuxed, not decoded; given :attr:`Tools.stall_timeout` seconds in all.
    """
    args = [tools.ffprobe, "-v", "error", "-select_streams", "v:0", "-show_entries",
            "stream=time_base:packet=pts", "-of", "csv=p=1", *input_args(path, demuxer)]  # fmt: skip
    status, out, err = run_captured(args, name="ffprobe (frame times)", timeout=tools.stall_timeout)
    if status != 0:
        raise EncodeFailed(f"{path.name} does not read back: {err}")
    rows = [line.split(",") for line in out.decode("ascii", "replace").splitlines()]
    tick = next((Fraction(row[1]) for row in rows if row[0] == "stream"), None)
    if tick is None:
        raise EncodeFailed(f"{path.name} has no video stream")
    return sorted(int(row[1]) for row in rows if row[0] == "packet" and row[1].lstrip("-").isdigit()), tick


def _decimal(seconds: Fraction) -> str:
    """Seconds as ffmpeg reads them: a decimal to the microsecond."""
    return f"{float(seconds):.6f}"
