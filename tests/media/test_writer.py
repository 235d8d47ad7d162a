"""The encode pipe: round trips, audio, padding, colour tags, clean failure; the encoder choice."""

from __future__ import annotations

import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from media.errors import FrameCountMismatch, UnsupportedMedia
from media.probe import Color, MediaInfo, probe
from media.reader import decode_all
from media.tools import Tools
from media.writer import ENCODERS, MP4_AUDIO_COPY, Encoder, FrameWriter, Output, choose_encoder
from tests.clips import ffprobe, stream
from tests.conftest import Clips
from tests.media import bar_means, bt709_clip, flac_clip, odd_clip

TOOLS = Tools(stall_timeout=20, probe_timeout=20)
X264 = ENCODERS["h264", False]


def _source(path: Path) -> tuple[MediaInfo, np.ndarray]:
    info = probe(path, TOOLS)
    return info, decode_all(info, TOOLS)


def _writer(
    path: Path,
    size: tuple[int, int] = (64, 36),
    fps: Fraction = Fraction(10),
    *,
    color: Color | None = None,
    audio_from: MediaInfo | None = None,
) -> FrameWriter:
    """An x264 writer with the suite's tools; ``size`` is width, height."""
    width, height = size
    return FrameWriter(
        path,
        width=width,
        height=height,
        fps=fps,
        encoder=X264,
        tools=TOOLS,
        color=color,
        audio_from=audio_from,
    )


def _write(
    path: Path,
    frames: np.ndarray,
    fps: Fraction,
    *,
    color: Color | None = None,
    audio_from: MediaInfo | None = None,
) -> Output:
    """Encode ``frames`` in one write and finish."""
    size = frames.shape[2], frames.shape[1]
    with _writer(path, size, fps, color=color, audio_from=audio_from) as writer:
        writer.write(frames)
        return writer.finish()


def _leftovers(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir() if ".partial" in path.name)


def _wait_for(path: Path, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_round_trip_keeps_every_frame(clips: Clips, tmp_path: Path) -> None:
    info, frames = _source(clips("silent"))
    target = tmp_path / "out.mp4"
    output = _write(target, frames, info.fps)
    assert output == Output(target, frames=10, width=64, height=36, encoder="libx264", audio=False)
    assert target.is_file()
    assert _leftovers(tmp_path) == []
    back = decode_all(probe(target, TOOLS), TOOLS)
    assert back.shape == frames.shape
    error = np.abs(back.astype(np.int16) - frames.astype(np.int16)).mean()
    assert error < 4, f"mean error {error:.1f} levels: frames out of order or mangled"
    report = stream(ffprobe(target), "video")
    assert report is not None
    assert (report["codec_name"], report["pix_fmt"], report["avg_frame_rate"]) == ("h264", "yuv420p", "10/1")


def test_frames_written_one_at_a_time_and_in_batches_are_counted(clips: Clips, tmp_path: Path) -> None:
    _, frames = _source(clips("silent"))
    target = tmp_path / "out.mp4"
    with _writer(target) as writer:
        writer.write(frames[0])  # (H, W, 3)
        writer.write(frames[1:4])
        writer.write(frames[4:])
        assert writer.frames_written == 10
        assert writer.finish().frames == 10


def test_stale_partial_file_is_replaced(clips: Clips, tmp_path: Path) -> None:
    info, frames = _source(clips("silent"))
    (tmp_path / "out.partial.mp4").write_bytes(b"left by a killed worker")
    assert _write(tmp_path / "out.mp4", frames, info.fps).frames == 10
    assert _leftovers(tmp_path) == []


def test_aac_audio_is_copied(clips: Clips, tmp_path: Path) -> None:
    info, frames = _source(clips("audio"))
    target = tmp_path / "out.mp4"
    assert _write(target, frames, info.fps, audio_from=info).audio
    audio = stream(ffprobe(target), "audio")
    assert audio is not None
    assert (audio["codec_name"], audio["sample_rate"], audio["channels"]) == ("aac", "48000", 1)


def test_opus_from_webm_is_copied_into_mp4(clips: Clips, tmp_path: Path) -> None:
    info, frames = _source(clips("webm"))
    assert info.audio is not None and info.audio.codec in MP4_AUDIO_COPY
    target = tmp_path / "out.mp4"
    output = _write(target, frames, info.fps, audio_from=info)
    assert output.audio and output.frames == 10
    audio = stream(ffprobe(target), "audio")
    assert audio is not None and audio["codec_name"] == "opus"


def test_audio_mp4_does_not_take_is_converted_to_aac(clips: Clips, tmp_path: Path) -> None:
    info, frames = _source(flac_clip(clips.directory))
    assert info.audio is not None and info.audio.codec == "flac" not in MP4_AUDIO_COPY
    target = tmp_path / "out.mp4"
    assert _write(target, frames, info.fps, audio_from=info).audio
    audio = stream(ffprobe(target), "audio")
    assert audio is not None and audio["codec_name"] == "aac"


def test_a_silent_audio_source_adds_no_audio(clips: Clips, tmp_path: Path) -> None:
    info, frames = _source(clips("silent"))
    assert not _write(tmp_path / "a.mp4", frames, info.fps, audio_from=info).audio
    assert stream(ffprobe(tmp_path / "a.mp4"), "audio") is None


def test_odd_sized_frames_are_padded_to_even_not_cropped(tmp_path: Path) -> None:
    """Grey 33x19 frames with a white last column and row: both must survive, black padding beyond."""
    frames = np.full((10, 19, 33, 3), 128, np.uint8)
    frames[:, :, -1] = 255
    frames[:, -1, :] = 255
    target = tmp_path / "out.mp4"
    output = _write(target, frames, Fraction(10))
    assert (output.width, output.height, output.frames) == (34, 20, 10)
    back = decode_all(probe(target, TOOLS), TOOLS).astype(np.float64)
    assert back.shape == (10, 20, 34, 3)
    assert back[:, 2:16, 2:30].mean() == pytest.approx(128, abs=4)  # not scaled: same grey, no blur
    assert back[:, :17, 32].mean() > 220  # the last column, where it was
    assert back[:, 18, :31].mean() > 220  # the last row, where it was
    assert back[:, :, 33].mean() < 40  # then a black pad column
    assert back[:, 19, :].mean() < 40  # and a black pad row


def test_an_odd_sized_clip_round_trips(clips: Clips, tmp_path: Path) -> None:
    info, frames = _source(odd_clip(clips.directory))
    assert frames.shape == (10, 19, 33, 3)
    output = _write(tmp_path / "out.mp4", frames, info.fps)
    assert (output.width, output.height, output.frames) == (34, 20, 10)
    back = decode_all(probe(tmp_path / "out.mp4", TOOLS), TOOLS)
    # 4:4:4 to 4:2:0 costs some colour detail on this busy 33x19 pattern, not the picture
    assert np.abs(back[:, :19, :33].astype(np.int16) - frames).mean() < 12


def test_bt601_tags_are_carried_and_the_matrix_round_trip_is_consistent(clips: Clips, tmp_path: Path) -> None:
    info, frames = _source(clips("bt601"))
    target = tmp_path / "out.mp4"
    _write(target, frames, info.fps, color=info.color)
    video = stream(ffprobe(target), "video")
    assert video is not None
    tags = [video.get(key) for key in ("color_space", "color_primaries", "color_transfer", "color_range")]
    assert tags == ["smpte170m", "smpte170m", "smpte170m", "tv"]
    back_info, back = _source(target)
    assert back_info.color == info.color
    assert np.abs(bar_means(back) - bar_means(frames)).max() < 4
    assert np.abs(back.astype(np.float64).mean(axis=(0, 1, 2)) - frames.mean(axis=(0, 1, 2))).max() < 4


def test_bt709_frames_are_encoded_with_the_matrix_they_are_tagged_with(clips: Clips, tmp_path: Path) -> None:
    """BT.709 is not ffmpeg's default matrix: tagging without converting would shift the bars ~30 levels."""
    info, frames = _source(bt709_clip(clips.directory))
    assert info.color == Color(primaries="bt709", transfer="bt709", space="bt709", range="tv")
    target = tmp_path / "out.mp4"
    _write(target, frames, info.fps, color=info.color)
    back_info, back = _source(target)
    assert back_info.color == info.color
    assert np.abs(bar_means(back) - bar_means(frames)).max() < 4


def test_untagged_source_gives_an_untagged_output(clips: Clips, tmp_path: Path) -> None:
    info, frames = _source(clips("silent"))
    assert info.color == Color()
    _write(tmp_path / "out.mp4", frames, info.fps, color=info.color)
    assert probe(tmp_path / "out.mp4", TOOLS).color == Color()


def test_an_exception_inside_the_block_kills_the_encoder_and_removes_the_partial(
    clips: Clips, tmp_path: Path
) -> None:
    _, frames = _source(clips("silent"))
    target = tmp_path / "out.mp4"
    writer = _writer(target)
    with pytest.raises(KeyError), writer:
        writer.write(frames)
        assert _wait_for(writer.partial), "ffmpeg never opened its output"
        raise KeyError("inference failed")
    assert writer._child is not None and writer._child.proc.poll() is not None
    assert not target.exists()
    assert _leftovers(tmp_path) == []


def test_abort_is_idempotent_and_leaves_nothing(clips: Clips, tmp_path: Path) -> None:
    _, frames = _source(clips("silent"))
    with _writer(tmp_path / "out.mp4") as writer:
        writer.write(frames[:3])
        writer.abort()
        writer.abort()
        assert writer._child is not None and writer._child.proc.poll() is not None
    assert list(tmp_path.iterdir()) == []


def test_a_frame_count_mismatch_is_caught_before_the_rename(clips: Clips, tmp_path: Path) -> None:
    _, frames = _source(clips("silent"))
    target = tmp_path / "out.mp4"
    writer = _writer(target)
    with pytest.raises(FrameCountMismatch, match="wrote 11 frames but the file holds 10") as caught, writer:
        writer.write(frames)
        writer.frames_written += 1  # as if a frame had been lost on its way to ffmpeg
        writer.finish()
    assert caught.value.retryable
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "frames",
    [
        np.zeros((2, 36, 63, 3), np.uint8),
        np.zeros((2, 35, 64, 3), np.uint8),
        np.zeros((2, 36, 64, 4), np.uint8),
        np.zeros((2, 64, 36, 3), np.uint8),
        np.zeros((36, 64), np.uint8),
        np.zeros((2, 36, 64, 3), np.float32),
        np.zeros((2, 36, 64, 3), np.uint16),
        np.zeros((2, 5, 36, 64, 3), np.uint8),
    ],
    ids=["narrow", "short", "rgba", "transposed", "grey", "float32", "uint16", "5-d"],
)
def test_frames_that_do_not_fit_are_refused(tmp_path: Path, frames: np.ndarray) -> None:
    target = tmp_path / "out.mp4"
    writer = _writer(target)
    with pytest.raises(ValueError, match="do not fit a 64x36 writer"), writer:
        writer.write(frames)
    assert writer.frames_written == 0
    assert list(tmp_path.iterdir()) == []


def test_write_outside_the_context_is_an_error(tmp_path: Path) -> None:
    writer = FrameWriter(
        tmp_path / "out.mp4", width=64, height=36, fps=Fraction(10), encoder=X264, tools=TOOLS
    )
    with pytest.raises(RuntimeError, match="outside its context"):
        writer.write(np.zeros((36, 64, 3), np.uint8))


# choose_encoder and Encoder.args


@pytest.fixture
def nvenc_works(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Pretend NVENC encodes here; yields the encoders that were probed."""
    probed: list[str] = []

    def works(self: Tools, encoder: str) -> bool:
        probed.append(encoder)
        return True

    monkeypatch.setattr(Tools, "encoder_works", works)
    yield probed


@pytest.mark.parametrize(
    ("width", "height", "codec", "expected"),
    [
        (1920, 1080, None, "libx264"),
        (4096, 4096, None, "libx264"),
        (4097, 2160, None, "libx265"),
        (2160, 4097, None, "libx265"),
        (8192, 8192, None, "libx265"),
        (64, 36, "hevc", "libx265"),
        (64, 36, "h264", "libx264"),
    ],
)
def test_software_encoder_by_size_and_codec(
    width: int, height: int, codec: str | None, expected: str
) -> None:
    encoder = choose_encoder(TOOLS, width, height, codec=codec, gpu=False)
    assert encoder.name == expected
    assert not encoder.hardware
    assert encoder.codec == ("hevc" if expected == "libx265" else "h264")


@pytest.mark.parametrize(("width", "height"), [(8193, 100), (100, 8193)])
def test_output_over_8192_on_a_side_is_unsupported(width: int, height: int) -> None:
    with pytest.raises(UnsupportedMedia, match="8192") as caught:
        choose_encoder(TOOLS, width, height)
    assert caught.value.code == "UNSUPPORTED_MEDIA"


def test_unknown_codec_is_unsupported() -> None:
    with pytest.raises(UnsupportedMedia, match="av1"):
        choose_encoder(TOOLS, 64, 36, codec="av1")


@pytest.mark.parametrize(
    ("width", "height", "codec", "expected"),
    [(1920, 1080, None, "h264_nvenc"), (4097, 2160, None, "hevc_nvenc"), (64, 36, "hevc", "hevc_nvenc")],
)
def test_nvenc_when_it_works(
    nvenc_works: list[str], width: int, height: int, codec: str | None, expected: str
) -> None:
    encoder = choose_encoder(TOOLS, width, height, codec=codec, gpu=True)
    assert (encoder.name, encoder.hardware) == (expected, True)
    assert nvenc_works == [expected]
    args = encoder.args(23)
    assert args[args.index("-c:v") + 1] == expected
    assert args[args.index("-cq") + 1] == "23"
    assert "-crf" not in args


def test_nvenc_is_not_probed_without_gpu(nvenc_works: list[str]) -> None:
    assert choose_encoder(TOOLS, 1920, 1080, gpu=False).name == "libx264"
    assert nvenc_works == []


@pytest.mark.parametrize("ffmpeg", ["/nonexistent/ffmpeg", "false"])
def test_gpu_falls_back_to_software_when_nvenc_cannot_encode(ffmpeg: str) -> None:
    tools = Tools(ffmpeg=ffmpeg, probe_timeout=20)
    assert choose_encoder(tools, 1920, 1080, gpu=True).name == "libx264"
    assert choose_encoder(tools, 4097, 2160, gpu=True).name == "libx265"


@pytest.mark.skipif(Path("/dev/nvidia0").exists(), reason="a GPU is present: NVENC may really work")
def test_gpu_falls_back_to_software_on_a_machine_without_one() -> None:
    assert choose_encoder(TOOLS, 1920, 1080, gpu=True).name == "libx264"


@pytest.mark.parametrize(("quality", "crf"), [(-5, "0"), (0, "0"), (23, "23"), (51, "51"), (99, "51")])
def test_software_quality_is_clamped_to_the_crf_range(quality: int, crf: str) -> None:
    args = ENCODERS["h264", False].args(quality)
    assert args[args.index("-crf") + 1] == crf


@pytest.mark.parametrize(("quality", "cq"), [(-5, "1"), (0, "1"), (23, "23"), (99, "51")])
def test_nvenc_quality_is_clamped_and_never_zero(quality: int, cq: str) -> None:
    """CQ 0 asks NVENC to choose its own quality; the lowest we send is 1."""
    args = ENCODERS["h264", True].args(quality)
    assert args[args.index("-cq") + 1] == cq


@pytest.mark.parametrize("encoder", list(ENCODERS.values()), ids=lambda encoder: encoder.name)
def test_hevc_outputs_are_tagged_hvc1(encoder: Encoder) -> None:
    args = encoder.args(23)
    assert ("hvc1" in args) == (encoder.codec == "hevc")
