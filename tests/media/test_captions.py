"""Captions: scenario validation, the ASS script, fonts, and real libass renders checked pixel by pixel.

Renders burn a script into a black 320x180 ``color`` source (10 fps, 2 s) with
the same ``format=rgb24,ass=…`` chain the encode pipe uses, decoded to RGB arrays.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from media.captions import (
    WORD_JOINER,
    CaptionInvalid,
    CaptionLimits,
    Scenario,
    ass_color,
    ass_filter,
    escape_text,
    parse_scenario,
    prepare_fonts,
    to_ass,
)
from media.fonts import FontUnavailable, resolve_font
from tests.clips import FFMPEG

WIDTH, HEIGHT, FPS, SECONDS = 320, 180, 10, 2
KOREAN = "Noto Sans CJK KR"


def _scenario(*cues: dict[str, Any], **style: Any) -> Scenario:
    return parse_scenario({"version": "1.3", "style": {"size": 32, **style}, "cues": list(cues)})


def _render_script(script: str, directory: Path, fonts: Path) -> np.ndarray:
    """Frames ``(n, H, W, 3)`` of ``script`` burnt into black, fonts from ``fonts``."""
    path = directory / "captions.ass"
    path.write_text(script, encoding="utf-8")
    source = f"color=c=black:s={WIDTH}x{HEIGHT}:r={FPS}:d={SECONDS}"
    args = [*FFMPEG, "-f", "lavfi", "-i", source, "-vf", f"format=rgb24,{ass_filter(path, fonts)}",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]  # fmt: skip
    out = subprocess.run(args, check=True, capture_output=True).stdout
    return np.frombuffer(out, np.uint8).reshape(-1, HEIGHT, WIDTH, 3)


def _render(scenario: Scenario, directory: Path) -> np.ndarray:
    directory.mkdir(parents=True, exist_ok=True)
    fonts = prepare_fonts(scenario, directory / "fonts")
    return _render_script(to_ass(scenario, WIDTH, HEIGHT), directory, fonts)


def _frame(seconds: float) -> int:
    return round(seconds * FPS)


def _ink(frame: np.ndarray) -> np.ndarray:
    """Mask of pixels carrying text (the background is black)."""
    return np.asarray(frame.max(axis=2) > 60)


def _box(frame: np.ndarray) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` of the inked pixels."""
    rows, cols = np.nonzero(_ink(frame))
    assert rows.size, "nothing rendered"
    return int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())


@pytest.fixture(scope="module")
def blank(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    return _render(_scenario(), tmp_path_factory.mktemp("blank"))


# --- renders --------------------------------------------------------------------------------------


def test_caption_shows_only_while_its_cue_is_active(tmp_path: Path, blank: np.ndarray) -> None:
    frames = _render(_scenario({"start": 0.5, "end": 1.5, "text": "안녕하세요 hello"}), tmp_path)
    assert len(frames) == len(blank) == FPS * SECONDS
    for index in range(len(frames)):
        active = _frame(0.5) <= index < _frame(1.5)
        assert (not np.array_equal(frames[index], blank[index])) == active, f"frame {index}"


def test_fade_ramps_up(tmp_path: Path) -> None:
    frames = _render(_scenario({"start": 0.5, "end": 1.5, "text": "FADE", "animation": "fade"}), tmp_path)
    means = [float(frames[_frame(0.5) + step].mean()) for step in range(4)]  # 0, 100, 200, 300 ms in
    assert means == sorted(means) and len(set(means)) == 4, means
    assert float(frames[_frame(1.0)].mean()) == pytest.approx(means[3], rel=0.02)


@pytest.mark.parametrize(("position", "third"), [("top", 0), ("middle", 1), ("bottom", 2)])
def test_position_is_honoured(tmp_path: Path, position: str, third: int) -> None:
    frame = _render(
        _scenario({"start": 0, "end": 2, "text": "Where"}, position=position, size=24, marginY=8), tmp_path
    )[5]
    ink_by_third = [int(_ink(frame)[i * HEIGHT // 3 : (i + 1) * HEIGHT // 3].sum()) for i in range(3)]
    assert ink_by_third.index(max(ink_by_third)) == third
    assert sum(ink_by_third) - ink_by_third[third] < ink_by_third[third] // 10


def test_absolute_position_in_fractions(tmp_path: Path) -> None:
    cue = {"start": 0, "end": 2, "text": "x", "style": {"x": 0.25, "y": 0.25, "position": "middle"}}
    top, bottom, left, right = _box(_render(_scenario(cue), tmp_path)[5])
    assert top < HEIGHT / 4 < bottom and left < WIDTH / 4 < right


def test_korean_renders_glyphs(tmp_path: Path) -> None:
    def render(text: str, name: str) -> np.ndarray:
        frame: np.ndarray = _render(
            _scenario({"start": 0, "end": 2, "text": text}, font=KOREAN), tmp_path / name
        )[5]
        return frame

    hello, thanks, boxes = (
        render("안녕하세요", "hello"),
        render("감사합니다", "thanks"),
        render("□□□□□", "tofu"),
    )
    assert _ink(hello).sum() > 500
    for other in (thanks, boxes):
        assert (_ink(hello) != _ink(other)).sum() > 300


def test_korean_refused_for_a_latin_only_font() -> None:
    if shutil.which("fc-list") is None or not _installed("DejaVu Sans"):
        pytest.skip("DejaVu Sans not installed")
    with pytest.raises(FontUnavailable, match="no glyphs") as caught:
        resolve_font("DejaVu Sans", "hello 안녕하세요")
    assert caught.value.code == "FONT_UNAVAILABLE" and caught.value.retryable


def test_missing_font_is_refused() -> None:
    with pytest.raises(FontUnavailable, match="not installed"):
        resolve_font("No Such Family Anywhere", "abc")
    with pytest.raises(FontUnavailable):
        prepare_fonts(
            _scenario({"start": 0, "end": 1, "text": "a"}, font="No Such Family"), Path("/nonexistent")
        )


def test_font_resolution_checks_every_character() -> None:
    font = resolve_font(KOREAN, "안녕하세요 hello {}\\ 123")
    assert font.path.is_file() and font.family == KOREAN


def test_user_text_cannot_inject_tags(tmp_path: Path) -> None:
    text = "{\\pos(0,0)}\\N{\\fs200}"
    scenario = _scenario({"start": 0, "end": 2, "text": text})
    script = to_ass(scenario, WIDTH, HEIGHT)
    dialogue = script.splitlines()[-1]
    assert "{\\pos" not in script and "{\\fs200" not in dialogue and "\\N" not in dialogue.split("}", 1)[1]
    literal = _render(scenario, tmp_path / "literal")[5]
    x = _render(_scenario({"start": 0, "end": 2, "text": "x"}), tmp_path / "x")[5]
    top, bottom, left, right = _box(literal)
    x_top, x_bottom, x_left, x_right = _box(x)
    assert right - left > 8 * (x_right - x_left)  # all of it drawn, as text
    assert bottom > HEIGHT * 2 // 3 and left > 0  # not moved to (0, 0)
    assert bottom - top < 2 * (x_bottom - x_top) + 20  # one line: no break from the literal \N


def test_backslash_escape_is_invisible(tmp_path: Path) -> None:
    """``\\`` + WORD JOINER renders exactly as a lone trailing ``\\`` (which libass draws literally)."""
    scenario = _scenario({"start": 0, "end": 2, "text": "a\\"})
    fonts = prepare_fonts(scenario, tmp_path / "fonts")
    script = to_ass(scenario, WIDTH, HEIGHT)
    assert script.rstrip("\n").endswith("a\\" + WORD_JOINER)
    escaped = _render_script(script, tmp_path, fonts)[5]
    raw = _render_script(script.replace(WORD_JOINER, ""), tmp_path, fonts)[5]
    assert np.array_equal(escaped, raw)


def test_line_breaks_in_text_become_ass_breaks(tmp_path: Path) -> None:
    one = _render(_scenario({"start": 0, "end": 2, "text": "Ab"}), tmp_path / "one")[5]
    two = _render(_scenario({"start": 0, "end": 2, "text": "Ab\r\nAb"}), tmp_path / "two")[5]
    assert _box(two)[1] - _box(two)[0] > 1.6 * (_box(one)[1] - _box(one)[0])


def test_long_lines_wrap_inside_the_width(tmp_path: Path) -> None:
    text = "a caption far too long to fit on one line of this small output"
    frame = _render(_scenario({"start": 0, "end": 2, "text": text}, size=24, marginX=20), tmp_path)[5]
    top, bottom, left, right = _box(frame)
    assert left >= 15 and right <= WIDTH - 15 and bottom - top > 30  # two lines of 24 px


@pytest.mark.parametrize("animation", ["karaoke", "typewriter", "pop", "slide-up", "fade"])
def test_animations_render_and_move(tmp_path: Path, animation: str) -> None:
    words = [{"start": 0.2, "end": 0.8, "text": "하나"}, {"start": 0.9, "end": 1.6, "text": "둘셋"}]
    cue = {"start": 0.2, "end": 1.8, "text": "하나 둘셋", "animation": animation, "words": words}
    frames = _render(_scenario(cue, outline=1), tmp_path)
    early, late = frames[_frame(0.3)], frames[_frame(1.4)]
    assert _ink(late).sum() > 200 and not np.array_equal(early, late)
    assert not frames[_frame(1.8)].any()


def test_karaoke_highlights_sung_words(tmp_path: Path) -> None:
    words = [{"start": 0.0, "end": 0.5, "text": "AAA"}, {"start": 1.0, "end": 1.5, "text": "BBB"}]
    cue = {"start": 0, "end": 2, "text": "AAA BBB", "animation": "karaoke", "words": words}
    frame = _render(_scenario(cue, color="#FFFFFF", karaokeColor="#FF0000", outline=0), tmp_path)[7]
    top, bottom, left, right = _box(frame)
    middle = (left + right) // 2
    first, second = frame[top : bottom + 1, left:middle], frame[top : bottom + 1, middle : right + 1]
    assert (first[..., 0] > 150).sum() > 50 and (first[..., 1] > 150).sum() < 10  # red: sung
    assert (second[..., 1] > 150).sum() > 50  # white: not yet


# --- the filter string ----------------------------------------------------------------------------


def test_ass_filter_escapes_paths_for_the_graph(tmp_path: Path) -> None:
    weird = tmp_path / "we:ird 'dir,[x];\\"
    weird.mkdir()
    scenario = _scenario({"start": 0, "end": 2, "text": "path"})
    fonts = prepare_fonts(scenario, weird / "fo:nts'")
    frames = _render_script(to_ass(scenario, WIDTH, HEIGHT), weird, fonts)
    assert _ink(frames[5]).sum() > 100
    assert ass_filter(Path("/a:b/c'd"), Path("/f")) == "ass=filename=/a\\\\:b/c\\\\\\'d:fontsdir=/f"


# --- validation -----------------------------------------------------------------------------------

GOOD_CUE = {"start": 0.0, "end": 1.0, "text": "ok"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"cues": [{**GOOD_CUE, "end": 0.0}]}, "cues[0].end"),
        ({"cues": [{**GOOD_CUE, "start": 2.0, "end": 1.0}]}, "cues[0].end"),
        ({"cues": [{**GOOD_CUE, "start": -1.0}]}, "cues[0].start"),
        ({"style": {"size": 1000}}, "style.size"),
        ({"cues": [{**GOOD_CUE, "style": {"size": 1}}]}, "cues[0].style.size"),
        ({"style": {"outline": 50}}, "style.outline"),
        ({"cues": [GOOD_CUE] * 5000}, "cues"),
        ({"cues": [{**GOOD_CUE, "text": "x" * 10_000}]}, "cues[0].text"),
        ({"cues": [{**GOOD_CUE, "words": [{"start": 0.5, "end": 1.5, "text": "w"}]}]}, "cues[0].words[0]"),
        ({"cues": [{**GOOD_CUE, "words": [{"start": 0.5, "end": 0.6, "text": "b"},
                                          {"start": 0.1, "end": 0.2, "text": "a"}]}]}, "cues[0].words[1]"),
        ({"style": {"color": "red"}}, "style.color"),
        ({"style": {"font": "Evil}{\\pos(1,1)"}}, "style.font"),
        ({"style": {"position": "left"}}, "style.position"),
        ({"cues": [{**GOOD_CUE, "animation": "spin"}]}, "cues[0].animation"),
        ({"cues": [{**GOOD_CUE, "end": float("nan")}]}, "cues[0].end"),
        ({"cues": [{**GOOD_CUE, "text": "  "}]}, "cues[0].text"),
        ({"style": {"x": 0.5}}, "style.x"),
    ],
)  # fmt: skip
def test_invalid_scenarios_are_refused(change: dict[str, Any], field: str) -> None:
    with pytest.raises(CaptionInvalid) as caught:
        parse_scenario({"version": "1.3", "cues": [GOOD_CUE], **change})
    assert caught.value.code == "INPUT_INVALID" and not caught.value.retryable
    assert str(caught.value).startswith(field), str(caught.value)


def test_total_text_and_json_limits() -> None:
    cues = [{**GOOD_CUE, "text": "x" * 400}] * 10
    with pytest.raises(CaptionInvalid, match="total"):
        parse_scenario({"cues": cues}, CaptionLimits(max_total_text=3000))
    with pytest.raises(CaptionInvalid, match="JSON"):
        parse_scenario("{not json")
    with pytest.raises(CaptionInvalid, match="object"):
        parse_scenario("[1, 2]")


def test_json_text_with_camel_and_snake_case() -> None:
    camel = parse_scenario(
        '{"version": 1.3, "style": {"outlineColor": "#ff0000", "marginY": 10}, "cues": []}'
    )
    snake = parse_scenario({"style": {"outline_color": "#FF0000", "margin_y": 10}, "cues": []})
    assert camel.version == "1.3" and camel.style == snake.style


# --- the script -----------------------------------------------------------------------------------


def test_script_header_times_and_colours() -> None:
    cue = {"start": 3661.256, "end": 3662, "text": "t", "style": {"color": "#11223380"}}
    script = to_ass(_scenario(cue), 1920, 1080)
    assert "PlayResX: 1920\nPlayResY: 1080\nWrapStyle: 0" in script
    assert "Dialogue: 0,1:01:01.26,1:01:02.00,Default," in script
    assert "\\1c&H332211&\\1a&H7F&" in script
    assert ass_color("#FF0000") == "&H000000FF" and ass_color("#FF000000") == "&HFF0000FF"


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("{\\pos(0,0)}", "\\{\\" + WORD_JOINER + "pos(0,0)\\}"),
        ("a\nb\r\nc\rd", "a\\Nb\\Nc\\Nd"),
        ("tab\there\x00\x1b", "tab here"),
        ("\\N \\h", "\\" + WORD_JOINER + "N \\" + WORD_JOINER + "h"),
    ],
)
def test_escape_text(text: str, escaped: str) -> None:
    assert escape_text(text) == escaped


def _installed(family: str) -> bool:
    try:
        resolve_font(family, "a")
    except FontUnavailable:
        return False
    return True
