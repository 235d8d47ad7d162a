"""Tile plans: how a frame is cut into overlapping windows for inference.

Coordinates are input pixels. Each window owns a *core* region (the cores
partition the frame, evenly: no sliver) and reads ``pad`` pixels of context
beyond its core only on the sides where another window is; on a side at the
frame edge it reads nothing more, because the network pads there exactly as it
does on the whole frame. A tile therefore costs its core plus the overlap it
really needs (an edge tile at tile 128 and pad 18 reads 146 px, not 164), and
windows come in a few shapes (corner, edge, inner) that batch by shape.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Span:
    """One axis of a window: ``[start, stop)`` is read, ``[core_start, core_stop)`` is kept."""

    start: int
    stop: int
    core_start: int
    core_stop: int


@dataclass(frozen=True)
class Window:
    rows: Span
    cols: Span

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) read, in input pixels."""
        return (self.rows.stop - self.rows.start, self.cols.stop - self.cols.start)

    @property
    def pixels(self) -> int:
        height, width = self.shape
        return height * width


@dataclass(frozen=True)
class TilePlan:
    """Windows covering a ``height × width`` frame."""

    height: int
    width: int
    windows: tuple[Window, ...]

    @property
    def pixels(self) -> int:
        """Input pixels the windows read together (the overlaps counted in each window)."""
        return sum(window.pixels for window in self.windows)


def axis_spans(length: int, tile: int, pad: int) -> list[Span]:
    """Split ``[0, length)`` into even cores of at most ``tile``, each read with ``pad`` context
    toward its neighbours (clamped to the axis).

    ``tile <= 0`` or ``tile >= length`` gives one span over the whole axis.
    """
    if tile <= 0 or tile >= length:
        return [Span(0, length, 0, length)]
    count = math.ceil(length / tile)
    bounds = [length * index // count for index in range(count + 1)]
    return [
        Span(max(0, core_start - pad), min(length, core_stop + pad), core_start, core_stop)
        for core_start, core_stop in itertools.pairwise(bounds)
    ]


def plan_tiles(height: int, width: int, tile: int, pad: int) -> TilePlan:
    """The windows for one frame size; ``tile <= 0`` means the whole frame in one window."""
    rows = axis_spans(height, tile, pad)
    cols = axis_spans(width, tile, pad)
    return TilePlan(height=height, width=width, windows=tuple(Window(r, c) for r in rows for c in cols))


def _ramp(span: Span, length: int, scale: int) -> torch.Tensor:
    """1-D blend weights over a window's output pixels along one axis.

    Inside the core the weight is 1. On a side that borders another window the
    weight ramps linearly from the window edge to as far past the core edge as
    the margin is wide, so two neighbours' weights sum to 1 across the overlap.
    """
    size = (span.stop - span.start) * scale
    position = torch.arange(size, dtype=torch.float32) + 0.5
    weight = torch.ones(size)
    lead = (span.core_start - span.start) * scale
    if span.core_start > 0 and lead > 0:
        weight = torch.minimum(weight, position / (2 * lead))
    trail = (span.stop - span.core_stop) * scale
    if span.core_stop < length and trail > 0:
        weight = torch.minimum(weight, (size - position) / (2 * trail))
    return weight


def feather_weights(plan: TilePlan, scale: int) -> list[torch.Tensor]:
    """Per-window (1, 1, h*scale, w*scale) float32 weights for feathered blending."""
    weights = []
    for window in plan.windows:
        rows = _ramp(window.rows, plan.height, scale)
        cols = _ramp(window.cols, plan.width, scale)
        weights.append((rows[:, None] * cols[None, :])[None, None])
    return weights
