"""ffprobe, behind an allowlist and limits, before anything is decoded.

The container is chosen from the file's first bytes, never from its name or
from ffmpeg's own guessing: an HLS playlist or an ffconcat script renamed
``.mp4`` is refused here instead of being followed. ffprobe then runs with that
demuxer forced and only the ``file`` protocol allowed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from media.errors import CorruptMedia, LimitExceeded, UnsupportedMedia
from media.process import run_captured
from media.tools import Tools

log = logging.getLogger(__name__)

MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot")
"""ISO-BMFF / QuickTime top-level boxes a file may start with (bytes 4-8)."""

ASF_GUID = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")
"""The ASF header object's GUID, the first 16 bytes of a WMV/ASF file."""

MAGIC = (
    (b"\x1a\x45\xdf\xa3", "matroska"),
    (ASF_GUID, "asf"),
    (b"FLV\x01", "flv"),
    (b"OggS", "ogg"),
    (b"\x1f\x07\x00", "dv"),  # a DIF sequence's header block: section type 0, sequence 0
)
"""Leading bytes → demuxer (MP4/MOV, AVI and MPEG-TS need more than a prefix: see sniff_demuxer)."""

MODERN_CODECS = frozenset(
    {"h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "mpeg2video", "mpeg1video", "prores", "mjpeg", "dnxhd"}
)
LEGACY_CODECS = frozenset(
    {
        "msmpeg4v2", "msmpeg4v3",  # MS-MPEG4, DivX 3 (AVI)
        "wmv1", "wmv2", "wmv3", "vc1",  # Windows Media Video 7/8/9, VC-1 (ASF)
        "h263", "h263p", "flv1",  # H.263, Sorenson Spark (FLV)
        "theora",  # Ogg
        "cinepak", "qtrle", "rawvideo",  # AVI/QuickTime
        "dvvideo",  # DV camcorders
        "ffv1", "huffyuv", "ffvhuff", "utvideo",  # lossless archival and editing codecs
    }
)  # fmt: skip
VIDEO_CODECS = MODERN_CODECS | LEGACY_CODECS
"""Video codecs we accept (ffprobe's ``codec_name``), reviewed one by one; also needs a decoder in
the installed ffmpeg (:meth:`Tools.video_decoders`). Images and anything unlisted are refused."""

REFUSED_TEXT = {
    b"#EXTM3U": "an HLS playlist",
    b"ffconcat": "an ffconcat script",
    b"#EXTINF": "an HLS playlist",
    b"<?xml": "an XML document (DASH manifest?)",
    b"<MPD": "a DASH manifest",
}


@dataclass(frozen=True)
class MediaLimits:
    """What a source may be. Sizes in bytes and pixels, durations in seconds, rates in frames/s."""

    max_file_bytes: int = 8 * 1024**3
    max_width: int = 7680
    max_height: int = 7680
    max_pixels: int = 7680 * 4320
    max_duration: float = 4 * 3600.0
    max_fps: float = 240.0
    video_codecs: frozenset[str] = VIDEO_CODECS


@dataclass(frozen=True)
class Color:
    """Colour tags as ffprobe names them; ``None`` where the source leaves them unset."""

    primaries: str | None = None
    transfer: str | None = None
    space: str | None = None
    range: str | None = None


@dataclass(frozen=True)
class AudioInfo:
    codec: str
    channels: int
    sample_rate: int


@dataclass(frozen=True)
class MediaInfo:
    """A probed source. ``width``/``height`` are as displayed (rotation applied)."""

    path: Path
    demuxer: str
    size_bytes: int
    codec: str
    width: int
    height: int
    rotation: int  # clockwise degrees the stored frame is turned for display
    fps: Fraction
    vfr: bool  # variable or unverified timing: decoders resample to ``fps`` (see _frame_rate)
    duration: float  # seconds of video, as the container declares them
    frames: int  # the container's count, else duration x fps
    pix_fmt: str
    color: Color
    audio: AudioInfo | None

    @property
    def frame_bytes(self) -> int:
        return self.width * self.height * 3


def sniff_demuxer(path: Path) -> str:
    """The ffmpeg demuxer for ``path`` from its magic bytes, or a refusal."""
    with path.open("rb") as stream:
        head = stream.read(4096)
    if not head:
        raise CorruptMedia("the file is empty")
    if head[4:8] in MP4_BOXES:
        return "mov"
    for magic, demuxer in MAGIC:
        if head.startswith(magic):
            return demuxer
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "avi"
    if len(head) > 376 and head[0] == head[188] == head[376] == 0x47:
        return "mpegts"
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    for magic, what in REFUSED_TEXT.items():
        if stripped.startswith(magic):
            raise UnsupportedMedia(f"the file is {what}, not a video")
    raise UnsupportedMedia(
        "not a video container we accept (MP4/MOV, Matroska/WebM, AVI, MPEG-TS, ASF/WMV, FLV, Ogg, DV)"
    )


def probe(path: Path, tools: Tools, limits: MediaLimits | None = None) -> MediaInfo:
    """Check ``path`` against the allowlists and ``limits`` and describe it.

    Raises :class:`UnsupportedMedia`, :class:`CorruptMedia` or
    :class:`LimitExceeded`; nothing is decoded.
    """
    limits = limits or MediaLimits()
    size = path.stat().st_size
    if size > limits.max_file_bytes:
        raise LimitExceeded(f"file is {size} bytes; the limit is {limits.max_file_bytes}")
    demuxer = sniff_demuxer(path)
    report = ffprobe_json(path, demuxer, tools)
    info = _describe(path, demuxer, size, report, lambda codec: _check_codec(codec, limits, tools))
    check_limits(info, limits)
    return info


def input_args(path: Path, demuxer: str) -> list[str]:
    """ffmpeg/ffprobe arguments that open ``path`` safely: forced demuxer, files only."""
    return ["-protocol_whitelist", "file", "-f", demuxer, "-i", f"file:{path.resolve()}"]


def ffprobe_json(
    path: Path, demuxer: str, tools: Tools, show: Sequence[str] = ("-show_format", "-show_streams")
) -> dict[str, Any]:
    """ffprobe's JSON report of ``path`` opened safely; :class:`CorruptMedia` if it cannot read it."""
    args = [tools.ffprobe, "-v", "error", "-hide_banner", *show, "-of", "json", *input_args(path, demuxer)]
    status, out, err = run_captured(args, name="ffprobe", timeout=tools.probe_timeout, limits=tools.limits)
    if status != 0:
        raise CorruptMedia(f"ffprobe cannot read the file as {demuxer}: {err or f'exit status {status}'}")
    try:
        report: dict[str, Any] = json.loads(out)
    except ValueError as error:
        raise CorruptMedia(f"ffprobe returned unreadable output: {error}") from error
    return report


def _describe(
    path: Path, demuxer: str, size: int, report: dict[str, Any], check_codec: Callable[[str], None]
) -> MediaInfo:
    streams: list[dict[str, Any]] = report.get("streams", [])
    videos = [s for s in streams if s.get("codec_type") == "video" and not _attached_picture(s)]
    if len(videos) != 1:
        raise UnsupportedMedia(f"expected exactly one video stream, found {len(videos)}")
    video = videos[0]
    codec = str(video.get("codec_name", "unknown"))
    check_codec(codec)
    coded_w, coded_h = int(video.get("width") or 0), int(video.get("height") or 0)
    if coded_w <= 0 or coded_h <= 0:
        raise CorruptMedia("the video stream has no frame size")
    rotation = _rotation(video)
    width, height = (coded_h, coded_w) if rotation % 180 else (coded_w, coded_h)
    declared = int(video.get("nb_frames") or 0)
    fps, vfr = _frame_rate(video, counted=declared > 0)
    duration = stream_duration(video, report.get("format", {}))
    frames = declared if declared > 0 and not vfr else max(1, round(duration * fps))
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    return MediaInfo(
        path=path,
        demuxer=demuxer,
        size_bytes=size,
        codec=codec,
        width=width,
        height=height,
        rotation=rotation,
        fps=fps,
        vfr=vfr,
        duration=duration,
        frames=frames,
        pix_fmt=str(video.get("pix_fmt", "unknown")),
        color=_color(video),
        audio=_audio(audio) if audio else None,
    )


def _check_codec(codec: str, limits: MediaLimits, tools: Tools) -> None:
    """:class:`UnsupportedMedia` unless ``codec`` is allowed and the installed ffmpeg decodes it."""
    if codec not in limits.video_codecs:
        raise UnsupportedMedia(f"video codec {codec!r} is not accepted")
    if codec not in tools.video_decoders():
        raise UnsupportedMedia(f"video codec {codec!r} is accepted but this ffmpeg has no decoder for it")


def check_limits(info: MediaInfo, limits: MediaLimits) -> None:
    if info.width > limits.max_width or info.height > limits.max_height:
        raise LimitExceeded(
            f"frame is {info.width}x{info.height}; the limit is {limits.max_width}x{limits.max_height}"
        )
    if info.width * info.height > limits.max_pixels:
        raise LimitExceeded(f"frame has {info.width * info.height} pixels; the limit is {limits.max_pixels}")
    if info.duration > limits.max_duration:
        raise LimitExceeded(f"duration is {info.duration:.1f} s; the limit is {limits.max_duration:g} s")
    if info.fps > limits.max_fps:
        raise LimitExceeded(f"frame rate is {float(info.fps):.2f}/s; the limit is {limits.max_fps:g}/s")


def _attached_picture(stream: dict[str, Any]) -> bool:
    return bool(stream.get("disposition", {}).get("attached_pic"))


def _rotation(video: dict[str, Any]) -> int:
    """Clockwise display rotation in degrees, 0-359, from the display matrix or the legacy tag.

    ffprobe gives the display matrix's angle counter-clockwise (a phone video
    shown turned 90 degrees clockwise reads -90); the legacy ``rotate`` tag is clockwise.
    """
    for side in video.get("side_data_list", []):
        if "rotation" in side:
            return round(-float(side["rotation"])) % 360
    tag = video.get("tags", {}).get("rotate")
    return round(float(tag)) % 360 if tag else 0


def _parse_rate(text: str | None) -> Fraction | None:
    try:
        rate = Fraction(text or "0/0")
    except (ValueError, ZeroDivisionError):
        return None
    return rate if rate > 0 else None


def _frame_rate(video: dict[str, Any], *, counted: bool) -> tuple[Fraction, bool]:
    """The output frame rate and whether decoders must resample to it (``vfr``).

    The rate is the stream's average (``avg_frame_rate``), else its base rate
    (``r_frame_rate``). Where the container counts its frames (MP4/MOV, AVI)
    the average is measured (frames / duration), and a source is variable-rate
    when it differs from the base rate. Where it does not (Matroska/WebM,
    MPEG-TS, FLV, Ogg, ASF, DV) both rates are the muxer's claim (Matroska's
    ``DefaultDuration``) or a guess from the first packets: a variable-rate
    Matroska file made by dropping frames reports 10/s for both while holding
    7/s. Such sources are all resampled (``vfr``): the ``fps`` filter lays the
    frames on the clock, so the output covers the declared duration whatever
    the true rate, and passes an evenly spaced stream through one to one.
    """
    average = _parse_rate(video.get("avg_frame_rate"))
    base = _parse_rate(video.get("r_frame_rate"))
    rate = average or base
    if rate is None:
        raise CorruptMedia("the video stream has no frame rate")
    rate = rate.limit_denominator(1001)
    varies = base is not None and average is not None and abs(base - average) / base > 0.001
    return rate, varies or not counted


def stream_duration(stream: dict[str, Any], container: dict[str, Any]) -> float:
    """Seconds: the stream's own duration, else its Matroska ``DURATION`` tag, else the container's.

    :class:`CorruptMedia` if none is there. (A Matroska container's duration is
    its longest stream's: an audio track that runs on would count.)
    """
    tag = stream.get("tags", {}).get("DURATION")
    for value in (stream.get("duration"), _clock_seconds(tag), container.get("duration")):
        try:
            seconds = float(value if value is not None else "nan")
        except ValueError:
            continue
        if seconds > 0:
            return seconds
    raise CorruptMedia("the file has no duration")


def _clock_seconds(text: str | None) -> float | None:
    """``HH:MM:SS.fraction`` as seconds, ``None`` if it is not that."""
    try:
        hours, minutes, seconds = (text or "").split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None


def _color(video: dict[str, Any]) -> Color:
    def tag(key: str) -> str | None:
        value = video.get(key)
        return None if value in (None, "unknown", "unspecified", "reserved") else str(value)

    return Color(tag("color_primaries"), tag("color_transfer"), tag("color_space"), tag("color_range"))


def _audio(stream: dict[str, Any]) -> AudioInfo:
    return AudioInfo(
        codec=str(stream.get("codec_name", "unknown")),
        channels=int(stream.get("channels") or 0),
        sample_rate=int(stream.get("sample_rate") or 0),
    )
