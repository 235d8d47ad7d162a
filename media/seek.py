"""Where the decode of a frame range starts: the video's first frame and the keyframe before a time.

Times here are seconds from the container's start (ffprobe's format
``start_time``, the earliest of its streams), as ffmpeg's input ``-ss`` counts
them; ffprobe reports raw times and :class:`Clock` converts. A whole decode's
clock starts there too, except for MPEG-TS, where ffmpeg moves it to the first
stream it reads (the video: its start time correction for formats with
timestamp discontinuities). There a time read on this clock is a little early,
so the keyframe found before it is still before the frame wanted.

Seeking is not trusted to land on a keyframe: the MPEG-TS demuxer bisects on
any packet's decode time, and a decoder started off a keyframe drops frames up
to the next one, so a plain ``-ss`` a little before a range can skip its first
frames (measured: ``-ss`` 1 s before a range at 2.3 s began at the keyframe at 2.5 s). A
seek to the decode time of a keyframe found here lands on it or before it,
whatever the demuxer.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from media.probe import MediaInfo, ffprobe_json
from media.tools import Tools

KEYFRAME_WINDOW = Fraction(8)
"""Seconds of packets read (demuxed, not decoded) per look for a keyframe; doubled until one is found."""


@dataclass(frozen=True)
class Clock:
    """``origin``: the container's start, raw seconds; ``video``: seconds from it to the first video frame."""

    origin: Fraction
    video: Fraction


def clock(info: MediaInfo, tools: Tools) -> Clock:
    """The clock of ``info``'s first video stream (``0:v:0``); an unreadable start counts as 0."""
    show = ("-show_entries", "format=start_time:stream=codec_type,start_time")
    report = ffprobe_json(info.path, info.demuxer, tools, show)
    streams: list[dict[str, Any]] = report.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"), {})
    origin = _seconds(report.get("format", {}).get("start_time"))
    first = _seconds(video.get("start_time"))
    if origin is None:
        return Clock(Fraction(0), Fraction(0))
    return Clock(origin, first - origin if first is not None else Fraction(0))


def keyframe_before(info: MediaInfo, tools: Tools, at: Clock, time: Fraction) -> Fraction | None:
    """Where to seek so that every frame shown from ``time`` on decodes as in a whole decode.

    The earlier of the decode and presentation times of the last keyframe shown
    at or before ``time`` (both seconds from the container's start); ``None``
    when there is none (decode from the start). Packets are read (demuxed only)
    from :data:`KEYFRAME_WINDOW` before ``time``, then twice as far, and so on.
    """
    window = KEYFRAME_WINDOW
    while True:
        begin = max(Fraction(0), time - window)
        found = _keyframes(info, tools, at.origin + begin, at.origin + time)
        if found:
            return max(found, key=lambda times: times[0])[1] - at.origin
        if begin == 0:
            return None
        window *= 2


def _keyframes(
    info: MediaInfo, tools: Tools, begin: Fraction, end: Fraction
) -> list[tuple[Fraction, Fraction]]:
    """``(shown, decode from)`` raw seconds of the keyframes read from about ``begin`` (raw seconds),
    shown at or before ``end``."""
    interval = f"{float(begin):.6f}%{float(end):.6f}" if begin > 0 else f"%{float(end):.6f}"
    show = ("-select_streams", "v:0", "-read_intervals", interval,
            "-show_entries", "packet=pts_time,dts_time,flags")  # fmt: skip
    packets: list[dict[str, Any]] = ffprobe_json(info.path, info.demuxer, tools, show).get("packets", [])
    found = []
    for packet in packets:
        shown = _seconds(packet.get("pts_time"))
        if "K" in str(packet.get("flags", "")) and shown is not None and shown <= end:
            found.append((shown, min(shown, _seconds(packet.get("dts_time")) or shown)))
    return found


def _seconds(text: object) -> Fraction | None:
    """ffprobe's decimal seconds; ``None`` for ``N/A`` or nothing."""
    try:
        return Fraction(str(text))
    except (ValueError, ZeroDivisionError):
        return None
