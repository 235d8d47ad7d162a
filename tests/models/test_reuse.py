"""Temporal reuse: byte-identical to computing every frame, whatever was skipped."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models import Upscaler, UpscalerConfig, WeightStore
from models.reuse import ReuseState
from models.runtime import TorchRuntime
from models.tiling import plan_tiles
from tasks import EngineCache


def _picture(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def _held(height: int = 40, width: int = 64) -> np.ndarray:
    """Drawn on twos and threes: a, a, b, b, b, c, then c with a 2x2 cursor in its top-left corner."""
    a, b, c = (_picture(height, width, seed) for seed in (1, 2, 3))
    cursor = c.copy()
    cursor[2:4, 2:4] = 255
    return np.stack([a, a, b, b, b, c, cursor])


def _engine(store: WeightStore, runtime: str, **config: object) -> Upscaler:
    settings = {"model": "realesr-animevideov3", "scale": 4, "device": "cpu", **config}
    return Upscaler.create(UpscalerConfig(runtime=runtime, **settings), store)  # type: ignore[arg-type]


def _in_calls(engine: Upscaler, frames: np.ndarray, per_call: int, reuse: ReuseState | None) -> np.ndarray:
    """The frames through the engine ``per_call`` at a time, as a job hands them."""
    parts = [engine(frames[i : i + per_call], reuse=reuse) for i in range(0, len(frames), per_call)]
    return np.concatenate(parts)


@pytest.mark.parametrize("runtime", ["torch", "openvino"])
def test_reuse_is_byte_identical_and_counts_the_held_frames(real_store: WeightStore, runtime: str) -> None:
    engine = _engine(real_store, runtime)
    frames = _held()
    every = _in_calls(engine, frames, 2, None)
    state = ReuseState()
    reused = _in_calls(engine, frames, 2, state)  # calls of 2: a held frame across a call boundary too
    assert np.array_equal(every, reused)
    assert (state.frames, state.frames_reused) == (7, 3)  # the second a, the second and third b
    assert state.skip_rate == pytest.approx(3 / 7)


def test_a_window_that_did_not_change_is_reused_the_rest_computed(real_store: WeightStore) -> None:
    """Tiles: the cursor's windows (its pixels in their core or overlap) are computed, the rest reused."""
    engine = _engine(real_store, "torch", tile=16)
    frames = _held(72, 120)
    every = _in_calls(engine, frames, 1, None)
    state = ReuseState()
    reused = _in_calls(engine, frames, 3, state)
    assert np.array_equal(every, reused)
    plan = plan_tiles(72, 120, engine.tile, engine.pad)
    touched = [w for w in plan.windows if w.rows.start <= 2 < w.rows.stop and w.cols.start <= 2 < w.cols.stop]
    windows, frame = len(plan.windows), plan.pixels
    assert windows == 5 * 8 and 0 < len(touched) < windows // 4
    assert state.pixels == 7 * frame
    assert state.pixels_reused == 3 * frame + frame - sum(w.pixels for w in touched)
    assert state.frames_reused == 3


def test_every_network_call_keeps_the_batch_shape(real_store: WeightStore) -> None:
    """Skipped windows never shrink a call: the partial last batch is padded, so the kernels stay the same."""
    engine = _engine(real_store, "torch", tile=16, batch_size=5)
    network = engine.network
    shapes: list[tuple[int, ...]] = []

    def recording(batch: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(batch.shape))
        return network(batch)

    engine.runtime = TorchRuntime(recording)
    frames = _held()
    every = _in_calls(engine, frames, 2, None)
    reused = _in_calls(engine, frames, 2, ReuseState())
    assert np.array_equal(every, reused)
    assert {shape[0] for shape in shapes} == {5}


def test_a_new_frame_size_or_tile_starts_afresh(real_store: WeightStore) -> None:
    engine = _engine(real_store, "torch")
    state = ReuseState()
    small = _picture(24, 32, 7)
    engine(small[None], reuse=state)
    grown = np.zeros((24, 40, 3), dtype=np.uint8)
    grown[:, :32] = small  # not a crop of the last frame's output: it must be computed
    assert np.array_equal(engine(grown[None], reuse=state), engine(grown[None]))
    assert state.frames_reused == 0


def test_reuse_belongs_to_the_lease_one_job_each(real_store: WeightStore) -> None:
    config = UpscalerConfig("realesr-animevideov3", 4, "cpu")
    engines = EngineCache(real_store, runtime="torch")
    first, second = engines.lease(config), engines.lease(config)
    assert first.engine is second.engine and first.reuse is not None and first.reuse is not second.reuse
    frame = _picture(16, 16, 9)[None]
    first(frame)
    second(frame)  # another job's first frame: nothing to reuse from the first job
    assert second.reuse is not None and (first.reuse.frames_reused, second.reuse.frames_reused) == (0, 0)
    assert EngineCache(real_store, runtime="torch", reuse=False).lease(config).reuse is None
