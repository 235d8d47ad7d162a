"""scripts/: the bench chart's SVG and the before/after picture's composition (no engine run here)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from scripts import bench_plot
from scripts.before_after import BACKGROUND, GAP, HEADER, side_by_side

SVG = "{http://www.w3.org/2000/svg}"
FIGURES: dict[str, Any] = {
    "title": "Speedup & <friends>",
    "box": "AMD EPYC (AVX-512), 2 vCPU",
    "bars": [
        {"label": "engine, whole frame", "value": 2.0},
        {"label": "engine, tile 128", "value": 1.1},
        {"label": "whole process, x2 clip", "value": 2.6},
        {"label": "held frames (reuse)", "value": 0.75},
    ],
    "goal_lines": [{"label": "goal", "value": 1.8}],
}


def texts(root: ET.Element) -> list[str]:
    return [element.text or "" for element in root.iter(f"{SVG}text")]


def test_render_is_well_formed_svg_with_every_label_and_value() -> None:
    root = ET.fromstring(bench_plot.render(FIGURES))
    assert root.tag == f"{SVG}svg"
    assert root.get("width") == "640"
    shown = texts(root)
    for bar in FIGURES["bars"]:
        assert bar["label"] in shown
        assert f"{bar['value']:.2f}x" in shown
    assert {"Speedup & <friends>", "AMD EPYC (AVX-512), 2 vCPU", "official", "goal"} <= set(shown)
    backgrounds = [r for r in root.iter(f"{SVG}rect") if r.get("fill") == "#ffffff"]
    assert backgrounds and backgrounds[0].get("width") == "640"


def test_render_bar_lengths_are_proportional_to_the_values() -> None:
    root = ET.fromstring(bench_plot.render(FIGURES))
    bars = [r for r in root.iter(f"{SVG}rect") if r.get("fill") in {bench_plot.FASTER, bench_plot.SLOWER}]
    assert len(bars) == 4
    widths = [float(r.get("width", "nan")) for r in bars]
    values = [bar["value"] for bar in FIGURES["bars"]]
    for width, value in zip(widths, values, strict=True):
        assert width / widths[0] == pytest.approx(value / values[0], rel=1e-2)
    # slower than official gets the other colour
    assert [r.get("fill") for r in bars] == [bench_plot.FASTER] * 3 + [bench_plot.SLOWER]
    # the "official" line sits at 1.0 on the same scale
    official = next(line for line in root.iter(f"{SVG}line") if line.get("stroke") == bench_plot.OFFICIAL)
    x0 = float(bars[0].get("x", "nan"))
    assert float(official.get("x1", "nan")) - x0 == pytest.approx(widths[0] / values[0], rel=1e-2)


@pytest.mark.parametrize(
    "figures",
    [
        {"bars": []},
        {"bars": [{"label": "a", "value": -1}]},
        {"bars": [{"label": "a", "value": "2"}]},
        {"bars": [{"value": 2}]},
        {"bars": [{"label": "a", "value": 2}], "goal_lines": [{"label": "g", "value": float("inf")}]},
    ],
)
def test_render_rejects_bad_figures(figures: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        bench_plot.render(figures)


def test_bench_plot_main_writes_the_svg(tmp_path: Path) -> None:
    source = tmp_path / "figures.json"
    source.write_text(json.dumps(FIGURES), encoding="utf-8")
    output = tmp_path / "out" / "bench.svg"
    assert bench_plot.main([str(source), "--output", str(output)]) == 0
    assert output.read_text(encoding="utf-8") == bench_plot.render(FIGURES)


def test_side_by_side_puts_bicubic_left_and_the_given_upscale_right() -> None:
    rng = np.random.default_rng(7)
    small = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    upscaled = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)  # a stand-in for the engine's x4
    picture = side_by_side(small, upscaled, ("bicubic x4", "engine x4"))

    assert picture.shape == (HEADER + 120, 2 * 160 + GAP, 3)
    assert picture.dtype == np.uint8
    expected_left = cv2.resize(small, (160, 120), interpolation=cv2.INTER_CUBIC)
    np.testing.assert_array_equal(picture[HEADER:, :160], expected_left)
    np.testing.assert_array_equal(picture[HEADER:, 160 + GAP :], upscaled)
    assert (picture[:, 160 : 160 + GAP] == BACKGROUND).all()

    # each header strip carries its label: bright text pixels on the background, different text each side
    left_header, right_header = picture[:HEADER, :160], picture[:HEADER, 160 + GAP :]
    for header in (left_header, right_header):
        assert (header.min(axis=2) > 200).any()
        assert (header == BACKGROUND).all(axis=2).mean() > 0.5
    assert not np.array_equal(left_header, right_header)
    blank = side_by_side(small, upscaled, ("", ""))
    assert (blank[:HEADER] == BACKGROUND).all()
    np.testing.assert_array_equal(blank[HEADER:], picture[HEADER:])


def test_side_by_side_rejects_a_non_integer_enlargement() -> None:
    small = np.zeros((30, 40, 3), dtype=np.uint8)
    with pytest.raises(ValueError):
        side_by_side(small, np.zeros((120, 150, 3), dtype=np.uint8), ("a", "b"))
    with pytest.raises(ValueError):
        side_by_side(small, np.zeros((120, 160, 3), dtype=np.float32), ("a", "b"))
