"""ffmpeg children: stalls are killed with their whole process group; failures surface as MediaErrors.

Fake ``ffmpeg`` shell scripts stand in for a hung or crashing ffmpeg. Each hung
one leaves a grandchild (``sleep 300 &``) in its group and records both pids, so
the tests can check that the kill took everything the child started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from media.errors import EncodeFailed, MediaTimeout, ToolUnavailable
from media.probe import probe
from media.process import Child, run_captured
from media.reader import FrameReader
from media.tools import Tools
from media.writer import ENCODERS, FrameWriter
from tests.conftest import Clips

STALL = 0.5
"""Seconds; the watchdog looks every 0.2 s, so a stall is killed within about 0.7 s."""


@dataclass(frozen=True)
class Hung:
    """A fake ffmpeg that starts ``sleep 300 &``, writes ``<its pid> <grandchild pid>`` and sleeps."""

    script: Path
    pids: Path

    def wait_for_pids(self, seconds: float = 5.0) -> tuple[int, int]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            fields = self.pids.read_text().split() if self.pids.exists() else []
            if len(fields) == 2:
                return int(fields[0]), int(fields[1])
            time.sleep(0.02)
        raise AssertionError("the fake ffmpeg never started")


def _script(path: Path, body: str) -> Path:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _live(stat_file: Path) -> tuple[int, int] | None:
    """``(pid, process group)`` of a process that has not exited, else ``None``.

    A zombie counts as gone: here orphans are reparented to a pid 1 that may
    reap them late, and ``kill(pid, 0)`` succeeds on a zombie, so ``/proc`` is
    read instead of signalling.
    """
    try:
        fields = stat_file.read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None if fields[0] in ("Z", "X") else (int(stat_file.parent.name), int(fields[2]))


def _live_members(pgid: int) -> list[int]:
    """Pids of the live processes in group ``pgid``."""
    found = (_live(entry / "stat") for entry in Path("/proc").iterdir() if entry.name.isdigit())
    return [pid for pid, group in filter(None, found) if group == pgid]


def _assert_group_gone(pgid: int, *pids: int) -> None:
    """Every process of group ``pgid`` has exited, ``pids`` included.

    SIGKILL is delivered at once but a process closes its files before it
    turns zombie: one can be seen dying for a moment after its pipes closed.
    """
    deadline = time.monotonic() + 2
    while _live_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _live_members(pgid) == []
    for pid in pids:
        assert _live(Path(f"/proc/{pid}/stat")) is None, f"pid {pid} survived"


def _writer(target: Path, tools: Tools) -> FrameWriter:
    """A 64x36, 10 frames/s x264 writer."""
    encoder = ENCODERS["h264", False]
    return FrameWriter(target, width=64, height=36, fps=Fraction(10), encoder=encoder, tools=tools)


def fake_ffmpeg(directory: Path, name: str, then: str) -> Iterator[Hung]:
    """A fake ffmpeg: starts ``sleep 300 &``, records both pids, runs ``then``; nothing outlives the test."""
    pids = directory / "pids"
    fake = Hung(_script(directory / name, f'sleep 300 &\necho "$$ $!" > {pids}\n{then}'), pids)
    yield fake
    # never leave a sleeper behind, whatever the test did; only processes still in the fake's group
    if pids.exists() and len(pids.read_text().split()) == 2:
        leader, _ = fake.wait_for_pids()
        for pid in _live_members(leader):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def hung(tmp_path: Path) -> Iterator[Hung]:
    yield from fake_ffmpeg(tmp_path, "hung-ffmpeg", "sleep 300")


def test_a_stalled_read_kills_the_whole_group_and_times_out(hung: Hung) -> None:
    with Child([str(hung.script)], name="fake", stall_timeout=STALL, stdout=True) as child:
        pid, grandchild = hung.wait_for_pids()
        assert pid == child.pid
        assert os.getpgid(grandchild) == child.pid  # its own group, led by the child
        started = time.monotonic()
        with pytest.raises(MediaTimeout, match="fake made no progress for 0.5 s") as caught:
            child.read_into(memoryview(bytearray(16)))
        waited = time.monotonic() - started
        assert child.timed_out
        # the grandchild held stdout open too: the read only ended because the group was killed
        _assert_group_gone(child.pid)
    assert STALL <= waited < STALL + 3
    assert caught.value.code == "MEDIA_TIMEOUT" and caught.value.retryable
    _assert_group_gone(pid, pid, grandchild)


def test_a_stalled_write_times_out(hung: Hung) -> None:
    with Child([str(hung.script)], name="fake", stall_timeout=STALL, stdin=True) as child:
        with pytest.raises(MediaTimeout):
            child.write(bytes(4 << 20))  # far more than a pipe holds; the fake never reads
        pid, grandchild = hung.wait_for_pids()
    _assert_group_gone(pid, pid, grandchild)


def test_time_spent_away_from_the_child_is_not_a_stall(hung: Hung) -> None:
    """A slow inference step between reads must not get a healthy ffmpeg killed."""
    with Child([str(hung.script)], name="fake", stall_timeout=STALL, stdout=True) as child:
        pid, _ = hung.wait_for_pids()
        time.sleep(STALL + 0.5)  # the point of the test: time passes while we are not blocked on it
        assert not child.timed_out
        assert child.proc.poll() is None
    assert child.proc.poll() is not None  # leaving the block killed it
    _assert_group_gone(pid)


def test_leaving_the_block_kills_the_group(hung: Hung) -> None:
    with Child([str(hung.script)], name="fake", stall_timeout=60, stdout=True) as child:
        pid, grandchild = hung.wait_for_pids()
        assert _live_members(pid) != []
    assert not child.timed_out
    _assert_group_gone(pid, pid, grandchild)


def test_finish_returns_the_exit_status_and_keeps_stderr(tmp_path: Path) -> None:
    script = _script(tmp_path / "fails", "echo 'first line' >&2\necho 'fake: no such filter' >&2\nexit 3")
    with Child([str(script)], name="fake", stall_timeout=10) as child:
        assert child.finish() == 3
        assert child.stderr_tail() == "first line | fake: no such filter"
        assert child.stderr_tail(1) == "fake: no such filter"


def test_run_captured_returns_status_stdout_and_stderr_tail(tmp_path: Path) -> None:
    script = _script(
        tmp_path / "talks", "echo out\nfor i in 1 2 3 4 5 6 7 8 9 10; do echo err$i >&2; done\nexit 4"
    )
    status, out, err = run_captured([str(script)], name="fake", timeout=10)
    assert (status, out) == (4, b"out\n")
    assert err == " | ".join(f"err{i}" for i in range(3, 11))  # the last 8 lines


def test_run_captured_past_its_timeout_kills_the_group(hung: Hung) -> None:
    started = time.monotonic()
    with pytest.raises(MediaTimeout, match="did not finish within 0.5 s"):
        run_captured([str(hung.script)], name="fake", timeout=STALL)
    assert time.monotonic() - started < STALL + 3
    pid, grandchild = hung.wait_for_pids()
    _assert_group_gone(pid, pid, grandchild)


def test_probe_of_a_hung_ffprobe_times_out(clips: Clips, hung: Hung) -> None:
    with pytest.raises(MediaTimeout):
        probe(clips("silent"), Tools(ffprobe=str(hung.script), probe_timeout=STALL))
    pid, grandchild = hung.wait_for_pids()
    _assert_group_gone(pid, pid, grandchild)


def test_a_decoder_that_never_writes_times_out(clips: Clips, hung: Hung) -> None:
    info = probe(clips("silent"), Tools())
    reader = FrameReader(info, Tools(ffmpeg=str(hung.script), stall_timeout=STALL))
    with reader, pytest.raises(MediaTimeout, match="decoder made no progress"):
        list(reader.batches(4))
    assert reader.frames_read == 0
    pid, grandchild = hung.wait_for_pids()
    _assert_group_gone(pid, pid, grandchild)


def test_an_encoder_that_never_reads_times_out(hung: Hung, tmp_path: Path) -> None:
    target = tmp_path / "out.mp4"
    tools = Tools(ffmpeg=str(hung.script), stall_timeout=STALL)
    writer = _writer(target, tools)
    with pytest.raises(MediaTimeout, match="encoder made no progress"), writer:
        writer.write(np.zeros((100, 36, 64, 3), np.uint8))  # 690 kB: more than the pipe holds
    pid, grandchild = hung.wait_for_pids()
    _assert_group_gone(pid, pid, grandchild)
    assert not target.exists() and not writer.partial.exists()


# The fake writes a partial file (its last argument, after "file:"), complains and exits 1.
CRASHING_ENCODER = (
    'for last; do :; done\nprintf junk > "${last#file:}"\necho "fake: encoder crashed" >&2\nexit 1'
)


@pytest.mark.parametrize("count", [1, 100], ids=["fits-the-pipe", "fills-the-pipe"])
def test_an_encoder_that_exits_at_once_is_an_encode_failure(tmp_path: Path, count: int) -> None:
    """Whether write() meets the broken pipe or finish() the exit status depends on who runs first."""
    script = _script(tmp_path / "crashing-ffmpeg", CRASHING_ENCODER)
    target = tmp_path / "out" / "video.mp4"
    target.parent.mkdir()
    writer = _writer(target, Tools(ffmpeg=str(script), stall_timeout=10))
    with pytest.raises(EncodeFailed) as caught, writer:
        writer.write(np.zeros((count, 36, 64, 3), np.uint8))
        writer.finish()
    assert caught.value.code == "ENCODE_FAILED" and caught.value.retryable
    assert "fake: encoder crashed" in str(caught.value)  # ffmpeg's reason reaches the message
    assert "exited early" in str(caught.value) or "exit status 1" in str(caught.value)
    assert writer._child is not None and writer._child.proc.poll() == 1
    assert list(target.parent.iterdir()) == []  # neither the output nor the partial the fake wrote


def test_a_write_the_child_stops_taking_is_a_broken_pipe(tmp_path: Path) -> None:
    script = _script(tmp_path / "quits", "sleep 0.3\nexit 1")  # reads nothing, then exits mid-write
    child = Child([str(script)], name="fake", stall_timeout=10, stdin=True)
    with child, pytest.raises(BrokenPipeError):
        child.write(bytes(1 << 20))  # blocks after 64 KiB until the child exits


def test_leaving_the_block_after_the_child_exited_still_kills_what_it_started(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = _script(tmp_path / "exits", f'sleep 300 &\necho "$$ $!" > {pids}\nexit 0')
    fake = Hung(script, pids)
    started = time.monotonic()
    with Child([str(script)], name="fake", stall_timeout=STALL) as child:
        leader, grandchild = fake.wait_for_pids()
        child.proc.wait()
    assert time.monotonic() - started < 4
    _assert_group_gone(leader, grandchild)


@pytest.mark.parametrize("tools", [Tools(ffmpeg="/nonexistent/ffmpeg"), Tools(ffprobe="/nonexistent/ffp")])
def test_a_missing_binary_is_a_named_host_fault(clips: Clips, tools: Tools, tmp_path: Path) -> None:
    with pytest.raises(ToolUnavailable) as caught:
        info = probe(clips("audio"), tools)
        with FrameReader(info, tools) as reader:
            list(reader.batches(4))
    assert caught.value.code == "FFMPEG_UNAVAILABLE" and caught.value.retryable
    assert "/nonexistent/" in str(caught.value)
