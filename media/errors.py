"""Errors raised by the media layer (ffprobe, the decode and encode pipes).

Each carries a stable ``code`` (the ``errorCode`` of a failure callback) and
whether retrying the job later or elsewhere could help (``retryable``): a file
we refuse stays refused, a crashed or hung encoder may not crash again.
"""

from __future__ import annotations

from errors import ErrorCode, VidworkerError


class MediaError(VidworkerError):
    """Base of every error raised by :mod:`media`."""

    code = ErrorCode.MEDIA_ERROR
    retryable = False


class UnsupportedMedia(MediaError):
    """Not a container, codec or stream layout we accept (playlists, scripts, no video…)."""

    code = ErrorCode.UNSUPPORTED_MEDIA


class CorruptMedia(MediaError):
    """An accepted container that cannot be read: empty, truncated, damaged."""

    code = ErrorCode.MEDIA_CORRUPT


class LimitExceeded(MediaError):
    """The file is over a configured limit: size, pixels, duration or frame rate."""

    code = ErrorCode.MEDIA_LIMIT_EXCEEDED


class DecodeFailed(MediaError):
    """ffmpeg failed while decoding a file that had passed the probe."""

    code = ErrorCode.DECODE_FAILED


class EncodeFailed(MediaError):
    """The encoder or muxer failed; a worker-side fault, worth another attempt."""

    code = ErrorCode.ENCODE_FAILED
    retryable = True


class FrameCountMismatch(MediaError):
    """The encoded file does not hold exactly the frames that were decoded."""

    code = ErrorCode.FRAME_COUNT_MISMATCH
    retryable = True


class MediaTimeout(MediaError):
    """An ffmpeg child made no progress within its timeout and was killed."""

    code = ErrorCode.MEDIA_TIMEOUT
    retryable = True


class ToolUnavailable(MediaError):
    """ffmpeg or ffprobe cannot be started (not installed, not executable): a host fault."""

    code = ErrorCode.FFMPEG_UNAVAILABLE
    retryable = True


class DecodeOverrun(DecodeFailed):
    """The source decodes to more frames than its container declares: its duration lies.

    The decoder is capped a margin past the declared length, so a damaged or
    crafted file cannot keep a worker decoding for hours; refused, not retried.
    """


class ChildLimitExceeded(LimitExceeded):
    """The kernel stopped an ffmpeg child at one of its resource limits (file size, CPU time).

    The same input would hit the same limit again: refused, not retried.
    """
