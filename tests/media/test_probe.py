"""probe(): what good clips are described as, and the refusals with their error codes."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from media.errors import CorruptMedia, LimitExceeded, MediaError, UnsupportedMedia
from media.probe import AudioInfo, Color, MediaLimits, probe, sniff_demuxer
from media.tools import Tools
from tests.conftest import Clips
from tests.media import odd_clip, rotated_clip

TOOLS = Tools(probe_timeout=20)
NO_FFPROBE = Tools(ffprobe="/nonexistent/ffprobe")
"""Refusals made from the first bytes or the file size must not need ffprobe at all."""


def test_clip_with_audio(clips: Clips) -> None:
    info = probe(clips("audio"), TOOLS)
    assert (info.demuxer, info.codec, info.width, info.height) == ("mov", "h264", 64, 36)
    assert (info.fps, info.frames, info.duration, info.rotation) == (Fraction(10), 10, 1.0, 0)
    assert not info.vfr
    assert info.pix_fmt == "yuv420p"
    assert info.audio == AudioInfo(codec="aac", channels=1, sample_rate=48000)
    assert info.color == Color()
    assert info.size_bytes == clips("audio").stat().st_size
    assert info.frame_bytes == 64 * 36 * 3


def test_silent_clip_has_no_audio(clips: Clips) -> None:
    info = probe(clips("silent"), TOOLS)
    assert info.audio is None
    assert info.frames == 10


def test_odd_sized_yuv444_clip(clips: Clips) -> None:
    info = probe(odd_clip(clips.directory), TOOLS)
    assert (info.width, info.height, info.pix_fmt, info.frames) == (33, 19, "yuv444p", 10)


def test_ten_bit_clip(clips: Clips) -> None:
    info = probe(clips("10bit"), TOOLS)
    assert info.pix_fmt == "yuv420p10le"
    assert (info.width, info.height, info.frames) == (64, 36, 10)


def test_variable_rate_clip_is_flagged_and_counted_at_its_average_rate(clips: Clips) -> None:
    info = probe(clips("vfr"), TOOLS)
    assert info.vfr
    # 20 frames at 10/s with 6 dropped: 14 frames over 2 s, an average of 7/s
    assert info.fps == Fraction(7)
    assert info.duration == pytest.approx(2.0)
    assert info.frames == round(info.duration * info.fps) == 14


def test_constant_rate_clips_are_not_flagged_variable(clips: Clips) -> None:
    assert not any(probe(clips(name), TOOLS).vfr for name in ("audio", "silent", "10bit"))


def test_a_container_that_does_not_count_its_frames_is_resampled(clips: Clips) -> None:
    """WebM declares no frame count, so its claimed rate cannot be checked: the reader resamples it."""
    info = probe(clips("webm"), TOOLS)
    assert info.vfr
    assert (info.fps, info.frames) == (Fraction(10), 10)


def test_variable_rate_matroska_is_flagged_though_it_claims_a_constant_rate(clips: Clips) -> None:
    info = probe(clips("vfr_mkv"), TOOLS)
    assert info.vfr  # both of its rates say 10/s; 28 frames in 4 s say otherwise
    assert (info.fps, info.duration, info.frames) == (Fraction(10), 4.0, 40)


def test_the_duration_of_a_matroska_video_track_is_its_own(clips: Clips) -> None:
    """The container's duration is its longest track's: the video's DURATION tag is read first."""
    info = probe(clips("webm"), TOOLS)
    assert info.duration == pytest.approx(1.007)  # the Opus track runs to 1.008 s


def test_rotated_clip_is_described_as_displayed(clips: Clips) -> None:
    info = probe(rotated_clip(clips.directory), TOOLS)
    assert (info.width, info.height) == (36, 64)  # coded 64x36
    assert info.rotation % 180 == 90


def test_rotation_is_clockwise_like_the_rotate_tag(clips: Clips) -> None:
    assert probe(rotated_clip(clips.directory), TOOLS).rotation == 90


def test_colour_tags_of_a_bt601_clip(clips: Clips) -> None:
    info = probe(clips("bt601"), TOOLS)
    assert info.color == Color(primaries="smpte170m", transfer="smpte170m", space="smpte170m", range="tv")


def test_webm_is_sniffed_as_matroska_whatever_its_name(clips: Clips) -> None:
    path = clips("webm")
    assert path.suffix == ".mp4"
    info = probe(path, TOOLS)
    assert (info.demuxer, info.codec) == ("matroska", "vp9")
    assert info.audio is not None and info.audio.codec == "opus"
    assert (info.width, info.height, info.frames) == (64, 36, 10)


@pytest.mark.parametrize(("name", "what"), [("hls", "HLS playlist"), ("ffconcat", "ffconcat script")])
def test_playlists_and_scripts_are_refused_from_their_first_bytes(clips: Clips, name: str, what: str) -> None:
    with pytest.raises(UnsupportedMedia) as caught:
        probe(clips(name), NO_FFPROBE)
    assert type(caught.value) is UnsupportedMedia
    assert caught.value.code == "UNSUPPORTED_MEDIA"
    assert what in str(caught.value)
    assert not caught.value.retryable


def test_text_with_a_byte_order_mark_and_blank_lines_is_still_a_playlist(tmp_path: Path) -> None:
    path = tmp_path / "sneaky.mp4"
    path.write_bytes(b"\xef\xbb\xbf\n\r\n  #EXTM3U\n#EXTINF:1,\nfile:///etc/passwd\n")
    with pytest.raises(UnsupportedMedia, match="HLS playlist"):
        probe(path, NO_FFPROBE)


def test_unknown_bytes_are_refused_before_ffprobe(tmp_path: Path) -> None:
    path = tmp_path / "noise.mp4"
    path.write_bytes(b"GIF89a" + bytes(200))
    with pytest.raises(UnsupportedMedia, match="not a video container"):
        probe(path, NO_FFPROBE)


@pytest.mark.parametrize(
    "head",
    [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", b"GIF89a"],
    ids=["png", "jpeg", "gif"],
)
def test_images_are_refused_before_ffprobe(tmp_path: Path, head: bytes) -> None:
    path = tmp_path / "picture.mp4"
    path.write_bytes(head + bytes(500))
    with pytest.raises(UnsupportedMedia, match="not a video container") as caught:
        probe(path, NO_FFPROBE)
    assert caught.value.code == "UNSUPPORTED_MEDIA"


@pytest.mark.parametrize(
    ("head", "demuxer"),
    [
        (bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c"), "asf"),
        (b"FLV\x01\x05", "flv"),
        (b"OggS\x00\x02", "ogg"),
        (b"\x1f\x07\x00\x3f", "dv"),
        (b"\x1a\x45\xdf\xa3", "matroska"),
        (b"RIFF\x00\x00\x00\x00AVI LIST", "avi"),
        (b"\x00\x00\x00\x14ftypqt  ", "mov"),
    ],
)
def test_containers_are_chosen_by_their_first_bytes(tmp_path: Path, head: bytes, demuxer: str) -> None:
    path = tmp_path / "whatever.txt"
    path.write_bytes(head + bytes(500))
    assert sniff_demuxer(path) == demuxer


def test_empty_file_is_corrupt_before_ffprobe(clips: Clips) -> None:
    with pytest.raises(CorruptMedia) as caught:
        probe(clips("empty"), NO_FFPROBE)
    assert type(caught.value) is CorruptMedia
    assert caught.value.code == "MEDIA_CORRUPT"
    assert "empty" in str(caught.value)


def test_truncated_mp4_is_corrupt(clips: Clips) -> None:
    with pytest.raises(CorruptMedia) as caught:
        probe(clips("truncated"), TOOLS)
    assert type(caught.value) is CorruptMedia
    assert caught.value.code == "MEDIA_CORRUPT"
    assert "moov atom not found" in str(caught.value)  # ffprobe's own reason reaches the message


def test_dimension_bomb_is_over_the_limit(clips: Clips) -> None:
    with pytest.raises(LimitExceeded) as caught:
        probe(clips("huge"), TOOLS)
    assert type(caught.value) is LimitExceeded
    assert caught.value.code == "MEDIA_LIMIT_EXCEEDED"
    assert "8000x8000" in str(caught.value)


def test_ten_hour_duration_is_over_the_limit(clips: Clips) -> None:
    with pytest.raises(LimitExceeded, match="duration") as caught:
        probe(clips("long"), TOOLS)
    assert caught.value.code == "MEDIA_LIMIT_EXCEEDED"
    # the same file passes when the limit allows 10 hours
    assert probe(clips("long"), TOOLS, MediaLimits(max_duration=11 * 3600)).duration > 10 * 3600


def test_audio_only_file_is_unsupported(clips: Clips) -> None:
    with pytest.raises(UnsupportedMedia, match="video stream") as caught:
        probe(clips("audio_only"), TOOLS)
    assert type(caught.value) is UnsupportedMedia
    assert caught.value.code == "UNSUPPORTED_MEDIA"


def test_file_over_the_size_limit_is_refused_before_ffprobe(clips: Clips) -> None:
    path = clips("audio")
    size = path.stat().st_size
    with pytest.raises(LimitExceeded, match="bytes") as caught:
        probe(path, NO_FFPROBE, MediaLimits(max_file_bytes=size - 1))
    assert caught.value.code == "MEDIA_LIMIT_EXCEEDED"
    assert probe(path, TOOLS, MediaLimits(max_file_bytes=size)).size_bytes == size


@pytest.mark.parametrize(
    ("limits", "words"),
    [
        (MediaLimits(max_fps=9.5), "frame rate"),
        (MediaLimits(max_width=63), "64x36"),
        (MediaLimits(max_height=35), "64x36"),
        (MediaLimits(max_pixels=64 * 36 - 1), "pixels"),
        (MediaLimits(max_duration=0.5), "duration"),
    ],
)
def test_each_limit_refuses_a_clip_just_over_it(clips: Clips, limits: MediaLimits, words: str) -> None:
    with pytest.raises(LimitExceeded, match=words) as caught:
        probe(clips("silent"), TOOLS, limits)
    assert caught.value.code == "MEDIA_LIMIT_EXCEEDED"


def test_a_clip_exactly_at_every_limit_passes(clips: Clips) -> None:
    limits = MediaLimits(max_width=64, max_height=36, max_pixels=64 * 36, max_duration=1.0, max_fps=10)
    assert probe(clips("silent"), TOOLS, limits).frames == 10


def test_refusals_are_media_errors_that_are_not_retried(clips: Clips) -> None:
    for name in ("hls", "empty", "truncated", "audio_only", "long"):
        with pytest.raises(MediaError) as caught:
            probe(clips(name), TOOLS)
        assert not caught.value.retryable, name
