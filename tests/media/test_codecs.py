"""Legacy and odd codecs in the containers they come in: sniffed, probed and decoded frame for frame.

Each clip is encoded at test time by the installed ffmpeg from a lavfi test
pattern; an encoder this ffmpeg lacks skips its case (the decoders are what
the worker needs, the encoders only make the fixtures).
"""

from __future__ import annotations

import functools
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from media.errors import UnsupportedMedia
from media.probe import MediaLimits, probe
from media.reader import decode_all
from media.tools import Tools, parse_decoders
from tests.clips import FFMPEG

TOOLS = Tools(stall_timeout=20, probe_timeout=20)
FRAMES = 10


@dataclass(frozen=True)
class Case:
    encoder: str
    muxer: str
    codec: str  # ffprobe's codec_name
    demuxer: str
    size: str = "64x48"
    rate: str = "10"
    options: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.encoder}-{self.muxer}-{self.size}"


CASES = [
    Case("msmpeg4", "avi", "msmpeg4v3", "avi"),  # DivX 3
    Case("msmpeg4v2", "avi", "msmpeg4v2", "avi"),
    Case("wmv1", "asf", "wmv1", "asf"),
    Case("wmv2", "asf", "wmv2", "asf"),
    Case("h263", "avi", "h263", "avi", size="176x144"),  # QCIF: H.263 has fixed sizes
    Case("flv", "flv", "flv1", "flv"),  # Sorenson Spark
    Case("libtheora", "ogg", "theora", "ogg"),
    Case("cinepak", "avi", "cinepak", "avi"),
    Case("cinepak", "mov", "cinepak", "mov"),
    Case(
        "dvvideo", "dv", "dvvideo", "dv", size="720x480", rate="30000/1001", options=("-pix_fmt", "yuv411p")
    ),
    Case("dvvideo", "dv", "dvvideo", "dv", size="720x576", rate="25", options=("-pix_fmt", "yuv420p")),
    Case("ffv1", "matroska", "ffv1", "matroska"),
    Case("huffyuv", "avi", "huffyuv", "avi"),
    Case("ffvhuff", "avi", "ffvhuff", "avi"),
    Case("utvideo", "avi", "utvideo", "avi"),
    Case("qtrle", "mov", "qtrle", "mov"),  # QuickTime Animation
    Case("rawvideo", "avi", "rawvideo", "avi", options=("-pix_fmt", "yuv420p")),
    Case("mpeg4", "avi", "mpeg4", "avi"),  # Xvid/DivX 4+
]


@functools.cache
def _encoders() -> frozenset[str]:
    listing = subprocess.run(
        ["ffmpeg", "-hide_banner", "-encoders"], check=True, capture_output=True, text=True
    )
    _, _, table = listing.stdout.partition(" ------\n")
    return frozenset(line.split()[1] for line in table.splitlines() if len(line.split()) > 1)


def _source(case: Case) -> list[str]:
    return ["-f", "lavfi", "-i", f"testsrc2=s={case.size}:r={case.rate}", "-frames:v", str(FRAMES)]


def _encode(case: Case, directory: Path) -> Path:
    if case.encoder not in _encoders():
        pytest.skip(f"this ffmpeg has no {case.encoder} encoder")
    path = directory / f"{case.id}.mp4"  # the name never matters: the bytes choose the demuxer
    if not path.exists():
        args = [*_source(case), "-c:v", case.encoder, *case.options, "-f", case.muxer, str(path)]
        subprocess.run([*FFMPEG, *args], check=True)
    return path


def _reference(case: Case) -> np.ndarray:
    """The test pattern itself as RGB, straight from lavfi."""
    args = [*FFMPEG, *_source(case), "-pix_fmt", "rgb24", "-f", "rawvideo", "-"]
    raw = subprocess.run(args, check=True, capture_output=True).stdout
    width, height = map(int, case.size.split("x"))
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("codecs")


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_legacy_codec_is_accepted_and_decodes_every_frame(case: Case, directory: Path) -> None:
    path = _encode(case, directory)
    info = probe(path, TOOLS)
    assert (info.demuxer, info.codec) == (case.demuxer, case.codec)
    assert f"{info.width}x{info.height}" == case.size
    frames = decode_all(info, TOOLS)
    assert len(frames) == FRAMES
    reference = _reference(case)
    difference = np.abs(frames.astype(np.int16) - reference.astype(np.int16)).mean()
    assert difference < 8, f"mean difference {difference:.1f} levels from the pattern encoded"


def test_a_codec_left_out_of_the_configured_list_is_refused(directory: Path) -> None:
    path = _encode(CASES[0], directory)
    limits = MediaLimits(video_codecs=frozenset({"h264"}))
    with pytest.raises(UnsupportedMedia, match="'msmpeg4v3' is not accepted") as caught:
        probe(path, TOOLS, limits)
    assert caught.value.code == "UNSUPPORTED_MEDIA" and not caught.value.retryable


def test_decoders_are_listed_by_codec_name() -> None:
    listing = (
        "Decoders:\n V..... = Video\n ------\n"
        " VFS..D h264                 H.264 / AVC / MPEG-4 AVC / MPEG-4 part 10\n"
        " V..... libdav1d             dav1d AV1 decoder by VideoLAN (codec av1)\n"
        " V...BD msmpeg4              MPEG-4 part 2 Microsoft variant version 3 (codec msmpeg4v3)\n"
        " A....D aac                  AAC (Advanced Audio Coding)\n"
    )
    assert parse_decoders(listing) == {"h264", "av1", "msmpeg4v3"}


def test_the_installed_ffmpeg_decodes_the_reviewed_legacy_codecs() -> None:
    decoders = TOOLS.video_decoders()
    assert {"h264", "msmpeg4v3", "wmv2", "vc1", "flv1", "theora", "dvvideo", "qtrle", "rawvideo"} <= decoders
    assert "libdav1d" not in decoders  # decoder names are mapped to the codec they decode
