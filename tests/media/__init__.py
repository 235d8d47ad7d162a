"""Tests of :mod:`media` on real ffmpeg and generated clips; clips the shared recipes lack.

Most clips come from ``tests/clips.py`` through the session ``clips`` fixture.
The few made here are either new cases (a BT.709 clip, FLAC audio) or stand in
for recipes that do not produce what they promise with the ffmpeg 5.1 this
project runs on:

* ``odd``: lavfi sources negotiate 4:2:0 and round ``33x19`` down to ``32x18``
  before ``-pix_fmt yuv444p`` is applied, so the clip is even-sized. Here the
  frames are converted to 4:4:4 *before* being cropped to 33x19.
* ``rotated``: ``-metadata:s:v:0 rotate=90`` on an encode writes no display
  matrix at all (the clip plays unrotated), and on a stream copy ffmpeg 5.1
  writes a matrix turned the wrong way (shown counter-clockwise). Here the
  ``tkhd`` matrix is written directly, as phones write it: shown turned 90°
  clockwise, which ffprobe reports as ``"rotation": -90``.
"""

from __future__ import annotations

import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tests.clips import FFMPEG

_ONE = 1 << 16  # 1.0 in the 16.16 fixed point of an ISO-BMFF matrix
PHONE_PORTRAIT_MATRIX = (0, _ONE, 0, -_ONE, 0, 0, 0, 0, 1 << 30)
"""``tkhd`` display matrix of a phone held upright: coded landscape, shown turned 90° clockwise."""


def odd_clip(directory: Path) -> Path:
    """10 frames of 33x19 yuv444p H.264 at 10 fps (both sides odd)."""
    return _cached(directory / "odd33x19.mp4", _make_odd)


def rotated_clip(directory: Path) -> Path:
    """10 frames coded 64x36, left half red and right half blue, shown turned 90° clockwise (36x64)."""
    return _cached(directory / "rotated_cw.mp4", _make_rotated)


def bt709_clip(directory: Path) -> Path:
    """Colour bars converted from RGB with the BT.709 matrix, limited range, tagged bt709 tv."""
    return _cached(directory / "bt709.mp4", _make_bt709)


def flac_clip(directory: Path) -> Path:
    """Matroska with H.264 video and FLAC audio (a codec MP4 does not take as it is)."""
    return _cached(directory / "flac.mkv", _make_flac)


def bar_means(frames: np.ndarray) -> np.ndarray:
    """Mean RGB of the interior of each of the 7 top bars of 64x36 ``smptebars``: shape ``(7, 3)``."""
    centres = [int((index + 0.5) * frames.shape[2] / 7) for index in range(7)]
    top = frames[:, 2 : frames.shape[1] // 2].astype(np.float64)
    return np.stack([top[:, :, centre - 2 : centre + 3].mean(axis=(0, 1, 2)) for centre in centres])


def _cached(path: Path, make: Callable[[Path], None]) -> Path:
    if not path.exists():
        make(path)
    return path


def _ffmpeg(*args: str) -> None:
    subprocess.run([*FFMPEG, *args], check=True)


def _make_odd(path: Path) -> None:
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x36:r=10:d=1", "-vf", "format=yuv444p,crop=33:19:0:0",
            "-c:v", "libx264", "-pix_fmt", "yuv444p", str(path))  # fmt: skip


def _make_rotated(path: Path) -> None:
    plain = path.with_name(f"{path.stem}.plain.mp4")
    _ffmpeg("-f", "lavfi", "-i", "color=c=red:s=32x36:r=10:d=1", "-f", "lavfi", "-i",
            "color=c=blue:s=32x36:r=10:d=1", "-filter_complex", "[0][1]hstack",
            "-c:v", "libx264", "-pix_fmt", "yuv420p", str(plain))  # fmt: skip
    data = bytearray(plain.read_bytes())
    box = data.index(b"tkhd")  # one video track, so one tkhd
    version = data[box + 4]
    # version/flags, times and track id (20 or 32 bytes), reserved + duration... up to the matrix
    matrix = box + 4 + 4 + (32 if version == 1 else 20) + 8 + 8
    data[matrix : matrix + 36] = struct.pack(">9i", *PHONE_PORTRAIT_MATRIX)
    path.write_bytes(bytes(data))
    plain.unlink()


def _make_bt709(path: Path) -> None:
    _ffmpeg("-f", "lavfi", "-i", "smptebars=s=64x36:r=10:d=1",
            "-vf", "format=rgb24,scale=out_color_matrix=bt709:out_range=tv,format=yuv420p",
            "-c:v", "libx264", "-pix_fmt", "yuv420p", "-color_primaries", "bt709", "-color_trc", "bt709",
            "-colorspace", "bt709", "-color_range", "tv", str(path))  # fmt: skip


def _make_flac(path: Path) -> None:
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x36:r=10:d=1", "-f", "lavfi", "-i", "sine=f=440:r=48000:d=1",
            "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "flac", "-shortest", "-f", "matroska",
            str(path))  # fmt: skip
