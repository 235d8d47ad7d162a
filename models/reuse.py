"""Lossless temporal reuse: a window whose input equals the previous frame's is not run again.

Anime drawn on twos and threes, slides, screen recordings and static shots hold
the same picture for several frames. A window (a tile with its overlap, which
covers the network's whole receptive field, or the whole frame) whose input
pixels are bit-identical to the same window of the immediately previous frame
would produce the very same output, so the previous output is used. The output
is byte-identical to computing every frame: the engine keeps every network
call's batch shape fixed (a partial batch is padded, never shrunk), so the
kernels that run do not change with what was skipped.

One :class:`ReuseState` belongs to one job (one stream of consecutive frames);
the engine, shared between jobs, keeps none.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from models.tiling import TilePlan, Window


@dataclass
class ReuseState:
    """The previous frame of one job, its window outputs, and what was skipped so far."""

    frames: int = 0
    frames_reused: int = 0
    pixels: int = 0
    pixels_reused: int = 0
    _key: tuple[int, int, int] | None = None
    _frame: np.ndarray | None = None
    _outputs: list[torch.Tensor] = field(default_factory=list)

    def previous(self, plan: TilePlan, tile: int) -> tuple[np.ndarray, list[torch.Tensor]] | None:
        """The previous frame and its window outputs, if they were made with this plan."""
        if self._frame is None or self._key != (plan.height, plan.width, tile):
            return None
        return self._frame, self._outputs

    def remember(self, plan: TilePlan, tile: int, frame: np.ndarray, outputs: list[torch.Tensor]) -> None:
        self._key = (plan.height, plan.width, tile)
        self._frame = frame.copy()
        self._outputs = outputs

    def count(self, plan: TilePlan, reused: list[bool]) -> None:
        """One frame went through; ``reused[k]`` tells whether window ``k`` came from the previous frame."""
        self.frames += 1
        self.pixels += plan.pixels
        hits = zip(plan.windows, reused, strict=True)
        self.pixels_reused += sum(window.pixels for window, hit in hits if hit)
        self.frames_reused += int(all(reused))

    @property
    def skip_rate(self) -> float:
        """The share of network work skipped: window input pixels taken from the previous frame."""
        return self.pixels_reused / self.pixels if self.pixels else 0.0


def same_window(frame: np.ndarray, previous: np.ndarray, window: Window) -> bool:
    """Whether ``window``'s input pixels (core and overlap) are bit-identical in both frames."""
    rows = slice(window.rows.start, window.rows.stop)
    cols = slice(window.cols.start, window.cols.stop)
    return bool(np.array_equal(frame[rows, cols], previous[rows, cols]))
