"""The decode pipe: a probed source → uint8 RGB frames at a constant rate."""

from __future__ import annotations

import math
from collections.abc import Iterator
from types import TracebackType

import numpy as np

from media.color import scale_options
from media.errors import DecodeFailed, DecodeOverrun
from media.probe import MediaInfo, input_args
from media.process import Child
from media.tools import Tools

OVERRUN_FRAMES = 24
"""Frames a source may decode to past its declared count (``info.frames``) before it is refused."""

OVERRUN_FRACTION = 0.05
"""The same margin as a fraction of the declared count; the larger of the two applies."""


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
    """

    def __init__(self, info: MediaInfo, tools: Tools) -> None:
        self.info = info
        self.tools = tools
        self.cap = frame_cap(info)
        self.frames_read = 0
        self._child: Child | None = None

    def command(self) -> list[str]:
        filters = [f"fps=fps={self.info.fps}"] if self.info.vfr else []
        options = scale_options(self.info.color, "in")
        filters += [f"scale={options}" if options else "scale", "format=rgb24"]
        sync = ["-fps_mode", "passthrough"] if not self.info.vfr else []
        return [
            self.tools.ffmpeg, "-hide_banner", "-nostdin", "-v", "error",
            *input_args(self.info.path, self.info.demuxer),
            "-map", "0:v:0", "-an", "-sn", "-dn", "-vf", ",".join(filters), *sync,
            "-frames:v", str(self.cap + 1), "-pix_fmt", "rgb24", "-f", "rawvideo", "pipe:1",
        ]  # fmt: skip

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
            while count < size and self._read_frame(child, batch[count], self.frames_read + count + 1):
                count += 1
            if count:
                self.frames_read += count
                yield batch[:count]
            if count < size:
                break
        status = child.finish()
        if status != 0:
            raise DecodeFailed(f"ffmpeg decode failed (exit status {status}): {child.stderr_tail()}")

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
