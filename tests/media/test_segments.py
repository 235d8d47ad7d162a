"""Segments: a range decodes to exactly its frames of the whole decode, and segments joined by
stream copy match one whole run in frames, times, audio and pixels."""

from __future__ import annotations

import dataclasses
import itertools
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from media.errors import DecodeFailed
from media.probe import MediaInfo, probe
from media.reader import FrameReader, decode_all
from media.segments import (
    DiscontinuousOutput,
    FrameRange,
    SegmentMismatch,
    check_continuous,
    concat,
    frame_stamps,
    segment_options,
    segment_writer,
    split,
)
from media.tools import Tools
from media.writer import ENCODERS, Encoder, FrameWriter, Output, count_frames
from tests.clips import ffprobe, stream
from tests.conftest import Clips

TOOLS = Tools(stall_timeout=20, probe_timeout=20)
X264 = ENCODERS["h264", False]
QUALITY = 18
"""CRF of both runs compared: two lossy encodes of the same frames, compared with each other."""

AAC_FRAME = Fraction(1024, 48000)
"""Seconds of one AAC frame at 48 kHz: how far the joined file's audio may end from the whole run's."""


def _invert(frames: np.ndarray) -> np.ndarray:
    """The stand-in for a model: cheap, and not the identity."""
    return 255 - frames


def _read(info: MediaInfo, frames: FrameRange | None = None) -> np.ndarray:
    with FrameReader(info, TOOLS, frames) as reader:
        batches = list(reader.batches(8))
    return np.concatenate(batches) if batches else np.empty((0, info.height, info.width, 3), np.uint8)


@pytest.mark.parametrize(
    ("frames", "seconds", "lengths"),
    [
        (60, 2.0, [20, 20, 20]),
        (61, 2.0, [20, 20, 21]),  # the frame left over goes to a range, never alone at the end
        (69, 2.0, [23, 23, 23]),  # 3.45 ranges' worth: three a little longer, not a short fourth
        (72, 2.0, [18, 18, 18, 18]),
        (5, 0.1, [2, 3]),  # one frame a range asked for: two at least
        (1, 2.0, [1]),
        (3, 600.0, [3]),
    ],
)
def test_split_cuts_even_ranges_with_no_short_tail(frames: int, seconds: float, lengths: list[int]) -> None:
    ranges = split(frames, Fraction(10), seconds)
    assert [len(frames) for frames in ranges] == lengths
    assert ranges[0].start == 0 and ranges[-1].stop == frames
    assert all(a.stop == b.start for a, b in itertools.pairwise(ranges))


def test_split_ranges_cover_every_frame_evenly() -> None:
    for frames in range(1, 400, 7):
        for seconds in (0.1, 0.75, 2.0, 9.0):
            lengths = [len(frames) for frames in split(frames, Fraction(30000, 1001), seconds)]
            assert sum(lengths) == frames
            assert max(lengths) - min(lengths) <= 1
            assert min(lengths) >= 2 or lengths == [frames]


@pytest.mark.parametrize(("frames", "seconds"), [(0, 2.0), (10, 0.0), (10, -1.0)])
def test_split_refuses_nothing_to_split(frames: int, seconds: float) -> None:
    with pytest.raises(ValueError, match="cannot split"):
        split(frames, Fraction(10), seconds)


def test_a_frame_range_is_never_empty() -> None:
    assert len(FrameRange(3, 5)) == 2
    for start, stop in ((5, 5), (6, 5), (-1, 2)):
        with pytest.raises(ValueError, match="empty or negative"):
            FrameRange(start, stop)


RANGE_CLIPS = ["gop25", "late_mp4", "gop25_ts", "late_ts", "vfr_ts", "vfr_late_mkv", "vfr_mkv"]
"""Constant rate (passed through) from 0 and from 0.52 s; MPEG-TS from 1.6 s and behind its audio;
variable rate in MPEG-TS and in Matroska (whose whole decode repeats the late first frame from 0)."""


@pytest.mark.parametrize("clip", RANGE_CLIPS)
def test_a_range_decodes_to_exactly_its_frames_of_the_whole_decode(clips: Clips, clip: str) -> None:
    """Mid-GOP starts, a one-frame range, a range starting in a VFR gap (frames 30-44 of vfr_ts
    are missing), and the last range, open to the end of the source."""
    info = probe(clips(clip), TOOLS)
    whole = decode_all(info, TOOLS)
    ranges = [(0, 7), (13, 14), (27, 33), (31, 38), (len(whole) - 9, info.frames)]
    for start, stop in ranges:
        got = _read(info, FrameRange(start, stop))
        assert got.shape == whole[start:stop].shape, (start, stop)
        assert np.array_equal(got, whole[start:stop]), f"frames [{start}, {stop}) of {clip} differ"


@pytest.mark.parametrize(
    ("clip", "keyframe"), [("gop25", 2.5), ("late_mp4", 3.0), ("gop25_ts", 2.5), ("vfr_ts", 3.4)]
)
def test_a_late_range_seeks_to_the_keyframe_before_it(clips: Clips, clip: str, keyframe: float) -> None:
    """Frame 44 is 4.4 s after the video's first frame; the keyframe before it is the 26th frame
    encoded (vfr_ts dropped 4 frames before it), 2.5 s (2.9 s) after the first frame. ``-ss``
    counts from the container's start, 0.5 s before the video in late_mp4 and vfr_ts."""
    reader = FrameReader(probe(clips(clip), TOOLS), TOOLS, FrameRange(44, 50))
    command = reader.command()
    seek = float(command[command.index("-ss") + 1])
    assert keyframe - 0.3 < seek <= keyframe  # its decode time (B-frames: up to 2 frames early), not 0
    assert command.index("-ss") < command.index("-i")  # an input seek
    assert command[command.index("-frames:v") + 1] == "6"


def test_a_late_first_frame_is_repeated_from_0_in_a_range_too(clips: Clips) -> None:
    """Matroska's clock starts with the audio, 0.52 s before the first frame: the whole decode
    shows that frame from tick 0 (six ticks), and so does a range over it."""
    info = probe(clips("vfr_late_mkv"), TOOLS)
    whole = decode_all(info, TOOLS)
    assert all(np.array_equal(whole[0], frame) for frame in whole[1:6])
    assert not np.array_equal(whole[0], whole[6])
    assert np.array_equal(_read(info, FrameRange(3, 9)), whole[3:9])


def test_the_first_range_does_not_seek(clips: Clips) -> None:
    command = FrameReader(probe(clips("gop25"), TOOLS), TOOLS, FrameRange(0, 20)).command()
    assert "-ss" not in command and "-copyts" in command


def test_a_range_the_source_ends_before_is_a_decode_failure(clips: Clips) -> None:
    info = dataclasses.replace(probe(clips("gop25"), TOOLS), frames=80)  # 60 frames really there
    with pytest.raises(DecodeFailed, match=r"frames \[50, 70\) decoded to 10 frames") as caught:
        _read(info, FrameRange(50, 70))
    assert caught.value.code == "DECODE_FAILED"


def _segments(
    info: MediaInfo, ranges: list[FrameRange], directory: Path, *, encoder: Encoder = X264
) -> list[Path]:
    """Each range decoded on its own, transformed, and encoded as a segment."""
    paths = []
    for index, frames in enumerate(ranges):
        path = directory / f"segment{index}.ts"
        writer = segment_writer(
            path, width=info.width, height=info.height, fps=info.fps, encoder=encoder, tools=TOOLS,
            quality=QUALITY,
        )  # fmt: skip
        with FrameReader(info, TOOLS, frames) as reader, writer:
            for batch in reader.batches(8):
                writer.write(_invert(batch))
            assert writer.finish().frames == len(frames)
        paths.append(path)
    return paths


def _whole_run(info: MediaInfo, path: Path) -> Output:
    """The unsplit job: every frame decoded, transformed and encoded in one run with the audio."""
    writer = FrameWriter(
        path, width=info.width, height=info.height, fps=info.fps, encoder=X264, tools=TOOLS,
        quality=QUALITY, audio_from=info,
    )  # fmt: skip
    with writer:
        writer.write(_invert(decode_all(info, TOOLS)))
        return writer.finish()


def _psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame PSNR in dB of two ``(n, H, W, 3)`` uint8 arrays."""
    error = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean(axis=(1, 2, 3))
    return np.asarray(10 * np.log10(255.0**2 / np.maximum(error, 1e-10)))


def _audio_seconds(path: Path) -> Fraction:
    audio = stream(ffprobe(path), "audio")
    assert audio is not None
    return Fraction(audio["duration"])


@pytest.mark.parametrize("clip", ["gop25", "vfr_ts"])
def test_segments_joined_match_one_whole_run(clips: Clips, tmp_path: Path, clip: str) -> None:
    """6 s at 10/s with audio, cut at 2 s and 4 s (mid-GOP: keyframes every 2.5 s), each third
    decoded, transformed and encoded alone, joined by stream copy with the source's audio."""
    info = probe(clips(clip), TOOLS)
    ranges = split(info.frames, info.fps, 2.0)
    assert [(r.start, r.stop) for r in ranges] == [(0, 20), (20, 40), (40, 60)]
    joined = concat(
        _segments(info, ranges, tmp_path), tmp_path / "joined.mp4", fps=info.fps, audio_from=info,
        tools=TOOLS, expected=info.frames,
    )  # fmt: skip
    whole = _whole_run(info, tmp_path / "whole.mp4")

    assert joined.frames == whole.frames == 60 and joined.audio
    joined_times, joined_tick = frame_stamps(joined.path, TOOLS)
    whole_times, whole_tick = frame_stamps(whole.path, TOOLS)
    assert [t * joined_tick for t in joined_times] == [t * whole_tick for t in whole_times]
    assert abs(_audio_seconds(joined.path) - _audio_seconds(whole.path)) <= AAC_FRAME
    joined_frames = decode_all(probe(joined.path, TOOLS), TOOLS)
    whole_frames = decode_all(probe(whole.path, TOOLS), TOOLS)
    psnr = _psnr(joined_frames, whole_frames)
    assert psnr.min() >= 35, f"per-frame PSNR {np.round(psnr, 1).tolist()}"
    for cut in (20, 40):  # a segment one frame late or early would fail the same bound
        assert _psnr(joined_frames[cut + 1 :], whole_frames[cut:-1]).min() < 35
        assert _psnr(joined_frames[cut:-1], whole_frames[cut + 1 :]).min() < 35
    assert sorted(path.name for path in tmp_path.iterdir() if "joined" in path.name) == ["joined.mp4"]


def test_hevc_segments_join_tagged_for_apple_players(clips: Clips, tmp_path: Path) -> None:
    info = probe(clips("gop25"), TOOLS)
    ranges = split(info.frames, info.fps, 3.0)
    paths = _segments(info, ranges, tmp_path, encoder=ENCODERS["hevc", False])
    joined = concat(paths, tmp_path / "joined.mp4", fps=info.fps, audio_from=None, tools=TOOLS)
    video = stream(ffprobe(joined.path), "video")
    assert video is not None and video["codec_tag_string"] == "hvc1"
    assert joined.frames == 60 and not joined.audio


def test_a_segment_starts_on_an_idr_with_the_pinned_settings(clips: Clips, tmp_path: Path) -> None:
    info = probe(clips("gop25"), TOOLS)
    [path] = _segments(info, [FrameRange(23, 41)], tmp_path)
    assert count_frames(path, TOOLS, "mpegts").frames == 18
    writer = segment_writer(path, width=64, height=48, fps=info.fps, encoder=X264, tools=TOOLS)
    command = writer.command()
    assert command[command.index("-f", command.index("pipe:0")) + 1] == "mpegts"
    assert "-an" not in command and "1:a:0" not in command  # no audio input at all
    assert segment_options(X264) == ("-g", "250", "-flags", "+cgop", "-forced-idr", "1")
    report = ffprobe(path)
    assert stream(report, "audio") is None
    first = _first_packet_flags(path)
    assert first.startswith("K"), first


def _first_packet_flags(path: Path) -> str:
    args = ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=flags",
            "-read_intervals", "%+#1", "-of", "csv=p=0", str(path)]  # fmt: skip
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


def test_joining_fewer_frames_than_planned_publishes_nothing(clips: Clips, tmp_path: Path) -> None:
    info = probe(clips("gop25"), TOOLS)
    paths = _segments(info, split(40, info.fps, 2.0), tmp_path)
    target = tmp_path / "joined.mp4"
    with pytest.raises(SegmentMismatch, match="40 frames; 60 were planned") as caught:
        concat(paths, target, fps=info.fps, audio_from=info, tools=TOOLS, expected=60)
    assert caught.value.code == "FRAME_COUNT_MISMATCH" and caught.value.retryable
    assert not [path for path in tmp_path.iterdir() if "joined" in path.name]


def test_a_segment_that_is_not_mpeg_ts_is_refused(clips: Clips, tmp_path: Path) -> None:
    info = probe(clips("gop25"), TOOLS)
    [segment] = _segments(info, [FrameRange(0, 20)], tmp_path)
    stray = tmp_path / "stray.ts"
    stray.write_bytes(clips("gop25").read_bytes())  # an MP4 under a segment's name
    with pytest.raises(SegmentMismatch, match="stray.ts is mov, not mpegts"):
        concat([segment, stray], tmp_path / "joined.mp4", fps=info.fps, audio_from=None, tools=TOOLS)
    empty = tmp_path / "empty.ts"
    empty.write_bytes(b"")
    with pytest.raises(SegmentMismatch, match="empty.ts is the file is empty"):
        concat([segment, empty], tmp_path / "joined.mp4", fps=info.fps, audio_from=None, tools=TOOLS)


def test_frame_times_with_a_gap_are_discontinuous(clips: Clips) -> None:
    check_continuous(clips("gop25"), Fraction(10), TOOLS)
    with pytest.raises(DiscontinuousOutput, match="off the 10/s grid") as caught:
        check_continuous(clips("vfr"), Fraction(10), TOOLS)  # frames 3-6 and 12-13 dropped
    assert caught.value.code == "ENCODE_FAILED" and caught.value.retryable
