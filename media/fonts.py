"""Font files for the caption renderer, found through fontconfig and checked to cover the text.

libass exits 0 and burns in tofu boxes, or nothing, when the font it is asked
for is missing or lacks the text's glyphs. So before a render every font family
a scenario names is looked up with ``fc-list`` *together with* the characters it
must draw (``:charset=``): a family that is not installed, or that lacks a
glyph, is refused with :class:`FontUnavailable`. The files found are linked
into one directory, the ``fontsdir`` handed to ffmpeg's ``ass`` filter, so the
render uses exactly the faces that were checked.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from errors import ErrorCode
from media.errors import MediaError
from media.process import run_captured

log = logging.getLogger(__name__)

FC_TIMEOUT = 15.0
"""Seconds one ``fc-list`` run may take."""

_PATTERN_SPECIALS = re.compile(r"([\\\-:,])")


class FontUnavailable(MediaError):
    """A caption font is not installed or cannot draw some of the caption's characters.

    Retryable: the scenario is fine, this host lacks the font (``make setup``
    installs fonts-noto-cjk); another worker may have it.
    """

    code = ErrorCode.FONT_UNAVAILABLE
    retryable = True


@dataclass(frozen=True)
class FontFile:
    """One installed face: its file, the face index inside it (``.ttc`` collections) and family."""

    path: Path
    index: int
    family: str


def resolve_font(
    family: str, text: str, *, fc_list: str = "fc-list", timeout: float = FC_TIMEOUT
) -> FontFile:
    """The installed face of ``family`` that has a glyph for every character of ``text``.

    Whitespace and control characters in ``text`` are not checked. A regular
    (upright, normal weight) face is preferred over other styles of the family.
    Raises :class:`FontUnavailable` when the family is missing or no face of it
    covers the text; the message names the family and up to ten missing characters.
    """
    needed = set(needed_codepoints(text))
    faces = _list_faces(family, fc_list, timeout)
    if not faces:
        raise FontUnavailable(f"font {family!r} is not installed")
    covering = [face for face in faces if needed <= face.charset]
    if not covering:
        best = min(faces, key=lambda face: len(needed - face.charset))
        missing = "".join(chr(point) for point in sorted(needed - best.charset)[:10])
        raise FontUnavailable(f"font {family!r} has no glyphs for {missing!r} in the caption text")
    return min(covering, key=_style_rank).font


def fonts_dir(fonts: Iterable[FontFile], directory: Path) -> Path:
    """Link each font file into ``directory`` (created) and return it: the ``fontsdir`` for libass.

    Links rather than copies (CJK collections are 20 MB each); a file already
    linked is not linked again, and two files of the same name get distinct links.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for font in fonts:
        target = font.path.resolve()
        for attempt in itertools.count():
            link = directory / (f"{attempt}-{target.name}" if attempt else target.name)
            if not link.exists():
                link.symlink_to(target)
                break
            if link.resolve() == target:
                break
    return directory


def needed_codepoints(text: str) -> list[int]:
    """Sorted distinct code points of ``text`` a font must have: whitespace and controls excluded."""
    return sorted({ord(char) for char in text if not char.isspace() and char.isprintable()})


@dataclass(frozen=True)
class _Face:
    font: FontFile
    style: str
    charset: frozenset[int]


def _list_faces(family: str, fc_list: str, timeout: float) -> list[_Face]:
    """Every installed face whose family names include ``family`` (fontconfig's case-insensitive match)."""
    args = [fc_list, "--format=%{file}\\t%{index}\\t%{style}\\t%{charset}\\n", _escape_pattern(family)]
    status, out, err = run_captured(args, name="fc-list", timeout=timeout)
    if status != 0:
        raise FontUnavailable(f"fc-list failed for font {family!r}: {err or f'exit status {status}'}")
    faces = []
    for line in out.decode("utf-8", "replace").splitlines():
        fields = line.split("\t")
        if len(fields) == 4 and fields[1].isdigit():
            font = FontFile(Path(fields[0]), int(fields[1]), family)
            faces.append(_Face(font, fields[2], _parse_charset(fields[3])))
    return faces


def _parse_charset(ranges: str) -> frozenset[int]:
    """fontconfig's ``%{charset}`` (``"20-7e a0 ac00-d7a3"``, hex) as a set of code points."""
    points: set[int] = set()
    for item in ranges.split():
        low, _, high = item.partition("-")
        points.update(range(int(low, 16), int(high or low, 16) + 1))
    return frozenset(points)


def _style_rank(face: _Face) -> tuple[int, str, int]:
    """Sort key: regular faces first, then by file name and index for a stable choice."""
    styles = {style.strip().lower() for style in face.style.split(",")}
    return (0 if styles & {"regular", "book", "normal"} else 1, str(face.font.path), face.font.index)


def _escape_pattern(family: str) -> str:
    """``family`` as a fontconfig pattern element (``-``, ``:``, ``,`` and ``\\`` escaped)."""
    return _PATTERN_SPECIALS.sub(r"\\\1", family)
