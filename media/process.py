"""ffmpeg children: argument lists, own process group, drained stderr, timeouts.

Every ffmpeg/ffprobe the project starts goes through here. A child runs in a
new session (its own process group) so that killing it takes anything it
started; its stderr is drained by a thread into a bounded tail so a chatty
child can never block on a full pipe; a watchdog kills the group when the
owner has been blocked on the child (a read, a write, the final wait) for
longer than ``stall_timeout`` seconds. Time the owner spends elsewhere (a slow
inference step) does not count: ffmpeg is not hung while we keep it waiting.

If the owning process dies without cleaning up, the child's pipes close and
ffmpeg exits on its own: a decoder gets EPIPE, an encoder reads end of file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import IO

from media.errors import MediaTimeout, ToolUnavailable

log = logging.getLogger(__name__)

STDERR_LINES = 40
"""Lines of a child's stderr kept for error messages."""


class Child:
    """One running ffmpeg process and the pipes the owner uses.

    ``stall_timeout`` is in seconds; ``nice`` the niceness it runs at. Use it
    as a context manager: leaving the block kills its process group (also when
    the child itself has exited) and reaps the child.
    """

    def __init__(
        self,
        args: Sequence[str],
        *,
        name: str,
        stall_timeout: float,
        stdin: bool = False,
        stdout: bool = False,
        nice: int = 0,
    ) -> None:
        self.name = name
        self.args = _niced(list(args), nice)
        self.stall_timeout = stall_timeout
        self.timed_out = False
        self._stderr: deque[str] = deque(maxlen=STDERR_LINES)
        self._busy_since: float | None = None
        self._done = threading.Event()
        log.debug("starting %s: %s", name, self.args)
        try:
            self.proc = subprocess.Popen(
                self.args,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
                bufsize=0,
            )
        except OSError as error:
            raise ToolUnavailable(f"cannot start {name} ({self.args[0]}): {error}") from error
        self._drain = threading.Thread(target=self._drain_stderr, name=f"{name}-stderr", daemon=True)
        self._drain.start()
        self._watchdog = threading.Thread(target=self._watch, name=f"{name}-watchdog", daemon=True)
        self._watchdog.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr_tail(self, lines: int = 8) -> str:
        """The last ``lines`` lines ffmpeg wrote to stderr, joined."""
        return " | ".join(list(self._stderr)[-lines:])

    @contextlib.contextmanager
    def blocking(self) -> Iterator[None]:
        """Mark a call that waits on the child; the watchdog times it."""
        self._busy_since = time.monotonic()
        try:
            yield
        except OSError as error:  # a pipe broken by the watchdog's kill
            if self.timed_out:
                raise self.timeout_error() from error
            raise
        finally:
            self._busy_since = None
        if self.timed_out:
            raise self.timeout_error()

    def timeout_error(self) -> MediaTimeout:
        return MediaTimeout(f"{self.name} made no progress for {self.stall_timeout:g} s and was killed")

    def read_into(self, view: memoryview) -> int:
        """Fill ``view`` from stdout; returns the bytes read (short only at end of stream)."""
        stream = self._pipe(self.proc.stdout)
        filled = 0
        with self.blocking():
            while filled < len(view):
                count = stream.readinto(view[filled:])  # type: ignore[attr-defined]
                if not count:
                    break
                filled += count
        return filled

    def read_line(self) -> bytes:
        """One line from stdout (with its ``\\n``), ``b""`` at end of stream; for ``-progress pipe:1``."""
        stream = self._pipe(self.proc.stdout)
        line = bytearray()
        with self.blocking():
            while not line.endswith(b"\n"):
                chunk = stream.read(1)
                if not chunk:
                    break
                line += chunk
        return bytes(line)

    def write(self, data: memoryview | bytes) -> None:
        """Write all of ``data`` to stdin; raises ``BrokenPipeError`` if the child is gone.

        The pipe is unbuffered, so one ``write`` may take only part of the data
        (a signal, a child exiting mid-write); the rest is written in turn.
        """
        stream = self._pipe(self.proc.stdin)
        view = memoryview(data).cast("B")
        with self.blocking():
            while view:
                count = stream.write(view)
                if not count:
                    raise BrokenPipeError(f"{self.name} stopped taking input")
                view = view[count:]

    def finish(self) -> int:
        """Close stdin, wait for the exit (timed like any other wait) and return its status."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        with self.blocking():
            status = self.proc.wait()
        self._drain.join(timeout=5)
        self._done.set()
        return status

    def kill(self) -> None:
        """Kill the whole process group (anything the child started, too) and reap the child."""
        # Also after the child exited: what it started may live on in its group. Linux does not
        # hand out a pid again while a process group still carries it as its id.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self.proc.wait()
        self._done.set()
        self._drain.join(timeout=5)

    def __enter__(self) -> Child:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.kill()

    @staticmethod
    def _pipe(stream: IO[bytes] | None) -> IO[bytes]:
        if stream is None:
            raise ValueError("this child was started without that pipe")
        return stream

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").strip()
            if line:
                self._stderr.append(line[:500])
        self.proc.stderr.close()

    def _watch(self) -> None:
        while not self._done.wait(0.2):
            since = self._busy_since
            if since is not None and time.monotonic() - since > self.stall_timeout:
                log.warning(
                    "%s (pid %d) stalled for %g s; killing its group", self.name, self.pid, self.stall_timeout
                )
                self.timed_out = True
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                return
            if self.proc.poll() is not None and since is None:
                return


def _niced(args: list[str], nice: int) -> list[str]:
    """``args`` run at ``nice`` (``nice -n``) when asked for and the ``nice`` program exists."""
    wrapper = shutil.which("nice") if nice else None
    if wrapper is None:
        return args
    program = shutil.which(args[0])
    if program is None:
        raise ToolUnavailable(f"cannot start {args[0]}: not found or not executable")
    return [wrapper, "-n", str(nice), program, *args[1:]]


def run_captured(args: Sequence[str], *, name: str, timeout: float) -> tuple[int, bytes, str]:
    """Run a short command to completion: ``(status, stdout, stderr tail)``.

    The whole run is limited to ``timeout`` seconds; past it the process group
    is killed and :class:`MediaTimeout` raised.
    """
    try:
        proc = subprocess.Popen(
            list(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip
    except OSError as error:
        raise ToolUnavailable(f"cannot start {name} ({args[0]}): {error}") from error
    with proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise MediaTimeout(f"{name} did not finish within {timeout:g} s and was killed") from None
        except BaseException:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            raise
    tail = " | ".join(err.decode("utf-8", "replace").strip().splitlines()[-8:])
    return proc.returncode, out, tail
