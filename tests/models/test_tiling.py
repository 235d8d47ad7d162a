from __future__ import annotations

import itertools

import pytest
import torch

from models.tiling import axis_spans, feather_weights, plan_tiles


@pytest.mark.parametrize(
    ("length", "tile", "pad"), [(180, 128, 18), (320, 64, 18), (19, 8, 5), (33, 0, 5), (50, 64, 10)]
)
def test_cores_partition_the_axis_and_windows_read_context_only_toward_neighbours(
    length: int, tile: int, pad: int
) -> None:
    spans = axis_spans(length, tile, pad)
    assert spans[0].core_start == 0 and spans[-1].core_stop == length
    for left, right in itertools.pairwise(spans):
        assert left.core_stop == right.core_start
    for span in spans:
        assert 0 <= span.start <= span.core_start < span.core_stop <= span.stop <= length
        assert span.core_stop - span.core_start <= (tile if tile > 0 else length)
        # `pad` of context toward a neighbour, none past the frame edge: no pixel read twice for nothing
        assert span.start == max(0, span.core_start - pad)
        assert span.stop == min(length, span.core_stop + pad)


def test_tile_128_reads_fewer_pixels_than_one_window_size_for_all() -> None:
    """180x320 at tile 128, pad 18: 2x3 windows, edge windows 18 px shorter than inner ones."""
    plan = plan_tiles(180, 320, 128, 18)
    assert sorted({w.shape for w in plan.windows}) == [(108, 124), (108, 125), (108, 143)]
    assert plan.pixels == 216 * (124 + 143 + 125)


def test_tiles_split_evenly_instead_of_leaving_a_sliver() -> None:
    spans = axis_spans(180, 128, 18)
    assert [s.core_stop - s.core_start for s in spans] == [90, 90]


def test_feather_weights_are_positive_and_fall_off_only_toward_neighbours() -> None:
    plan = plan_tiles(40, 60, 16, 4)
    weights = feather_weights(plan, scale=2)
    total = torch.zeros(1, 1, 80, 120)
    for window, weight in zip(plan.windows, weights, strict=True):
        assert weight.min() > 0 and weight.max() == 1
        rows, cols = window.rows, window.cols
        total[:, :, rows.start * 2 : rows.stop * 2, cols.start * 2 : cols.stop * 2] += weight
        if rows.start == 0:
            assert torch.equal(weight[0, 0, 0, :], weight[0, 0, 1, :])  # no ramp at the frame edge
    # each core pixel keeps at least half weight; the engine divides by this sum
    assert total.min() >= 0.5
