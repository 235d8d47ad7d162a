"""Horizontal bar chart (SVG, no dependencies) of speedups against the official Real-ESRGAN pipeline.

    python scripts/bench_plot.py FIGURES.json [--output docs/bench.svg]

FIGURES.json::

    {
      "title": "vidworker against the official Real-ESRGAN pipeline",
      "box": "AMD EPYC (AVX-512), 2 vCPU",
      "bars": [{"label": "engine, whole frame", "value": 2.1}, ...],
      "goal_lines": [{"label": "goal", "value": 2.0}]
    }

Each bar is a ratio: how many times faster than the official pipeline (1.0 =
as fast; drawn as the dashed "official" line). ``goal_lines`` is optional.
``render(figures)`` returns the SVG text, for use from Python.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

ROOT = Path(__file__).resolve().parent.parent

WIDTH = 640
MARGIN = 20
TITLE_Y = 30
BOX_Y = 50
TOP = 78  # y of the first bar's slot
BAR_HEIGHT = 26
BAR_GAP = 14
AXIS_SPACE = 44  # below the last bar: tick labels and the axis caption
VALUE_SPACE = 54  # right of the longest bar: its value label
CHAR_WIDTH = 0.56  # rough advance of a sans-serif character, in font sizes (13 px: ~7.3 px)
LABEL_SIZE = 13.0
TITLE_SIZE = 16.0
BOLD_WIDTH = 0.62  # the same for bold text
FONT = "-apple-system, BlinkMacSystemFont, 'Segoe UI', Helvetica, Arial, sans-serif"
FASTER = "#2f6fbf"
SLOWER = "#d0782a"
OFFICIAL = "#444444"
GOAL = "#2e9d4a"
GRID = "#e6e6e6"
MUTED = "#666666"
HALO = {"stroke": "#ffffff", "stroke_width": "3", "paint_order": "stroke"}  # keeps text legible over lines


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{what}: expected a finite number >= 0, got {value!r}")
    return float(value)


def _entries(items: Any, what: str) -> list[tuple[str, float]]:
    if not isinstance(items, list):
        raise ValueError(f"{what}: expected a list of {{'label', 'value'}} objects, got {items!r}")
    entries = []
    for index, item in enumerate(items):
        if not isinstance(item, Mapping) or not isinstance(item.get("label"), str):
            raise ValueError(f"{what}[{index}]: expected {{'label': str, 'value': number}}, got {item!r}")
        entries.append((item["label"], _number(item.get("value"), f"{what}[{index}].value")))
    return entries


def _tick_step(limit: float) -> float:
    """A 1, 2 or 5 x 10^k step giving at most 8 ticks up to ``limit``."""
    raw = limit / 8
    magnitude = 10.0 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)


def _text(x: float, y: float, content: str, **attributes: str) -> str:
    extra = "".join(f" {name.replace('_', '-')}={quoteattr(value)}" for name, value in attributes.items())
    return f'<text x="{x:.1f}" y="{y:.1f}"{extra}>{escape(content)}</text>'


def render(figures: Mapping[str, Any]) -> str:
    """The chart as SVG text: one bar per ``figures["bars"]`` entry, value labels like ``2.10x``."""
    title = figures.get("title", "Speedup against the official Real-ESRGAN pipeline")
    box = figures.get("box", "")
    if not isinstance(title, str) or not isinstance(box, str):
        raise ValueError("title and box must be strings")
    bars = _entries(figures.get("bars"), "bars")
    if not bars:
        raise ValueError("bars: at least one bar is needed")
    goals = _entries(figures.get("goal_lines") or [], "goal_lines")

    longest = max(len(label) for label, _ in bars)
    label_width = min(longest * CHAR_WIDTH * LABEL_SIZE, WIDTH * 0.4)
    label_size = min(LABEL_SIZE, label_width / (longest * CHAR_WIDTH))  # shrink labels that would not fit
    title_size = min(TITLE_SIZE, (WIDTH - 2 * MARGIN) / (max(len(title), 1) * BOLD_WIDTH))
    x0 = MARGIN + label_width + 10
    plot_width = WIDTH - x0 - MARGIN - VALUE_SPACE
    highest = max([1.0] + [value for _, value in bars] + [value for _, value in goals])
    step = _tick_step(highest * 1.05)
    limit = step * math.ceil(highest * 1.05 / step)

    def x_of(value: float) -> float:
        return x0 + plot_width * value / limit

    bottom = TOP + len(bars) * (BAR_HEIGHT + BAR_GAP)
    height = bottom + AXIS_SPACE
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family={quoteattr(FONT)} font-size="13">',
        f"<title>{escape(title)}</title>",
        f'<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#ffffff"/>',
        _text(MARGIN, TITLE_Y, title, font_size=f"{title_size:.1f}", font_weight="bold", fill="#222222"),
    ]
    if box:
        parts.append(_text(MARGIN, BOX_Y, box, font_size="12", fill=MUTED))

    # grid and ticks
    for index in range(round(limit / step) + 1):
        value = index * step
        x = x_of(value)
        parts.append(f'<line x1="{x:.1f}" y1="{TOP - 6}" x2="{x:.1f}" y2="{bottom}" stroke="{GRID}"/>')
        parts.append(_text(x, bottom + 16, f"{value:g}x", text_anchor="middle", font_size="11", fill=MUTED))
    parts.append(
        _text(
            x0 + plot_width / 2,
            bottom + 34,
            "times faster than the official pipeline",
            text_anchor="middle",
            font_size="11",
            fill=MUTED,
        )
    )

    # bars
    for index, (label, value) in enumerate(bars):
        y = TOP + index * (BAR_HEIGHT + BAR_GAP)
        middle = y + BAR_HEIGHT / 2 + 4.5
        colour = FASTER if value >= 1.0 else SLOWER
        parts.append(
            _text(x0 - 10, middle, label, text_anchor="end", font_size=f"{label_size:.1f}", fill="#222222")
        )
        parts.append(
            f'<rect x="{x0:.1f}" y="{y}" width="{x_of(value) - x0:.1f}" height="{BAR_HEIGHT}" '
            f'fill="{colour}" rx="2"/>'
        )
        parts.append(
            _text(x_of(value) + 6, middle, f"{value:.2f}x", font_weight="bold", fill="#222222", **HALO)
        )

    # reference lines, over the bars: "official" labelled on its left, goals on their right
    lines = [("official", 1.0, OFFICIAL, "end"), *((label, value, GOAL, "start") for label, value in goals)]
    for label, value, colour, anchor in lines:
        x = x_of(value)
        parts.append(
            f'<line x1="{x:.1f}" y1="{TOP - 10}" x2="{x:.1f}" y2="{bottom - BAR_GAP + 4}" '
            f'stroke="{colour}" stroke-width="1.5" stroke-dasharray="5,3"/>'
        )
        label_x = x - 3 if anchor == "end" else x + 3
        parts.append(_text(label_x, TOP - 14, label, text_anchor=anchor, font_size="11", fill=colour, **HALO))

    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("figures", type=Path, help="JSON: title, box, bars [{label, value}], goal_lines")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "bench.svg")
    args = parser.parse_args(argv)
    try:
        svg = render(json.loads(args.figures.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        print(f"bench_plot: {exc}", file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(svg, encoding="utf-8")
    print(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
