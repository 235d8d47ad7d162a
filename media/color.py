"""Colour tags: carried from source to output, and used for the YUV<->RGB matrices."""

from __future__ import annotations

from media.probe import Color

SCALE_MATRIX = {
    "bt709": "bt709",
    "smpte170m": "smpte170m",
    "bt470bg": "bt470",
    "smpte240m": "smpte240m",
    "bt2020nc": "bt2020",
    "bt2020c": "bt2020",
    "fcc": "fcc",
}
"""ffprobe's ``color_space`` → the matrix names of ffmpeg's ``scale`` filter."""

SCALE_RANGE = {"tv": "tv", "pc": "pc"}


def scale_options(color: Color, direction: str) -> str:
    """``scale`` filter options for ``direction`` ``in`` (YUV→RGB) or ``out`` (RGB→YUV).

    Untagged sources get ffmpeg's defaults on both sides, so the round trip
    through RGB is consistent and the output stays as untagged as its source.
    """
    options = []
    matrix = SCALE_MATRIX.get(color.space or "")
    if matrix:
        options.append(f"{direction}_color_matrix={matrix}")
    value_range = SCALE_RANGE.get(color.range or "")
    if value_range:
        options.append(f"{direction}_range={value_range}")
    return ":".join(options)


def encoder_tags(color: Color) -> list[str]:
    """ffmpeg output options that tag the stream with the source's colour description."""
    args: list[str] = []
    for option, value in (
        ("-color_primaries", color.primaries),
        ("-color_trc", color.transfer),
        ("-colorspace", color.space),
        ("-color_range", color.range),
    ):
        if value:
            args += [option, value]
    return args
