"""The decode pipe: a probed source → uint8 RGB frames at a constant rate."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from types import TracebackType

import numpy as np

from media.color import scale_options
from media.errors import DecodeFailed, DecodeOverrun
from media.probe import MediaInfo, input_args
from media.process import Child
from media.seek import Clock, clock, keyframe_before
from media.tools import Tools

OVERRUN_FRAMES = 24
"""Frames a source may decode to past its declared count (``info.frames``) before it is refused."""

OVERRUN_FRACTION = 0.05
"""The same margin as a fraction of the declared count; the larger of the two applies."""


@dataclass(frozen=True)
class FrameRange:
    """Frames ``[start, stop)`` of what :class:`FrameReader` yields for the whole source (0-based)."""

    start: int
    stop: int

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.stop:
            raise ValueError(f"frame range [{self.start}, {self.stop}) is empty or negative")

    def __len__(self) -> int:
        return self.stop - self.start


def frame_cap(info: MediaInfo) -> int:
    """The most frames a decode of ``info`` may yield: its declared count plus the margin.

    A container whose duration or count lies (a damaged or crafted header, or
    streams concatenated behind one header) would otherwise decode for as long
    as its content runs, past every probe-time limit.
    """
    return info.frames + max(OVERRUN_FRAMES, math.ceil(info.frames * OVERRUN_FRACTION))


class FrameReader:
    """Frames of ``info``'s video stream as ``(n, H, W, 3)`` uint8 RGB batches.

    Frames are as displayed (rotation applied), 8-bit whatever the source depth,
    at ``info.fps``; a variable-rate source is resampled to that constant rate
    (frames duplicated or dropped by ffmpeg's ``fps`` filter). ``frames_read``
    counts what came out, at most ``cap`` (:func:`frame_cap`): ffmpeg is told
    to stop one frame past it, and that frame raises :class:`DecodeOverrun`.
    Use as a context manager: leaving it early kills ffmpeg.

    ``frames``: only that range of the whole decode, bit for bit, without decoding
    from the start (see :meth:`_range_timing`). A range reaching ``info.frames``
    runs to the end of the source, as the whole decode does; any other range
    yields exactly ``len(frames)`` frames or raises :class:`DecodeFailed`.
    """

    def __init__(self, info: MediaInfo, tools: Tools, frames: FrameRange | None = None) -> None:
        self.info = info
        self.tools = tools
        self.frames = frames
        self.cap = frame_cap(info)
        self.frames_read = 0
        self._child: Child | None = None
        self._clock: Clock | None = None

    def command(self) -> list[str]:
        timing = [f"fps=fps={self.info.fps}"] if self.info.vfr else []
        if self.frames is not None:
            timing = self._range_timing(self.frames)
        options = scale_options(self.info.color, "in")
        filters = [*timing, f"scale={options}" if options else "scale", "format=rgb24"]
        sync = ["-fps_mode", "passthrough"] if not self.info.vfr or self.frames is not None else []
        return [
            self.tools.ffmpeg, "-hide_banner", "-nostdin", "-v", "error", *self._seek_args(),
            *input_args(self.info.path, self.info.demuxer),
            "-map", "0:v:0", "-an", "-sn", "-dn", "-vf", ",".join(filters), *sync,
            "-frames:v", str(self._limit()), "-pix_fmt", "rgb24", "-f", "rawvideo", "pipe:1",
        ]  # fmt: skip

    @property
    def first(self) -> int:
        """Index in the whole decode of the first frame this reader yields."""
        return self.frames.start if self.frames is not None else 0

    def _open_end(self) -> bool:
        return self.frames is None or self.frames.stop >= self.info.frames

    def _limit(self) -> int:
        """Frames ffmpeg is asked for: the range's, else up to one past the cap (the overrun)."""
        if self.frames is not None and not self._open_end():
            return len(self.frames)
        return self.cap + 1 - self.first

    def _seek_args(self) -> list[str]:
        """For a range: keep the whole decode's clock (``-copyts -start_at_zero`` offsets timestamps
        as no ``-copyts`` does, MPEG-TS start correction included, but ``-ss`` leaves them alone)
        and seek to the keyframe before the range's first frame (:mod:`media.seek`). No accurate
        seek: it would drop what comes before ``-ss``; :meth:`_range_timing` cuts instead."""
        if self.frames is None:
            return []
        at = self._source_clock()
        seek = keyframe_before(self.info, self.tools, at, self._frame_time(self.frames.start))
        jump = (
            ["-noaccurate_seek", "-ss", f"{float(seek) - 1e-6:.6f}"] if seek is not None and seek > 0 else []
        )
        return ["-copyts", "-start_at_zero", *jump]

    def _frame_time(self, index: int) -> Fraction:
        """Seconds from the container's start where frame ``index`` of the whole decode is shown.

        Passed through (constant rate: MP4, MOV, AVI): the first frame's time plus
        ``index`` periods. Resampled: ``index`` ticks of the ``fps`` filter, whose 0
        is the container's start, or the video's in MPEG-TS (later: see :mod:`media.seek`).
        """
        start = Fraction(0) if self.info.vfr else self._source_clock().video
        return start + index / self.info.fps

    def _range_timing(self, frames: FrameRange) -> list[str]:
        """Filters that keep exactly ``frames`` of the whole decode, wherever the seek landed.

        Variable rate: the whole decode's ``fps`` filter numbers output frames by
        ticks of ``1/fps`` from the clock's 0 (ffmpeg's CFR sync pads up to the first
        frame's tick; ``start_time=0`` does the same), each tick showing the last
        frame whose rounded time is at or before it; so the same filter fed from a
        keyframe before the range yields the same frames at the same ticks, and
        ``trim`` keeps ticks ``[start, stop)``. Constant rate (passthrough): frame
        ``i`` is shown at ``video_start + i/fps``; ``trim`` keeps the frames within
        half a frame of the range's times.
        """
        if self.info.vfr:
            end = "" if self._open_end() else f":end_pts={frames.stop}"
            return [f"fps=fps={self.info.fps}:start_time=0", f"trim=start_pts={frames.start}{end}"]
        start = self._frame_time(frames.start) - Fraction(1, 2) / self.info.fps
        end = "" if self._open_end() else f":end={float(start + len(frames) / self.info.fps):.6f}"
        return [f"trim=start={float(start):.6f}{end}"]

    def _source_clock(self) -> Clock:
        if self._clock is None:
            self._clock = clock(self.info, self.tools)
        return self._clock

    def __enter__(self) -> FrameReader:
        self._child = Child(
            self.command(),
            name="decoder",
            stall_timeout=self.tools.stall_timeout,
            stdout=True,
            nice=self.tools.nice,
            limits=self.tools.limits,
        )
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Kill the decoder if it still runs; safe to call twice."""
        if self._child is not None:
            self._child.kill()

    def batches(self, size: int) -> Iterator[np.ndarray]:
        """Yield fresh arrays of up to ``size`` frames; the last may be shorter.

        Raises :class:`DecodeFailed` for a partial frame or a failed decoder,
        :class:`DecodeOverrun` for a frame past ``cap``,
        :class:`~media.errors.MediaTimeout` if ffmpeg stalls.
        """
        child = self._require()
        shape = (self.info.height, self.info.width, 3)
        while True:
            batch = np.empty((size, *shape), dtype=np.uint8)
            count = 0
            while count < size and self._read_frame(
                child, batch[count], self.first + self.frames_read + count + 1
            ):
                count += 1
            if count:
                self.frames_read += count
                yield batch[:count]
            if count < size:
                break
        status = child.finish()
        if status != 0:
            raise DecodeFailed(f"ffmpeg decode failed (exit status {status}): {child.stderr_tail()}")
        if self.frames is not None and not self._open_end() and self.frames_read < len(self.frames):
            raise DecodeFailed(
                f"frames [{self.frames.start}, {self.frames.stop}) decoded to {self.frames_read} frames: "
                "the source ends early or its timestamps are not evenly spaced"
            )

    def _read_frame(self, child: Child, frame: np.ndarray, number: int) -> bool:
        view = frame.data.cast("B")
        filled = child.read_into(view)
        if 0 < filled < len(view):
            raise DecodeFailed(
                f"decoder stopped inside frame {number} ({filled} of {len(view)} bytes): "
                f"{child.stderr_tail()}"
            )
        if filled and number > self.cap:
            info = self.info
            raise DecodeOverrun(
                f"the container declares {info.frames} frames / {info.duration:.2f} s but decodes past "
                f"{self.cap} frames: its duration is wrong (a damaged or crafted file)"
            )
        return filled == len(view)

    def _require(self) -> Child:
        if self._child is None:
            raise RuntimeError("FrameReader used outside its context")
        return self._child


def decode_all(info: MediaInfo, tools: Tools) -> np.ndarray:
    """Every frame of ``info`` in one array; for tests and benchmarks on short clips."""
    with FrameReader(info, tools) as reader:
        batches = list(reader.batches(64))
    if not batches:
        return np.empty((0, info.height, info.width, 3), dtype=np.uint8)
    return np.concatenate(batches)
