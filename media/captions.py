"""Caption scenarios (spec §3) → an ASS script that libass burns in during the one encode.

Units: times in seconds from the start of the video; ``size``, ``outline``,
``shadow`` and margins in output pixels (the script's ``PlayResX/PlayResY`` is
the output size, so nothing is rescaled); ``x``/``y`` are fractions 0–1 of the
output width/height, so one scenario positions the same on any resolution.
Colours are CSS-like ``#RRGGBB`` or ``#RRGGBBAA`` (``AA`` = opacity, ``FF`` opaque).

User text is text: every ``\\`` is followed by a WORD JOINER (U+2060, invisible,
zero width) so it cannot start ``\\N``, ``\\h`` or ``\\{``; ``{`` and ``}`` are
written as libass's escapes ``\\{`` and ``\\}``, so no override block can open;
line breaks become ``\\N`` and other control characters are dropped, so a
``Dialogue`` line cannot be ended early.

Animations (times in ms from the cue's start):

* ``fade``: ``\\fad`` in and out, each a third of the cue at most ``FADE_MS``.
* ``pop``: scale 60 % → 100 % over ``POP_MS`` (``\\t`` on ``\\fscx\\fscy``).
* ``slide-up``: ``\\move`` from ``size`` pixels below the anchor over ``SLIDE_MS``, with a fade in.
* ``typewriter``: each character starts transparent and turns opaque (``\\t`` on
  ``\\1a\\3a\\4a``) at a constant rate, the whole text shown by 60 % of the cue
  and at most ``TYPE_MS`` per character. ``\\k`` was not used: its unrevealed
  characters would still show their outline and shadow.
* ``karaoke``: ``\\kf`` sweeps from ``color`` to ``karaokeColor`` word by word,
  timed by ``words`` (their texts, joined by spaces, are what is shown); without
  ``words`` the cue text's whitespace-separated tokens share the cue evenly.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from errors import ErrorCode
from media import fonts as _fonts
from media.errors import MediaError

FADE_MS = 300
POP_MS = 200
SLIDE_MS = 300
TYPE_MS = 80
WORD_JOINER = "\u2060"

_COLOR = re.compile(r"#[0-9A-Fa-f]{6}([0-9A-Fa-f]{2})?")
_FONT = re.compile(r"\w[\w .\-]{0,99}")
_ALIGN = {"left": 0, "center": 1, "right": 2}
_ROW = {"bottom": 1, "middle": 4, "top": 7}


class CaptionInvalid(MediaError):
    """A caption scenario that does not parse or breaks a limit; permanent."""

    code = ErrorCode.INPUT_INVALID
    retryable = False


@dataclass(frozen=True)
class CaptionLimits:
    """What a scenario may ask for. Times in seconds, sizes in output pixels, text in characters."""

    max_cues: int = 2000
    max_cue_text: int = 500
    max_total_text: int = 200_000
    max_words: int = 200
    max_time: float = 24 * 3600.0
    min_size: float = 8.0
    max_size: float = 300.0
    max_outline: float = 20.0
    max_shadow: float = 20.0
    max_margin: int = 2000
    max_json_bytes: int = 8 * 1024 * 1024


def _check_color(value: str) -> str:
    if not _COLOR.fullmatch(value):
        raise ValueError("expected #RRGGBB or #RRGGBBAA")
    return value.upper()


def _check_font(value: str) -> str:
    if not _FONT.fullmatch(value):
        raise ValueError("expected a font family name (letters, digits, spaces, '-', '.', '_')")
    return value


Color = Annotated[str, AfterValidator(_check_color)]
FontName = Annotated[str, AfterValidator(_check_font)]
Fraction01 = Annotated[float, Field(ge=0.0, le=1.0)]


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, allow_inf_nan=False, extra="ignore"
    )


class StyleOverride(_Model):
    """A cue's partial style: fields left out (``None``) come from the scenario's style."""

    font: FontName | None = None
    size: float | None = None
    color: Color | None = None
    outline: float | None = None
    outline_color: Color | None = None
    shadow: float | None = None
    shadow_color: Color | None = None
    karaoke_color: Color | None = None
    bold: bool | None = None
    position: Literal["top", "middle", "bottom"] | None = None
    alignment: Literal["left", "center", "right"] | None = None
    x: Fraction01 | None = None
    y: Fraction01 | None = None
    margin_x: int | None = None
    margin_y: int | None = None


class Style(_Model):
    """The scenario-wide style. ``x``/``y`` (fractions of the output size), when both given,
    place the text's anchor (from ``position`` and ``alignment``) at that point."""

    font: FontName = "Noto Sans CJK KR"
    size: float = 48.0
    color: Color = "#FFFFFF"
    outline: float = 3.0
    outline_color: Color = "#000000"
    shadow: float = 0.0
    shadow_color: Color = "#00000080"
    karaoke_color: Color = "#FFD400"
    bold: bool = False
    position: Literal["top", "middle", "bottom"] = "bottom"
    alignment: Literal["left", "center", "right"] = "center"
    x: Fraction01 | None = None
    y: Fraction01 | None = None
    margin_x: int = 40
    margin_y: int = 40

    def merged(self, override: StyleOverride | None) -> Style:
        """This style with the fields ``override`` sets replaced."""
        if override is None:
            return self
        return self.model_copy(update=override.model_dump(exclude_none=True))


_StyleT = TypeVar("_StyleT", Style, StyleOverride)


class Word(_Model):
    """One word of a cue with its own timing (seconds, inside the cue)."""

    start: float
    end: float
    text: str


class Cue(_Model):
    start: float
    end: float
    text: str = ""
    style: StyleOverride | None = None
    animation: Literal["none", "fade", "pop", "slide-up", "typewriter", "karaoke"] = "none"
    words: list[Word] = Field(default_factory=list)


class Scenario(_Model):
    version: str = "1.3"
    style: Style = Field(default_factory=Style)
    cues: list[Cue] = Field(default_factory=list)

    model_config = ConfigDict(coerce_numbers_to_str=True)


def parse_scenario(raw: Mapping[str, Any] | str | bytes, limits: CaptionLimits | None = None) -> Scenario:
    """Validate a scenario (a mapping or JSON text) against ``limits``.

    Raises :class:`CaptionInvalid` (``INPUT_INVALID``) whose message names the
    offending field, e.g. ``cues[3].end``.
    """
    limits = limits or CaptionLimits()
    data = _load(raw, limits) if isinstance(raw, str | bytes) else raw
    if not isinstance(data, Mapping):
        raise CaptionInvalid("scenario: expected a JSON object")
    cues = data.get("cues")
    if isinstance(cues, list) and len(cues) > limits.max_cues:  # before pydantic builds them all
        raise CaptionInvalid(f"cues: {len(cues)} cues, at most {limits.max_cues} allowed")
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as error:
        raise CaptionInvalid(_describe(error)) from None
    _check_scenario(scenario, limits)
    return scenario


def _load(raw: str | bytes, limits: CaptionLimits) -> object:
    if len(raw) > limits.max_json_bytes:
        raise CaptionInvalid(f"scenario: {len(raw)} bytes, at most {limits.max_json_bytes} allowed")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise CaptionInvalid(f"scenario: not valid JSON ({error})") from None


def _describe(error: ValidationError) -> str:
    """The first validation error as ``field.path[i]: message``."""
    first = error.errors(include_url=False)[0]
    path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"])
    return f"{path.lstrip('.') or 'scenario'}: {first['msg']}"


def _check_scenario(scenario: Scenario, limits: CaptionLimits) -> None:
    _check_style(scenario.style, "style", limits)
    total = 0
    for index, cue in enumerate(scenario.cues):
        where = f"cues[{index}]"
        _check_cue(cue, where, limits)
        _check_style(scenario.style.merged(cue.style), f"{where}.style", limits)
        total += len(cue.text) + sum(len(word.text) for word in cue.words)
        if total > limits.max_total_text:
            raise CaptionInvalid(f"{where}.text: total caption text over {limits.max_total_text} characters")


def _check_cue(cue: Cue, where: str, limits: CaptionLimits) -> None:
    _check_span(cue.start, cue.end, where, limits)
    if len(cue.text) > limits.max_cue_text:
        raise CaptionInvalid(f"{where}.text: {len(cue.text)} characters, at most {limits.max_cue_text}")
    if not cue.text.strip() and not cue.words:
        raise CaptionInvalid(f"{where}.text: empty (and no words)")
    if len(cue.words) > limits.max_words:
        raise CaptionInvalid(f"{where}.words: {len(cue.words)} words, at most {limits.max_words}")
    previous_end = cue.start
    for index, word in enumerate(cue.words):
        at = f"{where}.words[{index}]"
        _check_span(word.start, word.end, at, limits)
        if word.start < previous_end - 1e-6 or word.end > cue.end + 1e-6:
            raise CaptionInvalid(f"{at}: words must lie inside their cue, in order, without overlap")
        if len(word.text) > limits.max_cue_text:
            raise CaptionInvalid(f"{at}.text: {len(word.text)} characters, at most {limits.max_cue_text}")
        previous_end = word.end


def _check_span(start: float, end: float, where: str, limits: CaptionLimits) -> None:
    if start < 0:
        raise CaptionInvalid(f"{where}.start: negative time {start:g} s")
    if end <= start:
        raise CaptionInvalid(f"{where}.end: {end:g} s is not after start {start:g} s")
    if end > limits.max_time:
        raise CaptionInvalid(f"{where}.end: {end:g} s is past the {limits.max_time:g} s limit")


def _check_style(style: Style, where: str, limits: CaptionLimits) -> None:
    checks = [
        ("size", style.size, limits.min_size, limits.max_size),
        ("outline", style.outline, 0.0, limits.max_outline),
        ("shadow", style.shadow, 0.0, limits.max_shadow),
        ("marginX", style.margin_x, 0, limits.max_margin),
        ("marginY", style.margin_y, 0, limits.max_margin),
    ]
    for name, value, low, high in checks:
        if not low <= value <= high:
            raise CaptionInvalid(f"{where}.{name}: {value:g} outside {low:g}..{high:g}")
    if (style.x is None) != (style.y is None):
        raise CaptionInvalid(f"{where}.x: x and y must be given together")


# --- scenario → ASS -------------------------------------------------------------------------------

_STYLE_FORMAT = (
    "Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, Italic, "
    "Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, Alignment, "
    "MarginL, MarginR, MarginV, Encoding"
)
_EVENT_FORMAT = "Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text"


def to_ass(scenario: Scenario, width: int, height: int) -> str:
    """A complete ASS script for an output of ``width`` x ``height`` pixels (PlayRes = output size).

    Long lines wrap within the width less the margins (``WrapStyle: 0``, smart wrapping).
    """
    header = [
        "[Script Info]", "ScriptType: v4.00+", f"PlayResX: {width}", f"PlayResY: {height}",
        "WrapStyle: 0", "ScaledBorderAndShadow: yes", "YCbCr Matrix: None", "",
        "[V4+ Styles]", f"Format: {_STYLE_FORMAT}", _style_line(scenario.style), "",
        "[Events]", f"Format: {_EVENT_FORMAT}",
    ]  # fmt: skip
    events = [_dialogue(cue, scenario.style, width, height) for cue in scenario.cues]
    return "\n".join([*header, *events]) + "\n"


def _style_line(style: Style) -> str:
    fields = [
        "Default", style.font, f"{style.size:g}", ass_color(style.color), ass_color(style.color),
        ass_color(style.outline_color), ass_color(style.shadow_color), "-1" if style.bold else "0",
        "0", "0", "0", "100", "100", "0", "0", "1", f"{style.outline:g}", f"{style.shadow:g}",
        str(_an(style)), str(style.margin_x), str(style.margin_x), str(style.margin_y), "1",
    ]  # fmt: skip
    return "Style: " + ",".join(fields)


def _dialogue(cue: Cue, base: Style, width: int, height: int) -> str:
    style = base.merged(cue.style)
    start, end = _centiseconds(cue.start), _centiseconds(cue.end)
    end = max(end, start + 1)
    tags = _style_tags(style) if cue.style is not None else ""
    tags += f"\\an{_an(style)}" + _motion_tags(cue, style, width, height, (end - start) * 10)
    body = _animated_text(cue, style, (end - start) * 10)
    margins = f"{style.margin_x},{style.margin_x},{style.margin_y}"
    return f"Dialogue: 0,{_timestamp(start)},{_timestamp(end)},Default,,{margins},,{{{tags}}}{body}"


def _style_tags(style: Style) -> str:
    """Override tags that restate every field of ``style`` (a cue with its own style)."""
    return (
        f"\\fn{style.font}\\fs{style.size:g}\\b{int(style.bold)}"
        f"\\1c{_bgr(style.color)}\\1a{_alpha(style.color)}"
        f"\\3c{_bgr(style.outline_color)}\\3a{_alpha(style.outline_color)}"
        f"\\4c{_bgr(style.shadow_color)}\\4a{_alpha(style.shadow_color)}"
        f"\\bord{style.outline:g}\\shad{style.shadow:g}"
    )


def _motion_tags(cue: Cue, style: Style, width: int, height: int, duration_ms: int) -> str:
    """Position and the cue-wide animation tags (fade, pop, slide-up)."""
    x, y = _anchor(style, width, height)
    if cue.animation == "slide-up":
        fade = min(FADE_MS, duration_ms // 3)
        rise = round(style.size)
        return f"\\move({x},{y + rise},{x},{y},0,{min(SLIDE_MS, duration_ms)})\\fad({fade},0)"
    tags = f"\\pos({x},{y})" if style.x is not None else ""
    if cue.animation == "fade":
        fade = min(FADE_MS, duration_ms // 3)
        tags += f"\\fad({fade},{fade})"
    elif cue.animation == "pop":
        tags += f"\\fscx60\\fscy60\\t(0,{min(POP_MS, duration_ms)},\\fscx100\\fscy100)"
    return tags


def _anchor(style: Style, width: int, height: int) -> tuple[int, int]:
    """The text's anchor point in output pixels: ``x``/``y`` when given, else from position and margins."""
    if style.x is not None and style.y is not None:
        return round(style.x * width), round(style.y * height)
    xs = {"left": style.margin_x, "center": width // 2, "right": width - style.margin_x}
    ys = {"top": style.margin_y, "middle": height // 2, "bottom": height - style.margin_y}
    return xs[style.alignment], ys[style.position]


def _animated_text(cue: Cue, style: Style, duration_ms: int) -> str:
    if cue.animation == "karaoke":
        return _karaoke(cue, style)
    if cue.animation == "typewriter":
        return _typewriter(cue.text, style, duration_ms)
    return "".join(escape_units(cue.text))


def _typewriter(text: str, style: Style, duration_ms: int) -> str:
    """Each character turns from transparent to its colours' alpha at a constant rate."""
    units = escape_units(text)
    step = min(TYPE_MS, duration_ms * 0.6 / max(len(units), 1))
    shown = f"\\1a{_alpha(style.color)}\\3a{_alpha(style.outline_color)}\\4a{_alpha(style.shadow_color)}"
    parts = []
    for index, unit in enumerate(units):
        at = round(index * step)
        parts.append(f"{{\\1a&HFF&\\3a&HFF&\\4a&HFF&\\t({at},{at + 1},{shown})}}{unit}")
    return "".join(parts)


def _karaoke(cue: Cue, style: Style) -> str:
    """``\\kf`` syllables from the cue's words (or its tokens spread evenly over the cue)."""
    words = cue.words or _even_words(cue)
    colors = f"{{\\1c{_bgr(style.karaoke_color)}\\2c{_bgr(style.color)}\\2a{_alpha(style.color)}}}"
    parts, clock = [colors], _centiseconds(cue.start)
    for index, word in enumerate(words):
        start, end = _centiseconds(word.start), _centiseconds(word.end)
        if start > clock:
            parts.append(f"{{\\k{start - clock}}}")
        space = " " if index else ""
        parts.append(f"{space}{{\\kf{max(end - max(start, clock), 0)}}}{''.join(escape_units(word.text))}")
        clock = max(end, clock)
    return "".join(parts)


def _even_words(cue: Cue) -> list[Word]:
    tokens = cue.text.split() or [cue.text]
    share = (cue.end - cue.start) / len(tokens)
    return [Word(start=cue.start + i * share, end=cue.start + (i + 1) * share, text=token)
            for i, token in enumerate(tokens)]  # fmt: skip


def escape_units(text: str) -> list[str]:
    """``text`` as ASS text, one entry per visible character, none able to form a tag.

    ``\\`` → ``\\`` + WORD JOINER; ``{``/``}`` → ``\\{``/``\\}``; a line break
    (``\\r\\n``, ``\\r``, ``\\n``, U+2028/9) → ``\\N``; tabs → space; other
    control characters dropped.
    """
    units = []
    for char in text.replace("\r\n", "\n").replace("\r", "\n"):
        if char in "\n\u2028\u2029":
            units.append("\\N")
        elif char == "\t":
            units.append(" ")
        elif char == "\\":
            units.append("\\" + WORD_JOINER)
        elif char in "{}":
            units.append("\\" + char)
        elif unicodedata.category(char) != "Cc":
            units.append(char)
    return units


def escape_text(text: str) -> str:
    """``text`` as ASS dialogue text that renders literally (see :func:`escape_units`)."""
    return "".join(escape_units(text))


def _an(style: Style) -> int:
    """The ``\\an`` numpad code: rows bottom 1–3, middle 4–6, top 7–9; columns left, center, right."""
    return _ROW[style.position] + _ALIGN[style.alignment]


def ass_color(color: str) -> str:
    """``#RRGGBB[AA]`` (AA = opacity) → ASS ``&HAABBGGRR`` (AA = transparency, 00 opaque)."""
    red, green, blue, opacity = _rgba(color)
    return f"&H{255 - opacity:02X}{blue:02X}{green:02X}{red:02X}"


def _bgr(color: str) -> str:
    red, green, blue, _ = _rgba(color)
    return f"&H{blue:02X}{green:02X}{red:02X}&"


def _alpha(color: str) -> str:
    return f"&H{255 - _rgba(color)[3]:02X}&"


def _rgba(color: str) -> tuple[int, int, int, int]:
    digits = color.lstrip("#") + ("FF" if len(color) == 7 else "")
    red, green, blue, opacity = (int(digits[i : i + 2], 16) for i in range(0, 8, 2))
    return red, green, blue, opacity


def _centiseconds(seconds: float) -> int:
    return round(seconds * 100)


def _timestamp(centiseconds: int) -> str:
    """``h:mm:ss.cc`` as ASS writes times."""
    hours, rest = divmod(centiseconds, 360_000)
    minutes, rest = divmod(rest, 6000)
    return f"{hours}:{minutes:02d}:{rest // 100:02d}.{rest % 100:02d}"


def recolored(scenario: Scenario, convert: Callable[[str], str]) -> Scenario:
    """``scenario`` with every colour (scenario style and cue overrides) passed through ``convert``."""

    def style(model: _StyleT) -> _StyleT:
        update = {name: convert(value) for name, value in model if name.endswith("color") and value}
        return model.model_copy(update=update)

    cues = [cue.model_copy(update={"style": style(cue.style)}) if cue.style else cue for cue in scenario.cues]
    return scenario.model_copy(update={"style": style(scenario.style), "cues": cues})


# --- fonts and the ffmpeg filter ------------------------------------------------------------------


def scenario_text_by_font(scenario: Scenario) -> dict[str, str]:
    """Every font family the scenario uses, with all the text drawn in it."""
    texts: dict[str, list[str]] = {}
    for cue in scenario.cues:
        family = scenario.style.merged(cue.style).font
        texts.setdefault(family, []).extend([cue.text, *(word.text for word in cue.words)])
    return {family: "".join(parts) for family, parts in texts.items()}


def prepare_fonts(scenario: Scenario, directory: Path) -> Path:
    """Resolve every font of ``scenario`` against its text and link them into ``directory``.

    Returns the ``fontsdir`` for :func:`ass_filter`. Raises
    :class:`media.fonts.FontUnavailable` before any render when a font is missing
    or lacks glyphs.
    """
    fonts: list[_fonts.FontFile] = [
        _fonts.resolve_font(family, text) for family, text in scenario_text_by_font(scenario).items()
    ]
    return _fonts.fonts_dir(fonts, directory)


def ass_filter(ass_path: Path, fonts_dir: Path) -> str:
    """The ffmpeg filter that burns ``ass_path`` in, fonts from ``fonts_dir`` (escaped for a filtergraph).

    Two levels of escaping, innermost first: the option value (``\\``, ``'``,
    ``:``) and then the filter's arguments within the graph (``\\``, ``'``,
    ``[``, ``]``, ``,``, ``;``).
    """
    options = f"filename={_escape_value(str(ass_path))}:fontsdir={_escape_value(str(fonts_dir))}"
    return "ass=" + re.sub(r"([\\'\[\],;])", r"\\\1", options)


def _escape_value(value: str) -> str:
    return re.sub(r"([\\':])", r"\\\1", value)
