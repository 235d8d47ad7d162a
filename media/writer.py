"""The encode pipe: uint8 RGB frames → H.264/HEVC MP4 with the source's audio and colour tags."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import numpy as np

from media.color import encoder_tags, scale_options
from media.errors import EncodeFailed, FrameCountMismatch, UnsupportedMedia
from media.probe import AudioInfo, Color, MediaInfo, input_args
from media.process import Child, run_captured
from media.tools import Tools

H264_MAX_SIDE = 4096
"""Above this width or height H.264 NVENC stops; we switch to HEVC."""

HEVC_MAX_SIDE = 8192
"""The largest side HEVC encoders here accept (NVENC and x265 level 6.2)."""

MP4_AUDIO_COPY = frozenset({"aac", "mp3", "ac3", "eac3", "alac", "opus"})
"""Source audio codecs muxed into MP4 as they are; anything else becomes AAC."""


def partial_path(path: Path) -> Path:
    """Where an output is written until it is checked: ``name.partial.mp4``."""
    return path.with_name(f"{path.stem}.partial{path.suffix}")


@dataclass(frozen=True)
class Container:
    """An output format: ffmpeg's muxer and its options, and the demuxer that reads the file back."""

    muxer: str
    options: tuple[str, ...]
    demuxer: str


MP4 = Container("mp4", ("-movflags", "+faststart"), "mov")
"""MP4 with its index first, so a player starts before the whole file is there."""


def audio_args(audio: AudioInfo) -> list[str]:
    """How ``audio`` goes into MP4: copied when MP4 takes its codec (:data:`MP4_AUDIO_COPY`), else AAC."""
    if audio.codec in MP4_AUDIO_COPY:
        return ["-c:a", "copy"]
    return ["-c:a", "aac", "-b:a", "192k"]


@dataclass(frozen=True)
class Encoder:
    """One ffmpeg video encoder and how to ask it for a quality level (CRF/CQ 0-51)."""

    name: str
    codec: str
    hardware: bool

    def args(self, quality: int) -> list[str]:
        quality = max(0, min(51, quality))
        if self.hardware:
            args = [
                "-c:v",
                self.name,
                "-preset",
                "p4",
                "-tune",
                "hq",
                "-rc",
                "vbr",
                "-cq",
                str(max(1, quality)),
            ]
            args += ["-b:v", "0"]
        else:
            args = ["-c:v", self.name, "-preset", "medium", "-crf", str(quality)]
            if self.name == "libx265":
                args += ["-x265-params", "log-level=error"]
        return args + (["-tag:v", "hvc1"] if self.codec == "hevc" else [])


ENCODERS = {
    ("h264", True): Encoder("h264_nvenc", "h264", hardware=True),
    ("h264", False): Encoder("libx264", "h264", hardware=False),
    ("hevc", True): Encoder("hevc_nvenc", "hevc", hardware=True),
    ("hevc", False): Encoder("libx265", "hevc", hardware=False),
}


def choose_encoder(
    tools: Tools, width: int, height: int, *, codec: str | None = None, gpu: bool = False
) -> Encoder:
    """NVENC when ``gpu`` is asked for and ffmpeg can really encode with it, else x264/x265.

    HEVC when ``codec`` asks for it or either side exceeds :data:`H264_MAX_SIDE`.
    """
    if max(width, height) > HEVC_MAX_SIDE:
        raise UnsupportedMedia(f"output {width}x{height} is larger than {HEVC_MAX_SIDE} px on a side")
    if codec not in (None, "h264", "hevc"):
        raise UnsupportedMedia(f"codec {codec!r} is not offered (h264, hevc)")
    chosen = "hevc" if codec == "hevc" or max(width, height) > H264_MAX_SIDE else "h264"
    hardware = ENCODERS[chosen, True]
    if gpu and tools.encoder_works(hardware.name):
        return hardware
    return ENCODERS[chosen, False]


@dataclass(frozen=True)
class Output:
    """What :meth:`FrameWriter.finish` verified about the file it wrote."""

    path: Path
    frames: int
    width: int
    height: int
    encoder: str
    audio: bool


class FrameWriter:
    """Encode frames written as ``(n, H, W, 3)`` uint8 RGB arrays into an MP4 at ``path``.

    The file is written under a ``.partial`` name and renamed only by
    :meth:`finish`, after ffmpeg exited cleanly and the file was checked to hold
    exactly the frames written; any other exit kills ffmpeg and removes it.
    ``audio_from``: a probed source whose first audio stream is muxed in (copied
    when MP4 allows, else AAC). ``filters``: extra ffmpeg filters applied to the
    RGB frames before the conversion to YUV (captions). ``container``: MP4 unless
    told otherwise; ``encoder_options``: more encoder arguments, after the encoder's
    own (pinned GOP settings, see :mod:`media.segments`).
    """

    def __init__(
        self,
        path: Path,
        *,
        width: int,
        height: int,
        fps: Fraction,
        encoder: Encoder,
        tools: Tools,
        quality: int = 23,
        color: Color | None = None,
        audio_from: MediaInfo | None = None,
        filters: tuple[str, ...] = (),
        container: Container = MP4,
        encoder_options: tuple[str, ...] = (),
    ) -> None:
        self.path = path
        self.partial = partial_path(path)
        self.width, self.height, self.fps = width, height, fps
        self.encoder = encoder
        self.tools = tools
        self.quality = quality
        self.color = color or Color()
        self.audio_from = audio_from if audio_from is not None and audio_from.audio is not None else None
        self.filters = filters
        self.container = container
        self.encoder_options = encoder_options
        self.frames_written = 0
        self._child: Child | None = None
        self._finished = False

    def command(self) -> list[str]:
        args = [self.tools.ffmpeg, "-hide_banner", "-nostdin", "-v", "error",
                "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{self.width}x{self.height}",
                "-framerate", str(self.fps), "-i", "pipe:0"]  # fmt: skip
        if self.audio_from is not None:
            args += input_args(self.audio_from.path, self.audio_from.demuxer)
        args += ["-map", "0:v:0", "-vf", ",".join(self._filters()), *self.encoder.args(self.quality)]
        args += self.encoder_options
        args += ["-pix_fmt", "yuv420p", *encoder_tags(self.color)]
        if self.audio_from is not None:
            args += ["-map", "1:a:0", *self._audio_args()]
        muxer = [*self.container.options, "-f", self.container.muxer]
        return [*args, "-map_metadata", "-1", *muxer, f"file:{self.partial}"]

    def _filters(self) -> list[str]:
        filters = list(self.filters)
        if self.width % 2 or self.height % 2:  # yuv420p needs even sides: pad, never crop
            filters.append("pad=ceil(iw/2)*2:ceil(ih/2)*2")
        options = scale_options(self.color, "out")
        return [*filters, f"scale={options}" if options else "scale", "format=yuv420p"]

    def _audio_args(self) -> list[str]:
        assert self.audio_from is not None and self.audio_from.audio is not None
        return audio_args(self.audio_from.audio)

    def __enter__(self) -> FrameWriter:
        self.partial.unlink(missing_ok=True)
        self._child = Child(
            self.command(),
            name="encoder",
            stall_timeout=self.tools.stall_timeout,
            stdin=True,
            nice=self.tools.nice,
            limits=self.tools.limits,
        )
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if not self._finished:
            self.abort()

    def write(self, frames: np.ndarray) -> None:
        """Encode ``frames`` (``(n, H, W, 3)`` or ``(H, W, 3)``, uint8, this writer's size)."""
        child = self._require()
        shape_ok = frames.ndim in (3, 4) and frames.shape[-3:] == (self.height, self.width, 3)
        if not shape_ok or frames.dtype != np.uint8:
            raise ValueError(
                f"frames {frames.shape} {frames.dtype} do not fit a {self.width}x{self.height} writer"
            )
        try:
            child.write(np.ascontiguousarray(frames).data.cast("B"))
        except BrokenPipeError:
            child.finish()
            raise EncodeFailed(f"encoder exited early: {child.stderr_tail()}") from None
        self.frames_written += 1 if frames.ndim == 3 else len(frames)

    def finish(self) -> Output:
        """Close the stream, check the file and move it to ``path``."""
        child = self._require()
        status = child.finish()
        if status != 0:
            raise EncodeFailed(f"ffmpeg encode failed (exit status {status}): {child.stderr_tail()}")
        output = self._verify()
        os.replace(self.partial, self.path)
        self._finished = True
        return Output(self.path, output.frames, output.width, output.height, self.encoder.name, output.audio)

    def abort(self) -> None:
        """Kill the encoder and remove the partial file; safe to call twice."""
        if self._child is not None:
            self._child.kill()
        self.partial.unlink(missing_ok=True)

    def _verify(self) -> Output:
        found = count_frames(self.partial, self.tools, self.container.demuxer)
        if found.frames != self.frames_written:
            raise FrameCountMismatch(f"wrote {self.frames_written} frames but the file holds {found.frames}")
        return found

    def _require(self) -> Child:
        if self._child is None:
            raise RuntimeError("FrameWriter used outside its context")
        return self._child


def count_frames(path: Path, tools: Tools, demuxer: str = "mov") -> Output:
    """Demux ``path`` (no decode) as ``demuxer`` and count its video packets; one packet per frame
    in MP4 and in MPEG-TS (whose demuxer parses H.264/HEVC into whole frames)."""
    args = [tools.ffprobe, "-v", "error", "-count_packets", "-show_entries",
            "stream=codec_type,codec_name,width,height,nb_read_packets", "-of", "json",
            *input_args(path, demuxer)]  # fmt: skip
    status, out, err = run_captured(args, name="ffprobe (output check)", timeout=tools.probe_timeout)
    if status != 0:
        raise EncodeFailed(f"the encoded file does not read back: {err}")
    streams = json.loads(out).get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    if video is None:
        raise EncodeFailed("the encoded file has no video stream")
    return Output(
        path=path,
        frames=int(video.get("nb_read_packets") or 0),
        width=int(video.get("width") or 0),
        height=int(video.get("height") or 0),
        encoder=str(video.get("codec_name")),
        audio=any(s.get("codec_type") == "audio" for s in streams),
    )
