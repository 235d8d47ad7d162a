"""Three overlapped stages — decode, transform, encode — joined by bounded queues.

Decode and encode run in their own threads so they hide behind the transform
(inference), which runs in the caller's thread. Each queue holds at most
``depth`` batches, so memory stays flat whatever the video's length. A failure
anywhere stops all three: the first error wins, ``abort`` tears the pipes down
(which unblocks a thread stuck in a read or a write), and both threads are
joined before :func:`run_stream` returns or raises.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from tasks.errors import StageFailed

log = logging.getLogger(__name__)

POLL = 0.1
"""Seconds between checks of the stop flag while a queue is full or empty."""

_END = object()


class _Stop(Exception):
    """Raised inside a stage when another stage has already failed."""


class _Stream:
    def __init__(self, depth: int) -> None:
        self.decoded: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self.transformed: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()

    def fail(self, error: BaseException) -> None:
        with self._lock:
            self.errors.append(error)
        self.stop.set()

    def put(self, target: queue.Queue[Any], item: object) -> None:
        while not self.stop.is_set():
            try:
                target.put(item, timeout=POLL)
                return
            except queue.Full:
                continue
        raise _Stop

    def get(self, source: queue.Queue[Any]) -> Any:
        while not self.stop.is_set():
            try:
                return source.get(timeout=POLL)
            except queue.Empty:
                continue
        raise _Stop

    def guarded(self, body: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                body()
            except _Stop:
                pass
            except BaseException as error:  # carried to the caller's thread
                self.fail(error)

        return run


def run_stream(
    batches: Iterator[np.ndarray],
    transform: Callable[[np.ndarray], np.ndarray],
    sink: Callable[[np.ndarray], None],
    *,
    abort: Callable[[], None],
    after_batch: Callable[[int], None] = lambda frames: None,
    depth: int = 2,
) -> int:
    """Feed every batch through ``transform`` into ``sink``; returns the frames sunk.

    ``after_batch(frames_transformed_so_far)`` runs in the caller's thread after
    each transform and may raise (cancel) to stop the stream. ``abort`` must make
    a blocked ``batches``/``sink`` call return or raise (kill the ffmpeg
    children); it is called once on failure, before the threads are joined.
    """
    stream = _Stream(depth)
    written = 0

    def decode() -> None:
        for batch in batches:
            stream.put(stream.decoded, batch)
        stream.put(stream.decoded, _END)

    def encode() -> None:
        nonlocal written
        while (batch := stream.get(stream.transformed)) is not _END:
            sink(batch)
            written += len(batch)

    threads = [
        threading.Thread(target=stream.guarded(decode), name="decode", daemon=True),
        threading.Thread(target=stream.guarded(encode), name="encode", daemon=True),
    ]
    for thread in threads:
        thread.start()
    try:
        done = 0
        while (batch := stream.get(stream.decoded)) is not _END:
            result = transform(batch)
            done += len(result)
            stream.put(stream.transformed, result)
            after_batch(done)
        stream.put(stream.transformed, _END)
        threads[1].join()
    except _Stop:
        pass
    except BaseException as error:
        stream.fail(error)
    finally:
        if stream.errors:
            stream.stop.set()
            abort()
        for thread in threads:
            thread.join()
    if stream.errors:
        first = stream.errors[0]
        for later in stream.errors[1:]:
            log.debug("also failed after the first error: %r", later)
        if isinstance(first, Exception) and not hasattr(first, "code"):
            raise StageFailed(f"{type(first).__name__}: {first}") from first
        raise first
    return written
