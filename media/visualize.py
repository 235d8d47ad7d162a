"""Audio visualizer: a cover image and an audio file → one ffmpeg render with a moving waveform.

Both inputs are sniffed by their first bytes and probed with the demuxer forced
and only the ``file`` protocol allowed, as :mod:`media.probe` does for videos.
The cover's declared size is read from its own header before anything decodes
it, so a small file declaring a gigapixel image is refused unopened.

The render composes the still picture (blurred, darkened cover filling the
canvas, the cover itself fitted on top) once, repeats that one frame, and
overlays ``showwaves`` drawn from the audio: per output frame only the
waveform strip is drawn and blended before the encoder.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from media.color import encoder_tags
from media.errors import CorruptMedia, DecodeFailed, EncodeFailed, LimitExceeded, UnsupportedMedia
from media.probe import MP4_BOXES, REFUSED_TEXT, Color, MediaLimits, ffprobe_json, input_args, stream_duration
from media.process import run_captured
from media.render import partial_path
from media.tools import Tools
from media.writer import MP4_AUDIO_COPY, Encoder

AUDIO_CODECS = frozenset({"mp3", "mp2", "aac", "alac", "flac", "opus", "vorbis", "ac3", "eac3", "wavpack"})
"""Audio codecs we decode, besides uncompressed ``pcm_*``."""

WAVE_MODES = ("cline", "line", "p2p", "point")
"""``showwaves`` drawing modes a job may ask for."""

OUTPUT_COLOR = Color(primaries="bt709", transfer="bt709", space="bt709", range="tv")
"""The output's colour description: the RGB composition is converted with BT.709 and tagged so."""

ESTIMATED_DURATION = frozenset({"mp3", "aac"})
"""Demuxers whose duration ffprobe guesses from the bit rate (far off for VBR): measured by demuxing."""

MIN_OUTPUT_BYTES = 1024


@dataclass(frozen=True)
class AudioSource:
    """A probed audio file. ``duration`` in seconds, ``sample_rate`` in Hz."""

    path: Path
    demuxer: str
    codec: str
    duration: float
    channels: int
    sample_rate: int


@dataclass(frozen=True)
class ImageLimits:
    """What a cover image may be: bytes, pixels per side, pixels in all (108 MP phone photos fit)."""

    max_file_bytes: int = 50 * 1024**2
    max_side: int = 16384
    max_pixels: int = 120_000_000


@dataclass(frozen=True)
class Cover:
    """A probed cover image; ``width`` x ``height`` in pixels as decoded."""

    path: Path
    demuxer: str
    codec: str
    width: int
    height: int


@dataclass(frozen=True)
class Waves:
    """How the waveform is drawn: ``color`` ``#RRGGBB[AA]``, ``mode`` one of :data:`WAVE_MODES`."""

    color: str = "#FFFFFFE6"
    mode: str = "cline"


# --- audio ----------------------------------------------------------------------------------------


def sniff_audio(path: Path) -> str:
    """The ffmpeg demuxer for the audio file ``path`` from its magic bytes, or a refusal."""
    with path.open("rb") as stream:
        head = stream.read(64)
    if not head:
        raise CorruptMedia("the audio file is empty")
    if head.startswith(b"ID3"):
        return "mp3"
    if len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return "mp3" if head[1] & 0x06 else "aac"  # layer bits 00: an ADTS AAC header
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "wav"
    for magic, demuxer in ((b"fLaC", "flac"), (b"OggS", "ogg"), (b"\x1a\x45\xdf\xa3", "matroska")):
        if head.startswith(magic):
            return demuxer
    if head[4:8] in MP4_BOXES:
        return "mov"
    _refuse_text(head, "an audio file")
    raise UnsupportedMedia("not an audio format we accept (MP3, AAC, WAV, FLAC, Ogg, MP4/M4A, Matroska/WebM)")


def probe_audio(path: Path, tools: Tools, limits: MediaLimits | None = None) -> AudioSource:
    """Check ``path`` is one audio stream we decode, within ``limits``, and describe it.

    Other streams (a video, cover art) are allowed and ignored. Raises
    :class:`UnsupportedMedia`, :class:`CorruptMedia` or :class:`LimitExceeded`.
    """
    limits = limits or MediaLimits()
    size = path.stat().st_size
    if size > limits.max_file_bytes:
        raise LimitExceeded(f"audio file is {size} bytes; the limit is {limits.max_file_bytes}")
    demuxer = sniff_audio(path)
    report = ffprobe_json(path, demuxer, tools, ["-show_format", "-show_streams"])
    streams = [s for s in report.get("streams", []) if s.get("codec_type") == "audio"]
    if len(streams) != 1:
        raise UnsupportedMedia(f"expected exactly one audio stream, found {len(streams)}")
    stream = streams[0]
    codec = str(stream.get("codec_name", "unknown"))
    if codec not in AUDIO_CODECS and not codec.startswith("pcm_"):
        raise UnsupportedMedia(f"audio codec {codec!r} is not accepted")
    channels, rate = int(stream.get("channels") or 0), int(stream.get("sample_rate") or 0)
    if channels <= 0 or rate <= 0:
        raise CorruptMedia("the audio stream has no channels or no sample rate")
    duration = stream_duration(stream, report.get("format", {}))
    if demuxer in ESTIMATED_DURATION and duration <= limits.max_duration:  # refuse on the estimate unread
        duration = _demuxed_duration(path, demuxer, tools)
    if duration > limits.max_duration:
        raise LimitExceeded(f"duration is {duration:.1f} s; the limit is {limits.max_duration:g} s")
    return AudioSource(path, demuxer, codec, duration, channels, rate)


def _demuxed_duration(path: Path, demuxer: str, tools: Tools) -> float:
    """Seconds of audio in ``path``, from reading all its packets (nothing is decoded)."""
    args = [tools.ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-nostats", "-progress", "pipe:1",
            *input_args(path, demuxer), "-map", "0:a:0", "-c", "copy", "-f", "null", "-"]  # fmt: skip
    status, out, err = run_captured(args, name="ffmpeg (duration)", timeout=tools.probe_timeout)
    if status != 0:
        raise CorruptMedia(f"the audio cannot be read through: {err or f'exit status {status}'}")
    pairs = (line.partition("=") for line in out.decode("ascii", "replace").splitlines())
    times = [int(value) for key, _, value in pairs if key == "out_time_us" and value.isdigit()]
    if not times or times[-1] <= 0:
        raise CorruptMedia("the audio has no duration")
    return times[-1] / 1e6


# --- cover image ----------------------------------------------------------------------------------


def sniff_image(head: bytes) -> str:
    """The ffmpeg demuxer for an image starting with ``head``: PNG, JPEG or WebP, else a refusal."""
    if not head:
        raise CorruptMedia("the cover image is empty")
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png_pipe"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg_pipe"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp_pipe"
    _refuse_text(head, "an image")
    raise UnsupportedMedia("the cover is not an image format we accept (PNG, JPEG, WebP)")


def declared_size(path: Path, demuxer: str) -> tuple[int, int]:
    """``(width, height)`` as the image's header declares it; nothing is decoded."""
    try:
        return _declared_size(path, demuxer)
    except struct.error:  # the header ends early
        raise CorruptMedia("the cover image's header is cut short") from None


def _declared_size(path: Path, demuxer: str) -> tuple[int, int]:
    with path.open("rb") as stream:
        if demuxer == "jpeg_pipe":
            return _jpeg_size(stream)
        head = stream.read(32)
    if demuxer == "png_pipe" and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        return int(width), int(height)
    if demuxer == "webp_pipe" and len(head) >= 30:
        return _webp_size(head)
    raise CorruptMedia("the cover image has no readable header")


def _jpeg_size(stream: IO[bytes]) -> tuple[int, int]:
    """Walk the JPEG marker segments up to the first frame header (SOFn) and read its size."""
    stream.seek(2)
    for _ in range(256):
        marker = stream.read(2)
        while len(marker) == 2 and marker[1] == 0xFF:  # fill bytes before a marker
            marker = marker[1:] + stream.read(1)
        segment = stream.read(2)
        if len(marker) < 2 or marker[0] != 0xFF or len(segment) < 2 or marker[1] == 0xDA:
            break
        length = struct.unpack(">H", segment)[0]
        if length < 2:
            break
        if 0xC0 <= marker[1] <= 0xCF and marker[1] not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">xHH", stream.read(5))
            return int(width), int(height)
        stream.seek(length - 2, 1)
    raise CorruptMedia("the cover JPEG has no frame header")


def _webp_size(head: bytes) -> tuple[int, int]:
    chunk, data = head[12:16], head[20:30]
    if chunk == b"VP8 " and data[3:6] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[6:10])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and data[0] == 0x2F:
        bits = int.from_bytes(data[1:5], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        return int.from_bytes(data[4:7], "little") + 1, int.from_bytes(data[7:10], "little") + 1
    raise CorruptMedia("the cover WebP has no readable header")


def probe_cover(path: Path, tools: Tools, limits: ImageLimits | None = None) -> Cover:
    """Check the cover image at ``path`` against ``limits``, then decode its first frame once.

    The size is checked from the header first (a decompression bomb is refused
    unopened); a file that does not decode is :class:`CorruptMedia`.
    """
    limits = limits or ImageLimits()
    size = path.stat().st_size
    if size > limits.max_file_bytes:
        raise LimitExceeded(f"cover image is {size} bytes; the limit is {limits.max_file_bytes}")
    with path.open("rb") as stream:
        demuxer = sniff_image(stream.read(16))
    _check_image_size(*declared_size(path, demuxer), limits)
    report = ffprobe_json(path, demuxer, tools, ["-read_intervals", "%+#1", "-show_entries",
                                             "stream=codec_name:frame=width,height"])  # fmt: skip
    frames = report.get("frames", [])
    if not frames:
        raise CorruptMedia("the cover image does not decode")
    width, height = int(frames[0].get("width") or 0), int(frames[0].get("height") or 0)
    _check_image_size(width, height, limits)
    streams: list[dict[str, Any]] = report.get("streams", [])
    codec = str(streams[0].get("codec_name", "unknown")) if streams else "unknown"
    return Cover(path, demuxer, codec, width, height)


def _check_image_size(width: int, height: int, limits: ImageLimits) -> None:
    if width <= 0 or height <= 0:
        raise CorruptMedia(f"the cover image declares a {width}x{height} size")
    if max(width, height) > limits.max_side or width * height > limits.max_pixels:
        raise LimitExceeded(
            f"cover image is {width}x{height}; the limit is {limits.max_side} px a side, "
            f"{limits.max_pixels} pixels in all"
        )


def _refuse_text(head: bytes, wanted: str) -> None:
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    for magic, what in REFUSED_TEXT.items():
        if stripped.startswith(magic):
            raise UnsupportedMedia(f"the file is {what}, not {wanted}")


# --- the render -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Box:
    """A rectangle on the canvas, in pixels from the top left."""

    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True)
class Layout:
    """Where things go on a ``width`` x ``height`` canvas: the fitted cover and the waveform strip."""

    width: int
    height: int
    cover: Box
    waves: Box

    @classmethod
    def of(cls, width: int, height: int, cover_width: int, cover_height: int) -> Layout:
        """The waveform strip (a fifth of the height) near the bottom, the cover fitted above it.

        The cover keeps its aspect ratio inside 90 % of the width and the space
        above the strip, centred there; it is scaled up when small.
        """
        strip = _even(height * 0.2)
        waves = Box(0, height - _even(height * 0.05) - strip, width, strip)
        top, gap = _even(height * 0.06), _even(height * 0.04)
        room_w, room_h = width * 0.9, max(2, waves.y - gap - top)
        scale = min(room_w / cover_width, room_h / cover_height)
        fitted_w, fitted_h = _even(cover_width * scale), _even(cover_height * scale)
        cover = Box((width - fitted_w) // 2, top + (room_h - fitted_h) // 2, fitted_w, fitted_h)
        return cls(width, height, cover, waves)


def _even(value: float) -> int:
    return max(2, 2 * round(value / 2))


def wave_sample_rate(sample_rate: int, width: int, fps: int) -> int:
    """The rate to resample the audio to so that ``showwaves`` gives exactly ``fps`` frames/s.

    ``showwaves`` draws ``n`` samples per column, ``width`` columns a frame, so
    it runs at ``rate / (n * width)``; ``n`` is the whole number nearest the
    source's own rate, at least 1.
    """
    per_column = max(1, round(sample_rate / (width * fps)))
    return per_column * width * fps


def filter_graph(layout: Layout, audio: AudioSource, *, waves: Waves, fps: int) -> str:
    """The ``-filter_complex`` graph: input 0 the cover, input 1 the audio, output ``[video]``.

    The still (background + cover) is composed once from the first decoded
    image and repeated by ``loop``; ``showwaves`` is overlaid on it, ending the
    video with the audio (``shortest``). ``overlay`` ends at the waveform's
    last frame without showing it, so the waveform gets one frame of silence
    more: the video has ``ceil(audio seconds * fps)`` frames.
    """
    w, h, c, s = layout.width, layout.height, layout.cover, layout.waves
    small_w, small_h = max(2, w // 24), max(2, h // 24)
    # The cover's drop shadow: a dark box drawn on the small background before its blur.
    sx, sy = c.x * small_w // w, (c.y + h // 60) * small_h // h
    sw, sh = max(1, c.width * small_w // w), max(1, c.height * small_h // h)
    to_video = "scale=out_color_matrix=bt709:out_range=tv"
    colour = "0x" + waves.color.removeprefix("#")
    rate = wave_sample_rate(audio.sample_rate, w, fps)
    return ";".join([
        "[0:v]trim=end_frame=1,format=rgba,split=2[back][front]",
        f"[back]format=rgb24,scale={small_w}:{small_h}:force_original_aspect_ratio=increase,"
        f"crop={small_w}:{small_h},colorchannelmixer=rr=0.4:gg=0.4:bb=0.4,"
        f"drawbox=x={sx}:y={sy}:w={sw}:h={sh}:color=black@0.8:t=fill,"
        f"gblur=sigma=1.5,scale={w}:{h}:flags=bicubic[blurred]",
        f"[front]scale={c.width}:{c.height}:flags=lanczos[fitted]",
        f"[blurred][fitted]overlay={c.x}:{c.y}:format=rgb,{to_video},format=yuv420p,"
        f"loop=loop=-1:size=1:start=0,settb=1/{fps},setpts=N[still]",
        f"[1:a:0]aformat=channel_layouts=mono,aresample={rate},apad=pad_len={rate // fps},"
        f"showwaves=s={w}x{s.height}:mode={waves.mode}:rate={fps}:colors={colour}:scale=sqrt:draw=full,"
        f"{to_video},format=yuva420p[waves]",
        f"[still][waves]overlay={s.x}:{s.y}:shortest=1:format=yuv420,fps={fps},format=yuv420p[video]",
    ])  # fmt: skip


def visualize_command(
    audio: AudioSource,
    cover: Cover,
    target: Path,
    *,
    layout: Layout,
    waves: Waves,
    fps: int,
    encoder: Encoder,
    quality: int,
    tools: Tools,
) -> list[str]:
    """ffmpeg arguments rendering ``audio`` over ``cover`` into ``partial_path(target)`` (MP4).

    The audio is copied when MP4 takes its codec, else AAC 192 kb/s; the video
    is ``fps`` frames/s, yuv420p, BT.709 tagged, as long as the audio.
    """
    args = [tools.ffmpeg, "-hide_banner", "-nostdin", "-v", "error"]
    args += [*input_args(cover.path, cover.demuxer), *input_args(audio.path, audio.demuxer)]
    args += ["-filter_complex", filter_graph(layout, audio, waves=waves, fps=fps)]
    args += ["-map", "[video]", "-fps_mode", "passthrough", *encoder.args(quality), "-pix_fmt", "yuv420p"]
    args += encoder_tags(OUTPUT_COLOR)
    copy = audio.codec in MP4_AUDIO_COPY
    args += ["-map", "1:a:0", *(["-c:a", "copy"] if copy else ["-c:a", "aac", "-b:a", "192k"])]
    args += ["-sn", "-dn", "-map_metadata", "-1", "-map_chapters", "-1", "-movflags", "+faststart"]
    return [*args, "-f", "mp4", f"file:{partial_path(target)}"]


def check_render(path: Path, tools: Tools, fps: int) -> float:
    """Check a rendered file: video and audio present, plausible size, the video as long as the audio.

    Returns the audio's duration in seconds (the output's own track: exact even
    where the source's duration was an estimate). The video may differ from it
    by one frame plus 0.1 s: a shorter one means the audio stopped decoding
    (:class:`DecodeFailed`), anything else is :class:`EncodeFailed`.
    """
    size = path.stat().st_size
    if size < MIN_OUTPUT_BYTES:
        raise EncodeFailed(f"the render is only {size} bytes")
    try:
        report = ffprobe_json(path, "mov", tools, ["-show_entries", "stream=codec_type,duration"])
    except CorruptMedia as error:
        raise EncodeFailed(f"the render does not read back: {error}") from error
    durations = {s.get("codec_type"): float(s.get("duration") or 0) for s in report.get("streams", [])}
    video, audio = durations.get("video", 0.0), durations.get("audio", 0.0)
    if video <= 0 or audio <= 0:
        raise EncodeFailed(f"the render lacks a video or an audio track: {sorted(map(str, durations))}")
    if math.isclose(video, audio, abs_tol=1 / fps + 0.1):
        return audio
    if video < audio:
        raise DecodeFailed(f"the waveform stops at {video:.3f} s of {audio:.3f} s: the audio is damaged")
    raise EncodeFailed(f"the video lasts {video:.3f} s but the audio {audio:.3f} s")
