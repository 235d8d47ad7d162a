"""ffmpeg children die with their owner, even one killed by SIGKILL, and run under kernel limits.

The owner in the SIGKILL tests is a real Python process (or thread) that
starts an endless ffmpeg which logs nothing and writes nowhere, so nothing
but the parent-death signal could stop it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from media import process
from media.errors import ChildLimitExceeded
from media.probe import probe
from media.process import Child, ChildLimits, run_captured
from media.reader import FrameReader
from media.tools import Tools
from tests.conftest import Clips

ROOT = Path(__file__).resolve().parents[2]
ENDLESS = ["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-re",
           "-f", "lavfi", "-i", "testsrc2=s=64x36:r=10", "-f", "null", "-"]  # fmt: skip
"""An ffmpeg that runs until killed, at 10 frames/s of real time, silent."""

OWNER = """
import sys, time
sys.path.insert(0, {root!r})
from media.process import Child
child = Child({args!r}, name="endless", stall_timeout=60)
print(child.pid, flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    """Whether ``pid`` has not exited (a zombie counts as gone: orphans may be reaped late here)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _armed(pid: int) -> int:
    """Wait until ``pid`` runs ffmpeg itself: past ``setpriv``, whose ``prctl`` arms the signal."""
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}/comm").read_text().strip() != "ffmpeg":
        assert time.monotonic() < deadline, "ffmpeg never started"
        time.sleep(0.01)
    return pid


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not _alive(pid)


@contextlib.contextmanager
def _never_leaked(pids: list[int]) -> Iterator[None]:
    """Kill what a failed test left running (each pid leads its own group)."""
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def _limits_of(pid: int) -> dict[str, str]:
    """``/proc/<pid>/limits`` as ``{"Max file size": "<soft>", ...}``."""
    rows = Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]
    return {row[:26].strip(): row[26:].split()[0] for row in rows}


def test_ffmpeg_dies_with_an_owner_killed_by_sigkill() -> None:
    code = OWNER.format(root=str(ROOT), args=ENDLESS)
    owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    child = int(owner.stdout.readline())
    with _never_leaked([child]):
        assert _alive(_armed(child))
        owner.kill()  # SIGKILL: no cleanup of any kind runs in the owner
        owner.wait()
        assert _gone_within(child, 2), "ffmpeg outlived the worker that started it"


def test_a_child_dies_with_the_thread_that_started_it() -> None:
    """Why children are started in the thread that owns them (see media.process)."""
    started: list[Child] = []

    def start() -> None:
        started.append(Child(ENDLESS, name="endless", stall_timeout=60))
        _armed(started[0].pid)

    thread = threading.Thread(target=start)
    thread.start()
    thread.join()
    with _never_leaked([started[0].pid]), started[0]:
        assert _gone_within(started[0].pid, 2)


def test_a_child_writing_past_its_file_size_limit_is_stopped_with_a_code(tmp_path: Path) -> None:
    target = tmp_path / "out.raw"
    args = ["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-f", "lavfi", "-i",
            "testsrc2=s=64x36:r=10:d=60", "-f", "rawvideo", "-y", f"file:{target}"]  # fmt: skip
    with (
        Child(args, name="writer", stall_timeout=30, limits=ChildLimits(file_size=100_000)) as child,
        pytest.raises(
            ChildLimitExceeded, match="writer wrote past the file-size limit of 100000 bytes"
        ) as caught,
    ):
        child.finish()
    assert caught.value.code == "MEDIA_LIMIT_EXCEEDED" and not caught.value.retryable
    assert target.stat().st_size == 100_000  # 4.1 MB asked for, the kernel stopped it at the limit
    assert child.proc.returncode == -signal.SIGXFSZ


def test_a_child_past_its_cpu_time_limit_is_killed_with_a_code() -> None:
    busy = ["sh", "-c", "while :; do :; done"]
    with (
        Child(busy, name="busy", stall_timeout=30, limits=ChildLimits(cpu_seconds=1)) as child,
        pytest.raises(ChildLimitExceeded, match="busy used its CPU-time limit of 1 s") as caught,
    ):
        child.finish()
    assert caught.value.code == "MEDIA_LIMIT_EXCEEDED"


def test_a_child_killed_by_its_owner_is_not_a_limit(tmp_path: Path) -> None:
    """A SIGKILL that is not the CPU limit's (a kill, the OOM killer) is left to the caller's status check."""
    with Child(ENDLESS, name="endless", stall_timeout=30, limits=ChildLimits(cpu_seconds=3600)) as child:
        os.kill(child.pid, signal.SIGKILL)
        assert child.finish() == -signal.SIGKILL


def test_the_decoder_runs_under_the_tools_limits(clips: Clips) -> None:
    tools = Tools(max_address_space=20 * 1024**3, max_file_size=5 * 1024**3, max_cpu_seconds=4000)
    info = probe(clips("clip60"), tools)
    with FrameReader(info, tools) as reader:
        next(reader.batches(1))  # ffmpeg is running
        assert reader._child is not None
        limits = _limits_of(reader._child.pid)
    assert limits["Max address space"] == str(20 * 1024**3)
    assert limits["Max file size"] == str(5 * 1024**3)
    assert limits["Max cpu time"] == "4000"
    assert limits["Max core file size"] == "0"


def test_no_limit_means_none() -> None:
    assert ChildLimits().prlimit_args(ENDLESS) == []
    assert ChildLimits(file_size=10).prlimit_args(ENDLESS) == ["--fsize=10", "--core=0"]


def test_an_nvenc_command_gets_no_address_space_limit() -> None:
    """The CUDA driver reserves tens of GiB of address space when it starts."""
    limits = ChildLimits(address_space=1 << 30, file_size=10)
    assert limits.prlimit_args([*ENDLESS, "-c:v", "h264_nvenc"]) == ["--fsize=10", "--core=0"]
    assert "--as=1073741824" in limits.prlimit_args([*ENDLESS, "-c:v", "libx264"])


def test_without_setpriv_and_prlimit_children_still_run_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ffmpeg = shutil.which("ffmpeg")
    assert ffmpeg is not None
    monkeypatch.setenv("PATH", str(tmp_path))  # no setpriv, prlimit or nice there
    process._wrapper.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="media.process"):
            for _ in range(2):
                status, out, _ = run_captured(
                    [ffmpeg, "-version"], name="version", timeout=20, limits=ChildLimits(1)
                )
                assert status == 0 and out.startswith(b"ffmpeg version")
    finally:
        process._wrapper.cache_clear()
    warnings = [record.getMessage() for record in caplog.records]
    assert sum("setpriv is not installed" in warning for warning in warnings) == 1
    assert sum("prlimit is not installed" in warning for warning in warnings) == 1
