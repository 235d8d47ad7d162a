"""ffmpeg children: argument lists, own process group, drained stderr, timeouts.

Every ffmpeg/ffprobe the project starts goes through here. A child runs in a
new session (its own process group) so that killing it takes anything it
started; its stderr is drained by a thread into a bounded tail so a chatty
child can never block on a full pipe; a watchdog kills the group when the
owner has been blocked on the child (a read, a write, the final wait) for
longer than ``stall_timeout`` seconds. Time the owner spends elsewhere (a slow
inference step) does not count: ffmpeg is not hung while we keep it waiting.

If the owning process dies without cleaning up, even by SIGKILL, the child
dies with it: it is started through util-linux ``setpriv --pdeathsig KILL``,
so the kernel sends it SIGKILL when its parent goes. (Its pipes would close
too, but an ffmpeg that writes to a file and logs nothing would never notice.)
The parent, for the kernel, is the *thread* that started the child: a child
started from a thread that ends before it does is killed then. Every
:class:`Child` of the project is started in the thread that owns it for its
whole life (the task's thread enters ``FrameReader``, ``FrameWriter`` and
``run_render``; the pipeline's decode and encode threads only read and write
pipes), and :func:`run_captured` waits for its child in the thread that
started it. ``setpriv`` arms the signal a moment after the fork: an owner
that dies within those milliseconds leaves the child to its pipes. Without
``setpriv`` children run without the signal (one warning).

Children also run under kernel resource limits (:class:`ChildLimits`, set with
util-linux ``prlimit``): address space, file size, CPU time. A child the kernel
stops at its file-size or CPU-time limit is :class:`ChildLimitExceeded`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from media.errors import ChildLimitExceeded, MediaTimeout, ToolUnavailable

log = logging.getLogger(__name__)

STDERR_LINES = 40
"""Lines of a child's stderr kept for error messages."""

CUDA_MARKERS = ("nvenc", "cuda", "cuvid", "nvdec")
"""Arguments that load the CUDA driver, which reserves tens of GiB of address space at start."""


@dataclass(frozen=True)
class ChildLimits:
    """Kernel resource limits of a child (``prlimit``); 0 means no limit.

    ``address_space``: bytes of virtual memory (RLIMIT_AS); an allocation past
    it fails. Not applied to a command that loads CUDA (:data:`CUDA_MARKERS`):
    the driver reserves far more address space than it uses.
    ``file_size``: bytes any file the child writes may reach (RLIMIT_FSIZE);
    the kernel stops it with SIGXFSZ. ``cpu_seconds``: CPU time of all its
    threads together (RLIMIT_CPU, soft = hard); the kernel kills it.
    """

    address_space: int = 0
    file_size: int = 0
    cpu_seconds: int = 0

    def prlimit_args(self, args: Sequence[str]) -> list[str]:
        """``prlimit`` options for ``args`` (no core files either), or ``[]`` when nothing is limited."""
        cuda = any(marker in arg for arg in args for marker in CUDA_MARKERS)
        options = [
            f"--{name}={value}"
            for name, value in (
                ("as", 0 if cuda else self.address_space),
                ("fsize", self.file_size),
                ("cpu", self.cpu_seconds),
            )
            if value > 0
        ]
        return [*options, "--core=0"] if options else []


class Child:
    """One running ffmpeg process and the pipes the owner uses.

    ``stall_timeout`` is in seconds; ``nice`` the niceness it runs at;
    ``limits`` its kernel resource limits. It dies with the thread that creates
    it (see the module's docstring). Use it as a context manager: leaving the
    block kills its process group (also when the child itself has exited) and
    reaps the child.
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
        limits: ChildLimits | None = None,
    ) -> None:
        self.name = name
        self.limits = limits or ChildLimits()
        self.args = wrapped(args, nice=nice, limits=self.limits)
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
        """Close stdin, wait for the exit (timed like any other wait) and return its status.

        Raises :class:`ChildLimitExceeded` when the kernel stopped the child at
        its file-size or CPU-time limit.
        """
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        with self.blocking():
            cpu = self._cpu_at_exit()
            status = self.proc.wait()
        self._drain.join(timeout=5)
        self._done.set()
        self._check_limits(status, cpu)
        return status

    def _cpu_at_exit(self) -> float | None:
        """Wait for the exit without reaping, and read the CPU seconds the child used; ``None`` if unknown."""
        try:
            os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:  # already reaped
            return None
        return cpu_seconds(self.proc.pid)

    def _check_limits(self, status: int, cpu: float | None) -> None:
        if status == -signal.SIGXFSZ:
            raise ChildLimitExceeded(
                f"{self.name} wrote past the file-size limit of {self.limits.file_size} bytes and was stopped"
            )
        limit = self.limits.cpu_seconds
        spent = limit and cpu is not None and cpu >= 0.9 * limit
        if status == -signal.SIGKILL and not self.timed_out and spent:
            raise ChildLimitExceeded(
                f"{self.name} used its CPU-time limit of {limit} s ({cpu:.1f} s) and was killed"
            )

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
            if since is None and self.proc.poll() is not None:  # never reap under finish()'s waitid
                return


def wrapped(args: Sequence[str], *, nice: int = 0, limits: ChildLimits | None = None) -> list[str]:
    """``args`` as started: ``setpriv --pdeathsig KILL``, ``prlimit``, ``nice -n`` in front where they apply.

    Each wrapper execs the next, so the child keeps one pid. A wrapper that is
    not installed is left out (warned once). :class:`ToolUnavailable` if the
    program itself is missing: a wrapper would otherwise report it as an exit status.
    """
    program = shutil.which(args[0])
    if program is None:
        raise ToolUnavailable(f"cannot start {args[0]}: not found or not executable")
    command = [program, *args[1:]]
    if nice and (nice_path := _wrapper("nice")):
        command = [nice_path, "-n", str(nice), *command]
    options = (limits or ChildLimits()).prlimit_args(args)
    if options and (prlimit := _wrapper("prlimit")):
        command = [prlimit, *options, "--", *command]
    if setpriv := _wrapper("setpriv"):
        command = [setpriv, "--pdeathsig", "KILL", "--", *command]
    return command


@functools.cache
def _wrapper(name: str) -> str | None:
    """Where the util-linux/coreutils program ``name`` is; looked up once, a warning if missing."""
    path = shutil.which(name)
    if path is None:
        log.warning("%s is not installed: ffmpeg children run without %s", name, WRAPPED[name])
    return path


WRAPPED = {
    "setpriv": "dying with the worker (PR_SET_PDEATHSIG)",
    "prlimit": "resource limits",
    "nice": "a lower priority",
}


def cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system, all threads) process ``pid`` has used, from ``/proc``; ``None`` if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_captured(
    args: Sequence[str], *, name: str, timeout: float, limits: ChildLimits | None = None
) -> tuple[int, bytes, str]:
    """Run a short command to completion: ``(status, stdout, stderr tail)``.

    The whole run is limited to ``timeout`` seconds; past it the process group
    is killed and :class:`MediaTimeout` raised. It dies with the calling thread
    and runs under ``limits``, as a :class:`Child` does.
    """
    command = wrapped(args, limits=limits)
    try:
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
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
