"""CAPTION_RENDER end to end: real ffmpeg and libass, outputs decoded and checked pixel by pixel.

Most renders burn captions into a flat dark-blue 320x180 clip (25 frames/s, 2 s,
AAC audio) and are compared with the same task run with no cues at all, so any
pixel that differs is caption. Renders are shared within the module
(:class:`Renderer`); each is checked to leave no ffmpeg and no partial file.
"""

from __future__ import annotations

import functools
import itertools
import json
import subprocess
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tasks.base
import tasks.captions
from media import Tools, probe
from media.captions import CaptionLimits
from media.color import blend_color
from media.reader import decode_all
from tasks import Cancelled, InvalidParameters, Progress, Resources, TaskContext, TaskResult
from tasks.base import Attachment
from tasks.captions import OUTPUT_NAME, SCENARIO_INPUT, CaptionRenderTask, frame_rate
from tests.clips import FFMPEG, audio_md5, ffprobe, stream
from tests.conftest import Clips
from tests.tasks.conftest import assert_clean

WIDTH, HEIGHT, FPS, SECONDS = 320, 180, 25, 2
FRAMES = FPS * SECONDS
BACKGROUND = (0x20, 0x30, 0x40)
KOREAN = "Noto Sans CJK KR"


def scenario(*cues: dict[str, Any], **style: Any) -> dict[str, Any]:
    return {"version": "1.3", "style": {"size": 32, **style}, "cues": list(cues)}


def run_task(
    source: Path,
    work_dir: Path,
    *,
    tools: Tools | None = None,
    inputs: dict[str, Path] | None = None,
    progress: Callable[[Progress], None] = lambda progress: None,
    cancelled: Callable[[], bool] = lambda: False,
    **raw: Any,
) -> TaskResult:
    """Run CAPTION_RENDER on ``source`` with the message parameters ``raw``."""
    task = CaptionRenderTask()
    context = TaskContext(
        work_dir,
        Resources(tools=tools or Tools()),
        progress=progress,
        cancelled=cancelled,
        inputs=inputs or {},
    )
    return task.run(source, task.parse(raw), context)


def frames_of(path: Path) -> np.ndarray:
    """Every frame as displayed, RGB through the file's own matrix, as int16 for differences."""
    return decode_all(probe(path, Tools()), Tools()).astype(np.int16)


def decoded_frame_count(path: Path) -> int:
    video = stream(ffprobe(path, count=True), "video")
    assert video is not None
    return int(video["nb_read_frames"])


class Render:
    """A finished render; its frames are decoded when first asked for."""

    def __init__(self, result: TaskResult) -> None:
        self.result = result

    @functools.cached_property
    def frames(self) -> np.ndarray:
        return frames_of(self.result.output)


class Renderer:
    """Runs the task once per distinct (source, parameters) and keeps the result."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._done: dict[tuple[Path, str], Render] = {}

    def __call__(self, source: Path, **raw: Any) -> Render:
        key = (source, json.dumps(raw, sort_keys=True))
        if key not in self._done:
            work_dir = self.directory / f"job{len(self._done)}"
            work_dir.mkdir()
            result = run_task(source, work_dir, **raw)
            assert_clean(work_dir)
            self._done[key] = Render(result)
        return self._done[key]


@pytest.fixture(scope="module")
def flat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("flat") / "flat.mp4"
    subprocess.run(
        [*FFMPEG, "-f", "lavfi", "-i", f"color=c=0x203040:s={WIDTH}x{HEIGHT}:r={FPS}:d={SECONDS}",
         "-f", "lavfi", "-i", f"sine=f=440:r=48000:d={SECONDS}", "-c:a", "aac", "-shortest",
         "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)],
        check=True,
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def render(tmp_path_factory: pytest.TempPathFactory) -> Renderer:
    return Renderer(tmp_path_factory.mktemp("renders"))


@pytest.fixture(scope="module")
def baseline(render: Renderer, flat: Path) -> Render:
    """The task with a scenario of no cues: the reference every captioned render is compared with."""
    return render(flat, scenario=scenario())


def ink(frame: np.ndarray, plain: np.ndarray, threshold: int = 30) -> np.ndarray:
    """Mask of the pixels a caption changed."""
    return np.asarray(np.abs(frame - plain).max(axis=-1) > threshold)


def frame_at(seconds: float) -> int:
    return round(seconds * FPS)


# --- captions on the picture ----------------------------------------------------------------------


def test_a_scenario_without_cues_is_a_plain_render(flat: Path, baseline: Render) -> None:
    assert baseline.result.frame_count == len(baseline.frames) == FRAMES
    source = frames_of(flat)
    assert np.abs(baseline.frames - source).mean() < 1
    assert np.abs(baseline.frames[FRAMES // 2, 90, 160] - BACKGROUND).max() <= 3


def test_a_caption_changes_its_region_only_while_its_cue_is_active(
    render: Renderer, flat: Path, baseline: Render
) -> None:
    captioned = render(flat, scenario=scenario({"start": 0.6, "end": 1.4, "text": "안녕하세요 hello"}))
    assert captioned.result.frame_count == FRAMES and captioned.result.audio
    diff = np.abs(captioned.frames - baseline.frames).mean(axis=-1)
    lower, upper = diff[:, HEIGHT // 2 :].mean(axis=(1, 2)), diff[:, : HEIGHT // 3].max(axis=(1, 2))
    for index in range(FRAMES):
        if frame_at(0.6) <= index < frame_at(1.4):
            assert lower[index] > 3, (index, lower)
        else:  # before and after the cue: not a pixel changed
            assert lower[index] < 0.05, (index, lower)
    assert upper.max() == 0, upper  # a bottom caption leaves the top third alone


def test_fade_ramps_up_and_down(render: Renderer, flat: Path) -> None:
    cue = {"start": 0.4, "end": 1.6, "text": "FADE", "animation": "fade"}
    faded = render(flat, scenario=scenario(cue, size=60))
    fill = faded.frames[frame_at(1.0)].min(axis=-1) > 200  # the text's white fill, fully shown
    assert fill.sum() > 500
    brightness = [float(frame[fill].mean()) for frame in faded.frames]
    fade_in = brightness[frame_at(0.4) : frame_at(0.7) + 1]  # 0, 40, ..., 280 ms into the cue
    assert all(a + 5 < b for a, b in itertools.pairwise(fade_in)), fade_in
    assert fade_in[0] < 80 and fade_in[-1] > 200
    assert brightness[frame_at(0.72)] == pytest.approx(brightness[frame_at(1.0)], abs=3)  # done by 300 ms
    fade_out = brightness[frame_at(1.32) : frame_at(1.6)]
    assert all(a > b + 5 for a, b in itertools.pairwise(fade_out)), fade_out


POSITIONS: list[tuple[dict[str, Any], Callable[[np.ndarray, np.ndarray], bool]]] = [
    ({"position": "top"}, lambda rows, cols: rows.max() < HEIGHT // 3),
    ({"position": "middle"}, lambda rows, cols: rows.min() > HEIGHT // 3 and rows.max() < 2 * HEIGHT // 3),
    ({"position": "bottom"}, lambda rows, cols: rows.min() > 2 * HEIGHT // 3),
    # x/y place the anchor (here the text's centre) at fractions of the frame
    ({"position": "middle", "x": 0.25, "y": 0.75},
     lambda rows, cols: abs(rows.mean() - 135) < 8 and abs(cols.mean() - 80) < 12),
    ({"position": "middle", "alignment": "left", "x": 0.6, "y": 0.2},
     lambda rows, cols: abs(rows.mean() - 36) < 8 and abs(cols.min() - 192) < 6),
]  # fmt: skip


def test_position_is_honoured(render: Renderer, flat: Path, baseline: Render) -> None:
    cues = [{"start": 0.4 * i, "end": 0.4 * (i + 1), "text": "Where", "style": style}
            for i, (style, _) in enumerate(POSITIONS)]  # fmt: skip
    placed = render(flat, scenario=scenario(*cues, size=24, marginY=8))
    for index, (style, where) in enumerate(POSITIONS):
        at = frame_at(0.4 * index + 0.2)
        rows, cols = np.nonzero(ink(placed.frames[at], baseline.frames[at]))
        assert rows.size > 100 and where(rows, cols), (style, rows.min(), rows.max(), cols.min(), cols.max())


def test_korean_renders_real_glyphs(render: Renderer, flat: Path, baseline: Render) -> None:
    """Different words, different shapes; neither is a row of boxes (what a font without Hangul draws)."""
    texts = ["안녕하세요", "감사합니다", "□□□□□"]
    cues = [{"start": 0.6 * i, "end": 0.6 * (i + 1), "text": text} for i, text in enumerate(texts)]
    shown = render(flat, scenario=scenario(*cues, font=KOREAN, size=40, outline=0))
    hello, thanks, boxes = (
        ink(shown.frames[frame_at(0.6 * i + 0.3)], baseline.frames[frame_at(0.6 * i + 0.3)]) for i in range(3)
    )
    assert hello.sum() > 800
    assert (hello != thanks).sum() > 400 and (hello != boxes).sum() > 400
    assert not hello[: HEIGHT // 2].any()


def test_korean_in_a_font_without_hangul_is_refused_before_any_encode(
    flat: Path, work_dir: Path, no_render: list[str]
) -> None:
    if subprocess.run(["fc-list", "DejaVu Sans"], capture_output=True, check=False).stdout == b"":
        pytest.skip("DejaVu Sans is not installed")
    with pytest.raises(Exception) as caught:
        run_task(
            flat, work_dir, scenario=scenario({"start": 0, "end": 1, "text": "안녕"}, font="DejaVu Sans")
        )
    assert getattr(caught.value, "code", None) == "FONT_UNAVAILABLE", caught.value
    assert no_render == [] and not (work_dir / OUTPUT_NAME).exists()


def test_override_tags_in_user_text_are_drawn_literally(
    render: Renderer, flat: Path, baseline: Render
) -> None:
    cues = [
        {"start": 0.0, "end": 0.5, "text": "AB"},
        {"start": 0.5, "end": 1.0, "text": "A{\\pos(0,0)}B"},
        {"start": 1.0, "end": 1.5, "text": "A\\NB"},
    ]
    shown = render(flat, scenario=scenario(*cues, size=24, marginY=8))
    plain, tagged, newline = (
        ink(shown.frames[frame_at(0.5 * i + 0.25)], baseline.frames[frame_at(0.5 * i + 0.25)])
        for i in range(3)
    )
    for mask in (tagged, newline):
        rows, cols = np.nonzero(mask)
        assert rows.min() > 2 * HEIGHT // 3, "not moved: still at the bottom"
        assert rows.max() - rows.min() < 40, "one line: \\N did not break it"
        assert mask.sum() > 1.4 * plain.sum(), (mask.sum(), plain.sum())  # the tag's characters are drawn
        plain_cols = np.nonzero(plain)[1]
        assert cols.min() < plain_cols.min() and cols.max() > plain_cols.max()  # wider, still centred


# --- invalid scenarios and parameters -------------------------------------------------------------


def _forbidden(started: list[str], what: str) -> Callable[..., Any]:
    def called(*args: Any, **kwargs: Any) -> Any:
        started.append(what)
        raise AssertionError(f"{what} ran")

    return called


@pytest.fixture
def no_render(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records (and fails) any render the task starts, to show that a refusal came first."""
    started: list[str] = []
    monkeypatch.setattr(tasks.base, "run_render", _forbidden(started, "render"))
    return started


@pytest.fixture
def no_probe(monkeypatch: pytest.MonkeyPatch, no_render: list[str]) -> list[str]:
    """As ``no_render``, and no ffprobe either."""
    monkeypatch.setattr(tasks.captions, "probe", _forbidden(no_render, "probe"))
    return no_render


CUE = {"start": 0.0, "end": 1.0, "text": "x"}
INVALID_SCENARIOS: list[tuple[str, Any, str]] = [
    ("end before start", scenario({"start": 2.0, "end": 1.0, "text": "x"}), "cues[0].end"),
    ("end equal to start", scenario({"start": 1.0, "end": 1.0, "text": "x"}), "cues[0].end"),
    ("negative time", scenario({"start": -0.5, "end": 1.0, "text": "x"}), "cues[0].start"),
    ("past the time limit", scenario({"start": 0.0, "end": 1e9, "text": "x"}), "cues[0].end"),
    ("not a number", scenario({"start": float("nan"), "end": 1.0, "text": "x"}), "cues[0].start"),
    ("huge size", scenario(CUE, size=5000), "style.size"),
    ("tiny size in a cue", scenario({**CUE, "style": {"size": 0.5}}), "cues[0].style.size"),
    ("huge outline", scenario(CUE, outline=1000), "style.outline"),
    ("too many cues", scenario(*[CUE] * (CaptionLimits().max_cues + 1)), "cues"),
    ("too much text", scenario({**CUE, "text": "가" * 501}), "cues[0].text"),
    ("empty text", scenario({**CUE, "text": "  "}), "cues[0].text"),
    ("bad colour", scenario(CUE, color="red"), "style.color"),
    ("unknown animation", scenario({**CUE, "animation": "spin"}), "cues[0].animation"),
    ("x without y", scenario({**CUE, "style": {"x": 0.5}}), "cues[0].style.x"),
    ("word outside its cue", scenario({**CUE, "words": [{"start": 0.5, "end": 2.0, "text": "x"}]}),
     "cues[0].words[0]"),
    ("cues not a list", {"cues": "none"}, "cues"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "field"),
    [(raw, field) for _, raw, field in INVALID_SCENARIOS],
    ids=[i for i, *_ in INVALID_SCENARIOS],
)
def test_invalid_scenario_is_refused_before_anything_runs(
    flat: Path, work_dir: Path, no_probe: list[str], raw: Any, field: str
) -> None:
    with pytest.raises(Exception) as caught:
        run_task(flat, work_dir, scenario=raw)
    assert getattr(caught.value, "code", None) == "INPUT_INVALID", caught.value
    assert str(caught.value).startswith(field), caught.value
    assert no_probe == [] and list(work_dir.iterdir()) == []


@pytest.mark.parametrize(
    "options", [{"width": 7680}, {"width": 7680, "height": 7680}], ids=["follow-on side", "pixels"]
)
def test_an_output_past_8k_is_refused_before_any_render(
    clips: Clips, work_dir: Path, no_render: list[str], options: dict[str, int]
) -> None:
    """A 36x64 portrait source asked 7680 wide would be 13653 tall; 7680 square is over 8K's pixel count."""
    with pytest.raises(InvalidParameters, match="at most 7680 px a side") as caught:
        run_task(clips("rotated"), work_dir, scenario=scenario(CUE), options=options)
    assert caught.value.code == "INPUT_INVALID" and not caught.value.retryable
    assert no_render == []


INVALID_FILES: list[tuple[str, bytes]] = [
    ("not JSON", b'{"cues": [{"start": 0, '),
    ("not UTF-8", b'{"cues": [\xff]}'),
    ("not an object", b'[{"start": 0, "end": 1, "text": "x"}]'),
    ("invalid cue", json.dumps(scenario({"start": 2, "end": 1, "text": "x"})).encode()),
    ("too large", b" " * (CaptionLimits().max_json_bytes + 1)),
]


@pytest.mark.parametrize(
    "content", [content for _, content in INVALID_FILES], ids=[i for i, _ in INVALID_FILES]
)
def test_invalid_scenario_file_is_refused_before_anything_runs(
    flat: Path, work_dir: Path, no_probe: list[str], content: bytes
) -> None:
    file = work_dir / SCENARIO_INPUT
    file.write_bytes(content)
    with pytest.raises(Exception) as caught:
        run_task(flat, work_dir, inputs={SCENARIO_INPUT: file}, scenarioS3Key="captions/job.json")
    assert getattr(caught.value, "code", None) == "INPUT_INVALID", caught.value
    assert no_probe == [] and list(work_dir.iterdir()) == [file]


def test_a_scenario_file_that_was_not_fetched_is_refused(
    flat: Path, work_dir: Path, no_probe: list[str]
) -> None:
    with pytest.raises(Exception) as caught:
        run_task(flat, work_dir, scenarioS3Key="captions/job.json")
    assert getattr(caught.value, "code", None) == "INPUT_INVALID", caught.value
    assert "scenario.json" in str(caught.value) and no_probe == []


@pytest.mark.parametrize(
    "raw",
    [
        {},
        {"scenario": scenario(), "scenarioS3Key": "captions/job.json"},
        {"scenarioS3Key": ""},
        {"scenario": "not an object"},
        {"scenario": scenario(), "options": {"width": 8}},
        {"scenario": scenario(), "options": {"height": 100_000}},
        {"scenario": scenario(), "options": {"fps": 0}},
        {"scenario": scenario(), "options": {"fps": 1000}},
        {"scenario": scenario(), "options": {"quality": 52}},
        {"scenario": scenario(), "options": {"bitrate": "9M"}},
        {"scenario": scenario(), "unknown": 1},
    ],
    ids=lambda raw: json.dumps(raw)[:60],
)
def test_invalid_parameters_are_refused_by_parse(raw: dict[str, Any]) -> None:
    with pytest.raises(Exception) as caught:
        CaptionRenderTask().parse(raw)
    assert getattr(caught.value, "code", None) == "INPUT_INVALID", caught.value


# --- the scenario as a second input (scenarioS3Key) -----------------------------------------------

SHOWN = scenario({"start": 0.4, "end": 1.2, "text": "파일 file", "animation": "pop"}, color="#FFD400")


@pytest.mark.parametrize("spelling", ["scenarioS3Key", "scenario_s3_key"])
def test_the_scenario_file_is_declared_as_an_attachment(spelling: str) -> None:
    task = CaptionRenderTask()
    assert task.attachments(task.parse({spelling: "captions/job.json"})) == {
        SCENARIO_INPUT: Attachment("captions/job.json", CaptionLimits().max_json_bytes)
    }
    assert task.attachments(task.parse({"scenario": SHOWN})) == {}


def test_a_scenario_file_renders_as_the_same_scenario_inline(
    render: Renderer, flat: Path, work_dir: Path
) -> None:
    file = work_dir / SCENARIO_INPUT
    file.write_text(json.dumps(SHOWN, ensure_ascii=False), encoding="utf-8")
    result = run_task(flat, work_dir, inputs={SCENARIO_INPUT: file}, scenarioS3Key="captions/job.json")
    inline = render(flat, scenario=SHOWN)
    frames = frames_of(result.output)
    assert np.array_equal(frames, inline.frames)
    assert np.abs(frames[frame_at(0.8)] - frames[frame_at(0.2)]).max() > 100  # captions are there


# --- options --------------------------------------------------------------------------------------


def test_width_alone_keeps_the_aspect_ratio(render: Renderer, flat: Path) -> None:
    resized = render(flat, scenario=scenario(), options={"width": 100})
    assert (resized.result.width, resized.result.height) == (100, 56) == resized.frames.shape[2:0:-1]
    # no bars: the picture reaches every edge
    edges = [resized.frames[:, 0], resized.frames[:, -1], resized.frames[:, :, 0], resized.frames[:, :, -1]]
    assert all(np.abs(edge - BACKGROUND).max() <= 4 for edge in edges)


@pytest.mark.parametrize(
    ("size", "content"), [((200, 200), (200, 112)), ((400, 100), (178, 100))], ids=["letterbox", "pillarbox"]
)
def test_a_box_of_another_aspect_is_filled_centred_with_black_bars(
    render: Renderer, flat: Path, size: tuple[int, int], content: tuple[int, int]
) -> None:
    boxed = render(flat, scenario=scenario(), options={"width": size[0], "height": size[1]})
    frame = boxed.frames[FRAMES // 2]
    assert frame.shape[:2] == (size[1], size[0]) == (boxed.result.height, boxed.result.width)
    rows, cols = np.nonzero(frame.max(axis=-1) > 32)  # the picture (its blue is 64), not the bars
    top, left = int(rows.min()), int(cols.min())
    bottom, right = size[1] - 1 - int(rows.max()), size[0] - 1 - int(cols.max())
    assert (size[0] - left - right, size[1] - top - bottom) == content  # scaled whole, not cropped
    assert abs(top - bottom) <= 2 and abs(left - right) <= 2  # centred (to the chroma grid)

    def box(margin: int) -> np.ndarray:
        """The picture's rectangle grown by ``margin`` pixels (shrunk, if negative)."""
        mask = np.zeros(frame.shape[:2], bool)
        mask[
            max(0, top - margin) : size[1] - bottom + margin, max(0, left - margin) : size[0] - right + margin
        ] = True
        return mask

    # away from the edges, where chroma and the encoder blend the picture and the bars
    assert np.abs(frame[box(-2)] - BACKGROUND).max() <= 4
    assert frame[~box(2)].max() <= 4 and frame[~box(0)].mean() < 0.5  # black bars


@pytest.mark.parametrize("fps", [10, 50, 12.5])
def test_a_new_frame_rate_keeps_the_duration(render: Renderer, flat: Path, fps: float) -> None:
    retimed = render(flat, scenario=scenario({"start": 0.5, "end": 1.5, "text": "fps"}), options={"fps": fps})
    video = stream(ffprobe(retimed.result.output, count=True), "video")
    assert video is not None
    assert Fraction(video["r_frame_rate"]) == Fraction(video["avg_frame_rate"]) == Fraction(fps)
    assert int(video["nb_read_frames"]) == retimed.result.frame_count == round(SECONDS * fps)
    assert abs(float(video["duration"]) - SECONDS) <= 1 / fps + 1e-3
    assert retimed.result.fps == fps and retimed.result.duration == pytest.approx(SECONDS)


def test_quality_sets_the_encoder_quality(render: Renderer, clips: Clips) -> None:
    renders = [render(clips("audio"), scenario=scenario(), options={"quality": q}) for q in (10, 30, 50)]
    sizes = [video_bytes(done.result.output) for done in renders]
    assert sizes[0] > 1.5 * sizes[1] > 1.5 * 1.5 * sizes[2], sizes


def video_bytes(path: Path) -> int:
    """The size of the video stream's packets."""
    args = ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=size",
            "-of", "csv=p=0"]  # fmt: skip
    done = subprocess.run([*args, str(path)], capture_output=True, text=True, check=True)
    return sum(int(line) for line in done.stdout.split())


# --- sources --------------------------------------------------------------------------------------


@pytest.mark.parametrize("clip", ["audio", "silent", "odd", "10bit", "webm", "bt601", "pcm"])
def test_frames_duration_and_audio_are_kept(render: Renderer, clips: Clips, clip: str) -> None:
    source = clips(clip)
    before = ffprobe(source)
    video_in = stream(before, "video")
    assert video_in is not None
    done = render(source, scenario=scenario({"start": 0.2, "end": 0.8, "text": "자막"}, size=12, marginY=2))
    after = ffprobe(done.result.output, count=True)
    video_out, audio_out = stream(after, "video"), stream(after, "audio")
    assert video_out is not None
    even = (video_in["width"] + video_in["width"] % 2, video_in["height"] + video_in["height"] % 2)
    assert (video_out["width"], video_out["height"]) == even == (done.result.width, done.result.height)
    assert int(video_out["nb_read_frames"]) == decoded_frame_count(source) == done.result.frame_count
    frame = 1 / float(Fraction(video_in["avg_frame_rate"]))
    assert abs(float(after["format"]["duration"]) - float(before["format"]["duration"])) <= frame + 1e-3
    audio_in = stream(before, "audio")
    assert (audio_out is not None) == (audio_in is not None) == done.result.audio
    assert (video_out["codec_name"], video_out["pix_fmt"]) == ("h264", "yuv420p")
    assert (done.result.encoder, done.result.device) == ("libx264", "cpu")
    if audio_in is not None and audio_out is not None:  # copied where MP4 takes it, else AAC
        assert audio_out["codec_name"] == ("aac" if clip == "pcm" else audio_in["codec_name"])


def test_an_odd_source_is_padded_not_scaled(render: Renderer, clips: Clips) -> None:
    source = clips("odd")
    done = render(source, scenario=scenario())
    assert (done.result.width, done.result.height) == (34, 20)
    luma = np.array([0.299, 0.587, 0.114])  # chroma is halved (4:4:4 source), luma kept pixel for pixel
    picture, original = done.frames[:, :19, :33] @ luma, frames_of(source) @ luma
    assert np.abs(picture - original).mean() < 4, np.abs(picture - original).mean()
    padding = np.concatenate([done.frames[:, 19:].reshape(-1, 3), done.frames[:, :, 33:].reshape(-1, 3)])
    assert (padding @ luma).mean() < 8  # black (its chroma shared with the picture's last row and column)


@pytest.mark.parametrize("clip", ["audio", "webm"])
def test_copied_audio_is_bit_identical(render: Renderer, clips: Clips, clip: str) -> None:
    source = clips(clip)
    done = render(source, scenario=scenario({"start": 0.2, "end": 0.8, "text": "자막"}, size=12, marginY=2))
    assert audio_md5(done.result.output) == audio_md5(source)


def test_variable_frame_rate_becomes_constant(render: Renderer, clips: Clips) -> None:
    source = clips("vfr")
    info = probe(source, Tools())
    assert info.vfr
    done = render(source, scenario=scenario({"start": 0.5, "end": 1.5, "text": "vfr"}, size=12))
    video = stream(ffprobe(done.result.output, count=True), "video")
    assert video is not None
    assert Fraction(video["r_frame_rate"]) == Fraction(video["avg_frame_rate"]) == info.fps
    assert abs(int(video["nb_read_frames"]) - info.duration * float(info.fps)) <= 1
    assert abs(done.result.duration - info.duration) <= 1 / float(info.fps) + 1e-3


def test_a_rotated_phone_video_is_rendered_upright(render: Renderer, clips: Clips) -> None:
    """The output is stored turned, untagged; the caption is drawn on the upright picture (at its bottom)."""
    source = clips("rotated")
    done = render(source, scenario=scenario({"start": 0, "end": 1, "text": "ㅡ"}, size=16, marginY=2))
    video = stream(ffprobe(done.result.output), "video")
    assert video is not None
    assert (video["width"], video["height"]) == (36, 64) == (done.result.width, done.result.height)
    assert not video.get("side_data_list") and "rotate" not in video.get("tags", {})
    top, bottom = done.frames[:, :28].mean(axis=(0, 1, 2)), done.frames[:, 36:44].mean(axis=(0, 1, 2))
    # ffprobe's +90 (counter-clockwise) rotation brings the left (red) half to the bottom
    assert bottom[0] > 180 > bottom[2] and top[2] > 180 > top[0], (top, bottom)
    assert np.abs(done.frames[:, 46:] - bottom).max(axis=-1).max() > 100  # the caption, at the bottom


def test_colour_tags_are_carried(render: Renderer, clips: Clips) -> None:
    done = render(clips("bt601"), scenario=scenario())
    video = stream(ffprobe(done.result.output), "video")
    assert video is not None
    tags = ("color_primaries", "color_transfer", "color_space", "color_range")
    assert [video.get(key) for key in tags] == ["smpte170m", "smpte170m", "smpte170m", "tv"]


@pytest.mark.parametrize(
    ("clip", "code"),
    [
        ("hls", {"UNSUPPORTED_MEDIA"}),
        ("audio_only", {"UNSUPPORTED_MEDIA"}),
        ("empty", {"MEDIA_CORRUPT"}),
        ("truncated", {"MEDIA_CORRUPT", "DECODE_FAILED"}),
        ("cut", {"MEDIA_CORRUPT", "DECODE_FAILED"}),  # probes fine, fails in the render
    ],
)
def test_bad_sources_are_refused_and_leave_nothing(
    clips: Clips, work_dir: Path, clip: str, code: set[str]
) -> None:
    with pytest.raises(Exception) as caught:
        run_task(clips(clip), work_dir, scenario=scenario({"start": 0, "end": 1, "text": "x"}))
    assert getattr(caught.value, "code", None) in code, caught.value
    assert not getattr(caught.value, "retryable", True)
    assert not (work_dir / OUTPUT_NAME).exists()


# --- caption colours in a BT.709 video ------------------------------------------------------------


def _yuv(rgb: tuple[float, ...], kr: float, kb: float) -> np.ndarray:
    red, green, blue = (value / 255 for value in rgb)
    luma = kr * red + (1 - kr - kb) * green + kb * blue
    return np.array([luma, (blue - luma) / (2 * (1 - kb)), (red - luma) / (2 * (1 - kr))])


def _rgb(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


@pytest.mark.parametrize("color", ["#C04020", "#208040", "#3050A0", "#B0B040", "#808080"])
def test_blend_color_gives_the_bt601_colour_with_the_same_bt709_yuv(color: str) -> None:
    compensated = blend_color(color, "bt709")
    wanted = _yuv(_rgb(color), 0.2126, 0.0722)
    got = _yuv(_rgb(compensated), 0.299, 0.114)
    assert np.abs(got - wanted).max() < 1.5 / 255, (color, compensated)


def test_blend_color_leaves_what_needs_no_compensation() -> None:
    for space in (None, "smpte170m", "bt470bg", "unknown-matrix"):
        assert blend_color("#C04020", space) == "#C04020"
    assert blend_color("#FFFFFF", "bt709") == "#FFFFFF" and blend_color("#000000", "bt709") == "#000000"
    assert blend_color("#C0402080", "bt709").endswith("80")  # opacity kept
    assert blend_color("#FF0000", "bt709") == "#E90002"  # outside the RGB cube: clipped (green < 0)


@pytest.fixture(scope="module")
def bt709(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A grey 320x180 clip (10 frames) tagged and encoded BT.709, limited range."""
    path = tmp_path_factory.mktemp("bt709") / "bt709.mp4"
    subprocess.run(
        [*FFMPEG, "-f", "lavfi", "-i", f"color=c=0x808080:s={WIDTH}x{HEIGHT}:r=10:d=1",
         "-vf", "scale=out_color_matrix=bt709:out_range=tv", "-c:v", "libx264", "-pix_fmt", "yuv420p",
         "-color_primaries", "bt709", "-color_trc", "bt709", "-colorspace", "bt709", "-color_range", "tv",
         str(path)],
        check=True,
    )  # fmt: skip
    return path


def _block_colour(source: Path, work_dir: Path, color: str) -> np.ndarray:
    """The mean RGB deep inside a big full block (█) caption of ``color``, decoded as BT.709."""
    work_dir.mkdir()
    style = {"size": 150, "color": color, "outline": 0, "position": "middle"}
    result = run_task(source, work_dir, scenario=scenario({"start": 0, "end": 1, "text": "█"}, **style))
    frame = frames_of(result.output)[5]
    rows, cols = np.nonzero(np.abs(frame - 128).max(axis=-1) > 40)
    assert rows.max() - rows.min() > 60 and cols.max() - cols.min() > 60, "not a big block"
    middle_row, middle_col = (rows.min() + rows.max()) // 2, (cols.min() + cols.max()) // 2
    patch = frame[middle_row - 10 : middle_row + 10, middle_col - 10 : middle_col + 10].reshape(-1, 3)
    assert np.ptp(patch, axis=0).max() <= 2  # inside the stroke: no edge, no chroma bleed
    colour: np.ndarray = patch.mean(axis=0)
    return colour


@pytest.mark.parametrize(("size", "space"), [("1280x720", "bt709"), ("640x360", None)])
def test_an_untagged_video_is_compensated_as_players_show_it(
    tmp_path: Path, work_dir: Path, no_render: list[str], monkeypatch: pytest.MonkeyPatch,
    size: str, space: str | None,
) -> None:  # fmt: skip
    """Untagged HD is shown as BT.709 by players; smaller untagged video as BT.601 (no compensation)."""
    source = tmp_path / "untagged.mp4"
    subprocess.run([*FFMPEG, "-f", "lavfi", "-i", f"color=c=gray:s={size}:r=10:d=0.3", "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", str(source)], check=True)  # fmt: skip
    spaces: set[str | None] = set()

    def record(color: str, asked: str | None) -> str:
        spaces.add(asked)
        return color

    monkeypatch.setattr(tasks.captions, "blend_color", record)
    with pytest.raises(AssertionError, match="render ran"):
        run_task(source, work_dir, scenario=scenario(CUE))
    assert spaces == {space}


def test_caption_colours_are_right_in_a_bt709_video(
    bt709: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ffmpeg's ``ass`` blends with BT.601 weights; the compensated colour decodes (BT.709) as asked."""
    video = stream(ffprobe(bt709), "video")
    assert video is not None and video["color_space"] == "bt709"
    wanted = np.array(_rgb("#C04020"))
    right = _block_colour(bt709, tmp_path / "compensated", "#C04020")
    red = _block_colour(bt709, tmp_path / "red", "#FF0000")
    monkeypatch.setattr(tasks.captions, "blend_color", lambda color, space: color)
    wrong = _block_colour(bt709, tmp_path / "uncompensated", "#C04020")
    red_wrong = _block_colour(bt709, tmp_path / "red-uncompensated", "#FF0000")
    assert np.abs(right - wanted).max() <= 3, right
    assert np.abs(wrong - wanted).max() >= 8, wrong  # what the compensation is for
    pure = np.array([255, 0, 0])
    assert np.linalg.norm(red - pure) <= np.linalg.norm(red_wrong - pure), (red, red_wrong)


# --- progress, cancellation, encoders -------------------------------------------------------------


@pytest.fixture(scope="module")
def realtime(tmp_path_factory: pytest.TempPathFactory) -> Tools:
    """ffmpeg reading its input at the clip's own rate (``-re``), so a 2 s render takes 2 s."""
    script = tmp_path_factory.mktemp("realtime") / "ffmpeg"
    script.write_text('#!/bin/sh\nexec ffmpeg -re "$@"\n')
    script.chmod(0o755)
    return Tools(ffmpeg=str(script))


def test_progress_is_monotonic_up_to_the_total(flat: Path, work_dir: Path, realtime: Tools) -> None:
    seen: list[Progress] = []
    result = run_task(flat, work_dir, tools=realtime, progress=seen.append, scenario=scenario())
    assert len(seen) >= 4, seen  # every half second of a 2 s render, and the end
    done = [update.done for update in seen]
    assert done == sorted(done) and all(update.total == FRAMES for update in seen)
    assert seen[-1].done == seen[-1].total == result.frame_count == FRAMES
    assert max(b.fraction - a.fraction for a, b in itertools.pairwise(seen)) < 0.5


def test_cancel_stops_the_render_and_leaves_nothing(flat: Path, work_dir: Path, realtime: Tools) -> None:
    seen: list[Progress] = []
    started = time.monotonic()
    with pytest.raises(Cancelled) as caught:
        run_task(
            flat, work_dir, tools=realtime, progress=seen.append, cancelled=lambda: len(seen) >= 1,
            scenario=scenario({"start": 0, "end": 2, "text": "cancel"}),
        )  # fmt: skip
    assert caught.value.code == "CANCELLED"
    assert time.monotonic() - started < SECONDS  # stopped mid-render, not after it
    assert len(seen) == 1 and seen[0].done < FRAMES
    assert not (work_dir / OUTPUT_NAME).exists()


@pytest.mark.parametrize(
    ("options", "encoder"), [({}, "h264_nvenc"), ({"width": 5000}, "hevc_nvenc")], ids=["h264", "hevc"]
)
def test_nvenc_is_used_where_it_works(
    flat: Path,
    work_dir: Path,
    render_commands: list[list[str]],
    nvenc_usable: None,
    options: dict[str, Any],
    encoder: str,
) -> None:
    with pytest.raises(Cancelled):
        run_task(flat, work_dir, scenario=scenario(), options={"quality": 30, **options})
    [command] = render_commands
    at = command.index("-c:v")
    assert command[at + 1] == encoder
    assert command[command.index("-cq") + 1] == "30" and command[command.index("-preset") + 1] == "p4"
    assert "-crf" not in command and command[command.index("-pix_fmt") + 1] == "yuv420p"
    assert command[command.index("-vf") + 1].split(",")[-1].startswith("ass=")
    if encoder == "hevc_nvenc":
        assert command[command.index("-tag:v") + 1] == "hvc1"


def test_the_cpu_command_burns_captions_last_and_copies_audio(
    flat: Path, work_dir: Path, render_commands: list[list[str]]
) -> None:
    with pytest.raises(Cancelled):
        run_task(flat, work_dir, scenario=scenario(), options={"width": 160})
    [command] = render_commands
    assert command[command.index("-c:v") + 1 : command.index("-c:v") + 6] == [
        "libx264", "-preset", "medium", "-crf", "23",
    ]  # fmt: skip
    scale, to_yuv, captions = command[command.index("-vf") + 1].split(",")
    assert (scale, to_yuv) == ("scale=160:90:flags=bicubic", "format=yuv420p") and captions.startswith("ass=")
    assert command[command.index("-c:a") + 1] == "copy" and "+faststart" in command
    assert command[-1] == f"file:{work_dir / 'output.partial.mp4'}"


@pytest.mark.parametrize(
    ("asked", "rate"),
    [(30, Fraction(30)), (1, Fraction(1)), (12.5, Fraction(25, 2)), (29.97, Fraction(30000, 1001)),
     (23.976, Fraction(24000, 1001)), (59.94, Fraction(60000, 1001)), (29.9, Fraction(299, 10))],
)  # fmt: skip
def test_asked_frame_rates_become_exact_rates_with_ntsc_recognised(asked: float, rate: Fraction) -> None:
    assert frame_rate(asked) == rate
