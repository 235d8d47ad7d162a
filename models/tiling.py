"""Tile plans: how a frame is cut into overlapping windows for inference.

Coordinates are input pixels. A window is ``tile + 2 * pad`` on a side at most
(clamped to the frame), every window in a plan has the same size so windows can
be batched, and windows are shifted inward at the frame edges rather than
shrunk. Each window owns a *core* region; the cores partition the frame.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class TilePlan:
    """Windows covering a ``height × width`` frame; ``window_size`` is (h, w)."""

    height: int
    width: int
    windows: tuple[Window, ...]
    window_size: tuple[int, int]


def axis_spans(length: int, tile: int, pad: int) -> list[Span]:
    """Split ``[0, length)`` into even cores of at most ``tile`` with ``pad`` context each side.

    ``tile <= 0`` or ``tile >= length`` gives one span over the whole axis.
    """
    if tile <= 0 or tile >= length:
        return [Span(0, length, 0, length)]
    count = math.ceil(length / tile)
    core = math.ceil(length / count)
    size = min(length, core + 2 * pad)
    spans = []
    for index in range(count):
        core_start = index * core
        core_stop = min(length, core_start + core)
        if core_start >= core_stop:
            break
        start = min(max(0, core_start - pad), length - size)
        spans.append(Span(start, start + size, core_start, core_stop))
    return spans


def plan_tiles(height: int, width: int, tile: int, pad: int) -> TilePlan:
    """The windows for one frame size; ``tile <= 0`` means the whole frame in one window."""
    rows = axis_spans(height, tile, pad)
    cols = axis_spans(width, tile, pad)
    windows = tuple(Window(r, c) for r in rows for c in cols)
    size = (rows[0].stop - rows[0].start, cols[0].stop - cols[0].start)
    return TilePlan(height=height, width=width, windows=windows, window_size=size)


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
