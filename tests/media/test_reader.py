"""The decode pipe: frame counts, shapes, orientation, colour matrices and batching."""

from __future__ import annotations

import dataclasses
import stat
from pathlib import Path

import numpy as np
import pytest

from media.errors import DecodeFailed, DecodeOverrun
from media.probe import Color, MediaInfo, probe
from media.reader import OVERRUN_FRAMES, FrameReader, decode_all, frame_cap
from media.tools import Tools
from tests.conftest import Clips
from tests.media import bar_means, bt709_clip, odd_clip, rotated_clip

TOOLS = Tools(stall_timeout=20, probe_timeout=20)


def _decode(path: Path) -> tuple[MediaInfo, np.ndarray]:
    info = probe(path, TOOLS)
    return info, decode_all(info, TOOLS)


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited (a zombie counts as gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return fields[0] not in ("Z", "X")


def _fake_ffmpeg(directory: Path, body: str) -> Tools:
    script = directory / "fake-ffmpeg"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return Tools(ffmpeg=str(script), stall_timeout=5)


def test_clip_with_audio_decodes_to_ten_rgb_frames(clips: Clips) -> None:
    info, frames = _decode(clips("audio"))
    assert frames.shape == (10, 36, 64, 3)
    assert frames.dtype == np.uint8
    assert info.frames == len(frames)
    assert frames.std() > 30  # a test pattern, not a blank or garbled buffer
    assert not np.array_equal(frames[0], frames[-1])  # the pattern moves: distinct frames, in order


def test_odd_sized_frames_keep_their_size(clips: Clips) -> None:
    _, frames = _decode(odd_clip(clips.directory))
    assert frames.shape == (10, 19, 33, 3)
    # the last column and row are picture, not padding: testsrc2 is bright there
    assert frames[:, :, -1].mean() > 20
    assert frames[:, -1, :].mean() > 20


def test_ten_bit_source_comes_out_as_8_bit_matching_the_8_bit_encode(clips: Clips) -> None:
    _, deep = _decode(clips("10bit"))
    _, plain = _decode(clips("silent"))  # the same testsrc2 pattern in 8-bit
    assert deep.dtype == np.uint8
    assert deep.shape == (10, 36, 64, 3)
    difference = np.abs(deep.astype(np.int16) - plain.astype(np.int16)).mean()
    assert difference < 6, f"mean difference {difference:.1f} levels: 10-bit samples not scaled to 8 bits"


def test_variable_rate_source_is_resampled_to_constant_rate(clips: Clips) -> None:
    info, frames = _decode(clips("vfr"))
    assert info.vfr
    assert frames.shape[1:] == (36, 64, 3)
    assert abs(len(frames) - round(info.duration * info.fps)) <= 1


def test_resampling_an_evenly_spaced_source_passes_its_frames_one_to_one(clips: Clips) -> None:
    info = probe(clips("webm"), TOOLS)
    assert info.vfr  # WebM does not count its frames
    resampled = decode_all(info, TOOLS)
    assert np.array_equal(resampled, decode_all(dataclasses.replace(info, vfr=False), TOOLS))
    assert len(resampled) == 10


def test_variable_rate_matroska_is_resampled_to_cover_its_duration(clips: Clips) -> None:
    """28 frames at irregular times over 4 s; Matroska claims 10/s and counts nothing."""
    info, frames = _decode(clips("vfr_mkv"))
    assert info.vfr and info.fps == 10 and info.duration == 4.0
    assert len(frames) == 40


@pytest.mark.parametrize(("clip", "declared"), [("liar_mkv", 10), ("liar_ts", 20)])
def test_a_container_that_lies_about_its_duration_stops_at_the_cap(
    clips: Clips, clip: str, declared: int
) -> None:
    """A 10 s Matroska file whose header says 1 s; four 2 s MPEG-TS streams back to back."""
    info = probe(clips(clip), TOOLS)
    assert info.frames == declared
    reader = FrameReader(info, TOOLS)
    assert reader.cap == declared + OVERRUN_FRAMES
    got: list[int] = []
    with reader, pytest.raises(DecodeOverrun, match=f"declares {declared} frames / ") as caught:
        got.extend(len(batch) for batch in reader.batches(8))
    assert sum(got) == reader.frames_read <= reader.cap
    assert caught.value.code == "DECODE_FAILED" and not caught.value.retryable
    assert "decodes past" in str(caught.value)


def test_ffmpeg_is_told_to_stop_one_frame_past_the_cap(clips: Clips) -> None:
    reader = FrameReader(probe(clips("silent"), TOOLS), TOOLS)
    command = reader.command()
    assert command[command.index("-frames:v") + 1] == str(reader.cap + 1)


@pytest.mark.parametrize(
    ("declared", "cap"), [(1, 1 + OVERRUN_FRAMES), (10, 10 + OVERRUN_FRAMES), (1000, 1050)]
)
def test_the_cap_is_the_declared_count_plus_a_margin(clips: Clips, declared: int, cap: int) -> None:
    info = dataclasses.replace(probe(clips("silent"), TOOLS), frames=declared)
    assert frame_cap(info) == cap


def test_rotated_clip_is_turned_clockwise_as_displayed(clips: Clips) -> None:
    _, frames = _decode(rotated_clip(clips.directory))
    assert frames.shape == (10, 64, 36, 3)
    top = frames[:, :28].reshape(-1, 3).mean(axis=0)  # rows 0-27 of 64, away from the seam
    bottom = frames[:, 36:].reshape(-1, 3).mean(axis=0)
    # coded left half red, right half blue; a clockwise quarter turn puts the left half on top
    assert top[0] > 200 and top[2] < 50, f"top rows are {top}, not red"
    assert bottom[2] > 200 and bottom[0] < 50, f"bottom rows are {bottom}, not blue"


def test_tagged_matrices_are_honoured(clips: Clips) -> None:
    """The same bars, encoded with the BT.601 and with the BT.709 matrix, decode to the same RGB."""
    _, bt601 = _decode(clips("bt601"))
    _, bt709 = _decode(bt709_clip(clips.directory))
    assert np.abs(bar_means(bt601) - bar_means(bt709)).max() < 6
    # the bars are really there: 75% white, then yellow (no blue), ..., blue-ish last
    assert bar_means(bt601)[0] == pytest.approx([191, 191, 191], abs=4)
    assert bar_means(bt601)[1][2] < 20


def test_untagged_source_decodes_like_the_tagged_bt601_one(clips: Clips) -> None:
    """ffmpeg's default for untagged video is BT.601: the same values read with or without the tags."""
    info = probe(clips("bt601"), TOOLS)
    tagged = decode_all(info, TOOLS)
    untagged = decode_all(dataclasses.replace(info, color=Color()), TOOLS)
    assert np.abs(bar_means(tagged) - bar_means(untagged)).max() < 1


@pytest.mark.parametrize(("size", "expected"), [(3, [3, 3, 3, 1]), (4, [4, 4, 2]), (5, [5, 5]), (16, [10])])
def test_batches_cover_every_frame_with_a_short_last_batch(
    clips: Clips, size: int, expected: list[int]
) -> None:
    info = probe(clips("audio"), TOOLS)
    with FrameReader(info, TOOLS) as reader:
        batches = list(reader.batches(size))
    assert [len(batch) for batch in batches] == expected
    assert reader.frames_read == 10
    # fresh arrays, not views of one reused buffer: together they are the whole clip
    assert np.array_equal(np.concatenate(batches), decode_all(info, TOOLS))


def test_leaving_the_context_early_kills_the_decoder(clips: Clips) -> None:
    info = probe(clips("clip60"), TOOLS)  # 600 frames: ffmpeg is still writing after the first
    with FrameReader(info, TOOLS) as reader:
        first = next(reader.batches(1))
        child = reader._child
        assert child is not None
        assert child.proc.poll() is None, "ffmpeg should still be running mid-clip"
    assert first.shape == (1, 36, 64, 3)
    assert child.proc.poll() is not None
    assert not _pid_alive(child.pid)
    reader.close()  # a second close is harmless


def test_an_exception_inside_the_context_kills_the_decoder(clips: Clips) -> None:
    info = probe(clips("clip60"), TOOLS)
    reader = FrameReader(info, TOOLS)
    with pytest.raises(KeyError), reader:
        next(reader.batches(2))
        raise KeyError("inference failed")
    assert reader._child is not None
    assert reader._child.proc.poll() is not None
    assert not _pid_alive(reader._child.pid)


def test_batches_outside_the_context_is_an_error(clips: Clips) -> None:
    reader = FrameReader(probe(clips("silent"), TOOLS), TOOLS)
    with pytest.raises(RuntimeError, match="outside its context"):
        next(reader.batches(1))


def test_decoder_stopping_inside_a_frame_is_a_decode_failure(clips: Clips, tmp_path: Path) -> None:
    info = probe(clips("silent"), TOOLS)
    frame = 64 * 36 * 3
    tools = _fake_ffmpeg(tmp_path, f"head -c {frame + 100} /dev/zero\necho 'fake: decode error' >&2\nexit 0")
    with FrameReader(info, tools) as reader, pytest.raises(DecodeFailed, match="inside frame") as caught:
        list(reader.batches(4))
    assert caught.value.code == "DECODE_FAILED"
    assert not caught.value.retryable
    assert f"(100 of {frame} bytes)" in str(caught.value)


def test_a_partial_frame_is_numbered_by_its_place_in_the_stream(clips: Clips, tmp_path: Path) -> None:
    info = probe(clips("silent"), TOOLS)
    tools = _fake_ffmpeg(tmp_path, f"head -c {64 * 36 * 3 + 100} /dev/zero")
    with FrameReader(info, tools) as reader, pytest.raises(DecodeFailed, match="inside frame 2"):
        list(reader.batches(4))


def test_decoder_failing_after_whole_frames_is_a_decode_failure(clips: Clips, tmp_path: Path) -> None:
    info = probe(clips("silent"), TOOLS)
    frame = 64 * 36 * 3
    tools = _fake_ffmpeg(tmp_path, f"head -c {2 * frame} /dev/zero\necho 'fake: broken stream' >&2\nexit 1")
    got: list[int] = []
    with FrameReader(info, tools) as reader, pytest.raises(DecodeFailed, match="exit status 1") as caught:
        got.extend(len(batch) for batch in reader.batches(4))
    assert got == [2]  # the frames before the failure were handed over
    assert "fake: broken stream" in str(caught.value)
