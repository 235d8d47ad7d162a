"""One-pass renders: output geometry, the ffmpeg run (progress, failure, stall, abort) and the output check.

Real ffmpeg renders lavfi sources; fake ``ffmpeg`` shell scripts (as in
``test_process.py``) stand in for one that fails, hangs or talks forever.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from media.errors import DecodeFailed, EncodeFailed, FrameCountMismatch, MediaTimeout
from media.probe import input_args
from media.render import Frame, finish_output, partial_path, run_render
from media.tools import Tools
from media.writer import ENCODERS
from tests.conftest import Clips
from tests.media.test_process import STALL, Hung, _assert_group_gone, _script, fake_ffmpeg
from tests.procs import children

X264 = ENCODERS["h264", False]

# --- geometry -------------------------------------------------------------------------------------

# (source w, h, asked w, h) → (canvas w, h, content w, h)
FITS = [
    ((64, 36, None, None), (64, 36, 64, 36)),  # nothing asked: the source size
    ((33, 19, None, None), (34, 20, 33, 19)),  # odd source: padded, never scaled or cropped
    ((320, 180, 100, None), (100, 56, 100, 56)),  # width only: height follows (56.25 → 56)
    ((33, 19, 64, None), (64, 36, 64, 36)),  # the side that follows is even: no 1-pixel bar
    ((320, 180, 101, None), (102, 56, 101, 56)),  # an odd width asked: padded by one column
    ((320, 180, None, 90), (160, 90, 160, 90)),  # height only
    ((180, 320, None, 101), (56, 102, 56, 101)),
    ((320, 180, 640, 360), (640, 360, 640, 360)),  # same aspect: exact
    ((320, 180, 200, 200), (200, 200, 200, 112)),  # wider source in a square: bars top and bottom
    ((320, 180, 400, 100), (400, 100, 178, 100)),  # into a wider box: bars left and right
    ((320, 180, 101, 51), (102, 52, 90, 51)),  # odd box: content fits it, canvas padded
    ((7680, 16, 100, None), (100, 2, 100, 2)),  # extreme aspect: never below 2 pixels
    ((16, 7680, 100, 100), (100, 100, 2, 100)),
    ((16, 7680, None, 16), (2, 16, 2, 16)),
]


@pytest.mark.parametrize(("given", "expected"), FITS, ids=[str(given) for given, _ in FITS])
def test_fit(given: tuple[int, int, int | None, int | None], expected: tuple[int, int, int, int]) -> None:
    frame = Frame.fit(*given)
    assert (frame.width, frame.height, frame.content_width, frame.content_height) == expected


@pytest.mark.parametrize("source", [(64, 36), (33, 19), (1920, 1080), (1080, 1920), (7680, 16), (17, 4001)])
@pytest.mark.parametrize("asked", [(None, None), (100, None), (None, 77), (101, 51), (640, 640), (16, 7680)])
def test_fit_keeps_the_aspect_and_even_sides(
    source: tuple[int, int], asked: tuple[int | None, int | None]
) -> None:
    frame = Frame.fit(*source, *asked)
    canvas, content = (frame.width, frame.height), (frame.content_width, frame.content_height)
    for side in (0, 1):
        assert canvas[side] % 2 == 0 and 2 <= content[side] <= canvas[side]
        wanted = asked[side]
        if wanted is not None:
            assert canvas[side] == wanted + wanted % 2  # as asked, padded to even
        else:
            assert canvas[side] == content[side] + content[side] % 2  # no bar beyond the padding to even
    if asked == (None, None):
        assert content == source
    elif min(content) > 2:  # never stretched: each side within a pixel of the exact size
        assert abs(content[0] * source[1] - content[1] * source[0]) <= source[0] + source[1]


def test_filters_scale_then_centre() -> None:
    assert Frame.fit(64, 36, None, None).filters(64, 36) == []
    assert Frame.fit(33, 19, None, None).filters(33, 19) == ["pad=34:20:0:0:color=black"]
    assert Frame.fit(320, 180, 160, None).filters(320, 180) == ["scale=160:90:flags=bicubic"]
    assert Frame.fit(320, 180, 200, 200).filters(320, 180, "in_range=tv:out_range=tv") == [
        "scale=200:112:flags=bicubic:in_range=tv:out_range=tv",
        "pad=200:200:0:44:color=black",
    ]
    assert Frame.fit(320, 180, 400, 100).filters(320, 180)[1] == "pad=400:100:111:0:color=black"
    # range options alone still need a scale, to keep the range
    assert Frame.fit(64, 36, None, None).filters(64, 36, "in_range=pc:out_range=pc") == [
        "scale=64:36:flags=bicubic:in_range=pc:out_range=pc"
    ]


def test_partial_path() -> None:
    assert partial_path(Path("/job/output.mp4")) == Path("/job/output.partial.mp4")


# --- run_render -----------------------------------------------------------------------------------


def _lavfi_render(target: Path, frames: int = 10) -> list[str]:
    """An ffmpeg command writing ``frames`` 64x36 frames (10/s) to ``partial_path(target)``."""
    return ["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-f", "lavfi",
            "-i", f"testsrc2=s=64x36:r=10:d={frames / 10}", "-c:v", "libx264", "-pix_fmt", "yuv420p",
            "-f", "mp4", f"file:{partial_path(target)}"]  # fmt: skip


def test_a_render_reports_frames_and_its_output_is_checked_and_moved(tmp_path: Path) -> None:
    target = tmp_path / "out.mp4"
    seen: list[int] = []
    run_render(_lavfi_render(target, 30), tools=Tools(), name="render", on_frames=seen.append)
    assert seen and seen == sorted(seen) and seen[-1] == 30
    output = finish_output(target, Tools(), X264, written=seen[-1], expected=30)
    assert (output.path, output.frames, output.width, output.height) == (target, 30, 64, 36)
    assert (output.encoder, output.audio) == ("libx264", False)
    assert list(tmp_path.iterdir()) == [target]
    assert children() == []


def test_a_failing_ffmpeg_is_an_encode_failure_with_its_reason(tmp_path: Path) -> None:
    args = tmp_path / "args"
    script = _script(tmp_path / "fails", f'echo "$@" > {args}\necho "fake: no such encoder" >&2\nexit 1')
    with pytest.raises(EncodeFailed, match="exit status 1") as caught:
        run_render([str(script), "-i", "x"], tools=Tools(ffmpeg=str(script)), name="fake", on_frames=print)
    assert "fake: no such encoder" in str(caught.value) and caught.value.retryable
    # progress on stdout, every half second, before the caller's arguments
    assert args.read_text().split() == ["-progress", "pipe:1", "-nostats", "-stats_period", "0.5", "-i", "x"]


def test_input_glitches_then_an_output_failure_is_still_retryable(tmp_path: Path) -> None:
    """ffmpeg logs decode errors it recovers from; a full disk after them is not the source's fault."""
    lines = ["Error while decoding stream #0:0: Invalid data found when processing input",
             "[mp4 @ 0x1] av_interleaved_write_frame(): No space left on device"]  # fmt: skip
    script = _script(tmp_path / "full", "\n".join(f'echo "{line}" >&2' for line in lines) + "\nexit 1")
    with pytest.raises(EncodeFailed, match="No space left") as caught:
        run_render([str(script)], tools=Tools(ffmpeg=str(script)), name="fake", on_frames=print)
    assert caught.value.retryable


def test_a_source_ffmpeg_cannot_decode_is_a_decode_failure(clips: Clips, tmp_path: Path) -> None:
    """ffmpeg failing on its input (a file cut short) is a damaged source, not a retryable encoder fault."""
    source = clips("cut")
    args = ["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", *input_args(source, "mov"),
            "-c:v", "libx264", "-f", "mp4", f"file:{tmp_path / 'out.mp4'}"]  # fmt: skip
    with pytest.raises(DecodeFailed, match="exit status 1") as caught:
        run_render(args, tools=Tools(), name="render", on_frames=print)
    assert caught.value.code == "DECODE_FAILED" and not caught.value.retryable


@pytest.fixture
def hung(tmp_path: Path) -> Iterator[Hung]:
    """Says nothing and sleeps."""
    yield from fake_ffmpeg(tmp_path, "hung-ffmpeg", "sleep 300")


@pytest.fixture
def chatty(tmp_path: Path) -> Iterator[Hung]:
    """Reports a frame every 20 ms forever."""
    yield from fake_ffmpeg(
        tmp_path, "chatty-ffmpeg", 'i=0\nwhile :; do i=$((i+1)); echo "frame=$i"; sleep 0.02; done'
    )


class Stop(Exception):
    pass


def _stop_at(count: int, seen: list[int]) -> Callable[[int], None]:
    def on_frames(done: int) -> None:
        seen.append(done)
        if len(seen) == count:
            raise Stop

    return on_frames


def test_an_error_from_on_frames_kills_the_group_and_propagates(chatty: Hung) -> None:
    seen: list[int] = []
    tools = Tools(ffmpeg=str(chatty.script), stall_timeout=10)
    with pytest.raises(Stop):
        run_render([str(chatty.script)], tools=tools, name="fake", on_frames=_stop_at(3, seen))
    assert seen == [1, 2, 3]
    pid, grandchild = chatty.wait_for_pids()
    _assert_group_gone(pid, pid, grandchild)


def test_an_error_from_on_frames_stops_a_real_render(tmp_path: Path) -> None:
    target = tmp_path / "out.mp4"
    seen: list[int] = []
    with pytest.raises(Stop):  # hours of video at the speed ffmpeg manages here
        run_render(_lavfi_render(target, 100_000), tools=Tools(), name="render", on_frames=_stop_at(2, seen))
    assert seen[-1] < 100_000
    assert children() == []


def test_a_render_that_reports_nothing_is_killed(hung: Hung) -> None:
    tools = Tools(ffmpeg=str(hung.script), stall_timeout=STALL)
    started = time.monotonic()
    with pytest.raises(MediaTimeout, match="made no progress") as caught:
        run_render([str(hung.script)], tools=tools, name="fake", on_frames=print)
    assert time.monotonic() - started < STALL + 3
    assert caught.value.code == "MEDIA_TIMEOUT"
    pid, grandchild = hung.wait_for_pids()
    _assert_group_gone(pid, pid, grandchild)


# --- finish_output --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A 10-frame MP4, written once; each test puts a copy where a render would leave it."""
    target = tmp_path_factory.mktemp("render") / "ten.mp4"
    subprocess.run(_lavfi_render(target, 10), check=True)
    return partial_path(target).read_bytes()


@pytest.fixture
def target(tmp_path: Path, rendered: bytes) -> Path:
    path = tmp_path / "output.mp4"
    partial_path(path).write_bytes(rendered)
    return path


@pytest.mark.parametrize("expected", [10, 12, 8])
def test_finish_moves_a_complete_render(target: Path, expected: int) -> None:
    """Up to 2 frames (or 1 %) short of the estimate is a rounding of the estimate, not a truncation."""
    output = finish_output(target, Tools(), X264, written=10, expected=expected)
    assert output.frames == 10 and target.is_file() and not partial_path(target).exists()


@pytest.mark.parametrize("written", [9, 11])
def test_finish_refuses_a_file_that_does_not_hold_what_ffmpeg_encoded(target: Path, written: int) -> None:
    with pytest.raises(FrameCountMismatch, match=f"encoded {written} frames but the file holds 10"):
        finish_output(target, Tools(), X264, written=written, expected=10)
    assert not target.exists()


def test_finish_refuses_a_render_far_short_of_the_source(target: Path) -> None:
    with pytest.raises(DecodeFailed, match="rendered 10 frames of about 13") as caught:
        finish_output(target, Tools(), X264, written=10, expected=13)
    assert caught.value.code == "DECODE_FAILED" and not target.exists()


def test_finish_refuses_an_unreadable_render(tmp_path: Path) -> None:
    target = tmp_path / "output.mp4"
    partial_path(target).write_bytes(b"not an mp4 at all")
    with pytest.raises(EncodeFailed, match="does not read back"):
        finish_output(target, Tools(), X264, written=10, expected=10)
    assert not target.exists()
