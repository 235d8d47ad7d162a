"""Visualizer inputs: audio and cover sniffing/probing with their refusals, the layout, the ffmpeg command.

Audio is a tone whose amplitude swells and falls for 1.5 s, then 1 s of
silence (2.5 s in all); covers are ``testsrc2`` stills. Files carry no
extension: only their bytes say what they are. Renders are in
``tests/tasks/test_visualize.py``.
"""

from __future__ import annotations

import struct
import subprocess
import zlib
from pathlib import Path

import pytest

import media.visualize
from media.errors import MediaError
from media.probe import MediaLimits
from media.tools import Tools
from media.visualize import (
    WAVE_MODES,
    AudioSource,
    Cover,
    ImageLimits,
    Layout,
    Waves,
    declared_size,
    probe_audio,
    probe_cover,
    visualize_command,
    wave_sample_rate,
)
from media.writer import choose_encoder
from tests.clips import FFMPEG, TEXT_FILES
from tests.conftest import Clips

TOOLS = Tools(probe_timeout=20)
NO_FFPROBE = Tools(ffprobe="/nonexistent/ffprobe")
"""Refusals made from the first bytes, the header or the file size must not need ffprobe at all."""

SECONDS, TONE_UNTIL = 2.5, 1.5
TONE = f"if(lt(t\\,{TONE_UNTIL})\\,(0.15+0.8*abs(sin(2*PI*t)))*sin(2*PI*330*t)\\,0)"

# name → (ffmpeg output arguments, sample rate, expected demuxer, expected codec)
AUDIO: dict[str, tuple[list[str], int, str, str]] = {
    "mp3": (["-c:a", "libmp3lame", "-b:a", "128k", "-f", "mp3"], 44100, "mp3", "mp3"),
    "m4a": (["-c:a", "aac", "-b:a", "128k", "-f", "mp4"], 44100, "mov", "aac"),
    "adts": (["-c:a", "aac", "-f", "adts"], 48000, "aac", "aac"),
    "wav": (["-ac", "2", "-c:a", "pcm_s16le", "-f", "wav"], 48000, "wav", "pcm_s16le"),
    "flac": (["-c:a", "flac", "-f", "flac"], 44100, "flac", "flac"),
    "opus": (["-c:a", "libopus", "-f", "ogg"], 48000, "ogg", "opus"),
    "webm": (["-c:a", "libopus", "-f", "webm"], 48000, "matroska", "opus"),
}


def make_audio(kind: str, directory: Path, seconds: float = SECONDS) -> Path:
    """The swelling-tone-then-silence audio as ``kind`` (a key of :data:`AUDIO`), no extension."""
    args, rate, _, _ = AUDIO[kind]
    path = directory / f"audio-{kind}-{seconds:g}"
    source = f"aevalsrc=exprs='{TONE}':s={rate}:d={seconds}"
    subprocess.run([*FFMPEG, "-f", "lavfi", "-i", source, *args, str(path)], check=True)
    return path


def make_cover(kind: str, directory: Path, size: str = "320x240") -> Path:
    """A ``testsrc2`` still as ``png``, ``jpeg``, ``webp`` (lossy) or ``webp-lossless``."""
    codec = {"png": ["-c:v", "png"], "jpeg": ["-c:v", "mjpeg", "-q:v", "3"], "webp": ["-c:v", "libwebp"],
             "webp-lossless": ["-c:v", "libwebp", "-lossless", "1"]}[kind]  # fmt: skip
    path = directory / f"cover-{kind}-{size}"
    source = f"testsrc2=s={size}:d=1"
    subprocess.run(
        [*FFMPEG, "-f", "lavfi", "-i", source, "-frames:v", "1", *codec, "-f", "image2pipe", str(path)],
        check=True,
    )
    return path


def png_header(width: int, height: int) -> bytes:
    """A PNG signature and an IHDR chunk declaring ``width`` x ``height`` RGB, and no pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", 13)
        + b"IHDR"
        + ihdr
        + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    )


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("visualize")


def _code(error: pytest.ExceptionInfo[MediaError]) -> str:
    return error.value.code


# --- audio ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(AUDIO))
def test_audio_formats_are_sniffed_and_probed(media_dir: Path, kind: str) -> None:
    _, rate, demuxer, codec = AUDIO[kind]
    path = make_audio(kind, media_dir)
    audio = probe_audio(path, TOOLS)
    assert (audio.path, audio.demuxer, audio.codec, audio.sample_rate) == (path, demuxer, codec, rate)
    assert audio.channels == (2 if kind == "wav" else 1)
    assert audio.duration == pytest.approx(SECONDS, abs=0.05)  # mp3/ADTS: with the encoder's padding


def test_a_video_with_sound_is_accepted_for_its_audio(clips: Clips) -> None:
    audio = probe_audio(clips("audio"), TOOLS)
    assert (audio.demuxer, audio.codec) == ("mov", "aac")
    assert audio.duration == pytest.approx(1.0, abs=0.03)


@pytest.mark.parametrize("name", ["hls", "ffconcat"])
def test_playlists_and_scripts_are_refused_unopened(clips: Clips, name: str) -> None:
    with pytest.raises(MediaError) as caught:
        probe_audio(clips(name), NO_FFPROBE)
    assert _code(caught) == "UNSUPPORTED_MEDIA"


@pytest.mark.parametrize(
    "content", [b"hello, this is text\n", b"[playlist]\nFile1=http://example.com/a.mp3\n", b"\0" * 64]
)
def test_unknown_bytes_are_refused_unopened(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "audio"
    path.write_bytes(content)
    with pytest.raises(MediaError) as caught:
        probe_audio(path, NO_FFPROBE)
    assert _code(caught) == "UNSUPPORTED_MEDIA"


def test_a_video_without_sound_is_refused(clips: Clips) -> None:
    with pytest.raises(MediaError, match="exactly one audio stream, found 0") as caught:
        probe_audio(clips("silent"), TOOLS)
    assert _code(caught) == "UNSUPPORTED_MEDIA"


def test_two_audio_streams_are_refused(media_dir: Path, tmp_path: Path) -> None:
    one = make_audio("m4a", media_dir, 1)
    two = tmp_path / "two"
    subprocess.run([*FFMPEG, "-i", str(one), "-i", str(one), "-map", "0:a", "-map", "1:a", "-c", "copy",
                    "-f", "mp4", str(two)], check=True)  # fmt: skip
    with pytest.raises(MediaError, match="found 2") as caught:
        probe_audio(two, TOOLS)
    assert _code(caught) == "UNSUPPORTED_MEDIA"


def test_empty_and_truncated_audio_are_corrupt(media_dir: Path, tmp_path: Path) -> None:
    empty, cut = tmp_path / "empty", tmp_path / "cut"
    empty.write_bytes(b"")
    whole = make_audio("m4a", media_dir).read_bytes()
    cut.write_bytes(whole[: len(whole) // 2])  # the moov box is at the end: cut off
    with pytest.raises(MediaError) as caught:
        probe_audio(empty, NO_FFPROBE)
    assert _code(caught) == "MEDIA_CORRUPT"
    with pytest.raises(MediaError) as caught:
        probe_audio(cut, TOOLS)
    assert _code(caught) == "MEDIA_CORRUPT"


def test_audio_limits(media_dir: Path) -> None:
    path = make_audio("flac", media_dir)
    with pytest.raises(MediaError, match="duration") as caught:
        probe_audio(path, TOOLS, MediaLimits(max_duration=2.0))
    assert _code(caught) == "MEDIA_LIMIT_EXCEEDED"
    with pytest.raises(MediaError, match="bytes") as caught:
        probe_audio(path, NO_FFPROBE, MediaLimits(max_file_bytes=1000))
    assert _code(caught) == "MEDIA_LIMIT_EXCEEDED"


def test_an_mp3_over_the_limit_is_refused_on_its_estimate_without_reading_it(
    media_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ffprobe's duration of an MP3 is a bit-rate guess; past the limit it is refused before a full read."""
    read: list[Path] = []

    def demuxed(path: Path, *rest: object) -> float:
        read.append(path)
        return 1.0

    monkeypatch.setattr(media.visualize, "_demuxed_duration", demuxed)
    with pytest.raises(MediaError, match="duration") as caught:
        probe_audio(make_audio("mp3", media_dir), TOOLS, MediaLimits(max_duration=1.0))
    assert _code(caught) == "MEDIA_LIMIT_EXCEEDED" and read == []


# --- cover ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "demuxer", "codec"),
    [("png", "png_pipe", "png"), ("jpeg", "jpeg_pipe", "mjpeg"), ("webp", "webp_pipe", "webp"),
     ("webp-lossless", "webp_pipe", "webp")],
)  # fmt: skip
def test_cover_formats_are_sniffed_and_probed(media_dir: Path, kind: str, demuxer: str, codec: str) -> None:
    path = make_cover(kind, media_dir, "322x242")
    assert declared_size(path, demuxer) == (322, 242)
    assert probe_cover(path, TOOLS) == Cover(path, demuxer, codec, 322, 242)


def test_a_jpeg_with_big_metadata_before_its_frame_header(media_dir: Path, tmp_path: Path) -> None:
    jpeg = make_cover("jpeg", media_dir).read_bytes()
    app = b"\xff\xe1" + struct.pack(">H", 60002) + b"\0" * 60000  # an APP1 (EXIF-like) segment
    path = tmp_path / "cover"
    path.write_bytes(jpeg[:2] + app * 3 + jpeg[2:])
    assert declared_size(path, "jpeg_pipe") == (320, 240)
    assert probe_cover(path, TOOLS).width == 320


@pytest.mark.parametrize("name", ["video", "text", "hls", "gif"])
def test_non_images_are_refused_unopened(clips: Clips, tmp_path: Path, name: str) -> None:
    path = tmp_path / "cover"
    if name == "video":
        path.write_bytes(clips("audio").read_bytes())
    elif name == "gif":
        path.write_bytes(b"GIF89a" + b"\0" * 100)
    else:
        path.write_text(TEXT_FILES["hls"] if name == "hls" else "just some text\n")
    with pytest.raises(MediaError) as caught:
        probe_cover(path, NO_FFPROBE)
    assert _code(caught) == "UNSUPPORTED_MEDIA"


def _jpeg_declaring(jpeg: bytes, width: int, height: int) -> bytes:
    at = jpeg.index(b"\xff\xc0") + 5  # SOF0: marker, length, precision, then height and width
    return jpeg[:at] + struct.pack(">HH", height, width) + jpeg[at + 4 :]


def _webp_declaring(width: int, height: int) -> bytes:
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\0" * 4 + (width - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 22) + b"WEBP" + vp8x + (height - 1).to_bytes(3, "little")


@pytest.mark.parametrize("name", ["png side", "png pixels", "jpeg", "webp"])
def test_huge_declared_images_are_refused_unopened(media_dir: Path, tmp_path: Path, name: str) -> None:
    content = {
        "png side": lambda: png_header(20000, 100),
        "png pixels": lambda: png_header(12000, 12000),
        "jpeg": lambda: _jpeg_declaring(make_cover("jpeg", media_dir).read_bytes(), 16385, 64),
        "webp": lambda: _webp_declaring(16000, 16000),
    }[name]()
    path = tmp_path / "cover"
    path.write_bytes(content)
    with pytest.raises(MediaError) as caught:
        probe_cover(path, NO_FFPROBE)
    assert _code(caught) == "MEDIA_LIMIT_EXCEEDED"


def test_image_limits_apply_to_real_images_too(media_dir: Path) -> None:
    path = make_cover("png", media_dir)
    with pytest.raises(MediaError) as caught:
        probe_cover(path, TOOLS, ImageLimits(max_side=300))
    assert _code(caught) == "MEDIA_LIMIT_EXCEEDED"
    with pytest.raises(MediaError) as caught:
        probe_cover(path, NO_FFPROBE, ImageLimits(max_file_bytes=100))
    assert _code(caught) == "MEDIA_LIMIT_EXCEEDED"


@pytest.mark.parametrize(
    "damage",
    [
        "empty",
        "zero size",
        "header only",
        "truncated png",
        "no jpeg frame",
        "png cut in IHDR",
        "jpeg cut in SOF",
    ],
)
def test_broken_images_are_corrupt(media_dir: Path, tmp_path: Path, damage: str) -> None:
    png = make_cover("png", media_dir).read_bytes()
    content = {
        "empty": b"",
        "zero size": png_header(0, 100),
        "header only": png_header(320, 240),
        "truncated png": png[: len(png) // 2],
        "no jpeg frame": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xd9",
        "png cut in IHDR": png[:20],
        "jpeg cut in SOF": b"\xff\xd8\xff\xc0\x00\x11\x08\x00",
    }[damage]
    path = tmp_path / "cover"
    path.write_bytes(content)
    with pytest.raises(MediaError) as caught:
        probe_cover(path, TOOLS)
    assert _code(caught) == "MEDIA_CORRUPT"


# --- layout and command ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("canvas", "cover"),
    [((1920, 1080), (3000, 3000)), ((1920, 1080), (300, 200)), ((1080, 1920), (1600, 900)),
     ((320, 180), (5000, 10)), ((16, 16), (1, 1)), ((7680, 4320), (640, 480))],
)  # fmt: skip
def test_layout_fits_the_cover_above_the_waveform(canvas: tuple[int, int], cover: tuple[int, int]) -> None:
    width, height = canvas
    layout = Layout.of(width, height, *cover)
    c, w = layout.cover, layout.waves
    assert (layout.width, layout.height) == canvas
    assert (w.x, w.width) == (0, width) and w.y > 0 and w.y + w.height < height
    assert w.height % 2 == 0 and w.y % 2 == 0  # whole chroma rows under yuv420p
    assert c.x >= 0 and c.x + c.width <= width and c.y >= 0 and c.y + c.height <= w.y
    assert c.width % 2 == 0 and c.height % 2 == 0
    assert c.x + c.width / 2 == pytest.approx(width / 2, abs=1)  # centred
    if min(c.width, c.height) > 20:  # aspect ratio kept (up to rounding to even sizes)
        assert c.width / c.height == pytest.approx(cover[0] / cover[1], rel=0.05)


@pytest.mark.parametrize(("rate", "width", "fps"), [(44100, 320, 30), (48000, 1920, 30), (8000, 7680, 60)])
def test_waveform_sample_rate_gives_whole_frames(rate: int, width: int, fps: int) -> None:
    resampled = wave_sample_rate(rate, width, fps)
    assert resampled % (width * fps) == 0 and resampled >= width * fps


def _sources(directory: Path, codec: str) -> tuple[AudioSource, Cover]:
    audio = AudioSource(directory / "audio", "mp3", codec, 2.5, 2, 44100)
    return audio, Cover(directory / "cover", "png_pipe", "png", 640, 480)


@pytest.mark.parametrize(("codec", "copied"), [("aac", True), ("mp3", True), ("opus", True), ("flac", False),
                                               ("pcm_s16le", False), ("vorbis", False)])  # fmt: skip
def test_command_opens_inputs_safely_and_copies_mp4_audio(tmp_path: Path, codec: str, copied: bool) -> None:
    audio, cover = _sources(tmp_path, codec)
    target = tmp_path / "output.mp4"
    encoder = choose_encoder(TOOLS, 320, 180)
    command = visualize_command(audio, cover, target, layout=Layout.of(320, 180, 640, 480), waves=Waves(),
                                fps=30, encoder=encoder, quality=23, tools=TOOLS)  # fmt: skip
    inputs = [i for i, arg in enumerate(command) if arg == "-i"]
    assert [command[i + 1] for i in inputs] == [f"file:{cover.path}", f"file:{audio.path}"]
    assert [command[i - 3 : i] for i in inputs] == [["file", "-f", "png_pipe"], ["file", "-f", "mp3"]]
    assert "-loop" not in command  # the cover is decoded once
    audio_args = ["copy"] if copied else ["aac", "-b:a", "192k"]
    assert command[command.index("-c:a") + 1 :][: len(audio_args)] == audio_args
    assert (
        command[command.index("-c:v") + 1] == "libx264"
        and command[command.index("-pix_fmt") + 1] == "yuv420p"
    )
    assert command[command.index("-colorspace") + 1] == "bt709" and "+faststart" in command
    assert command[-3:] == ["-f", "mp4", f"file:{tmp_path / 'output.partial.mp4'}"]


def test_graph_draws_the_asked_waveform(tmp_path: Path) -> None:
    audio, cover = _sources(tmp_path, "aac")
    layout = Layout.of(640, 360, 640, 480)
    encoder = choose_encoder(TOOLS, 640, 360)
    command = visualize_command(audio, cover, tmp_path / "out.mp4", layout=layout,
                                waves=Waves("#FF8800", "p2p"), fps=25, encoder=encoder, quality=23,
                                tools=TOOLS)  # fmt: skip
    graph = command[command.index("-filter_complex") + 1]
    assert f"showwaves=s=640x{layout.waves.height}:mode=p2p:rate=25:colors=0xFF8800:" in graph
    assert "loop=loop=-1:size=1" in graph and "trim=end_frame=1" in graph and "shortest=1" in graph
    assert graph.endswith("fps=25,format=yuv420p[video]") and command[command.index("-map") + 1] == "[video]"


@pytest.mark.parametrize(("size", "encoder"), [((1920, 1080), "h264_nvenc"), ((6000, 3000), "hevc_nvenc")])
def test_nvenc_when_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: tuple[int, int], encoder: str
) -> None:
    monkeypatch.setattr(Tools, "encoder_works", lambda self, name: name.endswith("_nvenc"))
    audio, cover = _sources(tmp_path, "aac")
    chosen = choose_encoder(TOOLS, *size, gpu=True)
    command = visualize_command(audio, cover, tmp_path / "out.mp4", layout=Layout.of(*size, 640, 480),
                                waves=Waves(), fps=30, encoder=chosen, quality=20, tools=TOOLS)  # fmt: skip
    assert chosen.hardware and command[command.index("-c:v") + 1] == encoder
    assert command[command.index("-cq") + 1] == "20" and "-crf" not in command


def test_wave_modes_are_those_of_showwaves() -> None:
    out = subprocess.run(["ffmpeg", "-hide_banner", "-h", "filter=showwaves"], capture_output=True, text=True)
    for mode in WAVE_MODES:
        assert f"\n     {mode} " in out.stdout
