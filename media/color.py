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


_LUMA = {
    "bt709": (0.2126, 0.0722),
    "smpte170m": (0.299, 0.114),
    "bt470bg": (0.299, 0.114),
    "smpte240m": (0.212, 0.087),
    "bt2020nc": (0.2627, 0.0593),
    "bt2020c": (0.2627, 0.0593),
}
"""Matrix name → (Kr, Kb) luma coefficients."""

_BLEND_MATRIX = "smpte170m"
"""The matrix ffmpeg 5.x's ``ass`` filter assumes when it blends captions into YUV frames."""


def blend_color(color: str, space: str | None) -> str:
    """The ``#RRGGBBAA`` to hand the YUV caption blend so it lands as ``color`` in a ``space`` video.

    ffmpeg's ``ass`` filter turns caption colours into YUV with BT.601
    coefficients whatever the frames' matrix. For a BT.709 (or other) video we
    give it the colour whose BT.601 YUV equals ``color``'s YUV in the video's
    own matrix. Greys are unchanged; very saturated colours that fall outside
    the RGB cube are clipped, so they come out slightly less saturated.
    """
    coefficients = _LUMA.get(space or "")
    if coefficients is None or coefficients == _LUMA[_BLEND_MATRIX]:
        return color
    digits = color.lstrip("#")
    rgb = [int(digits[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    luma, blue_diff, red_diff = _to_yuv(rgb, coefficients)
    kr, kb = _LUMA[_BLEND_MATRIX]
    red = luma + red_diff * 2 * (1 - kr)
    blue = luma + blue_diff * 2 * (1 - kb)
    green = (luma - kr * red - kb * blue) / (1 - kr - kb)
    channels = (round(min(1.0, max(0.0, value)) * 255) for value in (red, green, blue))
    return "#" + "".join(f"{value:02X}" for value in channels) + digits[6:8]


def _to_yuv(rgb: list[float], coefficients: tuple[float, float]) -> tuple[float, float, float]:
    kr, kb = coefficients
    red, green, blue = rgb
    luma = kr * red + (1 - kr - kb) * green + kb * blue
    return luma, (blue - luma) / (2 * (1 - kb)), (red - luma) / (2 * (1 - kr))
