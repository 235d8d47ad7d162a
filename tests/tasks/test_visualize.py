"""VISUALIZE end to end on real ffmpeg: duration, size, a waveform that moves with the sound, refusals.

Renders are small (320x180) over the tone-then-silence audio of
``tests/media/test_visualize.py``; frames are decoded to RGB and checked pixel by pixel.
"""

from __future__ import annotations

import itertools
import math
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from media import MediaError
from media.visualize import Layout
from tasks import Cancelled, InvalidParameters, Progress, Resources, TaskContext, TaskResult
from tasks.base import Attachment
from tasks.visualize import COVER_INPUT, MAX_COVER_BYTES, OUTPUT_NAME, VisualizeParams, VisualizeTask
from tests.clips import FFMPEG, audio_md5, ffprobe, stream
from tests.conftest import Clips
from tests.media.test_visualize import SECONDS, TONE_UNTIL, make_audio, make_cover

WIDTH, HEIGHT, FPS = 320, 180, 30
COVER = (320, 240)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("visualize-inputs")


@pytest.fixture(scope="module")
def cover(inputs: Path) -> Path:
    return make_cover("png", inputs)


@pytest.fixture(scope="module")
def m4a(inputs: Path) -> Path:
    return make_audio("m4a", inputs)


def visualize(
    audio: Path, cover: Path, work_dir: Path, *, context: dict[str, Any] | None = None, **raw: Any
) -> tuple[TaskResult, list[Progress]]:
    task = VisualizeTask()
    params = task.parse({"coverS3Key": "covers/c.png", "resolution": f"{WIDTH}x{HEIGHT}", **raw})
    seen: list[Progress] = []
    options: dict[str, Any] = {"progress": seen.append, "inputs": {COVER_INPUT: cover}, **(context or {})}
    result = task.run(audio, params, TaskContext(work_dir, Resources(), **options))
    return result, seen


def frames(path: Path, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """All frames of ``path`` as ``(n, H, W, 3)`` uint8 RGB."""
    args = [*FFMPEG, "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    out = subprocess.run(args, check=True, capture_output=True).stdout
    return np.frombuffer(out, np.uint8).reshape(-1, height, width, 3)


def durations(path: Path) -> tuple[float, float]:
    """``(video, audio)`` stream durations in seconds."""
    report = ffprobe(path)
    video, audio = stream(report, "video"), stream(report, "audio")
    assert video is not None and audio is not None
    return float(video["duration"]), float(audio["duration"])


# --- renders --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "codec"),
    [("m4a", "aac"), ("mp3", "mp3"), ("adts", "aac"), ("wav", "aac"), ("flac", "aac"), ("opus", "opus")],
)
def test_output_lasts_as_long_as_the_audio(
    inputs: Path, cover: Path, work_dir: Path, kind: str, codec: str
) -> None:
    source = make_audio(kind, inputs)
    result, _ = visualize(source, cover, work_dir, fps=10)
    report = ffprobe(result.output, count=True)
    video, audio = stream(report, "video"), stream(report, "audio")
    assert video is not None and audio is not None
    assert (video["codec_name"], video["pix_fmt"], video["width"], video["height"]) == (
        "h264", "yuv420p", WIDTH, HEIGHT,
    )  # fmt: skip
    assert video["r_frame_rate"] == "10/1" and int(video["nb_read_frames"]) == result.frame_count
    assert audio["codec_name"] == codec
    padding = 0.05  # the encoder delay and padding of mp3/AAC, counted in some durations and not others
    assert abs(float(video["duration"]) - SECONDS) <= 1 / 10 + padding
    assert abs(float(audio["duration"]) - SECONDS) <= padding
    assert abs(result.duration - SECONDS) <= padding
    # every sample shown: 25 frames, one more where the decoder gives the encoder's padding too
    assert (result.frame_count == 25) if kind in ("wav", "flac") else (25 <= result.frame_count <= 26)
    assert result.audio and result.fps == 10 and (result.width, result.height) == (WIDTH, HEIGHT)
    assert (result.device, result.encoder, result.model) == ("cpu", "libx264", None)
    assert list(work_dir.iterdir()) == [result.output] and result.output.name == OUTPUT_NAME
    if kind in ("m4a", "mp3", "opus"):  # MP4 takes these as they are
        assert audio_md5(result.output) == audio_md5(source)


@pytest.fixture(scope="module")
def render(
    m4a: Path, cover: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[TaskResult, list[Progress]]:
    """The m4a rendered at 30 frames/s, and the progress it reported."""
    return visualize(m4a, cover, tmp_path_factory.mktemp("rendered"), fps=FPS)


@pytest.fixture(scope="module")
def rendered(render: tuple[TaskResult, list[Progress]]) -> np.ndarray:
    """The frames of ``render``."""
    return frames(render[0].output)


def _strip(frame: np.ndarray) -> np.ndarray:
    waves = Layout.of(WIDTH, HEIGHT, *COVER).waves
    return frame[waves.y : waves.y + waves.height].astype(np.int16)


def _at(seconds: float) -> int:
    return round(seconds * FPS)


def test_waveform_moves_while_there_is_sound(rendered: np.ndarray) -> None:
    silent = _strip(rendered[_at(2.2)])
    sounding = [_strip(rendered[_at(t)]) for t in (0.1, 0.4, 0.7, 1.0, 1.3)]
    for strip in sounding:  # something is drawn...
        assert np.abs(strip - silent).mean() > 5
    for a, b in itertools.pairwise(sounding):  # ...and it changes
        assert np.abs(a - b).mean() > 2


def test_waveform_is_still_over_silence(rendered: np.ndarray) -> None:
    quiet = [_strip(rendered[i]) for i in range(_at(TONE_UNTIL + 0.2), len(rendered))]
    assert max(float(np.abs(strip - quiet[0]).mean()) for strip in quiet) < 0.5


def test_everything_but_the_waveform_is_static(rendered: np.ndarray) -> None:
    waves = Layout.of(WIDTH, HEIGHT, *COVER).waves
    outside = np.concatenate([rendered[:, : waves.y - 2], rendered[:, waves.y + waves.height + 2 :]], axis=1)
    changes = np.abs(outside.astype(np.int16) - outside[0]).mean(axis=(1, 2, 3))
    assert changes.max() < 0.5, changes.max()


def test_cover_is_shown_sharp_above_the_waveform(cover: Path, rendered: np.ndarray) -> None:
    box = Layout.of(WIDTH, HEIGHT, *COVER).cover
    original = frames(cover, *COVER)[0]
    args = [*FFMPEG, "-i", str(cover), "-vf", f"scale={box.width}:{box.height}:flags=lanczos",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]  # fmt: skip
    fitted = np.frombuffer(subprocess.run(args, check=True, capture_output=True).stdout, np.uint8)
    shown = rendered[0, box.y : box.y + box.height, box.x : box.x + box.width].astype(np.int16)
    assert np.abs(shown - fitted.reshape(box.height, box.width, 3)).mean() < 12  # yuv420p + x264 losses
    assert original.std() > 40  # a busy picture, so the match above means something


def test_default_resolution_is_1080p(inputs: Path, cover: Path, work_dir: Path) -> None:
    task = VisualizeTask()
    params = task.parse({"coverS3Key": "c", "fps": 5})
    result = task.run(
        make_audio("flac", inputs, 1), params, TaskContext(work_dir, Resources(), inputs={COVER_INPUT: cover})
    )
    assert (result.width, result.height) == (1920, 1080)
    video, audio = durations(result.output)
    assert abs(video - 1) <= 0.2 + 0.05 and abs(audio - 1) <= 0.05


def test_colour_and_mode_are_honoured(m4a: Path, tmp_path: Path) -> None:
    grey = tmp_path / "grey"
    subprocess.run([*FFMPEG, "-f", "lavfi", "-i", "color=c=gray:s=64x64", "-frames:v", "1",
                    "-f", "image2pipe", "-c:v", "png", str(grey)], check=True)  # fmt: skip
    red: dict[str, int] = {}
    for mode in ("cline", "p2p"):
        (tmp_path / mode).mkdir()
        result, _ = visualize(m4a, grey, tmp_path / mode, fps=10, style={"color": "#FF0000", "mode": mode})
        strip = _strip(frames(result.output)[5])  # 0.5 s in: loud
        red[mode] = int(((strip[..., 0] - strip[..., 1] > 100) & (strip[..., 0] - strip[..., 2] > 100)).sum())
    assert red["cline"] > 3 * red["p2p"] > 150, red  # filled from the centre vs a thin line


def test_progress_reaches_the_total(render: tuple[TaskResult, list[Progress]]) -> None:
    result, seen = render
    done = [update.done for update in seen]
    assert done == sorted(done) and seen[-1].fraction == 1.0
    assert seen[-1].done == seen[-1].total == result.frame_count
    assert round(SECONDS * FPS) <= result.frame_count <= round(SECONDS * FPS) + 1  # + the AAC padding


@pytest.mark.parametrize(("seconds", "fps"), [(0.02, 30), (1.0, 1), (0.1, 7)])
def test_audio_shorter_than_a_frame_or_two_still_shows(
    inputs: Path, cover: Path, work_dir: Path, seconds: float, fps: int
) -> None:
    result, _ = visualize(make_audio("flac", inputs, seconds), cover, work_dir, fps=fps)
    assert result.frame_count == math.ceil(seconds * fps)


def test_cancelling_stops_the_render(inputs: Path, cover: Path, work_dir: Path) -> None:
    source = make_audio("flac", inputs, 30)
    seen: list[Progress] = []
    started = time.monotonic()
    with pytest.raises(Cancelled) as caught:
        visualize(source, cover, work_dir, fps=FPS, context={"progress": seen.append,
                                                             "cancelled": lambda: bool(seen)})  # fmt: skip
    assert caught.value.code == "CANCELLED"
    assert len(seen) == 1 and seen[0].done < 30 * FPS
    assert time.monotonic() - started < 10
    assert not (work_dir / OUTPUT_NAME).exists()


# --- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("audio", "code"),
    [("hls", "UNSUPPORTED_MEDIA"), ("silent", "UNSUPPORTED_MEDIA"), ("empty", "MEDIA_CORRUPT"),
     ("truncated", "MEDIA_CORRUPT")],
)  # fmt: skip
def test_bad_audio_is_refused_with_its_code(
    clips: Clips, cover: Path, work_dir: Path, audio: str, code: str
) -> None:
    with pytest.raises(MediaError) as caught:
        visualize(clips(audio), cover, work_dir)
    assert caught.value.code == code, caught.value
    assert list(work_dir.iterdir()) == []


@pytest.mark.parametrize("what", ["video", "text"])
def test_a_cover_that_is_not_an_image_is_refused(
    clips: Clips, m4a: Path, work_dir: Path, tmp_path: Path, what: str
) -> None:
    path = tmp_path / "cover"
    path.write_bytes(clips("audio").read_bytes() if what == "video" else b"not an image\n")
    with pytest.raises(MediaError) as caught:
        visualize(m4a, path, work_dir)
    assert caught.value.code == "UNSUPPORTED_MEDIA"


def test_a_missing_cover_input_is_invalid(m4a: Path, work_dir: Path) -> None:
    task = VisualizeTask()
    params = task.parse({"coverS3Key": "c"})
    with pytest.raises(InvalidParameters, match="cover"):
        task.run(m4a, params, TaskContext(work_dir, Resources()))


@pytest.mark.parametrize(("size", "encoder"), [("1920x1080", "h264_nvenc"), ("7680x4320", "hevc_nvenc")])
def test_nvenc_is_used_where_it_works(
    m4a: Path,
    cover: Path,
    work_dir: Path,
    render_commands: list[list[str]],
    nvenc_usable: None,
    size: str,
    encoder: str,
) -> None:
    with pytest.raises(Cancelled):
        visualize(m4a, cover, work_dir, resolution=size, quality=28)
    [command] = render_commands
    assert command[command.index("-c:v") + 1] == encoder and command[command.index("-cq") + 1] == "28"
    assert "-crf" not in command and command[command.index("-c:a") + 1] == "copy"


# --- parameters -----------------------------------------------------------------------------------


def test_parameter_defaults_and_spellings() -> None:
    task = VisualizeTask()
    params = task.parse({"coverS3Key": "covers/a.png"})
    assert params == task.parse({"cover_s3_key": "covers/a.png"})
    assert (params.size, params.fps, params.quality) == ((1920, 1080), 30, 23)
    assert (params.style.color, params.style.mode) == ("#FFFFFFE6", "cline")
    assert task.parse({"coverS3Key": "c", "resolution": " 1280X720 "}).size == (1280, 720)
    assert task.attachments(params) == {COVER_INPUT: Attachment("covers/a.png", MAX_COVER_BYTES)}
    assert isinstance(params, VisualizeParams) and task.name == "VISUALIZE"


BAD_PARAMETERS: list[dict[str, Any]] = [
    {},
    {"coverS3Key": ""},
    *({"coverS3Key": "c", "resolution": size}
      for size in ("abc", "0x0", "99999x10", "1921x1080", "8x8", "7680x7680", "1920x1080x3", "-2x4")),
    *({"coverS3Key": "c", "style": style}
      for style in ({"mode": "bars"}, {"color": "red"}, {"color": "#FFF"}, {"colour": "#FFFFFF"})),
    {"coverS3Key": "c", "fps": 0},
    {"coverS3Key": "c", "fps": 120},
    {"coverS3Key": "c", "quality": 52},
    {"coverS3Key": "c", "extra": 1},
]  # fmt: skip


@pytest.mark.parametrize("raw", BAD_PARAMETERS)
def test_bad_parameters_are_refused(raw: dict[str, Any]) -> None:
    with pytest.raises(InvalidParameters) as caught:
        VisualizeTask().parse(raw)
    assert caught.value.code == "INPUT_INVALID"
