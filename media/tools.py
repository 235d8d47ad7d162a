"""Where ffmpeg and ffprobe are, how long they may stall, their limits; probed encoders and decoders."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

from media.errors import MediaError, ToolUnavailable
from media.process import ChildLimits, run_captured

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tools:
    """The ffmpeg binaries and their timeouts (seconds).

    ``stall_timeout``: a decode or encode pipe that keeps us waiting this long
    is killed. ``probe_timeout``: a whole ffprobe run, or an encoder probe.
    ``nice``: niceness of the decode and encode pipes, so the daemon's own
    threads (visibility heartbeats, health, callbacks) win the CPU over a busy
    encoder. Throughput does not depend on it: measured on 2 cores, nice 0 and
    19 gave the same end-to-end time within the noise (the bounded queues pace
    the pipeline either way).

    Kernel limits of every child (bytes, CPU seconds; 0 = none; see
    :class:`~media.process.ChildLimits`). ``max_address_space``: measured peaks
    (VmPeak, ffmpeg 5.1) are 0.8 GiB decoding 4K with automatic threads, 1.4 GiB
    with 16 threads, 2.8 GiB for 8K libx265 with 32 pool threads, 3.8 GiB for
    4K libx264 with 32 threads and 10.4 GiB with 96 (a 64-core host: one
    64 MiB malloc arena and an 8 MiB stack per thread); 32 GiB leaves room and
    still stops a runaway allocation. NVENC commands are exempt (CUDA reserves
    its address space up front). ``max_file_size``: any one file ffmpeg writes.
    ``max_cpu_seconds``: a runaway backstop, a week of one core (a 12 h job on
    14 busy cores); the job timeout is the real bound.
    """

    ffmpeg: str = "ffmpeg"
    ffprobe: str = "ffprobe"
    stall_timeout: float = 120.0
    probe_timeout: float = 30.0
    nice: int = 10
    max_address_space: int = 32 * 1024**3
    max_file_size: int = 64 * 1024**3
    max_cpu_seconds: int = 7 * 24 * 3600

    @property
    def limits(self) -> ChildLimits:
        """The resource limits children run under."""
        return ChildLimits(self.max_address_space, self.max_file_size, self.max_cpu_seconds)

    def version(self) -> str:
        """First line of ``ffmpeg -version``, or why it could not be run."""
        try:
            status, out, err = run_captured([self.ffmpeg, "-version"], name="ffmpeg -version", timeout=10)
        except MediaError as error:
            return f"unavailable ({error})"
        lines = out.decode("utf-8", "replace").splitlines()
        return lines[0] if status == 0 and lines else f"unavailable ({err})"

    def encoder_works(self, encoder: str) -> bool:
        """Whether ``encoder`` is built in *and* can encode here (NVENC needs a GPU and driver)."""
        return _encoder_works(self.ffmpeg, encoder, self.probe_timeout)

    def video_decoders(self) -> frozenset[str]:
        """Codec names (as ffprobe's ``codec_name``) this ffmpeg has a video decoder for; cached.

        :class:`ToolUnavailable` if ``ffmpeg -decoders`` cannot be run.
        """
        return _video_decoders(self.ffmpeg, self.probe_timeout)


@functools.cache
def _encoder_works(ffmpeg: str, encoder: str, timeout: float) -> bool:
    """Encode a few black frames to nowhere; cached per (binary, encoder) for the process."""
    args = [ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-f", "lavfi", "-i",
            "color=c=black:s=256x256:r=25:d=0.2", "-c:v", encoder, "-f", "null", "-"]  # fmt: skip
    try:
        status, _, err = run_captured(args, name=f"{encoder} probe", timeout=timeout)
    except MediaError as error:
        log.info("encoder %s unusable: %s", encoder, error)
        return False
    if status != 0:
        log.info("encoder %s unusable: %s", encoder, err or f"exit status {status}")
    return status == 0


@functools.cache
def _video_decoders(ffmpeg: str, timeout: float) -> frozenset[str]:
    """Parse ``ffmpeg -decoders``; cached per (binary, timeout) for the process, failures not cached."""
    args = [ffmpeg, "-hide_banner", "-decoders"]
    status, out, err = run_captured(args, name="ffmpeg -decoders", timeout=timeout)
    if status != 0:
        raise ToolUnavailable(f"ffmpeg -decoders failed: {err or f'exit status {status}'}")
    return parse_decoders(out.decode("utf-8", "replace"))


def parse_decoders(listing: str) -> frozenset[str]:
    """Video codec names in an ``ffmpeg -decoders`` listing.

    A line is `` V....D name  description``; a decoder named apart from its
    codec ends with ``(codec name)`` (``libdav1d ... (codec av1)``).
    """
    codecs = set()
    _, _, table = listing.partition(" ------\n")
    for line in table.splitlines():
        flags, _, rest = line.strip().partition(" ")
        if not flags.startswith("V") or not rest:
            continue
        name = rest.split()[0]
        if rest.endswith(")") and "(codec " in rest:
            name = rest.rsplit("(codec ", 1)[1].rstrip(")")
        codecs.add(name)
    return frozenset(codecs)
